/**
 * One fenced append of a prepared record, and what its outcome teaches the replica.
 *
 * Exactly once: a call that got no answer may or may not have appended, so it is looked
 * up by its commit id at its sequence before anything is built again. Not found means it
 * never will be: the lookup runs on the same connection after the lost call, so that
 * call has been executed or dropped by then. A conflict (answered, or found by the
 * lookup) that Redis's kept commit ids cannot prove on a call this old fails closed
 * (resentCalls.ts): a re-send of it may have committed first.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { CommitOutcomeUnknown, FenceConflict, type StoreError } from "../../Errors.js"
import * as Metrics from "../../Metrics.js"
import { committing, endingWith } from "../deadline.js"
import { claimMoveOf } from "../storeGuard.js"
import type { AppendOutcome, AuditBacking, PreparedAppend } from "./backing.js"
import type { HeadCache } from "./headCache.js"
import { unknownHead } from "./headState.js"
import type { OnRewind } from "./options.js"
import { resolveSchedule } from "../schedules.js"
import { trustedOutcome } from "../resentCalls.js"

/** What the append path of one store needs, built once per store. */
export interface AppendContext {
  readonly backing: AuditBacking
  readonly prefix: string
  readonly cache: HeadCache
  readonly fullCheck: boolean
  readonly onRewind: OnRewind
  readonly afterCommit: Effect.Effect<void, StoreError>
  readonly rewindCounter: Metric.Metric.Counter<number>
}

/** Resolving a lost reply: ask again for a little while, Redis may be reconnecting. */

const resolvedCounter = Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "audit"))

/** Whether an append took effect (for the deadline: after it, a timeout cannot say "nothing committed"). */
const landed = (outcome: AppendOutcome): boolean => outcome._tag === "Committed" || outcome._tag === "AlreadyCommitted"

/**
 * The append of `write`, a lost reply resolved, marked on the deadline as a commit in
 * flight. `sent`: the call was already sent (`AuditBacking.send`); its reply is decoded.
 * `replied` runs once the outcome is known, inside this mark (the caller's own mark on
 * the call it sent comes off there: a deadline while the outcome is settled, after a
 * conflict, then says that nothing committed, as it does on the Effect path).
 */
export const appendOnce = (
  ctx: AppendContext,
  write: PreparedAppend,
  sent?: Promise<unknown>,
  replied?: Effect.Effect<void>
): Effect.Effect<AppendOutcome, StoreError> => committing(endingWith(resolvedAppend(ctx, write, sent), replied), landed)

/** The append's outcome, a lost reply resolved by asking Redis whether its commit id landed. */
const resolvedAppend = (
  ctx: AppendContext,
  write: PreparedAppend,
  sent: Promise<unknown> | undefined
): Effect.Effect<AppendOutcome, StoreError> =>
  Effect.flatMap(
    Effect.catchTag(refusedOrResent(ctx, write, ctx.backing.append(write, sent)), "RedisUnavailable", (lost) =>
      ctx.backing.isCommitted(write.sequence, write.commitId, write.witness).pipe(
        Effect.retry({ schedule: resolveSchedule, while: (e) => e._tag === "RedisUnavailable" }),
        Effect.mapError(() => new CommitOutcomeUnknown({ store: "audit", prefix: ctx.prefix, cause: lost.cause })),
        Effect.tap(() => Metric.update(resolvedCounter, 1)),
        Effect.map((lookup): AppendOutcome =>
          // (A lost call that asked for the lock may have taken it: count it as ours, so it is released.)
          lookup === "committed"
            ? { _tag: "AlreadyCommitted" }
            : {
                _tag: "Conflict",
                current: unknownHead,
                tookLock: write.claim?.ask === true,
                unproven: lookup === "unproven" || lookup === "ids lost",
                idsLost: lookup === "ids lost"
              }
        )
      )
    ),
    (outcome) => trustedOutcome({ store: "audit", prefix: ctx.prefix }, write.madeAt, outcome)
  )

/**
 * An error reply is the command's own only on its first send: ioredis re-sends an
 * unanswered command after a reconnect, and the re-send's refusal (NOPERM, BUSY, ...)
 * says nothing of the first send, which may have committed. Looked up by commit id.
 */
const refusedOrResent = (
  ctx: AppendContext,
  write: PreparedAppend,
  append: Effect.Effect<AppendOutcome, StoreError>
): Effect.Effect<AppendOutcome, StoreError> =>
  Effect.catchTag(append, "RedisCommandFailed", (refused) =>
    ctx.backing.isCommitted(write.sequence, write.commitId, write.witness).pipe(
      // (A lookup Redis refuses too, say a cluster slot mid-migration, leaves the refusal as it was.)
      Effect.mapError(() => refused),
      Effect.flatMap((lookup) =>
        lookup === "committed" ? Effect.succeed<AppendOutcome>({ _tag: "AlreadyCommitted" }) : Effect.fail(refused)
      )
    )
  )

/** The `FenceConflict` a rejected append fails with. */
export const conflict = (ctx: AppendContext, write: PreparedAppend, outcome: AppendOutcome) =>
  new FenceConflict({
    store: "audit",
    prefix: ctx.prefix,
    expected: write.expectedPrev,
    lockClaim: claimMoveOf(outcome),
    ...(outcome._tag === "LockHeld"
      ? { lockHeld: true }
      : outcome._tag === "Conflict" && outcome.current._tag === "Known"
        ? { actual: outcome.current.hash }
        : {})
  })

/**
 * An outcome that touched neither continuity nor the record's place: committed (the
 * record is the head now), yielded to a lock holder, or rejected on a moved head (the
 * reply's head, checked by the script against `seen`, is learned).
 */
export const settleAppended = (
  ctx: AppendContext,
  write: PreparedAppend,
  outcome: Exclude<AppendOutcome, { readonly _tag: "Rewound" | "NotSuccessor" }>
): Effect.Effect<void, FenceConflict | StoreError> => {
  switch (outcome._tag) {
    case "Committed":
    case "AlreadyCommitted":
      ctx.cache.learnCommit(write)
      return ctx.afterCommit
    case "LockHeld":
      return Effect.fail(conflict(ctx, write, outcome))
    case "Conflict":
      // The script checked the reply's head continues `seen`; a lost reply's is unknown. A
      // reply settled after this replica learned a newer head (another of its operations
      // committed meanwhile) is stale: learning it would take `seen` back.
      if (outcome.current._tag === "Known" && ctx.cache.seen === write.seen) ctx.cache.learn(outcome.current.head)
      else ctx.cache.forget()
      return Effect.fail(conflict(ctx, write, outcome))
  }
}
