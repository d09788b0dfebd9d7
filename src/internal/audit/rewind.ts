/**
 * A replica that finds the chain no longer holds a head it saw (a failover to a lagging
 * replica, FLUSHALL, a restored snapshot): the rewind is counted and logged once, then
 * `onRewind` decides. "fail" fails with `ChainRewound`; "record" appends, on the current
 * head, a record naming the lost head (so the gap is part of the chain), then a fence
 * conflict re-runs the caller's build on it. Nothing found inconsistent is overwritten.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { AuditIntegrity } from "../../Chain.js"
import { buildNextRecord } from "./chainBuild.js"
import { ChainRewound, type ChainPoint, FenceConflict, InvalidRecord, type StoreError } from "../../Errors.js"
import type { LockClaim } from "../storeGuard.js"
import { type AppendContext, appendOnce, conflict, settleAppended } from "./append.js"
import { pointOf } from "./headState.js"
import { prepare } from "./prepare.js"
import { rewindEvent } from "./rewindRecord.js"

/** The chain no longer holds `lost`: counted and logged once, then the `onRewind` policy. */
export const rewound = (
  ctx: AppendContext,
  lost: ChainPoint,
  current: AuditIntegrity | null,
  claim: LockClaim | undefined
): Effect.Effect<never, FenceConflict | StoreError> => {
  const error = new ChainRewound({ prefix: ctx.prefix, seen: lost, current: pointOf(current) })
  const report = Effect.suspend(() =>
    ctx.cache.firstReport(lost)
      ? Effect.zipRight(
          Metric.increment(ctx.rewindCounter),
          Effect.logError(error.message).pipe(
            Effect.annotateLogs({ "haechi.prefix": ctx.prefix, "haechi.on_rewind": ctx.onRewind })
          )
        )
      : Effect.void
  )
  ctx.cache.forget()
  return Effect.zipRight(
    report,
    ctx.onRewind === "fail" ? Effect.fail(error) : recordRewind(ctx, error, current, claim)
  )
}

/** `onRewind: "record"`: the gap record on the current head, then a conflict so the caller's record is rebuilt. */
const recordRewind = (
  ctx: AppendContext,
  error: ChainRewound,
  current: AuditIntegrity | null,
  claim: LockClaim | undefined
): Effect.Effect<never, FenceConflict | StoreError> =>
  Effect.gen(function* () {
    const detectedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
    const event = rewindEvent({ lost: error.seen, resumedOn: error.current, detectedAt })
    const gap = buildNextRecord(event, current as AuditIntegrity | null)
    // The gap record never keeps a turn: the conflict it ends with says the lock was given back.
    const gapClaim = claim?.keepMs === undefined ? claim : { ...claim, keepMs: undefined }
    const write = prepare(gap, gapClaim, error.current, ctx.fullCheck, null)
    if (write instanceof InvalidRecord) return yield* Effect.fail(write)
    const outcome = yield* appendOnce(ctx, write)
    if (outcome._tag === "Rewound" || outcome._tag === "NotSuccessor") return yield* Effect.fail(error)
    if (outcome._tag === "Conflict" && outcome.current._tag === "Known") {
      // Not learned as `seen`: the lost head stays the one to prove, so the next attempt records it again.
      ctx.cache.hold(outcome.current.head)
      return yield* Effect.fail(conflict(ctx, write, outcome))
    }
    yield* settleAppended(ctx, write, outcome)
    yield* Effect.logWarning(`audit store ${ctx.prefix}: recorded the rewind at sequence ${write.sequence}`)
    // The caller's record was built on the lost head: rebuild it on the new one.
    return yield* Effect.fail(
      new FenceConflict({
        store: "audit",
        prefix: ctx.prefix,
        expected: error.seen.eventHash,
        actual: write.eventHash,
        lockClaim: "gaveBack"
      })
    )
  })
