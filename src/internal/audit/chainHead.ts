/**
 * The one home of "do the head keys agree with the list?", and of what each way of
 * disagreeing is called.
 *
 * The rule: with `head:hash` absent, the list and `head` must be absent too (the empty
 * chain); with it present, `head` must be an auditIntegrity whose `eventHash` is
 * `head:hash` and whose `sequence` is the list's length, and the list's last record must
 * carry that `eventHash`. `lua/audit_append.lua` applies the same rule inside the fenced
 * append (reply code 5 with the names below); `headKeysDisagreement` applies it to a
 * snapshot read by `verify`. Either way the result is a `ChainBroken` naming the keys, or
 * `CorruptData` for a head that is not an auditIntegrity at all.
 */
import { ChainBroken, CorruptData } from "../../Errors.js"
import type { AuditKeys } from "../keys.js"
import { isJsonObject } from "../jsonRecord.js"

/** The ways the head keys can disagree with the list (the script's reply-5 names). */
export type HeadDisagreement =
  "hash_missing" | "head_missing" | "head_unreadable" | "hash_mismatch" | "length_mismatch" | "last_mismatch"

/** The head keys and the list's end, read at one instant. */
export interface HeadKeys {
  readonly headJson: string | null
  readonly headHash: string | null
  readonly length: number
  /** The list's last element (null for an empty list). */
  readonly lastJson: string | null
}

const parse = (json: string): unknown => {
  try {
    return JSON.parse(json) as unknown
  } catch {
    return undefined
  }
}

const objectOrUndefined = (value: unknown): Record<string, unknown> | undefined =>
  isJsonObject(value) ? value : undefined

/** How `keys` disagree, or undefined when they agree. The script's rule, for a snapshot. */
export const headKeysDisagreement = (keys: HeadKeys): HeadDisagreement | undefined => {
  if (keys.headHash === null) return keys.length > 0 || keys.headJson !== null ? "hash_missing" : undefined
  if (keys.headJson === null) return "head_missing"
  const head = objectOrUndefined(parse(keys.headJson))
  if (head === undefined || typeof head.sequence !== "number" || typeof head.eventHash !== "string")
    return "head_unreadable"
  if (head.eventHash !== keys.headHash) return "hash_mismatch"
  if (head.sequence !== keys.length) return "length_mismatch"
  const last = keys.lastJson === null ? undefined : objectOrUndefined(parse(keys.lastJson))
  const integrity = objectOrUndefined(last?.auditIntegrity)
  if (integrity?.eventHash !== keys.headHash) return "last_mismatch"
  return undefined
}

/** The typed error for a disagreement: `ChainBroken` naming the keys, or `CorruptData` for an unreadable head. */
export const disagreementError = (
  keys: AuditKeys,
  what: string,
  length: number,
  headSequence: number | null
): ChainBroken | CorruptData => {
  const records = `chain holds ${length} record${length === 1 ? "" : "s"}`
  const broken = (names: ReadonlyArray<string>, detail: string) =>
    new ChainBroken({ prefix: keys.prefix, keys: names, detail })
  switch (what as HeadDisagreement) {
    case "hash_missing":
      return length > 0
        ? broken([keys.headHash, keys.chain], `head:hash is missing while ${records}`)
        : broken([keys.headHash, keys.head], "head:hash is missing while head is set (and the chain is empty)")
    case "head_missing":
      return broken([keys.head, keys.headHash], `head is missing while head:hash is set and ${records}`)
    case "head_unreadable":
      return new CorruptData({ key: keys.head, detail: "not an auditIntegrity object" })
    case "hash_mismatch":
      return broken([keys.head, keys.headHash], "head's eventHash is not head:hash")
    case "length_mismatch":
      return broken([keys.head, keys.chain], `head says sequence ${headSequence ?? "?"} but ${records}`)
    case "last_mismatch":
      return broken([keys.headHash, keys.chain], "the chain's last record is not the one head:hash names")
    default:
      return broken([keys.head, keys.headHash, keys.chain], `the head keys disagree with the list (${what})`)
  }
}

const headSequenceOf = (json: string | null): number | null => {
  const head = json === null ? undefined : objectOrUndefined(parse(json))
  return typeof head?.sequence === "number" ? head.sequence : null
}

/** The typed error for a snapshot whose keys disagree (see `disagreementError`), or undefined when they agree. */
export const snapshotDisagreement = (keys: AuditKeys, snapshot: HeadKeys): ChainBroken | CorruptData | undefined => {
  const disagreement = headKeysDisagreement(snapshot)
  return disagreement === undefined
    ? undefined
    : disagreementError(keys, disagreement, snapshot.length, headSequenceOf(snapshot.headJson))
}
