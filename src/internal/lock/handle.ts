/**
 * A RedisLock built directly over a client, without a layer: the service (acquire,
 * withLock, withLease, withLockIfAvailable) and its subscriber connection's `close`.
 * The layer and the stores' shared per-client lock are both built with it.
 *
 * Work guarded by the lock never runs unless the lock was acquired (fail closed), and
 * the lock is given back whatever way the work ends (success, failure, interruption).
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { InvalidConfig, LockLost, LockTimeout } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { RELEASE_BOUND_MS, release } from "./commands.js"
import type { LockHandleOptions, RedisLockHandle, RedisLockShape } from "./contract.js"
import { acquireHeld, type Held } from "./held.js"
import { checkKey, keyProblem, releaseChannelOf } from "./keys.js"
import { resolveOptions, resolvedAlready, type LockOptions, type ResolvedLockOptions } from "./options.js"
import { ReleaseSubscriber } from "./releases.js"

/** The `restore` of an `uninterruptibleMask`. */
type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/**
 * The work under the lock, then the lease's check (for "fail" and "after": a loss the
 * renewal had no chance to see, as no timer runs while the event loop is blocked, is
 * never silent), then the release, whatever way the work ended. A release that finds the
 * lock no longer ours while the lease was vouched for (the key deleted, or lost in a
 * failover, and maybe taken by another holder) is the same loss ("taken"). Runs inside
 * `uninterruptibleMask`: one `exit` per cycle instead of an `ensuring` over an `exit`.
 */
const guarded = <A, E, R>(
  restore: Restore,
  o: ResolvedLockOptions,
  held: Held,
  work: Effect.Effect<A, E, R>
): Effect.Effect<A, E | LockLost, R> =>
  Effect.flatMap(Effect.exit(restore(o.onLost === "fail" ? Effect.raceFirst(work, held.lease.lost) : work)), (exit) =>
    o.onLost === "ignore"
      ? Effect.zipRight(held.release, exit)
      : held.lost.sound()
        ? Effect.flatMap(held.release, (notOurs) => (notOurs ? takenAway(held) : exit))
        : Effect.flatMap(Effect.exit(restore(held.lost.check)), (checked) =>
            Effect.flatMap(held.release, (notOurs) =>
              Exit.isFailure(checked) ? (checked as Exit.Exit<never, LockLost>) : notOurs ? takenAway(held) : exit
            )
          )
  )

/** The lease found taken at its release: set as lost ("taken": logged, counted, signalled), and its `LockLost`. */
const takenAway = (held: Held): Effect.Effect<never, LockLost> =>
  Effect.zipRight(held.lost.fail("taken"), held.lease.lost)

const isLockTimeout = (error: unknown): error is LockTimeout => (error as { _tag?: string })._tag === "LockTimeout"

/**
 * Builds a RedisLock over a `RedisClientShape`, without a layer (the Promise facade and
 * the stores share one per client). Never fails; the subscriber opens on the first wait.
 */
export const makeLockHandle = (redis: RedisClientShape, config: LockHandleOptions = {}): RedisLockHandle => {
  const wakeups = new ReleaseSubscriber(redis.client, config.subscriberIdleMs)
  const held = (key: string, o: ResolvedLockOptions, restore: Restore) => acquireHeld(redis, wakeups, key, o, restore)
  // Options resolved before and a sound key go straight on (no frames); else the checks
  // run as effects and fail with InvalidConfig.
  const checked = <A, E, R>(
    key: string,
    options: LockOptions | undefined,
    f: (key: string, o: ResolvedLockOptions) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | InvalidConfig, R> => {
    const o = resolvedAlready(options)
    return o !== undefined && keyProblem(key, redis.isCluster) === undefined
      ? f(key, o)
      : Effect.flatMap(Effect.zip(checkKey(key, redis.isCluster), resolveOptions(options)), ([key, o]) => f(key, o))
  }

  const withLease: RedisLockShape["withLease"] = (key, use, options) =>
    checked(key, options, (key, o) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(held(key, o, restore), (held) =>
          guarded(
            restore,
            o,
            held,
            Effect.suspend(() => use(held.lease))
          )
        )
      )
    )

  const acquire: RedisLockShape["acquire"] = (key, options) =>
    checked(key, options, (key, o) =>
      Effect.flatMap(Effect.scope, (scope) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(held(key, o, restore), (held) =>
            Effect.as(
              Scope.addFinalizer(
                scope,
                Effect.flatMap(held.release, (notOurs) => (notOurs ? held.lost.fail("taken") : Effect.void))
              ),
              held.lease
            )
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
    listening: (key) => wakeups.isLive(releaseChannelOf(key)),
    releaseToken: (key, token, queuedTtlMs) =>
      Effect.asVoid(release(redis, key, token, queuedTtlMs ?? RELEASE_BOUND_MS, queuedTtlMs !== undefined))
  }
}
