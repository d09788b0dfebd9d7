/**
 * A rate limiter every replica shares: within any window (t - W, t] (W = one minute by
 * default), all callers together are allowed at most `limit` requests of a key, and a key
 * idle for a whole window has its whole limit back at once. Exact: each key is a sliding
 * log of the requests it allowed (one sorted set), and one script decides on Redis's
 * clock (`TIME`), so no caller's clock takes part. Each call ends within its timeout
 * (`RedisUnavailable` then); `withFailMode` turns that into the answer you chose.
 *
 * ```ts
 * const limiter = yield* RateLimiter.RateLimiter
 * const { allowed, retryAfterMs } = yield* limiter.consume(identityId, { limit: 60 })
 * ```
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { InvalidConfig, type CorruptData, type RedisError } from "./Errors.js"
import { checkRateLimitPrefix, DEFAULT_RATELIMIT_PREFIX } from "./internal/keys.js"
import * as Metrics from "./Metrics.js"
import { observed } from "./internal/observe.js"
import { timeoutMsOf } from "./internal/deadline.js"
import { RedisClient } from "./RedisClient.js"
import { isTimeout, memoryBacking, redisBacking, type RateLimitBacking } from "./internal/ratelimit/backing.js"
import { checkPeek, checkRequest, timing, type Decision, type Request } from "./internal/ratelimit/rule.js"
import { withTags } from "./internal/metricTags.js"
import { checkScripts } from "./internal/scripts.js"

export { DEFAULT_RATELIMIT_PREFIX as DEFAULT_PREFIX } from "./internal/keys.js"
export { checkWindow, MAX_KEY_LENGTH, MAX_LIMIT, MAX_WINDOW_MS } from "./internal/ratelimit/rule.js"

/** haechi's meaning of a limit: requests per minute. */
export const DEFAULT_WINDOW: Duration.DurationInput = "1 minute"
/** How long a call waits for Redis by default. */
export const DEFAULT_TIMEOUT: Duration.DurationInput = "1 second"

export interface ConsumeOptions {
  /** Requests allowed within any window, a whole number from 1 to `MAX_LIMIT`. */
  readonly limit: number
  /** The window's length, in whole milliseconds (default one minute). */
  readonly window?: Duration.DurationInput
}

export interface RateLimitResult {
  readonly allowed: boolean
  /** Requests still allowed in the current window (after this one, if it was allowed). */
  readonly remaining: number
  /** Milliseconds until the next request would be allowed (0 = now). */
  readonly retryAfterMs: number
  /** Milliseconds until the whole limit is back (0 = it is). */
  readonly resetAfterMs: number
  /** Set when Redis could not decide in time and the fail mode answered (see `withFailMode`). */
  readonly unavailable?: true
}

export interface PeekOptions {
  /** The window's length (default one minute). */
  readonly window?: Duration.DurationInput
  /** With a limit, `remaining` and `retryAfterMs` say what a request would get. */
  readonly limit?: number
}

export interface RateLimitCount {
  /** Requests allowed within the window that ends now. */
  readonly count: number
  /** With a limit: requests still allowed now. */
  readonly remaining?: number
  /** With a limit: milliseconds until a request would be allowed (0 = now). */
  readonly retryAfterMs?: number
  /** Milliseconds until the key's log is empty. */
  readonly resetAfterMs: number
}

/** What `consume` and `peek` fail with: a bad argument, or Redis could not answer. */
export type RateLimitError = InvalidConfig | RedisError | CorruptData

export interface RateLimiterShape {
  readonly prefix: string
  /** Takes one request from `key` if fewer than `limit` were allowed within the window that ends now. */
  readonly consume: (key: string, options: ConsumeOptions) => Effect.Effect<RateLimitResult, RateLimitError>
  /** Reads `key`'s count without taking from it (for `stats` and dashboards). */
  readonly peek: (key: string, options?: PeekOptions) => Effect.Effect<RateLimitCount, RateLimitError>
}

export class RateLimiter extends Context.Tag("haechi-store-effect/RateLimiter")<RateLimiter, RateLimiterShape>() {}

export interface RateLimiterOptions {
  /** Prepended to every key (default "haechi:rl:"); one prefix that could name a store's keys is refused. */
  readonly keyPrefix?: string
  /** How long a call waits for Redis (default one second); then it fails `RedisUnavailable`. */
  readonly timeout?: Duration.DurationInput
}

const resultOf = (decision: Decision, request: Request): RateLimitResult => ({
  allowed: decision.allowed,
  remaining: Math.max(0, request.limit - decision.count),
  ...timing(decision, request.windowMs)
})

