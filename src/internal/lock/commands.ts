/**
 * The lock's three Redis commands (acquire, extend, release), each one script call
 * bounded in time. The release only frees the lock early (the TTL frees it regardless),
 * so it never fails: one that gets no answer in time is abandoned. The acquire and the
 * release come as effects and, for the Promise facade's fiber-free lane, as promises
 * built from the same arguments and reply rule.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { RedisCommandFailed, type RedisError } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { now, timerDelay } from "../deadline.js"
import { toRedisError } from "../redisReply.js"
import { callScript, type ScriptDefinition, Scripts } from "../scripts.js"
import { LockReleaseReply } from "../replyCodes.js"
import { closesOf } from "./clientLife.js"
import { lockKeysOf, releaseChannelOf } from "./keys.js"

/** Longest time one acquire attempt may take when the wait bound is shorter. */
export const ATTEMPT_FLOOR_MS = 1000
/** Longest time a release may take (or the TTL if shorter) before it is abandoned. */
export const RELEASE_BOUND_MS = 1000
/** Longest a waiter stays queued for a hand-off (the queue entry's TTL). */
const QUEUE_CAP_MS = 86_400_000

/** A script's integer reply, else `RedisCommandFailed` naming the operation. */
const integerOf = (operation: string, value: unknown): number | RedisCommandFailed =>
  typeof value === "number" && Number.isSafeInteger(value)
    ? value
    : new RedisCommandFailed({ operation, reply: `unexpected reply ${String(value)}`, cause: value })

const integerReply = (operation: string, value: unknown): Effect.Effect<number, RedisCommandFailed> => {
  const n = integerOf(operation, value)
  return typeof n === "number" ? Effect.succeed(n) : Effect.fail(n)
}

/** The acquire script's arguments: the token, the TTL, and how long to stay queued ("" for not at all). */
const acquireArgs = (token: string, ttlMs: number, queueMs: number): Array<string | number> => {
  const queue = Math.ceil(Math.min(queueMs, QUEUE_CAP_MS))
  return [token, ttlMs, queue > 0 ? queue : ""]
}

/** The release script's arguments: the token, the channel it announces on, and the queue entry to leave. */
const releaseArgs = (key: string, token: string, ttlMs: number, queued: boolean): Array<string> => [
  token,
  releaseChannelOf(key),
  queued ? `${token} ${ttlMs}` : ""
]

const releaseBoundMs = (ttlMs: number) => Math.min(ttlMs, RELEASE_BOUND_MS)

/**
 * One acquire attempt for `token`, queueing it for a hand-off for `queueMs` (none if 0):
 * the new fence (> 0); when someone else holds the lock, the fence counter negated (0 or
 * less: a hand-off at or below that counter is stale); undefined when no answer came in `boundMs`.
 */
export const tryAcquire = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  queueMs: number,
  boundMs: number
): Effect.Effect<number | undefined, RedisError> =>
  Effect.flatMap(
    redis.scriptWithin(Scripts.lockAcquire, lockKeysOf(key), acquireArgs(token, ttlMs, queueMs), boundMs),
    (value) => (Option.isNone(value) ? Effect.succeed(undefined) : integerReply("lock acquire", value.value))
  )

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
 * leaves the queue). Never fails. True only when the answer proves the lease was lost
 * (see `provesLoss`; `vouchedUntil`: until when the lease is vouched for), else false:
 * released, handed on, no answer, or an answer that proves nothing.
 */
export const release = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  queued = true,
  vouchedUntil: () => number = NOT_VOUCHED
): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    const closes = closesOf(redis.client)
    return Effect.matchEffect(
      redis.scriptWithin(
        Scripts.lockRelease,
        lockKeysOf(key),
        releaseArgs(key, token, ttlMs, queued),
        releaseBoundMs(ttlMs)
      ),
      {
        onFailure: (error) => Effect.as(releaseNotDone(key, error), false),
        onSuccess: (answered) =>
          Option.isNone(answered)
            ? Effect.as(releaseNotDone(key), false)
            : Effect.succeed(provesLoss(redis, answered.value, closes, vouchedUntil()))
      }
    )
  })

const NOT_VOUCHED = () => 0

/**
 * Whether a release's answer proves the lease was lost while vouched for: NotOurs (the
 * lock held another token, or none), answered before `vouchedUntil` (so Redis ran it
 * before the TTL the last acquire or extension set could lapse), on a connection that did
 * not close since the release was sent (ioredis re-sends an unanswered command after a
 * reconnect, and a re-sent release finds its own first run's work: not ours). A Cluster
 * client's node connections close unseen here, so there it proves nothing.
 */
const provesLoss = (redis: RedisClientShape, reply: unknown, closesAtSend: number, vouchedUntil: number): boolean =>
  reply === LockReleaseReply.NotOurs &&
  !redis.isCluster &&
  closesOf(redis.client) === closesAtSend &&
  now() < vouchedUntil

const releaseNotDone = (key: string, error?: RedisError) =>
  error === undefined
    ? Effect.logDebug(`lock ${key}: release unanswered; the TTL frees it`)
    : Effect.logDebug(`lock ${key}: release failed; the TTL frees it`, error)

// ---------------------------------------------------------------------------
// the same commands as promises (the facade's lane: no fiber per lock)

/** No answer within the bound. */
export const UNANSWERED: unique symbol = Symbol("unanswered")

/** `call`'s value, or `UNANSWERED` once `ms` have passed first (a rejection stays one). */
const answerWithin = <A>(call: Promise<A>, ms: number): Promise<A | typeof UNANSWERED> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(UNANSWERED), timerDelay(ms))
    call.then(
      (value) => (clearTimeout(timer), resolve(value)),
      (error) => (clearTimeout(timer), reject(error))
    )
  })

const scriptCall = (
  redis: RedisClientShape,
  script: ScriptDefinition,
  key: string,
  args: ReadonlyArray<string | number>
): Promise<unknown> => {
  try {
    return callScript(redis.client, script, lockKeysOf(key), args)
  } catch (error) {
    return Promise.reject(error)
  }
}

/**
 * `tryAcquire` as a promise: the new fence, the negated fence counter when someone else
 * holds the lock, `UNANSWERED`; rejects with the `RedisError`.
 */
export const tryAcquireNow = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  queueMs: number,
  boundMs: number
): Promise<number | typeof UNANSWERED> =>
  answerWithin(scriptCall(redis, Scripts.lockAcquire, key, acquireArgs(token, ttlMs, queueMs)), boundMs).then(
    (value) => {
      if (value === UNANSWERED) return value
      const fence = integerOf("lock acquire", value)
      return typeof fence === "number" ? fence : Promise.reject(fence)
    },
    (error) => Promise.reject(toRedisError(Scripts.lockAcquire.name, error))
  )

/** `release` as a promise: never rejects (what it could not do is logged, like `release`); true when it proves a loss. */
export const releaseNow = (
  redis: RedisClientShape,
  key: string,
  token: string,
  ttlMs: number,
  vouchedUntil: () => number = NOT_VOUCHED
): Promise<boolean> => {
  const closes = closesOf(redis.client)
  return answerWithin(
    scriptCall(redis, Scripts.lockRelease, key, releaseArgs(key, token, ttlMs, true)),
    releaseBoundMs(ttlMs)
  ).then(
    (value) => {
      if (value !== UNANSWERED) return provesLoss(redis, value, closes, vouchedUntil())
      Effect.runFork(releaseNotDone(key))
      return false
    },
    (error) => {
      Effect.runFork(releaseNotDone(key, toRedisError(Scripts.lockRelease.name, error)))
      return false
    }
  )
}
