/**
 * A lease's renewal: extends the TTL with a compare-and-extend for as long as the lease
 * is held, and reports a lease it can no longer vouch for (gone, someone else's, or past
 * its TTL without a confirmed extension) on the lease's loss signal.
 *
 * The renewal fiber starts when the first extension is due: most holds end long before,
 * and a fiber forked per lease cost more than a timer.
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import { type RedisClientShape } from "../../RedisClient.js"
import { timerDelay } from "../deadline.js"
import { now, sleep } from "../deadline.js"
import { extend } from "./commands.js"
import type { LossSignal } from "./loss.js"
import type { ResolvedLockOptions } from "./options.js"

/** What one renewal needs: whose lease, on which key, since when, and where to report a loss. */
export interface RenewalOf {
  readonly redis: RedisClientShape
  readonly key: string
  readonly token: string
  readonly options: ResolvedLockOptions
  /** When the acquire that took the lock was sent: its TTL counts from there. */
  readonly sentAt: number
  readonly lost: LossSignal
}

/** Extends the TTL for as long as it runs; reports a loss on `lost` and ends. */
const keepAlive = ({ key, lost, options: o, redis, sentAt, token }: RenewalOf) =>
  Effect.gen(function* () {
    const errorRetryMs = Math.min(o.renewMs, Math.max(o.ttlMs / 10, 10))
    let nextRenewAt = sentAt + o.renewMs
    let unreachable = false
    for (;;) {
      const at = now()
      const validUntil = lost.validUntil
      if (at >= validUntil) return yield* lost.fail(unreachable ? "unreachable" : "expired")
      if (at < nextRenewAt) {
        yield* sleep(Math.min(nextRenewAt, validUntil) - at)
        continue
      }
      const result = yield* Effect.either(extend(redis, key, token, o.ttlMs, validUntil - at))
      if (result._tag === "Right") {
        if (result.right === 0) return yield* lost.fail("expired")
        if (result.right !== 1) return yield* lost.fail("taken")
        lost.validUntil = at + o.ttlMs
        nextRenewAt = at + o.renewMs
        unreachable = false
      } else {
        unreachable = true
        nextRenewAt = now() + errorRetryMs
      }
    }
  })

/** A renewal that starts on a timer when the first extension is due; `halt` (and interrupting what it returns) ends it. */
export class Renewal {
  private startTimer: ReturnType<typeof setTimeout> | undefined
  private fiber: Fiber.RuntimeFiber<void> | undefined

  /**
   * Schedules the renewal. It runs interruptible even when the lock was acquired in an
   * uninterruptible region (acquireRelease), whose flags the runtime carries and where it
   * would otherwise keep its interruption from finishing. (A renewal due beyond Node's longest
   * timer starts early and sleeps on from there.)
   */
  start(runtime: Runtime.Runtime<never>, of: RenewalOf): void {
    const o = of.options
    this.startTimer = setTimeout(
      () => {
        this.fiber = Runtime.runFork(runtime, Effect.interruptible(keepAlive(of)))
      },
      timerDelay(of.sentAt + Math.min(o.renewMs, o.ttlMs) - now())
    )
  }

  /** Cancels the start; the renewal fiber, if it runs already, is what is left to interrupt. */
  halt(): Fiber.RuntimeFiber<void> | undefined {
    clearTimeout(this.startTimer)
    return this.fiber
  }
}