/** The limiter's semantics over any backing: checks, span, metrics, and what callers are told. */
export const fromBacking = (backing: RateLimitBacking): RateLimiterShape => {
  const tags = { prefix: backing.prefix }
  const allowed = withTags(Metrics.ratelimitKeys.allowed, tags)
  const denied = withTags(Metrics.ratelimitKeys.denied, tags)
  const observeConsume = observed("ratelimit", "consume", backing.prefix)
  const observePeek = observed("ratelimit", "peek", backing.prefix)
  return {
    prefix: backing.prefix,
    consume: (key, options) =>
      observeConsume(
        Effect.flatMap(checkRequest(key, options?.limit, options?.window ?? DEFAULT_WINDOW), (request) =>
          Effect.flatMap(backing.consume(request), (decision) =>
            Effect.as(
              Effect.zipRight(
                Metric.increment(decision.allowed ? allowed : denied),
                Effect.annotateCurrentSpan("haechi.ratelimit.allowed", decision.allowed)
              ),
              resultOf(decision, request)
            )
          )
        )
      ),
    peek: (key, options) =>
      observePeek(
        Effect.flatMap(checkPeek(key, options?.limit, options?.window ?? DEFAULT_WINDOW), (request) =>
          Effect.map(backing.peek(request), (decision): RateLimitCount => {
            const { retryAfterMs, resetAfterMs } = timing(decision, request.windowMs)
            return request.limit === 0
              ? { count: decision.count, resetAfterMs }
              : {
                  count: decision.count,
                  remaining: Math.max(0, request.limit - decision.count),
                  retryAfterMs,
                  resetAfterMs
                }
          })
        )
      )
  }
}

/** A timeout as whole milliseconds, or `InvalidConfig`: the stores' rule (deadline.timeoutMsOf), with this limiter's default. */
export const checkTimeout = (timeout: unknown): Effect.Effect<number, InvalidConfig> =>
  timeoutMsOf(timeout, "timeout", Duration.toMillis(DEFAULT_TIMEOUT))

/** The limiter on Redis (`RedisClient` supplies the connection); a bad prefix or timeout fails here, not at first use. */
export const make = (options: RateLimiterOptions = {}): Effect.Effect<RateLimiterShape, InvalidConfig, RedisClient> =>
  Effect.gen(function* () {
    const redis = yield* RedisClient
    // a damaged or missing script is a broken build: refused here, as the stores do (not a fail-mode answer per call)
    yield* checkScripts
    const prefix = yield* checkRateLimitPrefix(options.keyPrefix ?? DEFAULT_RATELIMIT_PREFIX)
    const timeoutMs = yield* checkTimeout(options.timeout)
    return fromBacking(redisBacking(redis, prefix, timeoutMs))
  })

/** The limiter on Redis, as a layer. */
export const layer = (options: RateLimiterOptions = {}): Layer.Layer<RateLimiter, InvalidConfig, RedisClient> =>
  Layer.effect(RateLimiter, make(options))

/**
 * Like `layer`, with the options from an Effect `Config`; by default `HAECHI_RATELIMIT_PREFIX`
 * and `HAECHI_RATELIMIT_TIMEOUT` (a duration such as "500 millis"), both optional.
 */
export const layerConfig = (
  config: Config.Config<RateLimiterOptions> = Config.all({
    keyPrefix: Config.withDefault(Config.string("HAECHI_RATELIMIT_PREFIX"), DEFAULT_RATELIMIT_PREFIX),
    timeout: Config.withDefault(Config.duration("HAECHI_RATELIMIT_TIMEOUT"), Duration.decode(DEFAULT_TIMEOUT))
  })
): Layer.Layer<RateLimiter, InvalidConfig | ConfigError.ConfigError, RedisClient> =>
  Layer.effect(RateLimiter, Effect.flatMap(config, make))

/** An in-memory limiter (one process only) with the same rule, on the Effect `Clock`. */
export const makeMemory = (
  options: Pick<RateLimiterOptions, "keyPrefix"> = {}
): Effect.Effect<RateLimiterShape, InvalidConfig> =>
  Effect.map(checkRateLimitPrefix(options.keyPrefix ?? DEFAULT_RATELIMIT_PREFIX), (prefix) =>
    fromBacking(memoryBacking(prefix))
  )

/** The in-memory limiter, as a layer. */
export const layerMemory = (
  options: Pick<RateLimiterOptions, "keyPrefix"> = {}
): Layer.Layer<RateLimiter, InvalidConfig> => Layer.effect(RateLimiter, makeMemory(options))

/** `consume` on the limiter in context. */
export const consume = (
  key: string,
  options: ConsumeOptions
): Effect.Effect<RateLimitResult, RateLimitError, RateLimiter> =>
  Effect.flatMap(RateLimiter, (limiter) => limiter.consume(key, options))

