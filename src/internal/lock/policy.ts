/**
 * When a store takes its Redis lock (`${keyPrefix}lock`, haechi-store-redis's key and
 * value format, so mixed fleets exclude each other). The lock only lowers how often
 * fenced writes collide; correctness never depends on it, so a lease lost mid-attempt
 * does not interrupt the attempt (its write is fenced anyway).
 *
 * - "always": every operation holds the lock across its attempts (the reference's way).
 * - "never": fences only.
 * - "adaptive": fences first, and the lock decides only who goes next when a writer
 *   keeps losing. Each attempt is lock-free and carries a claim: after `CLAIM_AFTER` lost
 *   races in a row, the fenced script that rejects the attempt also takes the lock for
 *   it (`SET lock token PX`), and the script that commits its next attempt gives it back
 *   (DEL, and PUBLISH for `RedisLock` waiters). Meanwhile the others' attempts yield to
 *   the holder (same script, nothing written). So a starving writer gets through on its
 *   next attempt, and the lock costs no round trip of its own. An operation that keeps
 *   yielding (a reference replica, or a holder that stalls) falls back to waiting for the
 *   lock with `RedisLock` and retrying under it.
 *   Every re-attempt, under every policy, is one the operation's retry schedule allowed
 *   (the store's `RetryBudget` sits inside `attempt` and `retrying`): the bounds here only
 *   decide when to wait for the lock, and exhaustion ends the operation wherever it is.
 *   Measured with 4 replica processes on one chain (README): "never" lets the fastest
 *   replica starve the others into RetriesExhausted; "always" convoys through the lock;
 *   the claim keeps every replica progressing, with no failures and a p99 within the
 *   range of "never"'s (whose p99 leaves out the operations it failed), at about
 *   0.8-0.9x the throughput of "never".
 */
import * as Effect from "effect/Effect"
import { InvalidConfig, type FenceConflict, type StoreError } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { isFenceConflict } from "../retryBudget.js"
import { randomToken } from "../commitId.js"
import type { RedisLockHandle, RedisLockShape, Wakeup } from "./contract.js"
import { makeLockHandle } from "./handle.js"
import { releaseChannelOf } from "./keys.js"
import type { LockOptions } from "./options.js"
import {
  noGuard,
  type Attempted,
  type ClaimMove,
  type GuardedOperation,
  type LockClaim,
  type StoreGuard
} from "../storeGuard.js"

export type LockPolicy = "always" | "never" | "adaptive"

/** The stores' default policy (see the README for the measurements behind it). */
export const DEFAULT_LOCK_POLICY: LockPolicy = "adaptive"

export const LOCK_POLICIES: ReadonlyArray<LockPolicy> = ["always", "never", "adaptive"]

/** Lost races in a row after which an adaptive attempt asks to take the lock if rejected again. */
export const CLAIM_AFTER = 5
/** Lost races an adaptive operation accepts before it waits for the lock (a backstop). */
export const ADAPTIVE_TRIES = 16
/** Times an adaptive operation yields to another holder before it waits for the lock instead. */
export const ADAPTIVE_YIELDS = 64
/** A yielding attempt waits for the holder's release message, or this long (a missed message). */
const YIELD_WAIT_MS = 2
/** A claimed lock outlives a holder that neither commits nor releases it by this much. */
export const CLAIM_TTL_MS = 1000

/**
 * The stores' lock options: the reference's wait bound, a 2 s TTL renewed every ~0.7 s
 * (the reference's 10 s TTL without renewal means a crashed holder stalls every writer
 * for 10 s; a renewed short TTL bounds that stall at 2 s), no interruption on loss.
 */
export const storeLockOptions: LockOptions = Object.freeze({
  ttl: "2 seconds",
  waitTimeout: "5 seconds",
  onLost: "ignore"
})

/** A guard that applies `policy` with the client's lock on `lockKey`. */
export const guardFor = (
  policy: LockPolicy,
  redis: RedisClientShape,
  lockKey: string,
  options: { readonly lockOptions?: LockOptions; readonly tries?: number } = {}
): StoreGuard => {
  if (policy === "never") return noGuard
  const handle = lockHandleOf(redis)
  const underLock = lockedGuard(handle.lock, lockKey, options.lockOptions ?? storeLockOptions)
  if (policy === "always") return underLock
  return adaptiveGuard({
    handle,
    lockKey,
    tries: options.tries ?? ADAPTIVE_TRIES,
    underLock,
    unclaimed: Object.freeze({ token: "", ttlMs: CLAIM_TTL_MS, channel: releaseChannelOf(lockKey), ask: false })
  })
}

/**
 * "always": the lock is held across all retries of one operation, and the operation
 * refreshes what it cached once it has the lock. (The lock options are fixed and valid,
 * so withLock's InvalidConfig cannot happen.)
 */
const lockedGuard =
  (lock: RedisLockShape, lockKey: string, lockOptions: LockOptions): StoreGuard =>
  (operation) =>
    lock.withLock(lockKey, operation.retrying(true), lockOptions) as Effect.Effect<never, StoreError>

/** What an adaptive guard's operations share. */
interface Adaptive {
  readonly handle: RedisLockHandle
  readonly lockKey: string
  readonly tries: number
  /** Where an operation that keeps losing or yielding ends up: waiting for the lock. */
  readonly underLock: StoreGuard
  /** An attempt that has not asked for the lock: it yields to a holder and takes nothing. */
  readonly unclaimed: LockClaim
}

const valueOf = <A>(attempted: Attempted<A>): A => attempted.value

