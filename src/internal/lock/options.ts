/**
 * The lock's options and their one validation: a bad option fails with `InvalidConfig`
 * naming it, before anything is sent to Redis. A frozen options object (the facade's and
 * the stores') is resolved once, so a lock cycle does not re-parse it.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { InvalidConfig } from "../../Errors.js"

/** Options of one acquisition. Every field is optional; the defaults are below. */
export interface LockOptions {
  /**
   * How long the lock outlives a holder that stops renewing it (a crash, a partition).
   * Default 10 seconds, like haechi-store-redis. From 1 ms to 10^12 ms (about 31 years).
   */
  readonly ttl?: Duration.DurationInput
  /**
   * How often the holder extends the TTL. Default a third of `ttl`; at least 1 ms. A value
   * at or above `ttl` (or `Duration.infinity`) effectively disables renewal: the lease is
   * then reported lost once `ttl` has run out.
   */
  readonly renewEvery?: Duration.DurationInput
  /**
   * How long `acquire` may wait for a held lock before failing with `LockTimeout`.
   * Default 5 seconds, like haechi-store-redis. `0` tries exactly once.
   */
  readonly waitTimeout?: Duration.DurationInput
  /**
   * The fallback poll while waiting: the delay before re-trying when no release message
   * woke the waiter. Each re-try (woken or polled) takes one step; a schedule that ends
   * fails the wait with `LockTimeout`. Default: every 50 ms, jittered (40-60 ms).
   */
  readonly retrySchedule?: Schedule.Schedule<unknown>
  /**
   * What `withLock` does when the lease is lost: `"fail"` (default) interrupts the work
   * and fails with `LockLost`; `"after"` lets the work finish (`lease.signal` tells it),
   * then fails with `LockLost`; `"ignore"` lets the work finish and succeed, for pure
   * contention-reduction use over writes that are fenced anyway. "fail" and "after" also
   * check the lease when the work ends, so a loss no renewal saw (an event loop blocked
   * past the TTL) is reported too.
   */
  readonly onLost?: "fail" | "after" | "ignore"
}

export const DEFAULT_TTL: Duration.Duration = Duration.seconds(10)
export const DEFAULT_WAIT_TIMEOUT: Duration.Duration = Duration.seconds(5)
export const DEFAULT_RETRY_SCHEDULE: Schedule.Schedule<unknown> = Schedule.spaced(Duration.millis(50)).pipe(
  Schedule.jittered
)

/** Options after validation, in milliseconds. */
export interface ResolvedLockOptions {
  readonly ttlMs: number
  readonly renewMs: number
  readonly waitMs: number
  readonly retrySchedule: Schedule.Schedule<unknown>
  readonly onLost: "fail" | "after" | "ignore"
}

export const invalid = (option: string, reason: string) => Effect.fail(new InvalidConfig({ option, reason }))

const duration = (option: string, input: unknown): Effect.Effect<number, InvalidConfig> =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => invalid(option, `must be a Duration (e.g. "5 seconds" or a number of ms), got ${String(input)}`),
    onSome: (d) => Effect.succeed(Duration.toMillis(d))
  })

const resolvedFrozen = new WeakMap<LockOptions, ResolvedLockOptions>()

/**
 * Validates options and fills in the defaults; a bad option fails with `InvalidConfig`
 * naming it. A frozen options object is resolved once.
 */
export const resolveOptions = (options: LockOptions = {}): Effect.Effect<ResolvedLockOptions, InvalidConfig> => {
  if (typeof options !== "object" || options === null || !Object.isFrozen(options)) return resolveFresh(options)
  const hit = resolvedFrozen.get(options)
  return hit !== undefined
    ? Effect.succeed(hit)
    : Effect.tap(resolveFresh(options), (resolved) => {
        resolvedFrozen.set(options, resolved)
      })
}

/** The options already resolved (a frozen object resolved before), else undefined. */
export const resolvedAlready = (options: LockOptions | undefined): ResolvedLockOptions | undefined =>
  typeof options === "object" && options !== null ? resolvedFrozen.get(options) : undefined

/** The longest TTL, about 31.7 years: past any lock's work, and short of the waiter queue's PEXPIRE in Lua's number format. */
const MAX_TTL_MS = 1e12

const resolveFresh = (options: LockOptions): Effect.Effect<ResolvedLockOptions, InvalidConfig> =>
  Effect.gen(function* () {
    if (typeof options !== "object" || options === null) {
      return yield* invalid("options", "must be an object")
    }
    const ttlMs = options.ttl === undefined ? Duration.toMillis(DEFAULT_TTL) : yield* duration("ttl", options.ttl)
    // (Longer, and the queue's PEXPIRE gets a number Redis prints in exponent form and refuses.)
    if (!Number.isFinite(ttlMs) || ttlMs < 1 || ttlMs > MAX_TTL_MS) {
      return yield* invalid("ttl", `must be a duration from 1 ms to ${MAX_TTL_MS} ms (about 31 years), got ${ttlMs} ms`)
    }
    const renewMs = options.renewEvery === undefined ? ttlMs / 3 : yield* duration("renewEvery", options.renewEvery)
    // (Shorter, and the renewal runs extend after extend at the round trip's rate.)
    if (!(renewMs > 0) || (options.renewEvery !== undefined && !(renewMs >= 1))) {
      return yield* invalid("renewEvery", `must be a duration of at least 1 ms, got ${renewMs} ms`)
    }
    const waitMs =
      options.waitTimeout === undefined
        ? Duration.toMillis(DEFAULT_WAIT_TIMEOUT)
        : yield* duration("waitTimeout", options.waitTimeout)
    const retrySchedule = options.retrySchedule ?? DEFAULT_RETRY_SCHEDULE
    if (!Schedule.isSchedule(retrySchedule)) {
      return yield* invalid("retrySchedule", "must be a Schedule")
    }
    const onLost = options.onLost ?? "fail"
    if (onLost !== "fail" && onLost !== "after" && onLost !== "ignore") {
      return yield* invalid("onLost", `must be "fail", "after" or "ignore", got ${JSON.stringify(onLost)}`)
    }
    return { ttlMs: Math.ceil(ttlMs), renewMs, waitMs, retrySchedule, onLost }
  })