/** `peek` on the limiter in context. */
export const peek = (key: string, options?: PeekOptions): Effect.Effect<RateLimitCount, RateLimitError, RateLimiter> =>
  Effect.flatMap(RateLimiter, (limiter) => limiter.peek(key, options))

// ---------------------------------------------------------------------------
// fail modes

/** What to answer when Redis cannot decide in time: refuse the request (the default) or let it through. */
export type FailMode = "deny" | "allow"

export const checkFailMode = (mode: unknown): Effect.Effect<FailMode, InvalidConfig> =>
  mode === undefined || mode === "deny" || mode === "allow"
    ? Effect.succeed(mode ?? "deny")
    : Effect.fail(
        new InvalidConfig({ option: "onUnavailable", reason: `must be "deny" or "allow", got ${JSON.stringify(mode)}` })
      )

/** Why Redis gave no decision, as the unavailable counter's `reason` tag. */
const reasonOf = (error: RedisError | CorruptData): "timeout" | "unavailable" | "refused" | "corrupt" =>
  error._tag === "RedisUnavailable"
    ? isTimeout(error)
      ? "timeout"
      : "unavailable"
    : error._tag === "RedisCommandFailed"
      ? "refused"
      : "corrupt"

/**
 * The fail mode's answers, each counted in `haechi_store_ratelimit_unavailable_total` by
 * answer and reason. A log Redis holds that the script did not write (`CorruptData`) is
 * refused whatever the mode: it is not an outage, and "allow" would let that key through
 * for as long as the damage stays.
 */
export const failModeOf = (mode: FailMode, prefix: string) => {
  const counters = new Map<string, Metric.Metric.Counter<number>>()
  const counter = (answer: FailMode, reason: string) => {
    let metric = counters.get(`${answer} ${reason}`)
    if (metric === undefined) {
      metric = withTags(Metrics.ratelimitKeys.unavailable, { prefix, answer, reason })
      counters.set(`${answer} ${reason}`, metric)
    }
    return metric
  }
  /** The answer to one call Redis gave no decision for (`undefined`: no reply within the timeout), counted. */
  return (error: RedisError | CorruptData | undefined): Effect.Effect<RateLimitResult> => {
    const reason = error === undefined ? "timeout" : reasonOf(error)
    const answer: FailMode = reason === "corrupt" ? "deny" : mode
    // (A new object per call: a caller that edits its answer changes no other caller's.)
    const result: RateLimitResult = {
      allowed: answer === "allow",
      remaining: 0,
      retryAfterMs: 0,
      resetAfterMs: 0,
      unavailable: true
    }
    const metric = Metric.increment(counter(answer, reason))
    return error === undefined
      ? Effect.as(metric, result)
      : Effect.zipRight(
          metric,
          Effect.as(
            Effect.logDebug(`rate limiter ${prefix}: ${error.message}; answered "${answer}"`).pipe(
              Effect.annotateLogs("cause", Cause.pretty(Cause.fail(error)))
            ),
            result
          )
        )
  }
}

/**
 * Answers with `mode` when Redis gave no decision (no reply in time, unreachable, an error
 * reply), and refuses a key whose log is corrupt, counting each in
 * `haechi_store_ratelimit_unavailable_total`; a bad argument still fails.
 */
export const withFailMode = (mode: FailMode, prefix: string) => {
  const answerTo = failModeOf(mode, prefix)
  return <R>(
    effect: Effect.Effect<RateLimitResult, RateLimitError, R>
  ): Effect.Effect<RateLimitResult, InvalidConfig, R> =>
    Effect.catchIf(
      effect,
      (error): error is RedisError | CorruptData => error._tag !== "InvalidConfig",
      (error) => answerTo(error)
    )
}

// ---------------------------------------------------------------------------
// tools

/** What `inspect` reports: where it looked, and what `peek` says there. */
export interface RateLimitStats extends RateLimitCount {
  readonly prefix: string
  readonly key: string
  readonly windowMs: number
}

/**
 * One key's count on Redis, for tools (the CLI's `stats --ratelimit-key`): takes nothing.
 * The window defaults to one minute (haechi's), the prefix to "haechi:rl:".
 */
export const inspect = (
  key: string,
  options: RateLimiterOptions & PeekOptions = {}
): Effect.Effect<RateLimitStats, RateLimitError, RedisClient> =>
  Effect.gen(function* () {
    const limiter = yield* make(options)
    const count = yield* limiter.peek(key, options)
    const windowMs = Duration.toMillis(Duration.decode(options.window ?? DEFAULT_WINDOW))
    return { prefix: limiter.prefix, key, windowMs, ...count }
  })
