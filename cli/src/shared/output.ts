/** How results are worded: the last line of `verify` (and of the demo's check), and its recorded rewinds. */
import { Chain, type Verify } from "haechi-store-effect"

const short = (value: unknown): string => {
  const text = value === undefined ? "nothing" : (JSON.stringify(value) ?? String(value))
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

export const describeResult = (result: Chain.VerifyResult, from: Chain.Checkpoint | undefined): string => {
  if (result.valid) {
    const after = from === undefined ? "" : ` after checkpoint ${from.sequence}`
    const head = result.headHash === null ? "empty chain" : `head ${result.headSequence} ${result.headHash}`
    return `valid: ${result.records} records${after} (${head})`
  }
  const reason = result.reason
  if (reason._tag === "HeadKeysDisagree") {
    return `invalid: chain broken: ${reason.detail} (keys ${reason.keys.join(", ")}); the list's ${result.records} records verify`
  }
  let detail = ""
  switch (reason._tag) {
    case "SequenceMismatch":
      detail =
        reason.actual === undefined
          ? " (record missing)"
          : ` (expected ${reason.expected}, found ${short(reason.actual)})`
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

/** One recorded rewind (`onRewind: "record"`), as `verify` lists it. */
export const describeRewind = (rewind: Verify.RecordedRewind): string => {
  const on = rewind.resumedOn
  return (
    `recorded rewind at sequence ${(on?.sequence ?? 0) + 1}: a replica had seen head ${rewind.lost.sequence} ${rewind.lost.eventHash}, ` +
    `the chain resumed on ${on === null ? "an empty chain" : `head ${on.sequence} ${on.eventHash}`} (detected ${rewind.detectedAt})`
  )
}
