/**
 * When a store takes its Redis lock (`${keyPrefix}lock`, haechi-store-redis's key and
 * value format, so mixed fleets exclude each other). The lock only lowers how often
 * fenced writes collide; correctness never depends on it, so a lease lost mid-attempt
 * does not interrupt the attempt (its write is fenced anyway).
 *
 * - "always": every operation holds the lock across its attempts (the reference's way).
 * - "never": fences only.
 * - "adaptive": fences first, the lock as a backstop against starvation. An operation
 *   makes up to `ADAPTIVE_TRIES` immediate lock-free attempts; a writer that loses them
 *   all (it keeps arriving just after others commit) takes the lock and retries holding
 *   it, and while it holds the lock the others' lock-free attempts yield to it (checked
 *   in the same script as the fence: they pause about a millisecond and try again), so
 *   it gets through. Uncontended and ordinarily contended writers pay no lock round trips.
 *   Measured with 4 replica processes on one chain: "never" lets the fastest replica
 *   starve the others into RetriesExhausted; "adaptive" keeps all of them progressing.
 */
import * as Effect from "effect/Effect"
import { InvalidConfig, type StoreError } from "./Errors.js"
import { isFenceConflict } from "./Retry.js"
import { makeWith, type LockOptions, type RedisLockShape } from "./RedisLock.js"
import type { RedisClientShape } from "./RedisClient.js"
import { noGuard, type GuardedOperation, type StoreGuard } from "./StoreGuard.js"

export type LockPolicy = "always" | "never" | "adaptive"

/** The stores' default policy (see the README for the measurements behind it). */
export const DEFAULT_LOCK_POLICY: LockPolicy = "adaptive"

export const LOCK_POLICIES: ReadonlyArray<LockPolicy> = ["always", "never", "adaptive"]

/** Lock-free attempts an adaptive operation makes before it takes the lock. */
export const ADAPTIVE_TRIES = 8

/**
 * The stores' lock options: the reference's wait bound, a 2 s TTL renewed every ~0.7 s
 * (the reference's 10 s TTL without renewal means a crashed holder stalls every writer
 * for 10 s; a renewed short TTL bounds that stall at 2 s), no interruption on loss.
 */
export const storeLockOptions: LockOptions = {
  ttl: "2 seconds",
  waitTimeout: "5 seconds",
  onLost: "ignore"
}

/** A guard that applies `policy` with `lock` on `lockKey`. */
export const guardFor = (
  policy: LockPolicy,
  lock: RedisLockShape | undefined,
  lockKey: string,
  options: { readonly lockOptions?: LockOptions; readonly tries?: number } = {}
): StoreGuard => {
  if (policy === "never" || lock === undefined) return noGuard
  const lockOptions = options.lockOptions ?? storeLockOptions
  // The lock is held across all retries of one operation, and the operation refreshes
  // what it cached once it has the lock.
  // (The lock options are fixed and valid, so withLock's InvalidConfig cannot happen.)
  const underLock = <A, E, R>(operation: GuardedOperation<A, E, R>) =>
    lock.withLock(lockKey, operation.retrying(true), lockOptions) as Effect.Effect<A, E | StoreError, R>
  if (policy === "always") return underLock
  const tries = options.tries ?? ADAPTIVE_TRIES
  return <A, E, R>(operation: GuardedOperation<A, E, R>) =>
    Effect.catchIf(operation.lockFree(tries), isFenceConflict, () => underLock(operation)) as Effect.Effect<
      A,
      E | StoreError,
      R
    >
}

/** Close an idle subscriber connection this soon, so it never holds a process open for long. */
const SUBSCRIBER_IDLE_MS = 250
const shared = new WeakMap<object, RedisLockShape>()

/**
 * The RedisLock of a client, one per client object, shared by its stores and the
 * `withRedisLock` facade. Its subscriber connection opens on the first wait and closes
 * itself when idle, so it needs no scope.
 */
export const lockOf = (redis: RedisClientShape): RedisLockShape => {
  let lock = shared.get(redis.client)
  if (lock === undefined) {
    lock = makeWith(redis, { subscriberIdleMs: SUBSCRIBER_IDLE_MS }).lock
    shared.set(redis.client, lock)
  }
  return lock
}

/** Validates a `lock` option (undefined = the default policy). */
export const checkLockPolicy = (policy: unknown): Effect.Effect<LockPolicy, InvalidConfig> =>
  policy === undefined
    ? Effect.succeed(DEFAULT_LOCK_POLICY)
    : LOCK_POLICIES.includes(policy as LockPolicy)
      ? Effect.succeed(policy as LockPolicy)
      : Effect.fail(
          new InvalidConfig({ option: "lock", reason: `must be "always", "never" or "adaptive", got ${JSON.stringify(policy)}` })
        )