/** "adaptive": lock-free attempts; after the first lost race, `contended` takes over. */
const adaptiveGuard =
  (adaptive: Adaptive): StoreGuard =>
  (operation) =>
    // The first attempt never asks, so it cannot take the lock: an uncontended operation is
    // just its attempt.
    Effect.catchIf(Effect.map(operation.attempt(adaptive.unclaimed), valueOf), isFenceConflict, (first) =>
      contended(adaptive, operation, first)
    )

/**
 * After the first attempt lost: go on losing, yielding or claiming, up to the bounds,
 * then wait for the lock. A claim still held when the operation ends without a commit
 * that gave it back (it failed, was interrupted, or falls back to waiting) is given
 * back: compare-and-delete, our token only.
 */
const contended = <A, E, R>(
  adaptive: Adaptive,
  operation: GuardedOperation<A, E, R>,
  first: FenceConflict
): Effect.Effect<A, E | StoreError, R> =>
  Effect.suspend(() => {
    const claim = new ClaimState(adaptive)
    return Effect.gen(function* () {
      let error = first
      for (;;) {
        if (!(yield* claim.before(error))) return yield* Effect.fail(error)
        claim.attempting()
        const result = yield* Effect.either(operation.attempt(claim.request))
        if (result._tag === "Right") {
          // A success that committed nothing may have absorbed a rejection that took the lock.
          claim.noted(result.right.claim === "gaveBack" ? "gaveBack" : undefined)
          return result.right.value
        }
        if (!isFenceConflict(result.left)) return yield* Effect.fail(result.left)
        claim.noted(result.left.lockClaim)
        error = result.left
      }
    }).pipe(
      Effect.ensuring(claim.end),
      Effect.catchIf(isFenceConflict, () => adaptive.underLock(operation))
    ) as Effect.Effect<A, E | StoreError, R>
  })

const proceed = Effect.succeed(true)
const giveUp = Effect.succeed(false)

/**
 * One contended operation's claim, kept by the policy alone: the request its attempts
 * get, the bounds it has used, and whether the lock may be ours, from what each attempt
 * reported. An attempt that ends without saying (another error, an interruption) may
 * have taken the lock if it asked, so it counts as held: the release at the end is a
 * compare-and-delete, harmless if it was not.
 */
class ClaimState {
  request: LockClaim
  private lost = 0
  private yields = 0
  private held = false
  private unreported = false
  /** Listening for releases starts at the first yield and lasts the operation. */
  private wakeup: Wakeup | undefined

  constructor(private readonly adaptive: Adaptive) {
    this.request = adaptive.unclaimed
  }

  /** Before the next attempt, after `error`: waits for a holder or asks for the lock; false past a bound. */
  before(error: FenceConflict): Effect.Effect<boolean> {
    const { handle, lockKey, tries, unclaimed } = this.adaptive
    if (error.lockHeld) {
      if (++this.yields > ADAPTIVE_YIELDS) return giveUp
      this.wakeup ??= handle.releases(lockKey)
      return Effect.as(this.wakeup.next(YIELD_WAIT_MS), true)
    }
    if (++this.lost >= tries) return giveUp
    if (this.lost >= CLAIM_AFTER && !this.request.ask) {
      this.request = Object.freeze({ ...unclaimed, token: randomToken(), ask: true })
    }
    return proceed
  }

  /** Marks an attempt under way: until it reports, an asking one may have taken the lock. */
  attempting(): void {
    this.unreported = this.request.ask
  }

  /** What the attempt reported doing with the lock (undefined: it did not say). */
  noted(move: ClaimMove | undefined): void {
    if (move === "took") this.held = true
    else if (move === "gaveBack") this.held = false
    else if (move === undefined) this.held ||= this.request.ask
    this.unreported = false
  }

  /** Stops listening, and gives back a lock that may still be ours. */
  readonly end: Effect.Effect<void> = Effect.suspend(() => {
    this.wakeup?.close()
    if (!this.held && !this.unreported) return Effect.void
    this.held = this.unreported = false
    return this.adaptive.handle.releaseToken(this.adaptive.lockKey, this.request.token)
  })
}

/** Close an idle subscriber connection this soon, so it never holds a process open for long. */
const SUBSCRIBER_IDLE_MS = 250
const shared = new WeakMap<object, RedisLockHandle>()

/**
 * The RedisLock of a client, one per client object, shared by its stores and the
 * `withRedisLock` facade. Its subscriber connection opens on the first wait and closes
 * itself when idle, so it needs no scope.
 */
export const lockHandleOf = (redis: RedisClientShape): RedisLockHandle => {
  let handle = shared.get(redis.client)
  if (handle === undefined) {
    handle = makeLockHandle(redis, { subscriberIdleMs: SUBSCRIBER_IDLE_MS })
    shared.set(redis.client, handle)
  }
  return handle
}

export const lockOf = (redis: RedisClientShape): RedisLockShape => lockHandleOf(redis).lock

/** Validates a `lock` option (undefined = the default policy). */
export const checkLockPolicy = (policy: unknown): Effect.Effect<LockPolicy, InvalidConfig> =>
  policy === undefined
    ? Effect.succeed(DEFAULT_LOCK_POLICY)
    : LOCK_POLICIES.includes(policy as LockPolicy)
      ? Effect.succeed(policy as LockPolicy)
      : Effect.fail(
          new InvalidConfig({
            option: "lock",
            reason: `must be "always", "never" or "adaptive", got ${JSON.stringify(policy)}`
          })
        )
