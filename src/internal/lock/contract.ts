/**
 * The lock's contract: a lease, the service's shape, and the handle a client's lock is
 * built as (the service plus its subscriber's `close`). Declared here so the internals
 * never import the public module; `RedisLock` re-exports the public ones.
 */
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { InvalidConfig, LockLost, LockTimeout, RedisError } from "../../Errors.js"
import type { LockOptions } from "./options.js"

/** A held lock. It lasts as long as the scope `acquire` ran in. */
export interface Lease {
  readonly key: string
  /** Our random token, the lock key's value while we hold it. */
  readonly token: string
  /** Strictly greater than the fence of every earlier holder of `key`. */
  readonly fence: number
  /** Never succeeds; fails with `LockLost` as soon as the lease is known to be lost. */
  readonly lost: Effect.Effect<never, LockLost>
  /** Aborted (its `reason` the `LockLost`) as soon as the lease is known to be lost, for work that can stop early. */
  readonly signal: AbortSignal
}

export interface RedisLockShape {
  /**
   * Waits for the lock on `key` (at most `waitTimeout`) and holds it until the scope
   * closes, renewing it meanwhile. Fails with `LockTimeout` when the wait runs out (fail
   * closed), with a Redis error if Redis fails, with `InvalidConfig` for bad options.
   */
  readonly acquire: (
    key: string,
    options?: LockOptions
  ) => Effect.Effect<Lease, LockTimeout | RedisError | InvalidConfig, Scope.Scope>
  /**
   * Runs `effect` holding the lock on `key` and releases it afterwards. If the lease is
   * lost, `effect` is interrupted and the whole fails with `LockLost` (unless
   * `onLost: "ignore"`). The work never runs if the lock was not acquired.
   */
  readonly withLock: {
    <A, E, R>(
      key: string,
      effect: Effect.Effect<A, E, R>,
      options?: LockOptions
    ): Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
    /** Pipeable: `work.pipe(lock.withLock(key, options))`. */
    (
      key: string,
      options?: LockOptions
    ): <A, E, R>(
      effect: Effect.Effect<A, E, R>
    ) => Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
  }
  /**
   * Runs `effect` holding the lock on `key` if it is free now: `Some` of its result, or
   * `None` without running it when another holder has the lock (no waiting, no
   * `LockTimeout`). Held, it behaves as `withLock`.
   */
  readonly withLockIfAvailable: <A, E, R>(
    key: string,
    effect: Effect.Effect<A, E, R>,
    options?: Omit<LockOptions, "waitTimeout">
  ) => Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R>
  /**
   * Like `withLock`, handing the lease to `use` (its `fence` for writes fenced on it, its
   * `signal` for work that can stop early).
   */
  readonly withLease: <A, E, R>(
    key: string,
    use: (lease: Lease) => Effect.Effect<A, E, R>,
    options?: LockOptions
  ) => Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
}

/** The errors of `withLock`: the lease lost, the wait run out, Redis, bad options. */
export type LockErrors = LockLost | LockTimeout | RedisError | InvalidConfig

/** One waiter's wake-ups on one channel, for as long as it waits. */
export interface Wakeup {
  /**
   * Completes at the first wake-up since the previous `next` (at once if one came
   * meanwhile), or after `ms`, whichever is first. A wake-up is a release that freed the
   * lock, a hand-off to this waiter (the message, "<token> <fence>"; it wins over a
   * plain one), or the subscription becoming active (a release may have come before);
   * hand-offs to others do not wake. Yields the message ("" for a plain wake-up), or
   * undefined when `ms` ran out. `upToMs`: a hand-off to another waiter (the queue
   * moved, so ours is coming) starts the `ms` again, up to `upToMs` in all.
   */
  readonly next: (ms: number, upToMs?: number) => Effect.Effect<string | undefined>
  /**
   * `next` for a caller outside any fiber: calls `settle` once with what `next` would
   * yield; the result stops the wait (then `settle` is not called). Watches no deadline:
   * the caller keeps its own.
   */
  readonly nextThen: (ms: number, upToMs: number, settle: (message: string | undefined) => void) => () => void
  /**
   * An attempt found the lock held: a hand-off to us that came before its answer may be
   * stale (the lock lapsed and was taken since), so the next wake-up is a plain one (the
   * waiter attempts again at once and learns whether the lock is its own).
   */
  readonly attemptRefused: () => void
  /** Stops listening (idempotent). */
  readonly close: () => void
}

/** A RedisLock over a client, plus `close` for its subscriber connection. */
export interface RedisLockHandle {
  readonly lock: RedisLockShape
  /** Closes the subscriber connection; later waits only poll. */
  readonly close: Effect.Effect<void>
  /**
   * Wake-ups at each release of the lock `key` (by this library's release, commit or
   * script), and at each hand-off to `token`.
   */
  readonly releases: (key: string, token: string) => Wakeup
  /** Whether the release channel of `key` is subscribed already (a listener opened now misses nothing). */
  readonly listening: (key: string) => boolean
  /**
   * Releases `key` if it still holds `token` (compare-and-delete, or hand-off to the next
   * waiter), for a lock taken outside `acquire` (a store's fenced script), and leaves the
   * queue if `token` may have queued with `queuedTtlMs` (its entry "<token> <ttl>"). Never fails.
   */
  readonly releaseToken: (key: string, token: string, queuedTtlMs?: number) => Effect.Effect<void>
}

export interface LockHandleOptions {
  /**
   * Close the subscriber connection once no one has waited for this long (it reopens on
   * the next wait). Default: keep it until `close` (what `make`/`layer` do).
   */
  readonly subscriberIdleMs?: number
}
