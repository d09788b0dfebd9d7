/**
 * The rate limiter's storage, one primitive per backing: take one request from a key's
 * log (or read it), atomically, on the backing's own clock. Redis does it in one script
 * on Redis's clock (`TIME`), so no replica's clock takes part; the in-memory backing does
 * the same steps on an Effect `Clock`. What callers are told is derived above, in
 * RateLimiter, from the `Decision` either returns.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { CorruptData, RedisUnavailable } from "../../Errors.js"
import { randomDecimalId } from "../commitId.js"
import { rateLimitKey } from "../keys.js"
import { type RedisClientShape } from "../../RedisClient.js"
import { wrongType } from "../redisReply.js"
import { RateLimitConsumeReply } from "../replyCodes.js"
import { Scripts } from "../scripts.js"
import type { BackingError } from "../backingError.js"
import type { Decision, Request } from "./rule.js"

export type { BackingError }

export interface RateLimitBacking {
  readonly prefix: string
  /** Takes one request from `request.key`'s log if the rule allows it. */
  readonly consume: (request: Request) => Effect.Effect<Decision, BackingError>
  /** Reads the log; `request.limit` 0 = no limit given (no pivot). `allowed` says whether a request would be. */
  readonly peek: (request: Request) => Effect.Effect<Decision, BackingError>
}

// ---------------------------------------------------------------------------
// Redis

/** True for the `RedisUnavailable` a backing raises when no reply came within its timeout. */
export const isTimeout = (error: RedisUnavailable): boolean => Cause.isTimeoutException(error.cause)

const time = (value: unknown): number | null | undefined =>
  value === "" ? null : typeof value === "string" && /^\d{1,17}$/.test(value) ? Number(value) : undefined

/** The scripts' reply as a `Decision`; anything else is not what they return. */
const decisionOf = (
  key: string,
  reply: unknown,
  limit: number,
  allowedAt: number | undefined
): Decision | CorruptData => {
  const offset = allowedAt === undefined ? 0 : 1
  const parts = Array.isArray(reply) ? reply : []
  if (parts.length === 1 && parts[0] === RateLimitConsumeReply.Corrupt) {
    return new CorruptData({
      key,
      detail:
        "is not a rate limit log (another type or other members: left as it is), or holds an entry the script cannot have written (consume sets it to expire within one window): refused"
    })
  }
  const count = parts[offset]
  const nowUs = time(parts[offset + 1])
  const pivotUs = time(parts[offset + 2])
  const newestUs = time(parts[offset + 3])
  if (
    parts.length !== 4 + offset ||
    typeof count !== "number" ||
    nowUs == null ||
    pivotUs === undefined ||
    newestUs === undefined
  ) {
    return new CorruptData({ key, detail: "the rate limit script's reply is not what the script returns" })
  }
  const allowed = allowedAt === undefined ? limit > 0 && count < limit : parts[0] === RateLimitConsumeReply.Allowed
  return { allowed, count, nowUs, pivotUs, newestUs }
}

const noReply = (operation: string, ms: number) =>
  new RedisUnavailable({ operation, cause: new Cause.TimeoutException(`no reply within ${ms} ms`) })

