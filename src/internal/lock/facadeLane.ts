/**
 * One `withRedisLock` call with no fiber: the acquire, the wait for the hand-off to its
 * token or the next poll, the hold with its renewal and loss signal, and the release,
 * with the same scripts, queue, hand-off messages, counts and errors as RedisLock's
 * `withLease` under the facade's options (`acquire.ts`, `held.ts`, `handle.ts`). Effect
 * runs only where a cycle rarely goes: a renewal that comes due, a loss found once `fn`
 * settled, a release that failed (logged).
 *
 * Why a lane: a fiber per lock cycle kept young objects alive through every GC scavenge
 * (about 1.7 MB per scavenge in a loop of uncontended cycles, against a few KB for bare
 * ioredis), and those 4-8 ms scavenges were the hand-off's tail.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type { MetricLabel } from "effect/MetricLabel"
import * as Runtime from "effect/Runtime"
import { LockTimeout } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { randomToken } from "../commitId.js"
import { now } from "../deadline.js"
import { originalFailure } from "../facade/run.js"
import { ATTEMPT_FLOOR_MS, releaseNow, tryAcquireNow, UNANSWERED } from "./commands.js"
import type { RedisLockHandle, Wakeup } from "./contract.js"
import { lossSignal, type LossSignal, SignalOf } from "./loss.js"
import { lockWaitOf } from "./metrics.js"
import type { ResolvedLockOptions } from "./options.js"
import { handedSince, handOffWindowMs } from "./releases.js"
import { Renewal } from "./renewal.js"

/** What `fn` gets: `signal` aborts (its `reason` a `LockLost`) as soon as the lease is known to be lost. */
export interface LockContext {
  readonly signal: AbortSignal
}

/** The facade runs on Effect's default runtime, whose metric labels are none. */
const NO_LABELS: ReadonlyArray<MetricLabel> = []

type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown }

class LockCall<T> {
  private readonly start = now()
  private readonly deadline: number
  private readonly token = randomToken()
  private readonly renewal = new Renewal()
  /** The listener for release messages, from the first wait (or before the first attempt) on. */
  private wakeup: Wakeup | undefined
  /** When the last attempt was sent (a hand-off after it starts its lease no earlier). */
  private lastSentAt = 0
  /** The highest fence counter an attempt was refused at: a hand-off at or below it is stale. */
  private refusedFence = 0

  constructor(
    private readonly redis: RedisClientShape,
    private readonly handle: RedisLockHandle,
    private readonly key: string,
    private readonly options: ResolvedLockOptions & { readonly retryMs: number },
    private readonly fn: (context: LockContext) => Promise<T>,
    private readonly settle: (outcome: Outcome<T>) => void
  ) {
    this.deadline = this.start + options.waitMs
  }

  run(): void {
    // On a channel already subscribed, listen before the first attempt (see `Acquisition.take`).
    if (this.handle.listening(this.key)) this.wakeup = this.handle.releases(this.key, this.token)
    this.attempt()
  }

  /** One acquire attempt, queueing the token for a hand-off until the deadline. */
  private attempt(): void {
    const sentAt = (this.lastSentAt = now())
    const left = this.deadline - sentAt
    tryAcquireNow(this.redis, this.key, this.token, this.options.ttlMs, left, Math.max(left, ATTEMPT_FLOOR_MS)).then(
      (fence) => (fence === UNANSWERED ? this.timedOut() : fence > 0 ? this.hold(sentAt) : this.refused(-fence)),
      (error) => this.giveUp(error)
    )
  }

  /**
   * Someone else holds the lock at fence counter `counter` (we are queued): a hand-off read
   * before this, or made at or below that counter, is not trusted.
   */
  private refused(counter: number): void {
    this.refusedFence = Math.max(this.refusedFence, counter)
    this.wakeup?.attemptRefused()
    this.wait()
  }

