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
import type { RedisLockHandle, RedisLockShape } from "./contract.js"
import { makeLockHandle } from "./handle.js"
import { releaseChannelOf } from "./keys.js"
import type { LockOptions } from "./options.js"
import type { MetricLabel } from "effect/MetricLabel"
import {
  noGuard,
  type Attempted,
  type GuardedOperation,
  type LockClaim,
  type StoreGuard,
  type Turn
} from "../storeGuard.js"
import {
  type Adaptive,
  type Burst,
  CLAIM_TTL_MS,
  ClaimState,
  DEFAULT_BURST,
  type KeptTurn,
  LentKeptTurn,
  QUEUE_MS,
  QueuePlace
} from "./claimState.js"
import { takeTurnThen } from "./laneTurn.js"

export { CLAIM_AFTER, CLAIM_TTL_MS } from "./claimState.js"

export type LockPolicy = "always" | "never" | "adaptive"

/** The stores' default policy (see the README for the measurements behind it). */
export const DEFAULT_LOCK_POLICY: LockPolicy = "adaptive"

export const LOCK_POLICIES: ReadonlyArray<LockPolicy> = ["always", "never", "adaptive"]

/** Lost races an adaptive operation accepts before it waits for the lock (a backstop). */
export const ADAPTIVE_TRIES = 16

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
  options: { readonly lockOptions?: LockOptions; readonly tries?: number; readonly burst?: Burst } = {}
): StoreGuard => {
  if (policy === "never") return noGuard
  const handle = lockHandleOf(redis)
  const underLock = lockedGuard(handle.lock, lockKey, options.lockOptions ?? storeLockOptions)
  if (policy === "always") return underLock
  return adaptiveGuard({
    handle,
    lockKey,
    tries: options.tries ?? ADAPTIVE_TRIES,
    burst: options.burst ?? DEFAULT_BURST,
    underLock,
    unclaimed: Object.freeze({
      token: "",
      ttlMs: CLAIM_TTL_MS,
      channel: releaseChannelOf(lockKey),
      ask: false,
      queueMs: QUEUE_MS
    }),
    busyUntil: 0,
    kept: undefined
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

const valueOf = <A>(attempted: Attempted<A>): A => attempted.value

/**
 * "adaptive": a lock-free attempt; after the first lost race, `contended` takes over. An
 * operation that starts while the store is busy (one of its operations waited within
 * `BUSY_MS`) goes to `contended` at once, which asks for its turn first.
 */
const adaptiveGuard = (adaptive: Adaptive): StoreGuard =>
  Object.assign(
    <A, E, R>(operation: GuardedOperation<A, E, R>) =>
      operation.first !== undefined
        ? contended(adaptive, operation, operation.first, lentTurnOf(operation.lent))
        : operation.lent instanceof QueuePlace
          ? contended(adaptive, operation, undefined, undefined, operation.lent.claim)
          : started(adaptive, operation),
    {
      // A kept turn or a busy store decide the first attempt (a turn, or a claim that asks).
      freeClaim: () => adaptive.kept === undefined && performance.now() >= adaptive.busyUntil && adaptive.unclaimed,
      lendTurn: () => {
        const kept = adaptive.kept
        if (kept === undefined) return undefined
        adaptive.kept = undefined
        return new LentKeptTurn(adaptive, kept)
      },
      takeTurn: (ask: (claim: LockClaim) => Promise<Turn>, labels: ReadonlyArray<MetricLabel>) =>
        takeTurnThen(adaptive, ask, labels)
    }
  )

const lentTurnOf = (lent: unknown): KeptTurn | undefined => (lent instanceof LentKeptTurn ? lent.turn : undefined)

const started = <A, E, R>(adaptive: Adaptive, operation: GuardedOperation<A, E, R>) =>
  Effect.suspend(() => {
    const kept = adaptive.kept
    if (kept !== undefined) {
      adaptive.kept = undefined
      return contended(adaptive, operation, undefined, kept)
    }
    return performance.now() < adaptive.busyUntil
      ? contended(adaptive, operation, undefined)
      : // The first attempt never asks, so it cannot take the lock or queue: an uncontended
        // operation is just its attempt.
        Effect.catchIf(Effect.map(operation.attempt(adaptive.unclaimed), valueOf), isFenceConflict, (first) =>
          contended(adaptive, operation, first)
        )
  })

/**
 * After the first attempt lost (or at once, while the store is busy): go on losing,
 * yielding, queueing or claiming, up to the bounds, then wait for the lock. A busy start
 * asks for a turn first (where the store has `turn`), so the record is built once, on
 * the head the turn hands over. A claim or a queue entry still ours when the operation
 * ends without a commit that gave it back (it failed, was interrupted, or falls back to
 * waiting) is given back: compare-and-delete, our token only. `place`: the operation's queue
 * place, waited on in vain outside the guard (`QueuePlace`): it goes on as after its wait.
 */
const contended = <A, E, R>(
  adaptive: Adaptive,
  operation: GuardedOperation<A, E, R>,
  first: FenceConflict | undefined,
  kept?: KeptTurn,
  place?: LockClaim
): Effect.Effect<A, E | StoreError, R> =>
  Effect.suspend(() => {
    const claim = new ClaimState(adaptive, first === undefined, kept, place)
    // A first attempt made in a lent turn may have taken the lock back (its lease lapsed).
    if (first !== undefined && kept !== undefined) claim.noted(first.lockClaim)
    return Effect.gen(function* () {
      let error = first
      if (error === undefined && kept === undefined && place === undefined && operation.turn !== undefined)
        yield* claim.turn(operation.turn)
      for (;;) {
        if (error !== undefined && !(yield* claim.before(error, operation.turn))) return yield* Effect.fail(error)
        claim.attempting()
        const result = yield* Effect.either(operation.attempt(claim.request))
        if (result._tag === "Right") {
          // A success that committed nothing may have absorbed a rejection that took the lock.
          claim.noted(result.right.claim === "left" ? undefined : result.right.claim)
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
