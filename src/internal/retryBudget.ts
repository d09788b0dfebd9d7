/**
 * The loop that spends an operation's retry schedule (see Retry.ts): every re-attempt,
 * under every lock policy, is one the schedule allowed, and one count of conflicts,
 * retries and attempts covers them all.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { type FenceConflict, RetriesExhausted, type StoreKind } from "../Errors.js"
import * as Metrics from "../Metrics.js"
import type { RetrySchedule } from "../Retry.js"
import { sleepUntilNext, stepper, type ScheduleStepper } from "./schedules.js"
import { withTags } from "./metricTags.js"

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
      Effect.withFiberRuntime<void>((fiber) => {
        // (Effect.annotateCurrentSpan fails with an exception, and captures its stack,
        // when there is no span: on every operation under the native tracer.)
        const span = Context.getOption(fiber.getFiberRef(FiberRef.currentContext), Tracer.ParentSpan)
        if (Option.isSome(span) && span.value._tag === "Span")
          span.value.attribute("haechi.attempts", budget.attempts())
        return Effect.void
      })
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

type CounterName = "fenceConflicts" | "retries" | "retriesExhausted"
const tagged = new Map<string, Metric.Metric.Counter<number>>()

/** The counter tagged with store and operation, built once per triple. */
const counters =
  (options: { readonly store: StoreKind; readonly operation: string }) =>
  (name: CounterName): Metric.Metric.Counter<number> => {
    const key = `${options.store}/${options.operation}/${name}`
    let counter = tagged.get(key)
    if (counter === undefined) {
      counter = withTags(Metrics.keys[name], { store: options.store, operation: options.operation })
      tagged.set(key, counter)
    }
    return counter
  }