/** The log at `prefix + key` on Redis; a call that gets no reply within `timeoutMs` fails `RedisUnavailable`. */
export const redisBacking = (redis: RedisClientShape, prefix: string, timeoutMs: number): RateLimitBacking => {
  const run = (
    script: typeof Scripts.ratelimitConsume,
    operation: string,
    request: Request,
    consume: boolean
  ): Effect.Effect<Decision, BackingError> => {
    const key = rateLimitKey(prefix, request.key, request.windowMs)
    // consume: a call id, its log entry's member (an integer Redis keeps in 8 bytes), so a
    // re-send of this call (a reply lost, ioredis re-sends after a reconnect) takes nothing more
    const args = consume ? [request.limit, request.windowMs, randomDecimalId()] : [request.limit, request.windowMs]
    return redis.scriptWithin(script, [key], args, timeoutMs).pipe(
      wrongType(key),
      Effect.flatMap((reply): Effect.Effect<Decision, BackingError> => {
        if (Option.isNone(reply)) return Effect.fail(noReply(operation, timeoutMs))
        const decision = decisionOf(key, reply.value, request.limit, consume ? 1 : undefined)
        return decision instanceof CorruptData ? Effect.fail(decision) : Effect.succeed(decision)
      })
    )
  }
  return {
    prefix,
    consume: (request) => run(Scripts.ratelimitConsume, "ratelimit consume", request, true),
    peek: (request) => run(Scripts.ratelimitPeek, "ratelimit peek", request, false)
  }
}

// ---------------------------------------------------------------------------
// in memory

interface MemoryLog {
  /** Allowed requests' times (µs), ascending. */
  readonly times: Array<number>
  /** When the newest entry leaves the window (the Redis key's expiry). */
  expiresAtUs: number
}

/** First index whose time is greater than `us` (the log is ascending). */
const after = (times: ReadonlyArray<number>, us: number): number => {
  let lo = 0
  let hi = times.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (times[mid]! <= us) lo = mid + 1
    else hi = mid
  }
  return lo
}

const SWEEP_EVERY = 1024

/** The same steps as the scripts, on the Effect `Clock` (one process only). */
export const memoryBacking = (prefix: string): RateLimitBacking => {
  const logs = new Map<string, MemoryLog>()
  let calls = 0
  const live = (key: string, nowUs: number): MemoryLog | undefined => {
    const log = logs.get(key)
    if (log !== undefined && log.expiresAtUs <= nowUs) logs.delete(key)
    return log !== undefined && log.expiresAtUs > nowUs ? log : undefined
  }
  // Idle keys expire like the Redis keys: checked on access, and swept now and then.
  const sweep = (nowUs: number) => {
    if (++calls % SWEEP_EVERY !== 0) return
    for (const [key, log] of logs) if (log.expiresAtUs <= nowUs) logs.delete(key)
  }
  const decide = (
    times: ReadonlyArray<number>,
    start: number,
    limit: number,
    nowUs: number,
    allowed: boolean
  ): Decision => {
    const count = times.length - start
    return {
      allowed,
      count,
      nowUs,
      pivotUs: limit > 0 && count >= limit ? times[start + count - limit]! : null,
      newestUs: count > 0 ? times[times.length - 1]! : null
    }
  }
  return {
    prefix,
    consume: (request) =>
      Effect.map(Clock.currentTimeNanos, (nanos) => {
        const nowUs = Number(nanos / 1000n)
        const windowUs = request.windowMs * 1000
        const key = rateLimitKey(prefix, request.key, request.windowMs)
        sweep(nowUs)
        const log = live(key, nowUs) ?? { times: [], expiresAtUs: 0 }
        log.times.splice(0, after(log.times, nowUs - windowUs))
        const allowed = log.times.length < request.limit
        if (allowed) log.times.splice(after(log.times, nowUs), 0, nowUs)
        const decision = decide(log.times, 0, request.limit, nowUs, allowed)
        if (decision.newestUs === null) logs.delete(key)
        else {
          log.expiresAtUs = decision.newestUs + windowUs
          logs.set(key, log)
        }
        return decision
      }),
    peek: (request) =>
      Effect.map(Clock.currentTimeNanos, (nanos) => {
        const nowUs = Number(nanos / 1000n)
        const log = live(rateLimitKey(prefix, request.key, request.windowMs), nowUs)
        const times = log?.times ?? []
        const start = after(times, nowUs - request.windowMs * 1000)
        const decision = decide(times, start, request.limit, nowUs, false)
        return { ...decision, allowed: request.limit > 0 && decision.count < request.limit }
      })
  }
}
