/**
 * Operation deadlines, on real time. A store operation run `within` its budget either
 * ends by itself or, when the time is up, fails at once with:
 * - `CommitOutcomeUnknown` (its `cause` an `OperationTimeout`) if a commit it sent may
 *   have landed: sent and not answered, answered as committed, or its lost reply not
 *   resolved;
 * - `OperationTimeout` naming the operation and the deadline otherwise: nothing it sent
 *   can have committed.
 * The operation is interrupted where it waits (its finalizers run, for example a lock's
 * release), so nothing that arrives later (a reply after a thaw) reaches its
 * continuation or the replica's cache.
 *
 * The timer is Node's own (`setTimeout`), never the caller's Effect `Clock`: a TestClock
 * that never advances cannot stretch a deadline, and a frozen connection, a paused or
 * sleeping Redis or a reply that never comes cannot hold an operation past it.
 *
 * Mechanism: the operation runs in one child fiber; the caller's fiber waits for it or
 * for the timer, whichever is first. Commits mark the budget (`committing`), which a
 * fiber inherits through a FiberRef: the Promise facade runs `persist` on a runtime
 * captured inside the operation, so its fiber marks the same budget and is interrupted
 * with it (`linked`).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as RuntimeFlags from "effect/RuntimeFlags"
import { CommitOutcomeUnknown, InvalidConfig, OperationTimeout, type StoreKind } from "../Errors.js"
import { timerDelay } from "../RedisClient.js"

/** The default deadline of every store operation. */
export const DEFAULT_TIMEOUT_MS = 10_000

/** Epoch milliseconds on a monotonic real-time clock (not the Effect Clock, not the settable wall clock). */
export const now = (): number => performance.timeOrigin + performance.now()

/** Sleeps `ms` of real time (a timer, not the Effect Clock). */
export const sleep = (ms: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), timerDelay(ms))
    return Effect.sync(() => clearTimeout(timer))
  })

/** Validates a `timeout` option: a finite Duration of at least 1 ms (a number is ms); undefined is the default. */
export const timeoutMsOf = (
  input: unknown,
  option = "timeout",
  defaultMs = DEFAULT_TIMEOUT_MS
): Effect.Effect<number, InvalidConfig> =>
  Effect.suspend(() => {
    if (input === undefined) return Effect.succeed(defaultMs)
    const decoded = Duration.decodeUnknown(input)
    const ms = decoded._tag === "Some" ? Duration.toMillis(decoded.value) : Number.NaN
    return Number.isFinite(ms) && ms >= 1
      ? Effect.succeed(Math.ceil(ms))
      : Effect.fail(
          new InvalidConfig({
            option,
            reason: `must be a finite duration of at least 1 ms (a number is ms), got ${describe(input)}`
          })
        )
  })

/** Like `timeoutMsOf`, for the synchronous store makers: an invalid value throws the `InvalidConfig`. */
export const unsafeTimeoutMsOf = (input: unknown, option = "timeout"): number => {
  const exit = Effect.runSyncExit(timeoutMsOf(input, option))
  if (Exit.isSuccess(exit)) return exit.value
  throw Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : new Error(`invalid ${option}`)
}

const describe = (input: unknown): string => {
  if (typeof input === "string") return JSON.stringify(input)
  if (typeof input === "number" || typeof input === "bigint" || typeof input === "boolean") return String(input)
  return Duration.isDuration(input) ? Duration.format(input) : typeof input
}

/** One operation's budget, shared by the fibers that work for it. */
interface Budget {
  readonly parent: Budget | undefined
  /** Commits sent whose outcome is not known yet. */
  committing: number
  /** A commit landed, or its outcome stayed unknown: the deadline can no longer say "nothing committed". */
  maybeCommitted: boolean
  expired: boolean
  /** Fibers other than the operation's own that work for it (the facade's `persist`). */
  linked: Set<Fiber.RuntimeFiber<unknown, unknown>> | undefined
}

const currentBudget = FiberRef.unsafeMake<Budget | undefined>(undefined)

export interface DeadlineSpec {
  /** For `CommitOutcomeUnknown`: the store and prefix whose commit may have landed. */
  readonly store?: StoreKind | undefined
  readonly prefix?: string | undefined
  /** Named in `OperationTimeout`, e.g. "audit transaction". */
  readonly operation: string
  readonly timeoutMs: number
}

const failureOf = (spec: DeadlineSpec, budget: Budget): OperationTimeout | CommitOutcomeUnknown => {
  const timeout = new OperationTimeout({ operation: spec.operation, timeoutMs: spec.timeoutMs })
  return spec.store !== undefined && (budget.committing > 0 || budget.maybeCommitted)
    ? new CommitOutcomeUnknown({ store: spec.store, prefix: spec.prefix ?? "", cause: timeout })
    : timeout
}

