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
import { randomToken } from "../commitId.js"
import { InvalidConfig, type FenceConflict, type StoreError } from "../../Errors.js"
import { isFenceConflict } from "../../Retry.js"
import type { RedisLockHandle, RedisLockShape, Wakeup } from "./contract.js"
import { makeLockHandle } from "./handle.js"
import { releaseChannelOf } from "./keys.js"
import type { LockOptions } from "./options.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { noGuard, type GuardedOperation, type LockClaim, type StoreGuard } from "../storeGuard.js"

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
  const lock = handle.lock
  const lockOptions = options.lockOptions ?? storeLockOptions
  // The lock is held across all retries of one operation, and the operation refreshes
  // what it cached once it has the lock.
  // (The lock options are fixed and valid, so withLock's InvalidConfig cannot happen.)
  const underLock = <A, E, R>(operation: GuardedOperation<A, E, R>) =>
    lock.withLock(lockKey, operation.retrying(true), lockOptions) as Effect.Effect<A, E | StoreError, R>
  if (policy === "always") return underLock
  const tries = options.tries ?? ADAPTIVE_TRIES
  const channel = releaseChannelOf(lockKey)
  // A claim the operation still holds when it ends without committing (it failed, was
  // interrupted, or falls back to waiting) is given back: compare-and-delete, our token only.
  const giveBack = (claim: LockClaim) =>
    Effect.suspend(() => {
      if (!claim.held) return Effect.void
      claim.held = false
      return handle.releaseToken(lockKey, claim.token)
    })
  return <A, E, R>(operation: GuardedOperation<A, E, R>) =>
    Effect.suspend(() => {
      const claim: LockClaim = { token: "", ttlMs: CLAIM_TTL_MS, channel, ask: false, held: false }
      // Listening for releases starts at the first yield and lasts the operation.
      let wakeup: Wakeup | undefined
      // After the first attempt lost: go on losing, yielding or claiming, up to the bounds.
      const contended = (first: FenceConflict) => Effect.gen(function* () {
        let error = first
        let lost = 0
        let yields = 0
        for (;;) {
          if (error.lockHeld) {
            if (++yields > ADAPTIVE_YIELDS) return yield* Effect.fail(error)
            wakeup ??= handle.releases(lockKey)
            yield* wakeup.next(YIELD_WAIT_MS)
          } else {
            if (++lost >= tries) return yield* Effect.fail(error)
            if (lost >= CLAIM_AFTER && !claim.ask) {
              claim.ask = true
              claim.token = randomToken()
            }
          }
          const result = yield* Effect.either(operation.attempt(claim))
          if (result._tag === "Right") return result.right
          if (!isFenceConflict(result.left)) return yield* Effect.fail(result.left)
          error = result.left
        }
      }).pipe(
        Effect.ensuring(Effect.suspend(() => (wakeup?.close(), giveBack(claim)))),
        Effect.catchIf(isFenceConflict, () => underLock(operation))
      )
      // The first attempt cannot hold a claim (it never asks), so an uncontended operation
      // is just its attempt.
      return Effect.catchIf(operation.attempt(claim), isFenceConflict, contended) as Effect.Effect<A, E | StoreError, R>
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
          new InvalidConfig({ option: "lock", reason: `must be "always", "never" or "adaptive", got ${JSON.stringify(policy)}` })
        )
