/**
 * A lease's loss, never silent: set once (by its renewal, or by `check` when the work
 * ends), then logged, counted, announced to the work awaiting it and to its AbortSignal.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { LockLost } from "../../Errors.js"
import { now } from "../deadline.js"
import type { Lease } from "./contract.js"
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
  /** Whether `check` would succeed now (no loss set, not past `validUntil`): then it need not run. */
  readonly sound: () => boolean
}

const announce = (key: string, reason: LockLost["reason"]) =>
  Effect.zipRight(Effect.logWarning(`lock ${key} lost (${reason})`), Metric.increment(locksLostOf(key)))

/**
 * A plain callback list: a Deferred per lease cost about 14 µs of a 300 µs lock cycle.
 * One object per lease; its effects are made when asked for (most leases are never lost).
 */
class Loss implements LossSignal {
  private loss: LockLost | undefined
  private controller: AbortController | undefined
  private waiters: Set<(loss: Effect.Effect<never, LockLost>) => void> | undefined

  constructor(
    private readonly key: string,
    public validUntil: number
  ) {}

  private set(reason: LockLost["reason"]): boolean {
    if (this.loss !== undefined) return false
    const loss = (this.loss = new LockLost({ key: this.key, reason }))
    const failed = Effect.fail(loss)
    this.waiters?.forEach((resume) => resume(failed))
    this.waiters = undefined
    this.controller?.abort(loss)
    return true
  }

  fail(reason: LockLost["reason"]): Effect.Effect<void> {
    return Effect.suspend(() => (this.set(reason) ? announce(this.key, reason) : Effect.void))
  }

  get await(): Effect.Effect<never, LockLost> {
    return Effect.async<never, LockLost>((resume) => {
      if (this.loss !== undefined) return resume(Effect.fail(this.loss))
      const waiters = (this.waiters ??= new Set())
      waiters.add(resume)
      return Effect.sync(() => {
        waiters.delete(resume)
      })
    })
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController()
      if (this.loss !== undefined) this.controller.abort(this.loss)
    }
    return this.controller.signal
  }

  get check(): Effect.Effect<void, LockLost> {
    return Effect.suspend(() => {
      if (this.loss === undefined && now() >= this.validUntil)
        // (The loss is read once `fail` has set it: built eagerly, it was still undefined.)
        return Effect.zipRight(
          this.fail("expired"),
          Effect.suspend(() => Effect.fail(this.loss!))
        )
      return this.loss === undefined ? Effect.void : Effect.fail(this.loss)
    })
  }

  sound(): boolean {
    return this.loss === undefined && now() < this.validUntil
  }
}

export const lossSignal = (key: string, validUntil: number): LossSignal => new Loss(key, validUntil)

// Classes, not object literals with getters: a literal's getters are new closures each
// time, so every lease got a hidden class of its own, which kept its whole lock cycle
// alive through every GC scavenge until a full GC (about 0.7 MB more survivors per
// scavenge, and longer scavenges in the hand-off's tail).

/** A lease over its loss signal. */
export class LeaseOf implements Lease {
  constructor(
    readonly key: string,
    readonly token: string,
    readonly fence: number,
    private readonly loss: LossSignal
  ) {}

  get lost(): Effect.Effect<never, LockLost> {
    return this.loss.await
  }

  get signal(): AbortSignal {
    return this.loss.signal
  }
}

/** What the Promise facade's `fn` gets: the loss signal's `signal` (its AbortController made on first read). */
export class SignalOf {
  constructor(private readonly loss: LossSignal) {}

  get signal(): AbortSignal {
    return this.loss.signal
  }
}
