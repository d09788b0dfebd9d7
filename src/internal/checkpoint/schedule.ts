/**
 * The checkpointer's schedule: a fiber, for the scope's life, that reads the head every
 * poll and signs when the chain has grown by `everyRecords` since the newest checkpoint,
 * or has grown at all and `everySeconds` have passed since the last signature. A failed
 * round is counted and logged, never fatal: the next poll tries again.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Metrics from "../../Metrics.js"

export interface ScheduleOptions {
  readonly everyRecords?: number | undefined
  readonly everySeconds?: number | undefined
  /** How often the head is read for `everyRecords`; default 1 s (never longer than `everySeconds`). */
  readonly pollInterval?: Duration.DurationInput | undefined
}

/** What the schedule drives: the checkpointer's `checkpoint` and `latest`, and the store's head. */
export interface Scheduled<E1, E2 extends { readonly message: string }> {
  readonly prefix: string
  readonly head: Effect.Effect<{ readonly sequence: number } | null, E1>
  readonly latest: Effect.Effect<{ readonly size: number } | undefined>
  readonly checkpoint: Effect.Effect<unknown, E2>
}

/** Forks the schedule into the scope; does nothing when neither `everyRecords` nor `everySeconds` is given. */
export const signWhenDue = <E1 extends { readonly message: string }, E2 extends { readonly message: string }>(
  target: Scheduled<E1, E2>,
  options: ScheduleOptions
): Effect.Effect<void, never, Scope.Scope> => {
  const { everyRecords, everySeconds } = options
  if (everyRecords === undefined && everySeconds === undefined) return Effect.void
  const poll =
    everyRecords === undefined
      ? Duration.seconds(everySeconds!)
      : Duration.min(Duration.decode(options.pollInterval ?? "1 second"), Duration.seconds(everySeconds ?? Infinity))
  let lastSignedAt = Date.now()
  const tick = Effect.gen(function* () {
    const head = yield* target.head
    const size = head?.sequence ?? 0
    const signedSize = (yield* target.latest)?.size ?? 0
    const grown = size - signedSize
    const due =
      (everyRecords !== undefined && grown >= everyRecords) ||
      (everySeconds !== undefined && grown > 0 && Date.now() - lastSignedAt >= everySeconds * 1000)
    if (!due) return
    yield* target.checkpoint
    lastSignedAt = Date.now()
  }).pipe(
    Effect.catchAll((error: E1 | E2) =>
      Effect.zipRight(
        Metric.increment(Metric.tagged(Metrics.checkpointFailures, "prefix", target.prefix)),
        Effect.logError(`haechi-store checkpoint failed: ${error.message}`)
      )
    )
  )
  return Effect.asVoid(Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(poll))))
}
