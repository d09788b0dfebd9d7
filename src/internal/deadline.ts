/**
 * Operation deadlines, on real time. A store operation run `within` its budget either
 * ends by itself or, when the time is up, fails at once with:
 * - `CommitOutcomeUnknown` (its `cause` an `OperationTimeout`) if a commit it sent may
 *   have landed: sent and not answered, answered as committed, or its lost reply not
 *   resolved;
 * - `OperationTimeout` naming the operation and the deadline otherwise: nothing it sent
 *   can have committed.
 * The wait the operation stands in is abandoned (its finalizers run, for example a
 * lock's release), so nothing that arrives later (a reply after a thaw) reaches its
 * continuation or the replica's cache, and nothing new is sent after the deadline.
 *
 * The timer is Node's own (`setTimeout`), never the caller's Effect `Clock`: a TestClock
 * that never advances cannot stretch a deadline, and a frozen connection, a paused or
 * sleeping Redis or a reply that never comes cannot hold an operation past it.
 *
 * Mechanism, with no fiber of its own (a child fiber per operation cost 54-142 µs of an
 * append): the operation runs on the caller's fiber with a budget in a FiberRef, and one
 * timer serves the deadlines of all runs of one store operation (`deadlineQueue.ts`). Every wait an operation makes watches that budget: a Redis call (`awaitPromise`,
 * which `RedisClient.run`/`script` use), `sleep`, and any `Clock.sleep` (a retry
 * schedule's; the Clock is wrapped for the operation, time itself still reads the
 * caller's Clock). When the timer fires, the budget decides the failure, and each wait
 * standing resumes with an interruption, which `within` turns into that failure; a wait
 * that starts later does not start (a finalizer's call, e.g. a lock release, is still
 * sent, but not waited for). A wait that is none of these (a caller's own `Deferred` in
 * an Effect `build`) ends the operation only once it returns; the Promise facade's
 * callbacks are covered: they run on fibers that carry the budget (`linked`). A Promise
 * caller can keep the same budget with no fiber at all (`callerDeadline.ts`).
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as RuntimeFlags from "effect/RuntimeFlags"
import { CommitOutcomeUnknown, InvalidConfig, OperationTimeout, type StoreKind } from "../Errors.js"
import { DeadlineQueue } from "./deadlineQueue.js"

/** The default deadline of every store operation. */
export const DEFAULT_TIMEOUT_MS = 10_000

/** Node's longest timer delay; a longer one would fire at once. */
export const MAX_TIMER_MS = 2_147_483_647

/** A timer delay Node accepts as given: negative is 0, beyond its longest delay is that delay. */
export const timerDelay = (ms: number): number => Math.min(Math.max(0, ms), MAX_TIMER_MS)

/** Epoch milliseconds on a monotonic real-time clock (not the Effect Clock, not the settable wall clock). */
export const now = (): number => performance.timeOrigin + performance.now()

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

export interface DeadlineSpec {
  /** For `CommitOutcomeUnknown`: the store and prefix whose commit may have landed. */
  readonly store?: StoreKind | undefined
  readonly prefix?: string | undefined
  /** Named in `OperationTimeout`, e.g. "audit transaction". */
  readonly operation: string
  readonly timeoutMs: number
}

/** Ends one wait at once (it resumes with `ABANDONED`). */
export type Abandon = () => void

/** One operation's budget, shared by the fibers that work for it. */
export class Budget {
  /** Commits sent whose outcome is not known yet. */
  committing = 0
  /** A commit landed, or its outcome stayed unknown: the deadline can no longer say "nothing committed". */
  maybeCommitted = false
  expired = false
  /** Decided when the timer fires, while the operation still stands where it waited. */
  failure: OperationTimeout | CommitOutcomeUnknown | undefined = undefined
  /** The waits standing now. */
  waits: Set<Abandon> | undefined = undefined
  /** Fibers other than the operation's own that work for it (the facade's `persist`). */
  linked: Set<Fiber.RuntimeFiber<unknown, unknown>> | undefined = undefined
  /** When the deadline passes, on `performance.now()`'s clock (set by its queue). */
  endsAt = 0
  /** The operation has left: its deadline will not pass. */
  done = false
  constructor(
    readonly parent: Budget | undefined,
    readonly spec: DeadlineSpec
  ) {}
}

