/**
 * One mutate attempt: run `f` over a pinned snapshot, turn what it staged into a diff,
 * and apply that diff fenced on the snapshot's version (and the commit and token count
 * that prove its history). A reply lost on the way is resolved by asking the change log
 * whether this commit id landed; when the log cannot say, `CommitOutcomeUnknown`, as for
 * a conflict the log cannot prove on a call this old (resentCalls.ts). On a
 * commit the cache moves to the new version by the records just written, as frozen
 * copies, with no second parse.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { CommitOutcomeUnknown, FenceConflict, InvalidRecord, type StoreError } from "../../Errors.js"
import * as Metrics from "../../Metrics.js"
import { nextCommitId } from "../commitId.js"
import { committing, endingWith } from "../deadline.js"
import { claimMoveOf, type LockClaim } from "../storeGuard.js"
import type { ApplyOutcome, Changes, VaultBacking, VaultWrite } from "./backing.js"
import type { RecordChange, Snapshot, VaultCache } from "./cache.js"
import type { MutableView } from "./contract.js"
import type { VaultFreshness } from "./freshness.js"
import { encodeRecord, frozenCopy } from "./record.js"
import { DELETED, StagingView } from "./views.js"
import { resolveSchedule } from "../schedules.js"
import { callMadeAt, trustedOutcome } from "../resentCalls.js"

/** What a view staged: the write for the backing, and the same changes as frozen records for the cache. */
export interface StagedDiff {
  readonly write: VaultWrite
  readonly records: ReadonlyArray<RecordChange>
}

/** However `f` ended: its view closed (a later change is refused) and its snapshot released. */
export const endView = (view: StagingView, release: () => void): void => {
  view.close()
  release()
}

/** Whether `staged` changes nothing (sent all the same: the fence still checks its snapshot). */
export const isEmpty = (staged: StagedDiff): boolean => staged.write.sets.length + staged.write.deletes.length === 0

/** The diff `view` staged over `snapshot`, every record checked and encoded; `InvalidRecord` names the first bad one. */
export const stagedDiff = (
  view: StagingView,
  snapshot: Snapshot,
  claim: LockClaim | undefined
): StagedDiff | InvalidRecord => {
  const sets: Array<readonly [string, string]> = []
  const deletes: Array<string> = []
  const records: Array<RecordChange> = []
  for (const [token, staged] of view.staged) {
    if (view.touched.has(token)) continue
    if (typeof token !== "string")
      return new InvalidRecord({ store: "vault", token, reason: "a token id must be a string" })
    if (staged === DELETED) {
      // (Only ids read back from Redis are deleted, and those are well-formed.)
      if (view.snapshot.records.has(token)) deletes.push(token)
      continue
    }
    const json = encodeRecord(token, staged)
    if (typeof json !== "string") return json
    sets.push([token, json])
    records.push([token, frozenCopy(staged)])
  }
  for (const token of deletes) records.push([token, undefined])
  const write: VaultWrite = {
    expected: snapshot.version,
    expectedCommit: snapshot.commit,
    expectedSize: snapshot.size,
    commitId: nextCommitId(),
    madeAt: callMadeAt(),
    sets,
    deletes,
    claim
  }
  return { write, records }
}

export interface CommitAttempt {
  /** One attempt of `f`: its value once its diff committed, `FenceConflict` when another commit won. */
  readonly attempt: <A, E, R>(
    f: (view: MutableView) => Effect.Effect<A, E, R>,
    claim?: LockClaim
  ) => Effect.Effect<A, E | FenceConflict | StoreError, R>
  /**
   * The rest of an attempt whose `f` returned `result` over `snapshot`, and whose apply
   * of `staged` the caller sent itself (`sent`): what `attempt` does with the reply.
   * `replied` runs once the apply's outcome is known, inside the apply's own commit mark
   * (the caller's mark on the commit it sent comes off there, not after the settling).
   */
  readonly settleSent: <A>(
    snapshot: Snapshot,
    staged: StagedDiff,
    result: A,
    sent: Promise<unknown>,
    replied?: Effect.Effect<void>
  ) => Effect.Effect<A, FenceConflict | StoreError>
}

/**
 * The apply (sent now, or by the caller: `sent`). A call that got no answer may or may
 * not have committed: the log says, by commit id.
 */
