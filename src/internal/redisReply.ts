/**
 * How an ioredis rejection is typed, once for the whole package: an error reply is
 * `RedisCommandFailed` (the command did not take effect), a Cluster client that gave up
 * redirecting names the reply that stopped it, anything else is `RedisUnavailable`
 * (no answer: the command may or may not have run); WRONGTYPE is corrupt data at a key.
 */
import * as Effect from "effect/Effect"
import { CorruptData, RedisCommandFailed, RedisUnavailable, type RedisError } from "../Errors.js"

/** True for an error reply from the server (the command was refused, not lost). */
export const isReplyError = (error: unknown): boolean =>
  error instanceof Error && (error.name === "ReplyError" || error.constructor?.name === "ReplyError")

/**
 * The cluster reply that ended a Cluster client's redirections, when it gave up on one
 * (`maxRedirections`): TRYAGAIN, ASK, MOVED or CLUSTERDOWN, the first line, else undefined.
 * Each of those means the node refused the command, so it did not run: a slot migration
 * or a failover in progress, not an unreachable Redis.
 */
export const redirectionReply = (error: unknown): string | undefined => {
  if (!(error instanceof Error)) return undefined
  const match =
    /^Too many Cluster redirections\. Last error: (?:ReplyError: )?((?:TRYAGAIN|ASK|MOVED|CLUSTERDOWN)\b[^\n]*)/.exec(
      error.message
    )
  return match?.[1]
}

/** Types an ioredis rejection. */
export const toRedisError = (operation: string, error: unknown): RedisError => {
  if (isReplyError(error)) {
    return new RedisCommandFailed({ operation, reply: (error as Error).message.split("\n")[0] ?? "", cause: error })
  }
  const refused = redirectionReply(error)
  return refused !== undefined
    ? new RedisCommandFailed({ operation, reply: `${refused} (the cluster client gave up redirecting)`, cause: error })
    : new RedisUnavailable({ operation, cause: error })
}

const isWrongType = (e: RedisError): e is RedisCommandFailed =>
  e._tag === "RedisCommandFailed" && e.reply.includes("WRONGTYPE")

/** Corrupt data at `key`: it holds another Redis type than the store writes there. */
export const wrongTypeAt = (key: string) => new CorruptData({ key, detail: "holds the wrong Redis type" })

/** Turns a WRONGTYPE reply (a key holding another Redis type) into corrupt data at `key`. */
export const wrongType =
  (key: string) =>
  <A>(effect: Effect.Effect<A, RedisError>): Effect.Effect<A, RedisError | CorruptData> =>
    Effect.catchIf(effect, isWrongType, () => Effect.fail(wrongTypeAt(key)))

/**
 * `wrongType` for a script that names the key it refused ("WRONGTYPE <key> holds the wrong
 * type: nothing written", include/waiters' wrongTypeRefusal): corrupt data at that key,
 * else at `key`.
 */
export const wrongTypeNamed =
  (key: string) =>
  <A>(effect: Effect.Effect<A, RedisError>): Effect.Effect<A, RedisError | CorruptData> =>
    Effect.catchIf(effect, isWrongType, (e) =>
      Effect.fail(wrongTypeAt(/WRONGTYPE (.+) holds the wrong type: nothing written/.exec(e.reply)?.[1] ?? key))
    )

/** `wrongType` for a typed error outside an Effect. */
export const wrongTypeOf = (key: string, error: RedisError): RedisError | CorruptData =>
  isWrongType(error) ? wrongTypeAt(key) : error