/** The deadlines of one store operation's runs (`spec`'s), on one timer. */
export const budgetQueue = (spec: DeadlineSpec): DeadlineQueue<Budget> =>
  new DeadlineQueue(timerDelay(spec.timeoutMs), expire)

export const currentBudget = FiberRef.unsafeMake<Budget | undefined>(undefined)

/** What an abandoned wait resumes with: an interruption, which no `catchAll` or retry handles. */
const ABANDONED = Exit.interrupt(FiberId.none)

const failureOf = (spec: DeadlineSpec, budget: Budget): OperationTimeout | CommitOutcomeUnknown => {
  const timeout = new OperationTimeout({ operation: spec.operation, timeoutMs: spec.timeoutMs })
  return spec.store !== undefined && (budget.committing > 0 || budget.maybeCommitted)
    ? new CommitOutcomeUnknown({ store: spec.store, prefix: spec.prefix ?? "", cause: timeout })
    : timeout
}

/** The deadline has passed (its queue never passes one early). */
const expire = (budget: Budget) => {
  budget.expired = true
  budget.failure = failureOf(budget.spec, budget)
  const waits = budget.waits
  budget.waits = undefined
  waits?.forEach((abandon) => abandon())
  budget.linked?.forEach((fiber) => fiber.unsafeInterruptAsFork(FiberId.none))
}

export const expiredIn = (budget: Budget | undefined): boolean => {
  for (let b = budget; b !== undefined; b = b.parent) if (b.expired) return true
  return false
}

// A wait watches every budget it stands in (an operation inside another one: both).
export const watch = (budget: Budget, abandon: Abandon) => {
  for (let b: Budget | undefined = budget; b !== undefined; b = b.parent) (b.waits ??= new Set()).add(abandon)
}
export const unwatch = (budget: Budget, abandon: Abandon) => {
  for (let b: Budget | undefined = budget; b !== undefined; b = b.parent) b.waits?.delete(abandon)
}

const ignore = () => {}

/**
 * Awaits the promise `try` starts, typing a rejection with `catch` (like
 * `Effect.tryPromise`), watching the current operation's deadline: past it, the wait is
 * abandoned, and a call started after it is not started (inside a finalizer it is
 * started, not waited for). `limitMs`: give up waiting after that long, with `onLimit()`.
 * One callback and no timer of its own (unless `limitMs`): cheap on hot paths.
 */
export const awaitPromise = <A, E>(
  options: { readonly try: () => PromiseLike<A>; readonly catch: (error: unknown) => E },
  limitMs?: number,
  onLimit?: () => A
): Effect.Effect<A, E> =>
  Effect.withFiberRuntime<A, E>((fiber, status) => {
    const budget = fiber.getFiberRef(currentBudget)
    if (budget !== undefined && expiredIn(budget)) {
      if (!RuntimeFlags.interruptible(status.runtimeFlags)) {
        try {
          Promise.resolve(options.try()).then(ignore, ignore)
        } catch {
          // a finalizer's call that cannot start: nothing to wait for either way
        }
      }
      return ABANDONED
    }
    return Effect.async<A, E>((resume) => {
      let settled = false
      let timer: ReturnType<typeof setTimeout> | undefined
      const finish = () => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        if (budget !== undefined) unwatch(budget, abandon)
      }
      const abandon = () => {
        if (settled) return
        finish()
        resume(ABANDONED)
      }
      if (budget !== undefined) watch(budget, abandon)
      if (limitMs !== undefined) {
        timer = setTimeout(() => {
          if (settled) return
          finish()
          resume(Effect.succeed(onLimit!()))
        }, timerDelay(limitMs))
      }
      let call: PromiseLike<A>
      try {
        call = options.try()
      } catch (error) {
        call = Promise.reject(error)
      }
      call.then(
        (value) => {
          if (settled) return
          finish()
          resume(Effect.succeed(value))
        },
        (error: unknown) => {
          if (settled) return
          finish()
          resume(Effect.fail(options.catch(error)))
        }
      )
      return Effect.sync(finish)
    })
  })

/**
 * A wait that watches the current operation's deadline: `start` begins it and returns
 * what stops it; it ends with the first `settle`, or, once the deadline passes (already,
 * or meanwhile), is abandoned (stopped, resuming with `ABANDONED`). The one shape of
 * `sleep` and of the lock's wake-ups.
 */