/**
 * `within` for a read: it marks no commit, so past the deadline it is always
 * `OperationTimeout`, never `CommitOutcomeUnknown`.
 */
export const withinRead = (spec: DeadlineSpec) =>
  within(spec) as <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | OperationTimeout, R>

/**
 * Runs `effect` within `spec.timeoutMs` of real time (see the module comment). Built
 * once per store operation; each run costs one child fiber and one timer.
 */
export const within = (spec: DeadlineSpec) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | OperationTimeout | CommitOutcomeUnknown, R> =>
    Effect.withFiberRuntime((caller, status) => {
      const budget: Budget = {
        parent: caller.getFiberRef(currentBudget),
        committing: 0,
        maybeCommitted: false,
        expired: false,
        linked: undefined
      }
      // The child's own FiberRef, set as it starts (no restore: the fiber ends with the
      // operation and is never joined). Cheaper than `Effect.locally`, which is a bracket.
      const started = Effect.zipRight(FiberRef.set(currentBudget, budget), effect)
      // The timer must be able to interrupt it: interruptible even under an uninterruptible caller.
      const child = RuntimeFlags.interruption(status.runtimeFlags) ? started : Effect.interruptible(started)
      return Effect.flatMap(Effect.fork(child), (fiber) =>
        Effect.async<A, E | OperationTimeout | CommitOutcomeUnknown>((resume) => {
          const observer = (exit: Exit.Exit<A, E>) => {
            clearTimeout(timer)
            if (!budget.expired) resume(exit)
          }
          const timer = setTimeout(() => {
            budget.expired = true
            fiber.removeObserver(observer)
            // Decided now, while the operation still stands where it waited.
            resume(Effect.fail(failureOf(spec, budget)))
            fiber.unsafeInterruptAsFork(caller.id())
            budget.linked?.forEach((other) => other.unsafeInterruptAsFork(caller.id()))
          }, timerDelay(spec.timeoutMs))
          fiber.addObserver(observer)
          return Effect.suspend(() => {
            clearTimeout(timer)
            fiber.removeObserver(observer)
            return Fiber.interrupt(fiber)
          })
        })
      )
    })

/** `within` for an operation that commits nothing (a read, a probe, a check): fails with `OperationTimeout` only. */
export const timeoutAfter = (operation: string, timeoutMs: number) => {
  const bound = within({ operation, timeoutMs })
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | OperationTimeout, R> =>
    bound(effect) as Effect.Effect<A, E | OperationTimeout, R>
}

const markAll = (budget: Budget | undefined, f: (b: Budget) => void) => {
  for (let b = budget; b !== undefined; b = b.parent) f(b)
}

/**
 * Marks the current operation's budget while a commit is in flight (sent, or its lost
 * reply being resolved): a deadline meanwhile fails with `CommitOutcomeUnknown`. Once it
 * ends, `landed` says whether the commit took effect (then the mark stays); a failure
 * that is itself `CommitOutcomeUnknown` keeps it too. Outside a budget it does nothing.
 */
export const committing = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  landed: (value: A) => boolean
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const budget = fiber.getFiberRef(currentBudget)
    if (budget === undefined) return effect
    markAll(budget, (b) => (b.committing += 1))
    return Effect.onExit(effect, (exit) =>
      Effect.sync(() => {
        const stays = Exit.isSuccess(exit)
          ? landed(exit.value)
          : Exit.isFailure(exit) && exit.cause._tag === "Fail" && (exit.cause.error as { _tag?: unknown })?._tag === "CommitOutcomeUnknown"
        markAll(budget, (b) => {
          b.committing -= 1
          if (stays) b.maybeCommitted = true
        })
      })
    )
  })

/**
 * Runs `effect` (on a fiber of its own, e.g. a Promise caller's) as part of the current
 * operation: it is interrupted when the operation's deadline passes. For a fiber started
 * on a runtime captured inside the operation; elsewhere it does nothing.
 */
export const linked = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const budget = fiber.getFiberRef(currentBudget)
    if (budget === undefined) return effect
    if (budget.expired) return Effect.interrupt
    const self = fiber as Fiber.RuntimeFiber<unknown, unknown>
    markAll(budget, (b) => (b.linked ??= new Set()).add(self))
    return Effect.ensuring(effect, Effect.sync(() => markAll(budget, (b) => b.linked?.delete(self))))
  })
