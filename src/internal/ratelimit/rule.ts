/**
 * The rate limiter's rule, written once for every backing: within any window (t - W, t]
 * at most `limit` requests of a key are allowed, and a request is allowed exactly when
 * fewer than `limit` allowed requests are newer than now - W (a sliding log). Here live
 * what a backing returns, the arithmetic that turns it into what a caller is told, and
 * the checks on a request's key, limit and window.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { InvalidConfig } from "../../Errors.js"
import { isWellFormed } from "../jsonRecord.js"

/** What a backing saw for one request, on its clock (microseconds). */
export interface Decision {
  readonly allowed: boolean
  /** Allowed requests in the window, this one included when allowed. */
  readonly count: number
  readonly nowUs: number
  /** The entry that must leave the window before another request is allowed; null = one would be allowed now. */
  readonly pivotUs: number | null
  /** The newest entry; null = the log is empty. */
  readonly newestUs: number | null
}

/** Whole milliseconds until `us` microseconds have passed (rounded up, so a retry then is allowed). */
const ceilMs = (us: number): number => Math.max(0, Math.ceil(us / 1000))

/** When another request would be allowed, and when the whole limit is back, from `now`. */
export const timing = (decision: Decision, windowMs: number) => ({
  retryAfterMs: decision.pivotUs === null ? 0 : ceilMs(decision.pivotUs + windowMs * 1000 - decision.nowUs),
  resetAfterMs: decision.newestUs === null ? 0 : ceilMs(decision.newestUs + windowMs * 1000 - decision.nowUs)
})

/** The largest limit accepted: the log holds up to `limit` entries per key (see the README's memory figures). */
export const MAX_LIMIT = 100_000
/** The longest window accepted. */
export const MAX_WINDOW_MS = 86_400_000
/** The longest key accepted, in UTF-16 code units. */
export const MAX_KEY_LENGTH = 1024

/** A request's key, limit and window, checked; `InvalidConfig` names the one that is wrong. */
export interface Request {
  readonly key: string
  readonly limit: number
  readonly windowMs: number
}

/** What is wrong with a key, or undefined. */
const keyProblem = (key: unknown): InvalidConfig | undefined =>
  typeof key !== "string"
    ? new InvalidConfig({
        option: "rate limit key",
        reason: `must be a string, got ${key === null ? "null" : typeof key}`
      })
    : key.length === 0
      ? new InvalidConfig({ option: "rate limit key", reason: "must not be empty" })
      : key.length > MAX_KEY_LENGTH
        ? new InvalidConfig({
            option: "rate limit key",
            reason: `is ${key.length} characters long; at most ${MAX_KEY_LENGTH} are accepted`
          })
        : !isWellFormed(key)
          ? new InvalidConfig({
              option: "rate limit key",
              reason:
                "is not well-formed UTF-16 (a lone surrogate): Redis would store it as U+FFFD, the key of other ids"
            })
          : undefined

const limitProblem = (limit: unknown): InvalidConfig | undefined =>
  typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT
    ? new InvalidConfig({
        option: "limit",
        reason: `must be a whole number from 1 to ${MAX_LIMIT}, got ${describeValue(limit)}`
      })
    : undefined

/** A window as a Duration input (60_000 ms, "1 minute", Duration.seconds(2)) in whole ms, or what is wrong with it. */
const windowMs = (window: unknown): number | InvalidConfig => {
  let ms: number
  if (typeof window === "number") ms = window
  else {
    const decoded = Duration.decodeUnknown(window)
    if (decoded._tag === "None")
      return new InvalidConfig({ option: "window", reason: `must be a duration, got ${describeValue(window)}` })
    ms = Duration.toMillis(decoded.value)
  }
  return !Number.isInteger(ms) || ms < 1 || ms > MAX_WINDOW_MS
    ? new InvalidConfig({
        option: "window",
        reason: `must be a whole number of milliseconds from 1 to ${MAX_WINDOW_MS}, got ${describeValue(ms)}`
      })
    : ms
}

/** The request checked; `InvalidConfig` names the part that is wrong (synchronous, no allocation beyond the result). */
export const checkRequest = (key: unknown, limit: unknown, window: unknown): Effect.Effect<Request, InvalidConfig> => {
  const problem = keyProblem(key) ?? limitProblem(limit)
  if (problem !== undefined) return Effect.fail(problem)
  const ms = windowMs(window)
  return typeof ms === "number"
    ? Effect.succeed({ key: key as string, limit: limit as number, windowMs: ms })
    : Effect.fail(ms)
}

/** A window alone, checked (for options given once, such as the facade's). */
export const checkWindow = (window: unknown): Effect.Effect<number, InvalidConfig> => {
  const ms = windowMs(window)
  return typeof ms === "number" ? Effect.succeed(ms) : Effect.fail(ms)
}

/** Like `checkRequest` for a read that may have no limit (0 = none). */
export const checkPeek = (key: unknown, limit: unknown, window: unknown): Effect.Effect<Request, InvalidConfig> =>
  checkRequest(key, limit === undefined ? 1 : limit, window).pipe(
    Effect.map((request) => (limit === undefined ? { ...request, limit: 0 } : request))
  )

const describeValue = (value: unknown): string =>
  typeof value === "number" || typeof value === "bigint"
    ? String(value)
    : typeof value === "string"
      ? JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)
      : value === null
        ? "null"
        : typeof value