export const resolvingApply = (backing: VaultBacking, prefix: string) => {
  const resolved = Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "vault"))
  // What the log says about a lost call's commit id.
  const resolvedBy = (
    write: VaultWrite,
    changes: Changes,
    lost: unknown
  ): Effect.Effect<ApplyOutcome, CommitOutcomeUnknown> => {
    // (A lost call that asked for the lock may have taken it: count it as ours, so it is released.)
    const conflict = {
      _tag: "Conflict" as const,
      version: changes.version,
      tookLock: write.claim?.ask === true,
      rewound: false
    }
    switch (changes._tag) {
      case "Same":
        return Effect.succeed(conflict)
      case "Delta":
        return Effect.succeed(changes.found ? { _tag: "AlreadyCommitted", version: changes.version } : conflict)
      case "Reload":
        // Too far behind to replay: the whole log was searched (a lookup), or nothing can be said.
        if (changes.lookup === undefined) break
        return Effect.succeed(
          changes.lookup.found
            ? { _tag: "AlreadyCommitted", version: changes.version }
            : { ...conflict, unproven: changes.lookup.unproven, idsLost: changes.lookup.idsLost === true }
        )
    }
    // A history that was rewound, or cannot be read, cannot say whether the commit landed.
    return Effect.fail(new CommitOutcomeUnknown({ store: "vault", prefix, cause: lost }))
  }
  return (write: VaultWrite, sent?: Promise<unknown>): Effect.Effect<ApplyOutcome, StoreError> =>
    backing.apply(write, sent).pipe(
      Effect.catchTag("RedisUnavailable", (lost) =>
        backing.changes({ version: write.expected, commit: write.expectedCommit }, write.commitId).pipe(
          Effect.retry({ schedule: resolveSchedule, while: (e) => e._tag === "RedisUnavailable" }),
          Effect.mapError(() => new CommitOutcomeUnknown({ store: "vault", prefix, cause: lost.cause })),
          Effect.flatMap((changes) => resolvedBy(write, changes, lost.cause)),
          Effect.tap(() => Metric.update(resolved, 1))
        )
      ),
      Effect.flatMap((outcome) => trustedOutcome({ store: "vault", prefix }, write.madeAt, outcome))
    )
}

export const commitAttempts = (
  backing: VaultBacking,
  cache: VaultCache,
  freshness: VaultFreshness,
  afterCommit: Effect.Effect<void, StoreError>
): CommitAttempt => {
  const prefix = backing.keys.prefix
  const applyOnce = resolvingApply(backing, prefix)

  // What the apply's outcome means for the attempt (its value, a conflict, a rewind dropped).
  const settled = <A>(
    snapshot: Snapshot,
    staged: StagedDiff,
    result: A,
    outcome: ApplyOutcome
  ): Effect.Effect<A, FenceConflict | StoreError> => {
    switch (outcome._tag) {
      case "Committed": {
        if (isEmpty(staged)) return Effect.succeed(result)
        cache.advance(snapshot.version, { version: outcome.version, commit: staged.write.commitId }, staged.records)
        return Effect.as(afterCommit, result)
      }
      case "AlreadyCommitted":
        // (Its first send committed and was never confirmed durable: the step runs now, as for the audit store.)
        // (The commit landed: a refresh that fails leaves the cache where it was, for the next
        // operation to bring up to date, and neither skips the durability step nor fails the mutate.)
        return Effect.as(Effect.zipRight(Effect.ignore(freshness.bringUpToDate), afterCommit), result)
      case "LockHeld":
        return Effect.fail(
          new FenceConflict({ store: "vault", prefix, expected: snapshot.version, lockHeld: true, lockClaim: "left" })
        )
      case "Conflict": {
        const conflict = new FenceConflict({
          store: "vault",
          prefix,
          expected: snapshot.version,
          actual: outcome.version,
          lockClaim: claimMoveOf(outcome)
        })
        // A rewind found by the fence drops the cache: the next attempt reads the vault again.
        const refreshed =
          outcome.rewound && cache.version === snapshot.version
            ? freshness.dropRewound(snapshot, outcome.version, "the fence found another history at that version")
            : freshness.bringUpToDate
        return Effect.zipRight(refreshed, Effect.fail(conflict))
      }
    }
  }

  // The apply (sent now, or by the caller: `sent`) and its outcome. (An empty diff writes
  // nothing, so a deadline during it cannot leave a commit behind.)
  const applied = <A>(
    snapshot: Snapshot,
    staged: StagedDiff,
    result: A,
    sent?: Promise<unknown>,
    replied?: Effect.Effect<void>
  ) => {
    const apply = endingWith(applyOnce(staged.write, sent), replied)
    const outcome = isEmpty(staged)
      ? apply
      : committing(apply, (o) => o._tag === "Committed" || o._tag === "AlreadyCommitted")
    return Effect.flatMap(outcome, (o) => settled(snapshot, staged, result, o))
  }

  const attempt = <A, E, R>(f: (view: MutableView) => Effect.Effect<A, E, R>, claim?: LockClaim) =>
    Effect.zipRight(
      freshness.loadIfUnproven,
      Effect.suspend(() => {
        const { snapshot, release } = cache.pin()
        const view = new StagingView(snapshot, prefix)
        return Effect.flatMap(
          Effect.ensuring(
            f(view),
            Effect.sync(() => endView(view, release))
          ),
          (result) => {
            const staged = stagedDiff(view, snapshot, claim)
            return staged instanceof InvalidRecord ? Effect.fail(staged) : applied(snapshot, staged, result)
          }
        )
      })
    )

  return { attempt, settleSent: applied }
}
