/**
 * The Redis a command works on: `--url`, else `REDIS_URL` (read as a redacted Config),
 * validated, shown with its password replaced by `***`, and one connection that fails
 * fast: a single attempt with a short connect timeout, awaited before any work; no
 * reconnection; one try per request. Closing it never waits on a Redis that stopped
 * answering (QUIT is bounded, then the socket is dropped).
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { RedisClient, RedisUnavailable } from "haechi-store-effect"
import { Redis } from "ioredis"
import { type CliFailure, failureOf, identity, usage } from "./failure.js"

export interface RedisTarget {
  readonly url: Redacted.Redacted
  /** The URL with its password replaced by `***`. */
  readonly shown: string
  /** Removes the password (raw and decoded) from a message. */
  readonly scrub: (text: string) => string
}

/** `--url`, else `REDIS_URL`; `None` when neither is set (or either is empty). */
export const resolveUrl = (option: Option.Option<Redacted.Redacted>): Effect.Effect<Option.Option<Redacted.Redacted>> =>
  Option.match(
    Option.filter(option, (url) => Redacted.value(url) !== ""),
    {
      onSome: (url) => Effect.succeedSome(url),
      onNone: () =>
        Config.option(Config.redacted("REDIS_URL")).pipe(
          Effect.map(Option.filter((url) => Redacted.value(url) !== "")),
          Effect.orElseSucceed(() => Option.none())
        )
    }
  )

const urlUsage = "expected redis://[[user]:password@]host[:port][/db] or rediss://…"

/** The URL's password, raw and decoded, longest first (what `scrub` removes). */
const secretsOf = (parsed: URL): ReadonlyArray<string> => {
  if (parsed.password === "") return []
  const secrets = [parsed.password]
  try {
    secrets.push(decodeURIComponent(parsed.password))
  } catch {
    // keep the raw form only
  }
  return [...new Set(secrets)].filter((s) => s.length > 0).sort((a, b) => b.length - a.length)
}

export const target = (url: Redacted.Redacted): Effect.Effect<RedisTarget, CliFailure> =>
  Effect.suspend(() => {
    const raw = Redacted.value(url)
    let parsed: URL
    try {
      parsed = new URL(raw)
    } catch {
      return Effect.fail(usage(`invalid Redis URL (${urlUsage})`))
    }
    if ((parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") || parsed.hostname === "") {
      return Effect.fail(usage(`invalid Redis URL (${urlUsage})`))
    }
    const words = secretsOf(parsed)
    if (parsed.password !== "") parsed.password = "***"
    const shown = parsed.toString().replace("%2A%2A%2A", "***")
    const scrub =
      words.length === 0
        ? identity
        : (text: string) => {
            let out = text.split(raw).join(shown)
            for (const word of words) out = out.split(word).join("***")
            return out
          }
    return Effect.succeed({ url, shown, scrub })
  })

/**
 * One connection for the scope's life, failing fast. (The offline queue stays on: a
 * lock's subscriber, a duplicate of this client, connects on its first command.)
 */
export const connectTo = (t: RedisTarget): Effect.Effect<RedisClient.RedisClientShape, RedisUnavailable, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Redis, RedisUnavailable>((resume) => {
      let last: unknown
      const client = new Redis(Redacted.value(t.url), {
        lazyConnect: true,
        connectTimeout: 3000,
        maxRetriesPerRequest: 1,
        retryStrategy: () => null
      })
      // Without a listener ioredis prints every error event to stderr itself.
      client.on("error", (error) => {
        last = error
      })
      client.connect().then(
        () => resume(Effect.succeed(client)),
        (error) => {
          client.disconnect()
          resume(Effect.fail(new RedisUnavailable({ operation: "connect", cause: last ?? error })))
        }
      )
      return Effect.sync(() => client.disconnect())
    }),
    (client) => Effect.promise(() => RedisClient.quitWithin(client))
  ).pipe(Effect.map(RedisClient.fromClient))

const redisLayer = (t: RedisTarget): Layer.Layer<RedisClient.RedisClient, RedisUnavailable> =>
  Layer.scoped(RedisClient.RedisClient, connectTo(t))

/** The target from `--url` / `REDIS_URL`, or a usage failure saying how to give one. */
export const requireTarget = (option: Option.Option<Redacted.Redacted>) =>
  Effect.flatMap(resolveUrl(option), (url) =>
    Option.match(url, {
      onNone: () => Effect.fail(usage("no Redis URL: pass --url or set REDIS_URL")),
      onSome: target
    })
  )

/** Runs a command's work against Redis, mapping every failure to one scrubbed line. */
export const withRedis = <A, E, R>(
  option: Option.Option<Redacted.Redacted>,
  work: (t: RedisTarget) => Effect.Effect<A, E, R | RedisClient.RedisClient>
): Effect.Effect<A, CliFailure, Exclude<R, RedisClient.RedisClient>> =>
  Effect.flatMap(requireTarget(option), (t) =>
    work(t).pipe(
      Effect.provide(redisLayer(t)),
      Effect.catchAllCause((cause) => Effect.fail(failureOf(cause, t.scrub, t.shown)))
    )
  ) as Effect.Effect<A, CliFailure, Exclude<R, RedisClient.RedisClient>>
