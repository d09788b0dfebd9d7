/**
 * A lease's loss, never silent: set once (by its renewal, or by `check` when the work
 * ends), then logged, counted, announced to the work awaiting it and to its AbortSignal.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { LockLost } from "../../Errors.js"
import { now } from "../deadline.js"
import { locksLostOf } from "./metrics.js"

/** A lease's state: until when it is vouched for, and its loss, awaited by the work it guards. */
export interface LossSignal {
  /** Real time until which the last confirmed acquire or extension keeps the lock ours. */
  validUntil: number
  /** Sets the loss (once: it is logged, counted and announced). */
  readonly fail: (reason: LockLost["reason"]) => Effect.Effect<void>
  /** Fails with the loss once it is set; never succeeds. */
  readonly await: Effect.Effect<never, LockLost>
  /** Aborted with the `LockLost` when the loss is set (made on first use). */
  readonly signal: AbortSignal
  /**
   * Fails with the loss if it is set or the lease is past `validUntil` now: the renewal
   * cannot have vouched for it (an event loop blocked past the TTL runs no timer).
   */
  readonly check: Effect.Effect<void, LockLost>
}

const announce = (key: string, reason: LockLost["reason"]) =>
  Effect.zipRight(Effect.logWarning(`lock ${key} lost (${reason})`), Metric.increment(locksLostOf(key)))

/** A plain callback list: a Deferred per lease cost about 14 µs of a 300 µs lock cycle. */
export const lossSignal = (key: string, validUntil: number): LossSignal => {
  let loss: LockLost | undefined
  let controller: AbortController | undefined
  const waiters = new Set<(loss: Effect.Effect<never, LockLost>) => void>()
  const set = (reason: LockLost["reason"]) => {
    if (loss !== undefined) return false
    loss = new LockLost({ key, reason })
    const failed = Effect.fail(loss)
    waiters.forEach((resume) => resume(failed))
    waiters.clear()
    controller?.abort(loss)
    return true
  }
  const state: LossSignal = {
    validUntil,
    fail: (reason) => Effect.suspend(() => (set(reason) ? announce(key, reason) : Effect.void)),
    await: Effect.async<never, LockLost>((resume) => {
      if (loss !== undefined) return resume(Effect.fail(loss))
      waiters.add(resume)
      return Effect.sync(() => {
        waiters.delete(resume)
      })
    }),
    get signal() {
      if (controller === undefined) {
        controller = new AbortController()
        if (loss !== undefined) controller.abort(loss)
      }
      return controller.signal
    },
    check: Effect.suspend(() => {
      if (loss === undefined && now() >= state.validUntil)
        return Effect.zipRight(state.fail("expired"), Effect.fail(loss!))
      return loss === undefined ? Effect.void : Effect.fail(loss)
    })
  }
  return state
}
