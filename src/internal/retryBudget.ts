/**
 * The loop that spends an operation's retry schedule (see Retry.ts): every re-attempt,
 * under every lock policy, is one the schedule allowed, and one count of conflicts,
 * retries and attempts covers them all.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Tracer from "effect/Tracer"
import { type FenceConflict, RetriesExhausted, type StoreKind } from "../Errors.js"
import { currentBudget, expiredIn } from "./deadline.js"
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
 * current span (`haechi.attempts`). `first`: the operation's first attempt was made
 * already (by a Promise caller, see `StoreGuard.freeClaim`) and lost with this conflict,
 * which is counted here; the budget goes on from there.
 */
export const withRetryBudget = <A, E, R>(
  options: RetryOptions,
  use: (budget: RetryBudget) => Effect.Effect<A, E, R>,
  first?: FenceConflict
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const budget = makeBudget(options, first)
    const used = useOn(fiber.currentContext, budget, use)
    return first === undefined ? used : Effect.zipRight(budget.lost, used)
  })

const useOn = <A, E, R>(
  context: Context.Context<never>,
  budget: RetryBudget & { readonly lost: Effect.Effect<void> },
  use: (budget: RetryBudget) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  // The span the count goes on is the one current now (nothing in `use` changes it
  // for this fiber): none (no tracer), no finalizer either.
  const span = spanIn(context)
  if (span === undefined) return use(budget)
  return Effect.ensuring(
    use(budget),
    Effect.sync(() => span.attribute("haechi.attempts", budget.attempts()))
  )
}

// The current span, read from the context: `Effect.annotateCurrentSpan` fails (and ignores)
// a `NoSuchElementException`, stack trace included, on every operation run without a span.
const spanIn = (context: Context.Context<never>): Tracer.Span | undefined => {
  const span = Context.getOrElse(context as Context.Context<Tracer.ParentSpan>, Tracer.ParentSpan, () => undefined)
  return span !== undefined && span._tag === "Span" ? span : undefined
}

const makeBudget = (options: RetryOptions, first?: FenceConflict) => {
  const count = (name: CounterName) => Metric.update(counters(options)(name), 1)
  let attempts = first === undefined ? 0 : 1
  // The conflict that ended the last attempt; the schedule's driver is built only once a
  // first attempt lost, and sees every conflict, the first included, as `Effect.retry` would.
  let lastConflict: FenceConflict | undefined = first
  let driver: ScheduleStepper<unknown> | undefined
  const exhausted = () =>
    Effect.zipRight(
      count("retriesExhausted"),
      Effect.fail(
        new RetriesExhausted({ store: options.store, prefix: options.prefix, operation: options.operation, attempts })
      )
    )
  const noted = (e: unknown) => {
    if (!isFenceConflict(e)) return Effect.void
    lastConflict = e
    return count("fenceConflicts")
  }
  const started = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    attempts += 1
    lastConflict = undefined
    return Effect.tapError(attempts > 1 ? Effect.zipRight(count("retries"), effect) : effect, noted)
  }
  // A re-attempt past the operation's deadline is not started (the caller's build would run
  // again for nothing): it ends as a wait standing then would, with the deadline's failure.
  const startedInTime = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) =>
      expiredIn(fiber.getFiberRef(currentBudget)) ? Effect.interrupt : started(effect)
    )
  // The schedule is asked only after a conflict: a first attempt is just its effect.
  const attempt = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | RetriesExhausted, R> =>
    Effect.suspend(() => {
      const conflict = lastConflict
      if (conflict === undefined) return started(effect)
      driver ??= stepper(options.schedule)
      return Effect.zipRight(Effect.catchAll(sleepUntilNext(driver, conflict), exhausted), startedInTime(effect))
    })
  const retrying = <A, E, R>(effect: Effect.Effect<A, E, R>) => {
    const loop: Effect.Effect<A, E | RetriesExhausted, R> = Effect.catchIf(
      attempt(effect),
      isFenceConflict,
      () => loop
    ) as Effect.Effect<A, E | RetriesExhausted, R>
    return loop as Effect.Effect<A, Exclude<E, FenceConflict> | RetriesExhausted, R>
  }
  // (`lost`: the count of a first attempt made before the budget, which lost.)
  return { attempt, retrying, attempts: () => attempts, lost: count("fenceConflicts") }
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
