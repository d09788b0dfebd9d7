/**
 * Waiting for a lock: attempts (each one round trip, which also queues the waiter for a
 * hand-off), woken by a release message or the bounded poll, until the lock is ours or
 * the wait runs out (`LockTimeout`, fail closed).
 *
 * Waiting does not spin: a release PUBLISHes on `<lock key>:released`, and a waiter
 * listens there; a hand-off addressed to it makes it the holder with no round trip. The
 * poll (`retrySchedule`) covers a missed message, a holder whose TTL lapsed, and
 * haechi-store-redis holders, which never publish.
 *
 * Timing runs on real time, never the caller's Clock: Redis's TTL runs on real time, so
 * waits and deadlines measured on a TestClock would let two holders overlap.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { LockTimeout, type RedisError } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { now } from "../deadline.js"
import { ATTEMPT_FLOOR_MS, tryAcquire } from "./commands.js"
import type { Wakeup } from "./contract.js"
import type { LossSignal } from "./loss.js"
import { releaseChannelOf } from "./keys.js"
import { lockWaitOf } from "./metrics.js"
import type { ResolvedLockOptions } from "./options.js"
import { handedFence, handedSince, handOffWindowMs, type ReleaseSubscriber } from "./releases.js"
import { stepper, type ScheduleStepper } from "../schedules.js"

/** The lock taken: its fence, and when the attempt that took it was sent (its TTL counts from there). */
export interface Taken {
  readonly fence: number
  readonly sentAt: number
}

/** One wait for one lock by one token, from its first attempt to the lock or the deadline. */
export class Acquisition {
  /** Real time the wait started. */
  readonly start = now()
  readonly deadline: number
  /** Whether an attempt was sent: then the lock may be ours, or we may be queued. */
  sent = false
  /** When the last attempt was sent (a hand-off after it starts its lease no earlier). */
  private lastSentAt = 0
  /** The highest fence counter an attempt was refused at: a hand-off at or below it is stale. */
  private refusedFence = 0

  constructor(
    readonly redis: RedisClientShape,
    readonly wakeups: ReleaseSubscriber,
    readonly key: string,
    readonly token: string,
    readonly options: ResolvedLockOptions
  ) {
    this.deadline = this.start + options.waitMs
  }

  /** The lease's loss signal, once the lock is held. */
  lost: LossSignal | undefined

  /** Until when the lease is vouched for (0 before it is held). */
  vouchedUntil(): number {
    return this.lost?.validUntil ?? 0
  }

  /** Milliseconds waited so far. */
  waited(): number {
    return now() - this.start
  }

  /** The listener for release messages, from the first wait (or before the first attempt) on. */
  private wakeup: Wakeup | undefined

  /**
   * Stops listening for release messages (idempotent). The caller runs it when `take`
   * ends, whichever way (`acquireHeld`'s exit handler): one place instead of an
   * `onExit`/`ensuring` per wait, which cost about 2.5 KB each.
   */
  close(): void {
    this.wakeup?.close()
    this.wakeup = undefined
  }

  /** The lock, at once or after waiting for it; `close` when it ends. Call it when the effect is to run. */
  take(): Effect.Effect<Taken, LockTimeout | RedisError> {
    // On a channel already subscribed, listen before the first attempt, so a hand-off
    // that comes right after it is not missed. (On a new one, the subscription becoming
    // active wakes the waiter, which then tries again: nothing is missed either.)
    const channel = releaseChannelOf(this.key)
    if (this.wakeups.isLive(channel)) this.wakeup = this.wakeups.open(channel, this.token)
    return Effect.flatMap(this.attempt, (first) => (first.fence > 0 ? Effect.succeed(first) : this.wait()))
  }

  /** The wait ran out: counted as a lock wait, then `LockTimeout`. */
  private readonly timedOut = Effect.suspend(() => {
    const waitedMs = this.waited()
    return Effect.zipRight(Metric.update(lockWaitOf(this.key), waitedMs), new LockTimeout({ key: this.key, waitedMs }))
  })

  /** One acquire attempt: a fence of 0 or less when someone else holds the lock (then we are queued). */
  private readonly attempt: Effect.Effect<Taken, LockTimeout | RedisError> = Effect.suspend(() => {
    const sentAt = now()
    this.sent = true
    this.lastSentAt = sentAt
    return Effect.flatMap(
      tryAcquire(
        this.redis,
        this.key,
        this.token,
        this.options.ttlMs,
        this.deadline - sentAt,
        Math.max(this.deadline - sentAt, ATTEMPT_FLOOR_MS)
      ),
      (fence) => {
        if (fence === undefined) return this.timedOut
        if (fence <= 0) {
          this.refusedFence = Math.max(this.refusedFence, -fence)
          this.wakeup?.attemptRefused()
        }
        return Effect.succeed({ fence, sentAt })
      }
    )
  })

  /**
   * Waits for a release message, or the poll schedule's next step, or the deadline,
   * whichever comes first, then tries again: one timer and one callback per wait, no fibers.
   */
  private wait(): Effect.Effect<Taken, LockTimeout | RedisError> {
    if (now() >= this.deadline) return this.timedOut
    const wakeup = (this.wakeup ??= this.wakeups.open(releaseChannelOf(this.key), this.token))
    return this.waitStep(stepper(this.options.retrySchedule), wakeup)
  }

  /** One turn of the wait: the next poll step, a wake-up or its timer, then a hand-off or an attempt. */
  private waitStep(polls: ScheduleStepper<unknown>, wakeup: Wakeup): Effect.Effect<Taken, LockTimeout | RedisError> {
    const at = now()
    if (at >= this.deadline) return this.timedOut
    return Effect.flatMap(polls.next(at, undefined), (pollAt) =>
      pollAt === undefined
        ? this.timedOut
        : Effect.flatMap(wakeup.next(Math.min(pollAt, this.deadline) - at), (woken) => {
            // Handed to us by the release: ours already, no round trip.
            const since = handedSince(
              woken,
              this.token,
              this.lastSentAt,
              this.refusedFence,
              handOffWindowMs(this.options),
              now()
            )
            if (since !== undefined) return Effect.succeed({ fence: handedFence(woken!, this.token), sentAt: since })
            return Effect.flatMap(this.attempt, (got) =>
              got.fence > 0 ? Effect.succeed(got) : this.waitStep(polls, wakeup)
            )
          })
    )
  }
}
