/** How results are worded: the last line of `verify` (and of the demo's check). */
import { Chain } from "haechi-store-effect"

const short = (value: unknown): string => {
  const text = value === undefined ? "nothing" : JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

export const describeResult = (result: Chain.VerifyResult, from: Chain.Checkpoint | undefined): string => {
  if (result.valid) {
    const after = from === undefined ? "" : ` after checkpoint ${from.sequence}`
    const head = result.headHash === null ? "empty chain" : `head ${result.headSequence} ${result.headHash}`
    return `valid: ${result.records} records${after} (${head})`
  }
  const reason = result.reason
  let detail = ""
  switch (reason._tag) {
    case "SequenceMismatch":
      detail = reason.actual === undefined ? " (record missing)" : ` (expected ${reason.expected}, found ${short(reason.actual)})`
      break
    case "PreviousHashMismatch":
    case "EventHashMismatch":
      detail = ` (expected ${short(reason.expected)}, found ${short(reason.actual)})`
      break
  }
  return (
    `invalid at sequence ${result.failedSequence} (list index ${result.index}): ${Chain.describeFailure(reason)}${detail}; ` +
    `${result.records} records verified before it`
  )
}
