/**
 * Running an Effect for a Promise caller: the promise rejects with the failure exactly
 * as it was raised (our tagged error instances, or whatever the caller's `fn` threw),
 * never a FiberFailure and never the span-annotated proxy Effect keeps internally.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import { awaitPromise } from "../deadline.js"

/** The failure of `cause` as it was raised; a defect or interruption otherwise. */
export const originalFailure = (cause: Cause.Cause<unknown>): unknown =>
  Cause.originalError(Option.getOrElse(Cause.failureOption(cause), () => Cause.squash(cause)))

/** Runs effects on `runtime`, rejecting with `originalFailure`. */
export const promiseRunner =
  (runtime: Runtime.Runtime<never> = Runtime.defaultRuntime) =>
  <A>(effect: Effect.Effect<A, unknown>): Promise<A> =>
    Runtime.runPromiseExit(runtime)(effect).then((exit) =>
      Exit.isSuccess(exit) ? exit.value : Promise.reject(originalFailure(exit.cause))
    )

/** An Exit as a settled promise: its value, or a rejection with `originalFailure`. */
export const settleExit = <A>(exit: Exit.Exit<A, unknown>): Promise<A> =>
  Exit.isSuccess(exit) ? Promise.resolve(exit.value) : Promise.reject(originalFailure(exit.cause))

/** Runs a synchronous effect, throwing `originalFailure`. */
export const runSyncOrThrow = <A>(effect: Effect.Effect<A, unknown>): A => {
  const exit = Effect.runSyncExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  throw originalFailure(exit.cause)
}

/**
 * Like `promiseRunner`, but runs synchronously as far as it can: an effect that needs no
 * I/O (a cached value) settles without scheduling a fiber; one that does is joined.
 */
export const fastPromiseRunner = (runtime: Runtime.Runtime<never> = Runtime.defaultRuntime) => {
  const runSync = Runtime.runSyncExit(runtime)
  const runPromise = Runtime.runPromiseExit(runtime)
  return <A>(effect: Effect.Effect<A, unknown>): Promise<A> => {
    const exit = runSync(effect)
    if (Exit.isFailure(exit)) {
      const died = Cause.dieOption(exit.cause)
      if (Option.isSome(died) && Runtime.isAsyncFiberException(died.value)) {
        return runPromise(Fiber.join(died.value.fiber as Fiber.Fiber<A, unknown>)).then(settleExit)
      }
    }
    return settleExit(exit)
  }
}

/**
 * A thrown value from the caller's `fn`, passed through untouched (a FenceConflict stays
 * retryable). `fn` is called when the effect runs; a value it returns (not a promise)
 * settles at once, a promise is awaited with one callback (no `async` wrapper around it),
 * watching the operation's deadline: past it the operation ends without waiting for `fn`
 * (whose later calls then send nothing).
 */
export const fromCaller = <A>(fn: () => Promise<A> | A): Effect.Effect<A, unknown> =>
  Effect.suspend(() => {
    let result: Promise<A> | A
    try {
      result = fn()
    } catch (error) {
      return Effect.fail(error)
    }
    if (!isThenable(result)) return Effect.succeed(result)
    // (`Promise.resolve`: a thenable's `then` that throws rejects, as on the lane; a
    // native promise is itself.)
    const pending = result
    return awaitPromise({ try: () => Promise.resolve(pending), catch: passThrough })
  })

const passThrough = (error: unknown): unknown => error

export const isThenable = <A>(value: PromiseLike<A> | A): value is PromiseLike<A> =>
  (typeof value === "object" || typeof value === "function") &&
  value !== null &&
  typeof (value as { then?: unknown }).then === "function"
