/**
 * The lock's three Redis commands (acquire, extend, release), each one script call
 * bounded in time. The release only frees the lock early (the TTL frees it regardless),
 * so it never fails: one that gets no answer in time is abandoned.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { RedisCommandFailed, type RedisError } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { Scripts } from "../scripts.js"
import { lockKeysOf, releaseChannelOf } from "./keys.js"

/** Longest time one acquire attempt may take when the wait bound is shorter. */
export const ATTEMPT_FLOOR_MS = 1000
/** Longest time a release may take (or the TTL if shorter) before it is abandoned. */
export const RELEASE_BOUND_MS = 1000
/** Longest a waiter stays queued for a hand-off (the queue entry's TTL). */
const QUEUE_CAP_MS = 86_400_000

/** A script's integer reply, else `RedisCommandFailed` naming the operation. */
const integerReply = (operation: string, value: unknown): Effect.Effect<number, RedisCommandFailed> =>
  typeof value === "number" && Number.isSafeInteger(value)
    ? Effect.succeed(value)
    : Effect.fail(new RedisCommandFailed({ operation, reply: `unexpected reply ${String(value)}`, cause: value }))

/**
 * One acquire attempt for `token`, queueing it for a hand-off for `queueMs` (none if 0):
 * the new fence, 0 when someone else holds the lock, undefined when no answer came in `boundMs`.
 */
export const tryAcquire = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  queueMs: number,
  boundMs: number
): Effect.Effect<number | undefined, RedisError> => {
  const queue = Math.ceil(Math.min(queueMs, QUEUE_CAP_MS))
  return Effect.flatMap(
    redis.scriptWithin(Scripts.lockAcquire, lockKeysOf(key), [token, ttlMs, queue > 0 ? queue : ""], boundMs),
    (value) => (Option.isNone(value) ? Effect.succeed(undefined) : integerReply("lock acquire", value.value))
  )
}

/**
 * Extends the TTL of `key` if it still holds `token`: 1 extended, 0 gone, another
 * number someone else's; "timeout" when no answer came in `boundMs`.
 */
export const extend = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  boundMs: number
): Effect.Effect<number, RedisError | "timeout"> =>
  Effect.flatMap(
    redis.scriptWithin(Scripts.lockExtend, [key], [token, ttlMs], boundMs),
    (value): Effect.Effect<number, RedisCommandFailed | "timeout"> =>
      Option.isNone(value) ? Effect.fail("timeout" as const) : integerReply("lock extend", value.value)
  )

/**
 * Releases `key` if it holds `token` (compare-and-delete, or hand-off to the first
 * waiter). `queued`: our waiter entry's TTL, when we may have queued (the release also
 * leaves the queue). Never fails.
 */
export const release = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  queued = true
): Effect.Effect<void> =>
  Effect.matchEffect(
    redis.scriptWithin(
      Scripts.lockRelease,
      lockKeysOf(key),
      [token, releaseChannelOf(key), queued ? `${token} ${ttlMs}` : ""],
      Math.min(ttlMs, RELEASE_BOUND_MS)
    ),
    {
      onFailure: (error) => Effect.logDebug(`lock ${key}: release failed; the TTL frees it`, error),
      onSuccess: (answered) =>
        Option.isNone(answered) ? Effect.logDebug(`lock ${key}: release unanswered; the TTL frees it`) : Effect.void
    }
  )
