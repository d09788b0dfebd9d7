/**
 * `withRedisLock`, the Promise facade of RedisLock with haechi-store-redis's signature.
 *
 * Guarantees, as in the reference: `fn` runs only while holding the lock (`SET key
 * token NX PX ttlMs`); if the lock is not acquired within `timeoutMs` the promise
 * rejects and `fn` never runs (fail closed); the lock is released with a
 * compare-and-delete once `fn` settles, and `fn`'s own result or error is what the
 * promise settles with. Bad arguments reject (never throw synchronously) with the
 * reference's messages. Holders of this facade and of the reference exclude each other.
 *
 * Added: the TTL is renewed while `fn` runs, so a long `fn` no longer lets a second
 * writer in; waiters are woken by the release instead of only polling every `retryMs`.
 * A lease lost anyway (Redis unreachable past the TTL, an event loop blocked past it, the
 * key deleted or lost in a failover, found by the renewal or at the release) is never
 * silent: `fn({ signal })` gets an AbortSignal that fires at the loss, and once `fn`
 * settles the promise rejects with `LockLost`. `fn` is not interrupted (a `fn` that
 * ignores its argument runs as before): the lock only reduces contention over writes
 * fenced on the server. The lock's timing runs on real time, never an Effect Clock.
 * A call runs the protocol of RedisLock's `withLease` without a fiber (`facadeLane.ts`).
 *
 * Failures reject with the original error, never an Effect wrapper: `LockTimeout`,
 * `LockLost`, `RedisUnavailable`, `RedisCommandFailed` (so `instanceof` and `_tag`
 * work), or whatever `fn` threw.
 */
import { isIoredisClient } from "../client.js"
import * as Duration from "effect/Duration"
import * as Schedule from "effect/Schedule"
import type { Cluster, Redis } from "ioredis"
import { lockHandleOf } from "./policy.js"
import { resolveOptions, type LockOptions, type ResolvedLockOptions } from "./options.js"
import type { RedisLockHandle } from "./contract.js"
import { fromClient, type RedisClientShape } from "../../RedisClient.js"
import { runSyncOrThrow } from "../facade/run.js"
import { checkKey, keyProblem } from "./keys.js"
import { type LockContext, withLockLane } from "./facadeLane.js"

export type { LockContext } from "./facadeLane.js"

/**
 * The client's RedisLock handle, built once per client object and shared with the stores
 * made on the same client (one subscriber connection, which closes itself when idle).
 */
const lockFor = (client: Redis | Cluster): ClientLock => {
  let lock = locks.get(client)
  if (lock === undefined) {
    const redis = fromClient(client)
    lock = { redis, handle: lockHandleOf(redis) }
    locks.set(client, lock)
  }
  return lock
}
interface ClientLock {
  readonly redis: RedisClientShape
  readonly handle: RedisLockHandle
}
/** The lock per client object, so a call does not wrap the client again to look it up. */
const locks = new WeakMap<object, ClientLock>()

/** The resolved options of one (ttlMs, retryMs, timeoutMs). */
type FacadeOptions = ResolvedLockOptions & { readonly retryMs: number }
const optionsCache = new Map<string, FacadeOptions>()
const OPTIONS_CACHE_SIZE = 64

const lockOptionsFor = (ttlMs: number, retryMs: number, timeoutMs: number): FacadeOptions => {
  const id = `${ttlMs} ${retryMs} ${timeoutMs}`
  let entry = optionsCache.get(id)
  if (entry === undefined) {
    if (optionsCache.size >= OPTIONS_CACHE_SIZE) optionsCache.clear()
    const options: LockOptions = {
      ttl: Duration.millis(ttlMs),
      waitTimeout: Duration.millis(timeoutMs),
      retrySchedule: Schedule.spaced(Duration.millis(retryMs)),
      onLost: "after"
    }
    entry = Object.freeze({ ...runSyncOrThrow(resolveOptions(options)), retryMs })
    optionsCache.set(id, entry)
  }
  return entry
}

/**
 * Runs `fn` holding the Redis lock `lockKey` and resolves with its result. Rejects with
 * `LockTimeout` if the lock is not acquired within `timeoutMs` (then `fn` did not run),
 * with a Redis error if Redis fails before `fn` runs, with `LockLost` if the lease was
 * lost before `fn` settled (`fn`'s own result or error is then dropped), or with `fn`'s
 * own error.
 */
export async function withRedisLock<T>(
  client: Redis | Cluster,
  lockKey: string,
  fn: (context: LockContext) => Promise<T>,
  { ttlMs = 10000, retryMs = 20, timeoutMs = 5000 }: { ttlMs?: number; retryMs?: number; timeoutMs?: number } = {}
): Promise<T> {
  if (!isIoredisClient(client)) {
    throw new Error("withRedisLock requires an ioredis client (Redis or Cluster) with set() and eval() methods")
  }
  if (typeof lockKey !== "string" || lockKey.length === 0) {
    throw new Error("withRedisLock requires a non-empty string lockKey")
  }
  if (typeof fn !== "function") {
    throw new Error("withRedisLock requires a function fn")
  }
  if (!Number.isInteger(ttlMs) || ttlMs <= 0) {
    throw new Error("withRedisLock ttlMs must be a positive integer")
  }
  if (!Number.isInteger(retryMs) || retryMs <= 0) {
    throw new Error("withRedisLock retryMs must be a positive integer")
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0) {
    throw new Error("withRedisLock timeoutMs must be a non-negative integer")
  }

  const { redis, handle } = lockFor(client)
  // A key the scripts cannot use rejects with the InvalidConfig that names the problem, as RedisLock's does.
  if (keyProblem(lockKey, redis.isCluster) !== undefined) runSyncOrThrow(checkKey(lockKey, redis.isCluster))
  return withLockLane(redis, handle, lockKey, lockOptionsFor(ttlMs, retryMs, timeoutMs), fn)
}
