/**
 * Bounded retry after fence conflicts, written once for both stores. A conflict means
 * another writer committed, so every retry follows real progress; the schedule only
 * bounds how long a writer keeps losing. When it runs out the operation fails closed
 * with `RetriesExhausted` (nothing was written) and never falls back to an unfenced write.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import { FenceConflict, RetriesExhausted, type StoreKind } from "./Errors.js"
import * as Metrics from "./Metrics.js"

/** A retry schedule over fence conflicts. */
export type RetrySchedule = Schedule.Schedule<unknown, unknown>

/**
 * The default: up to 128 attempts. The first four retries are immediate, because the
 * conflict's reply carried the current state and waiting would only make it stale (and
 * hand the race to the writer that just won); then short exponential backoff from
 * 0.2 ms capped at 2 ms, jittered so that losing writers do not collide in lockstep.
 */
export const defaultRetrySchedule: RetrySchedule = Schedule.recurs(4).pipe(
  Schedule.andThen(
    Schedule.exponential(Duration.micros(200n), 2).pipe(
      Schedule.union(Schedule.spaced("2 millis")),
      Schedule.jitteredWith({ min: 0.5, max: 1.5 })
    )
  ),
  Schedule.intersect(Schedule.recurs(127))
)

export const isFenceConflict = (error: unknown): error is FenceConflict =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "FenceConflict"

/**
 * Runs `attempt` (given its 1-based number) and re-runs it after each fence conflict
 * while `schedule` allows; other errors end it at once.
 */
export const retryOnConflict = <A, E, R>(
  attempt: (n: number) => Effect.Effect<A, E, R>,
  options: {
    readonly store: StoreKind
    readonly prefix: string
    readonly operation: string
    readonly schedule: RetrySchedule
  }
): Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R> =>
  Effect.suspend(() => {
    const count = (name: CounterName) => Metric.update(counters(options)(name), 1)
    let attempts = 0
    const once = Effect.suspend(() => {
      attempts += 1
      return attempts > 1 ? Effect.zipRight(count("retries"), attempt(attempts)) : attempt(attempts)
    }).pipe(Effect.tapError((e) => (isFenceConflict(e) ? count("fenceConflicts") : Effect.void)))
    const exhausted = () =>
      Effect.zipRight(
        count("retriesExhausted"),
        Effect.fail(
          new RetriesExhausted({ store: options.store, prefix: options.prefix, operation: options.operation, attempts })
        )
      )
    // The schedule's driver is only built once a first attempt lost; it sees every
    // conflict, the first included, exactly as `Effect.retry` would.
    return once.pipe(
      Effect.catchIf(isFenceConflict, (first) =>
        Effect.gen(function* () {
          const driver = yield* Schedule.driver(options.schedule)
          let conflict: unknown = first
          for (;;) {
            const proceed = yield* Effect.either(driver.next(conflict))
            if (proceed._tag === "Left") return yield* exhausted()
            const result = yield* Effect.either(once)
            if (result._tag === "Right") return result.right
            if (!isFenceConflict(result.left)) return yield* Effect.fail(result.left)
            conflict = result.left
          }
        })
      ),
      Effect.ensuring(Effect.suspend(() => Effect.annotateCurrentSpan("haechi.attempts", attempts)))
    ) as Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R>
  })

type CounterName = "fenceConflicts" | "retries" | "retriesExhausted"
const tagged = new Map<string, Metric.Metric.Counter<number>>()

/** The counter tagged with store and operation, built once per triple. */
const counters =
  (options: { readonly store: StoreKind; readonly operation: string }) =>
  (name: CounterName): Metric.Metric.Counter<number> => {
    const key = `${options.store}/${options.operation}/${name}`
    let counter = tagged.get(key)
    if (counter === undefined) {
      counter = Metrics.withTags(Metrics.keys[name], { store: options.store, operation: options.operation })
      tagged.set(key, counter)
    }
    return counter
  }

/** Counts a fence conflict of a single attempt run outside `retryOnConflict`. */
export const countConflict = (options: { readonly store: StoreKind; readonly operation: string }) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.tapError(effect, (e) =>
      isFenceConflict(e) ? Metric.update(counters(options)("fenceConflicts"), 1) : Effect.void
    )