export const watchedWait = <A>(start: (settle: (effect: Effect.Effect<A>) => void) => () => void): Effect.Effect<A> =>
  Effect.withFiberRuntime<A>((fiber) => {
    const budget = fiber.getFiberRef(currentBudget)
    if (budget !== undefined && expiredIn(budget)) return ABANDONED
    return Effect.async<A>((resume) => {
      let settled = false
      let stop: () => void = ignore
      const end = () => {
        settled = true
        stop()
        if (budget !== undefined) unwatch(budget, abandon)
      }
      const settle = (effect: Effect.Effect<A>) => {
        if (settled) return
        end()
        resume(effect)
      }
      const abandon = () => settle(ABANDONED)
      if (budget !== undefined) watch(budget, abandon)
      const stopping = start(settle)
      if (settled) stopping()
      else stop = stopping
      return Effect.sync(() => {
        if (!settled) end()
      })
    })
  })

/** Sleeps `ms` of real time (a timer, not the Effect Clock), watching the current operation's deadline. */
export const sleep = (ms: number): Effect.Effect<void> =>
  watchedWait<void>((settle) => {
    const timer = setTimeout(() => settle(Effect.void), timerDelay(ms))
    return () => clearTimeout(timer)
  })

/** A wait that only the deadline ends (raced against a Clock's sleep that is not real time). */
const untilExpired = (budget: Budget): Effect.Effect<never> =>
  Effect.async<never>((resume) => {
    const abandon = () => resume(ABANDONED)
    watch(budget, abandon)
    return Effect.sync(() => unwatch(budget, abandon))
  })

const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)
const DeadlineClockTypeId: unique symbol = Symbol.for("haechi-store-effect/DeadlineClock")

/**
 * `clock` whose `sleep` watches the current operation's deadline; everything else is
 * `clock`'s own (time, and a TestClock's `adjust`), through the prototype.
 */
const deadlineClock = (clock: Clock.Clock): Clock.Clock =>
  Object.create(clock, {
    [DeadlineClockTypeId]: { value: true },
    sleep: {
      value: (duration: Duration.Duration): Effect.Effect<void> =>
        Effect.withFiberRuntime<void>((fiber) => {
          const budget = fiber.getFiberRef(currentBudget)
          if (budget === undefined) return clock.sleep(duration)
          if (clock === liveClock) return sleep(Duration.toMillis(duration))
          return Effect.raceFirst(clock.sleep(duration), untilExpired(budget))
        })
    }
  }) as Clock.Clock

// The caller's services with the Clock wrapped, once per services object.
const watchedServices = new WeakMap<object, Context.Context<DefaultServices.DefaultServices>>()
export const withDeadlineClock = (
  services: Context.Context<DefaultServices.DefaultServices>
): Context.Context<DefaultServices.DefaultServices> => {
  const known = watchedServices.get(services)
  if (known !== undefined) return known
  const clock = Context.get(services, Clock.Clock)
  const watched = DeadlineClockTypeId in clock ? services : Context.add(services, Clock.Clock, deadlineClock(clock))
  watchedServices.set(services, watched)
  return watched
}

// The running fiber's own refs, swapped whole: entering sets the budget and the watched
// Clock in one copy of the fiber's refs (two `FiberRef.set`s copy them twice), and leaving
// puts back the refs it entered from when nothing else changed them meanwhile.
interface SettableFiber {
  getFiberRefs(): FiberRefs.FiberRefs
  setFiberRefs(fiberRefs: FiberRefs.FiberRefs): void
}

export const withBoth = (
  refs: FiberRefs.FiberRefs,
  id: FiberId.Single,
  budget: Budget | undefined,
  services: Context.Context<DefaultServices.DefaultServices>
): FiberRefs.FiberRefs =>
  FiberRefs.updateManyAs(refs, {
    entries: [
      [currentBudget, [[id, budget]]],
      [DefaultServices.currentServices, [[id, services]]]
    ]
  })

/**
 * `within` for a read: it marks no commit, so past the deadline it is always
 * `OperationTimeout`, never `CommitOutcomeUnknown`.
 */
export const withinRead = (spec: DeadlineSpec) =>
  within(spec) as <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | OperationTimeout, R>