  /** Waits for a release message or the next poll (the facade's `retryMs`), whichever comes first. */
  private wait(): void {
    const at = now()
    if (at >= this.deadline) return this.timedOut()
    const wakeup = (this.wakeup ??= this.handle.releases(this.key, this.token))
    wakeup.nextThen(Math.min(this.options.retryMs, this.deadline - at), 0, (message) => {
      // Handed to us by the release: ours already, no round trip.
      const since = handedSince(
        message,
        this.token,
        this.lastSentAt,
        this.refusedFence,
        handOffWindowMs(this.options),
        now()
      )
      if (since !== undefined) this.hold(since)
      else this.attempt()
    })
  }

  private timedOut(): void {
    const waitedMs = this.waited()
    this.giveUp(new LockTimeout({ key: this.key, waitedMs }))
  }

  /** The attempt failed or the wait ran out: an attempt was sent, so the release goes first. */
  private giveUp(error: unknown): void {
    this.stopListening()
    void releaseNow(this.redis, this.key, this.token, this.options.ttlMs).then(() => this.settle({ ok: false, error }))
  }

  /** Ours since `sentAt` (the TTL counts from there): renewal, then `fn`. */
  private hold(sentAt: number): void {
    this.stopListening()
    const { key, options, redis, token } = this
    this.waited()
    const lost = lossSignal(key, sentAt + options.ttlMs)
    this.renewal.start(Runtime.defaultRuntime, { redis, key, token, options, sentAt, lost })
    const context: LockContext = new SignalOf(lost)
    new Promise<T>((resolve) => resolve(this.fn(context))).then(
      (value) => this.finish(lost, { ok: true, value }),
      (error: unknown) => this.finish(lost, { ok: false, error })
    )
  }

  /**
   * `fn` settled: a lease lost meanwhile turns its outcome into the `LockLost` (`onLost:
   * "after"`), and so does a release that finds the lock no longer ours while the lease
   * was vouched for (the key deleted, or lost in a failover: "taken").
   */
  private finish(lost: LossSignal, outcome: Outcome<T>): void {
    const checked = lost.sound() ? undefined : Effect.runSyncExit(lost.check)
    const settled: Outcome<T> =
      checked !== undefined && Exit.isFailure(checked) ? { ok: false, error: originalFailure(checked.cause) } : outcome
    const renewing = this.renewal.halt()
    const halted = renewing === undefined ? Promise.resolve() : Effect.runPromise(Fiber.interrupt(renewing))
    void halted
      .then(() => releaseNow(this.redis, this.key, this.token, this.options.ttlMs, () => lost.validUntil))
      .then((lostAtRelease) => this.settle(lostAtRelease && settled === outcome ? takenAway(lost) : settled))
  }

  /** Records the wait so far as a lock wait; returns it. */
  private waited(): number {
    const waitedMs = now() - this.start
    lockWaitOf(this.key).unsafeUpdate(waitedMs, NO_LABELS)
    return waitedMs
  }

  private stopListening(): void {
    this.wakeup?.close()
    this.wakeup = undefined
  }
}

/** The lease found taken at its release: set as lost ("taken": logged, counted, signalled), as an outcome. */
const takenAway = (lost: LossSignal): Outcome<never> => {
  const exit = Effect.runSyncExit(Effect.zipRight(lost.fail("taken"), lost.check))
  return { ok: false, error: Exit.isFailure(exit) ? originalFailure(exit.cause) : exit }
}

/**
 * Runs `fn` holding the lock `key` (see `LockCall`): its result, or a rejection with
 * `LockTimeout`, a Redis error, `LockLost` or `fn`'s own error.
 */
export const withLockLane = <T>(
  redis: RedisClientShape,
  handle: RedisLockHandle,
  key: string,
  options: ResolvedLockOptions & { readonly retryMs: number },
  fn: (context: LockContext) => Promise<T>
): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    new LockCall(redis, handle, key, options, fn, (outcome) =>
      outcome.ok ? resolve(outcome.value) : reject(outcome.error)
    ).run()
  })
