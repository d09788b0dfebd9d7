/**
 * What a lost reply's lookup of a commit id proves, from `isCommitted`'s MULTI: the same
 * rules as lua/audit_append.lua's `idsLost` and `unprovenCode` (held equal by the tests of
 * lost and re-sent calls), in one place on this side.
 */
import * as Effect from "effect/Effect"
import { CorruptData } from "../../Errors.js"
import { COMMIT_IDS_KEPT_SECONDS, COMMITS_KEPT, type AuditKeys } from "../keys.js"

/** A commit of this replica's: its record's sequence and its commit id. */
export interface OwnCommit {
  readonly sequence: number
  readonly commitId: string
}

/** What `isCommitted` found. */
export type CommitLookup = "committed" | "not committed" | "unproven" | "ids lost"

/** Whether a `commits` entry ("<id> <seconds>", or an older bare "<id>") is `commitId`'s. */
const isCommitOf = (entry: string | null | undefined, commitId: string): boolean =>
  entry === commitId || (typeof entry === "string" && entry.startsWith(`${commitId} `))

/**
 * What a miss at `sequence` proves, by lua/audit_append.lua's `unprovenCode` on the floor
 * of `commits` (`commits:floor`, "<sequence> <stamp>[ <lost at>]"): "ids lost" with a floor
 * but no `commits`, with the caller's own last commit missing where it is kept (its
 * `idsLost`), or below a floor restarted within the keep (`nowSeconds`, Redis's
 * clock); "unproven" below the floor (none or unreadable: below the last COMMITS_KEPT of a
 * chain `length` long); else "not committed".
 */
const missAt = (
  sequence: number,
  floor: string | null | undefined,
  length: number,
  commitsExist: boolean,
  nowSeconds: number,
  witnessMissing: (length: number, floor: number) => boolean
): CommitLookup => {
  const match = /^(\d+) ?(\d*) ?(\d*)$/.exec(floor ?? "")
  // (A floor below 1 or past the chain's end reads as none, its stamps too, as the script's `floorOf` has it.)
  const at = match === null || Number(match[1]) > length + 1 ? 0 : Number(match[1])
  const lostAt = at < 1 ? 0 : Number(match![3])
  if ((at >= 1 && !commitsExist) || witnessMissing(length, at >= 1 ? at : 1)) return "ids lost"
  if (sequence >= (at >= 1 ? at : length - COMMITS_KEPT + 1)) return "not committed"
  const lostWithinKeep =
    lostAt > 0 && nowSeconds - lostAt < COMMIT_IDS_KEPT_SECONDS + 1 && lostAt - nowSeconds <= COMMIT_IDS_KEPT_SECONDS
  return lostWithinKeep ? "ids lost" : "unproven"
}

/** Whether `commits` misses `witness` (its `entry` there) where a chain `length` long keeps it (at or above `floor`). */
const missesWitness =
  (witness: OwnCommit | null, entry: unknown) =>
  (length: number, floor: number): boolean =>
    witness !== null &&
    witness.sequence >= floor &&
    witness.sequence <= length &&
    witness.sequence > length - COMMITS_KEPT &&
    !isCommitOf(entry as string | null, witness.commitId)

/** `isCommitted`'s answer from its MULTI's replies (HGET, GET, LLEN, EXISTS, TIME, HGET of the witness). */
export const lookupOf = (
  keys: AuditKeys,
  sequence: number,
  commitId: string,
  witness: OwnCommit | null,
  replies: Array<[Error | null, unknown]> | null
): Effect.Effect<CommitLookup, CorruptData> => {
  const [id, floor, length, exists, time, witnessed] = replies ?? []
  const read = [id, floor, length, exists, time, witnessed]
  const failed = read.find((reply) => reply?.[0])?.[0] ?? (replies === null ? new Error("aborted") : null)
  if (failed !== null && failed !== undefined) {
    const key = id?.[0] ? keys.commits : floor?.[0] ? keys.commitsFloor : keys.chain
    return Effect.fail(new CorruptData({ key, detail: `could not be read (${failed.message})` }))
  }
  if (isCommitOf(id![1] as string | null, commitId)) return Effect.succeed("committed")
  const nowSeconds = Number((time![1] as Array<string>)[0])
  const witnessMissing = missesWitness(witness, witnessed![1])
  return Effect.succeed(
    missAt(sequence, floor![1] as string | null, Number(length![1]), exists![1] === 1, nowSeconds, witnessMissing)
  )
}