/**
 * Runs `effect` within `spec.timeoutMs` of real time (see the module comment). Built
 * once per store operation (with its deadlines' timer); each run costs one small object, no fiber.
 */
export const within = (spec: DeadlineSpec, deadlines: DeadlineQueue<Budget> = budgetQueue(spec)) => {
  // `ended`: called once the operation has left (however it ended), from the step that
  // leaves it, so an observer needs no exit step of its own (see `observedWithin`).
  return <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    ended?: () => void
  ): Effect.Effect<A, E | OperationTimeout | CommitOutcomeUnknown, R> =>
    Effect.withFiberRuntime((caller) => {
      const fiber = caller as unknown as SettableFiber
      const id = caller.id()
      const parent = caller.getFiberRef(currentBudget)
      const services = caller.getFiberRef(DefaultServices.currentServices)
      const budget = new Budget(parent, spec)
      let outside: FiberRefs.FiberRefs
      let inside: FiberRefs.FiberRefs
      const leave = () => {
        deadlines.end(budget)
        const now = fiber.getFiberRefs()
        fiber.setFiberRefs(now === inside ? outside : withBoth(now, id, parent, services))
        ended?.()
      }
      return Effect.uninterruptibleMask((restore) => {
        outside = fiber.getFiberRefs()
        inside = withBoth(outside, id, budget, withDeadlineClock(services))
        fiber.setFiberRefs(inside)
        deadlines.start(budget)
        return Effect.matchCauseEffect(restore(effect), {
          onFailure: (cause): Effect.Effect<A, E | OperationTimeout | CommitOutcomeUnknown> => {
            leave()
            return budget.expired ? Effect.fail(budget.failure!) : Effect.failCause(cause)
          },
          onSuccess: (value): Effect.Effect<A, E | OperationTimeout | CommitOutcomeUnknown> => {
            leave()
            return budget.expired ? Effect.fail(budget.failure!) : Effect.succeed(value)
          }
        })
      })
    })
}

/** `within` for an operation that commits nothing (a read, a probe, a check): fails with `OperationTimeout` only. */
export const timeoutAfter = (operation: string, timeoutMs: number) => {
  const bound = within({ operation, timeoutMs })
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | OperationTimeout, R> =>
    bound(effect) as Effect.Effect<A, E | OperationTimeout, R>
}

/** `effect`, then `replied` however it ends (nothing more when there is none: no finalizer on the hot path). */
export const endingWith = <A, E, R>(effect: Effect.Effect<A, E, R>, replied: Effect.Effect<void> | undefined) =>
  replied === undefined ? effect : Effect.ensuring(effect, replied)

export const markAll = (budget: Budget | undefined, f: (b: Budget) => void) => {
  for (let b = budget; b !== undefined; b = b.parent) f(b)
}

const isCommitOutcomeUnknown = <A, E>(exit: Exit.Exit<A, E>): boolean =>
  exit._tag === "Failure" &&
  exit.cause._tag === "Fail" &&
  (exit.cause.error as { _tag?: unknown } | null)?._tag === "CommitOutcomeUnknown"

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
        const stays = exit._tag === "Success" ? landed(exit.value) : isCommitOutcomeUnknown(exit)
        markAll(budget, (b) => {
          b.committing -= 1
          if (stays) b.maybeCommitted = true
        })
      })
    )
  })

/**
 * Runs `effect` (on a fiber of its own, e.g. a Promise caller's) as part of the current
 * operation: its waits watch the operation's deadline (the budget comes with the runtime
 * captured inside the operation), and the fiber is interrupted when it passes, wherever
 * it waits. Elsewhere it does nothing. A ready value (an `Exit`, such as a cached head)
 * waits for nothing, so it is returned as it is: a Promise caller can settle it without
 * running a fiber.
 */
export const linked = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Exit.isExit(effect) ? effect : linkedToBudget(effect)

const linkedToBudget = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const budget = fiber.getFiberRef(currentBudget)
    if (budget === undefined) return effect
    if (expiredIn(budget)) return Effect.interrupt
    const self = fiber as Fiber.RuntimeFiber<unknown, unknown>
    markAll(budget, (b) => (b.linked ??= new Set()).add(self))
    return Effect.ensuring(
      effect,
      Effect.sync(() => markAll(budget, (b) => b.linked?.delete(self)))
    )
  })
