/**
 * A RedisLock built directly over a client, without a layer: the service (acquire,
 * withLock, withLease, withLockIfAvailable) and its subscriber connection's `close`.
 * The layer and the stores' shared per-client lock are both built with it.
 *
 * Work guarded by the lock never runs unless the lock was acquired (fail closed), and
 * the lock is given back whatever way the work ends (success, failure, interruption).
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { LockTimeout } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { RELEASE_BOUND_MS, release } from "./commands.js"
import type { LockHandleOptions, RedisLockHandle, RedisLockShape } from "./contract.js"
import { acquireHeld, type Held } from "./held.js"
import { checkKey, releaseChannelOf } from "./keys.js"
import { resolveOptions, type LockOptions, type ResolvedLockOptions } from "./options.js"
import { ReleaseSubscriber } from "./releases.js"

// "fail" and "after" also check the lease when the work ends: a loss the renewal had no
// chance to see (no timer runs while the event loop is blocked) is never silent.
const guarded = <A, E, R>(o: ResolvedLockOptions, held: Held, work: Effect.Effect<A, E, R>) =>
  o.onLost === "ignore"
    ? work
    : Effect.flatMap(Effect.exit(o.onLost === "fail" ? Effect.raceFirst(work, held.lease.lost) : work), (exit) =>
        Effect.zipRight(held.check, exit)
      )

const isLockTimeout = (error: unknown): error is LockTimeout => (error as { _tag?: string })._tag === "LockTimeout"

/**
 * Builds a RedisLock over a `RedisClientShape`, without a layer (the Promise facade and
 * the stores share one per client). Never fails; the subscriber opens on the first wait.
 */
export const makeLockHandle = (redis: RedisClientShape, config: LockHandleOptions = {}): RedisLockHandle => {
  const wakeups = new ReleaseSubscriber(redis.client, config.subscriberIdleMs)
  const held = (key: string, o: ResolvedLockOptions) => acquireHeld(redis, wakeups, key, o)
  const checked = (key: string, options: LockOptions | undefined) =>
    Effect.zip(checkKey(key, redis.isCluster), resolveOptions(options))

  const withLease: RedisLockShape["withLease"] = (key, use, options) =>
    Effect.flatMap(checked(key, options), ([key, o]) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(held(key, o)), (held) =>
          Effect.ensuring(
            restore(
              guarded(
                o,
                held,
                Effect.suspend(() => use(held.lease))
              )
            ),
            held.release
          )
        )
      )
    )

  const acquire: RedisLockShape["acquire"] = (key, options) =>
    Effect.flatMap(checked(key, options), ([key, o]) =>
      Effect.flatMap(Effect.scope, (scope) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(restore(held(key, o)), (held) =>
            Effect.as(Scope.addFinalizer(scope, held.release), held.lease)
          )
        )
      )
    )

  const withLock = ((
    key: string,
    effectOrOptions?: Effect.Effect<unknown, unknown, unknown> | LockOptions,
    options?: LockOptions
  ) =>
    Effect.isEffect(effectOrOptions)
      ? withLease(key, () => effectOrOptions, options)
      : (effect: Effect.Effect<unknown, unknown, unknown>) =>
          withLease(key, () => effect, effectOrOptions)) as RedisLockShape["withLock"]

  const withLockIfAvailable: RedisLockShape["withLockIfAvailable"] = (key, effect, options) =>
    Effect.suspend(() => {
      // Only the acquire's own timeout means "held by someone else": one from the work is the work's.
      let started = false
      return withLease(key, () => Effect.suspend(() => ((started = true), effect)), {
        ...options,
        waitTimeout: 0
      }).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (error): error is LockTimeout => !started && isLockTimeout(error),
          () => Effect.succeed(Option.none())
        )
      )
    }) as never

  return {
    lock: { acquire, withLock, withLockIfAvailable, withLease },
    close: wakeups.close,
    releases: (key, token) => wakeups.open(releaseChannelOf(key), token),
    releaseToken: (key, token, queuedTtlMs) =>
      release(redis, key, token, queuedTtlMs ?? RELEASE_BOUND_MS, queuedTtlMs !== undefined)
  }
}
