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
import { type FenceConflict, RetriesExhausted, type StoreKind } from "./Errors.js"
import * as Metrics from "./Metrics.js"
import { sleepUntilNext, stepper, type ScheduleStepper } from "./internal/schedules.js"

/** A retry schedule over fence conflicts. */
export type RetrySchedule = Schedule.Schedule<unknown, unknown>

/**
 * The default: up to 128 attempts. The first four retries are immediate, because the
 * conflict's reply carried the current state and waiting would only make it stale (and
 * hand the race to the writer that just won); then short exponential backoff from
 * 0.2 ms capped at 2 ms, jittered so that losing writers do not collide in lockstep.
 */
const retryDelays = Schedule.recurs(4).pipe(
  Schedule.andThen(
    Schedule.exponential(Duration.micros(200n), 2).pipe(
      Schedule.union(Schedule.spaced("2 millis")),
      Schedule.jitteredWith({ min: 0.5, max: 1.5 })
    )
  )
)

/** The default schedule's delays, bounded at `attempts` attempts in all (at least 1: no retry). */
export const retryScheduleFor = (attempts: number): RetrySchedule =>
  retryDelays.pipe(Schedule.intersect(Schedule.recurs(Math.max(0, Math.floor(attempts) - 1))))

export const defaultRetrySchedule: RetrySchedule = retryScheduleFor(128)

export const isFenceConflict = (error: unknown): error is FenceConflict =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "FenceConflict"

/**
 * One operation's attempts, whichever lock policy runs them: the first runs at once,
 * each later one only once `schedule` allows it (after the conflict that ended the one
 * before), else the operation fails with `RetriesExhausted`. So the schedule bounds every
 * re-attempt, a lock policy's own included (an adaptive yield or lost race, a retry under
 * the lock), and one count of conflicts, retries and attempts covers them all.
 */
export interface RetryBudget {
  /** Runs one attempt, after asking the schedule if it is not the first. */
  readonly attempt: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | RetriesExhausted, R>
  /** Runs attempts of `effect` until one does not conflict (or the schedule runs out). */
  readonly retrying: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R>
  /** Attempts started so far. */
  readonly attempts: () => number
}

interface RetryOptions {
  readonly store: StoreKind
  readonly prefix: string
  readonly operation: string
  readonly schedule: RetrySchedule
}

/**
 * Runs `use` with a fresh budget for one operation and records its attempt count on the
 * current span (`haechi.attempts`).
 */
export const withRetryBudget = <A, E, R>(
  options: RetryOptions,
  use: (budget: RetryBudget) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    const budget = makeBudget(options)
    return Effect.ensuring(
      use(budget),
      Effect.suspend(() => Effect.annotateCurrentSpan("haechi.attempts", budget.attempts()))
    )
  })

const makeBudget = (options: RetryOptions): RetryBudget => {
  const count = (name: CounterName) => Metric.update(counters(options)(name), 1)
  let attempts = 0
  // The conflict that ended the last attempt; the schedule's driver is built only once a
  // first attempt lost, and sees every conflict, the first included, as `Effect.retry` would.
  let lastConflict: FenceConflict | undefined
  let driver: ScheduleStepper<unknown> | undefined
  const exhausted = () =>
    Effect.zipRight(
      count("retriesExhausted"),
      Effect.fail(
        new RetriesExhausted({ store: options.store, prefix: options.prefix, operation: options.operation, attempts })
      )
    )
  const allowed: Effect.Effect<void, RetriesExhausted> = Effect.suspend(() => {
    if (lastConflict === undefined) return Effect.void
    const conflict = lastConflict
    driver ??= stepper(options.schedule)
    return Effect.catchAll(sleepUntilNext(driver, conflict), exhausted)
  })
  const attempt = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | RetriesExhausted, R> =>
    Effect.zipRight(
      allowed,
      Effect.suspend(() => {
        attempts += 1
        lastConflict = undefined
        return attempts > 1 ? Effect.zipRight(count("retries"), effect) : effect
      }).pipe(
        Effect.tapError((e) => {
          if (!isFenceConflict(e)) return Effect.void
          lastConflict = e
          return count("fenceConflicts")
        })
      )
    )
  const retrying = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function* () {
      for (;;) {
        const result = yield* Effect.either(attempt(effect))
        if (result._tag === "Right") return result.right
        if (!isFenceConflict(result.left)) return yield* Effect.fail(result.left)
      }
    }) as Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R>
  return { attempt, retrying, attempts: () => attempts }
}

/**
 * Runs `attempt` (given its 1-based number) and re-runs it after each fence conflict
 * while `schedule` allows; other errors end it at once.
 */
export const retryOnConflict = <A, E, R>(
  attempt: (n: number) => Effect.Effect<A, E, R>,
  options: RetryOptions
): Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R> =>
  withRetryBudget(options, (budget) => budget.retrying(Effect.suspend(() => attempt(budget.attempts()))))

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
