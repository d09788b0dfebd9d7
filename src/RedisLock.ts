/**
 * A Redis lock as a scoped resource, with renewal, fencing numbers and push wake-ups.
 *
 * Guarantees:
 * - Fail closed: `acquire` either returns a lease or fails (`LockTimeout`, a Redis
 *   error, `InvalidConfig`); work guarded by `withLock` never runs without the lock.
 * - A lease is released with a compare-and-delete when its scope closes (success,
 *   failure or interruption), so a holder never frees another holder's lock.
 * - While the scope is open a fiber extends the TTL with a compare-and-extend. A lease
 *   the holder can no longer vouch for (the key is gone or someone else's, or its TTL
 *   ran out without a confirmed extension) is reported on `lease.lost` at once, and
 *   `withLock` interrupts the work and fails with `LockLost`.
 * - A loss is never silent: `lease.signal` aborts with the `LockLost`, and `withLock`
 *   (unless `onLost: "ignore"`) also checks the lease when the work ends, so a loss no
 *   renewal could see (an event loop blocked past the TTL runs no timer) is reported.
 * - Timing (waits, deadlines, renewals) runs on real time, never the caller's Effect
 *   Clock: Redis's TTL runs on real time, so a TestClock must not stretch ours.
 * - Every acquisition of a key gets a fencing number that is strictly greater than any
 *   earlier holder's (an INCR in the acquire script), for writers that fence on it.
 * - Wire compatible with haechi-store-redis: the lock key's value is a random token set
 *   with `SET key token NX PX ttl`, so holders of either library exclude each other and
 *   each one's compare-and-delete release works on the other's lock.
 *
 * Like the reference, a TTL lock cannot give perfect mutual exclusion (a paused holder
 * can outlive its TTL before it notices); the stores' server-side fences are what keep
 * data correct. The lock reduces contention and, through `lost`, stops stale work early.
 *
 * Waiting does not spin: the release script PUBLISHes on `<lock key>:released`, and
 * waiters listen on one subscriber connection per RedisLock (`client.duplicate()`,
 * opened on the first wait). A bounded poll (`retrySchedule`) covers a missed message,
 * a holder whose TTL lapsed, and haechi-store-redis holders, which never publish.
 *
 * This module is the contract, `make`, `layer` and the service's dual functions; the
 * mechanism lives in `internal/lock/` (acquire, held, renewal, releases, commands).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { InvalidConfig, LockLost, RedisError } from "./Errors.js"
import type { LockErrors, RedisLockShape } from "./internal/lock/contract.js"
import { makeLockHandle } from "./internal/lock/handle.js"
import type { LockOptions } from "./internal/lock/options.js"
import { RedisClient } from "./RedisClient.js"

// ---------------------------------------------------------------------------
// contract

export type { Lease, LockErrors, RedisLockShape } from "./internal/lock/contract.js"
export type { LockOptions } from "./internal/lock/options.js"

/** The lock service: acquire as a scoped resource, withLock, withLease, withLockIfAvailable. */
export class RedisLock extends Context.Tag("haechi-store-effect/RedisLock")<RedisLock, RedisLockShape>() {}

// ---------------------------------------------------------------------------
// make, layer

/** A RedisLock over the RedisClient whose subscriber connection is closed with the scope. */
export const make: Effect.Effect<RedisLockShape, never, RedisClient | Scope.Scope> = Effect.gen(function* () {
  const redis = yield* RedisClient
  const { lock } = yield* Effect.acquireRelease(
    Effect.sync(() => makeLockHandle(redis)),
    (handle) => handle.close
  )
  return lock
})

/** The RedisLock service over the RedisClient; its subscriber lives as long as the layer. */
export const layer: Layer.Layer<RedisLock, never, RedisClient> = Layer.scoped(RedisLock, make)

// ---------------------------------------------------------------------------
// the service's functions

/**
 * `withLock` on the `RedisLock` service, dual: `withLock(work, key, options?)` or
 * `work.pipe(withLock(key, options?))`.
 */
export const withLock: {
  (
    key: string,
    options?: LockOptions
  ): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | LockErrors, R | RedisLock>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    key: string,
    options?: LockOptions
  ): Effect.Effect<A, E | LockErrors, R | RedisLock>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, key: string, options?: LockOptions) =>
    Effect.flatMap(RedisLock, (lock) => lock.withLock(key, effect, options))
)

/**
 * `withLockIfAvailable` on the `RedisLock` service, dual: `Some` of the work's result,
 * `None` (the work not run) when the lock is held elsewhere.
 */
export const withLockIfAvailable: {
  (
    key: string,
    options?: Omit<LockOptions, "waitTimeout">
  ): <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R | RedisLock>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    key: string,
    options?: Omit<LockOptions, "waitTimeout">
  ): Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R | RedisLock>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, key: string, options?: Omit<LockOptions, "waitTimeout">) =>
    Effect.flatMap(RedisLock, (lock) => lock.withLockIfAvailable(key, effect, options))
)
