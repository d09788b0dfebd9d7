/**
 * The Redis connection as a service. Every ioredis call in this package goes through
 * `RedisClient.run` (or `script`), which turns a rejection into one of two typed
 * errors: `RedisCommandFailed` when Redis answered with an error reply (the command
 * did not take effect; a Cluster client giving up after TRYAGAIN/ASK/MOVED redirections
 * during a slot migration counts, with that reply), `RedisUnavailable` when no answer
 * came (the command may or may not have run: fenced writes resolve that ambiguity
 * themselves).
 *
 * The connection's life is the layer's scope when the layer opens it (`layer`,
 * `layerConfig`); a client the caller owns (`layerFromClient`) is never closed here.
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type { Cluster, Redis, RedisOptions } from "ioredis"
import type { RedisError } from "./Errors.js"
import { awaitPromise } from "./internal/deadline.js"
import { toRedisError } from "./internal/redisReply.js"
import { callScript, type ScriptDefinition } from "./internal/scripts.js"
import { isClusterClient } from "./internal/client.js"

/** An ioredis standalone client or cluster client. */
export type RedisConnection = Redis | Cluster

export interface RedisClientShape {
  readonly client: RedisConnection
  readonly isCluster: boolean
  /** Runs one ioredis call, typing its failure. */
  readonly run: <A>(operation: string, f: (client: RedisConnection) => Promise<A>) => Effect.Effect<A, RedisError>
  /** Runs one registered Lua script by SHA. */
  readonly script: (
    script: ScriptDefinition,
    keys: ReadonlyArray<string>,
    args: ReadonlyArray<string | number>
  ) => Effect.Effect<unknown, RedisError>
  /**
   * Like `script`, but gives up waiting for the reply after `ms`: `None` then (the call
   * may still run on the server). A timer, not a fiber, so it is cheap on hot paths.
   */
  readonly scriptWithin: (
    script: ScriptDefinition,
    keys: ReadonlyArray<string>,
    args: ReadonlyArray<string | number>,
    ms: number
  ) => Effect.Effect<Option.Option<unknown>, RedisError>
}

export class RedisClient extends Context.Tag("haechi-store-effect/RedisClient")<RedisClient, RedisClientShape>() {}

/**
 * Wraps a client the caller owns (each script is defined on it once, at first use).
 * Every call watches the current operation's deadline (see `deadline.awaitPromise`): no
 * fiber and no timer per call.
 */
export const fromClient = (client: RedisConnection): RedisClientShape => {
  const run = <A>(operation: string, f: (client: RedisConnection) => Promise<A>) =>
    awaitPromise({ try: () => f(client), catch: (error) => toRedisError(operation, error) })
  return {
    client,
    isCluster: isClusterClient(client),
    run,
    script: (script, keys, args) =>
      awaitPromise({
        try: () => callScript(client, script, keys, args),
        catch: (error) => toRedisError(script.name, error)
      }),
    scriptWithin: (script, keys, args, ms) =>
      awaitPromise<Option.Option<unknown>, RedisError>(
        {
          try: () => callScript(client, script, keys, args).then(Option.some),
          catch: (error) => toRedisError(script.name, error)
        },
        ms,
        Option.none
      )
  }
}

/** A layer over a client the caller owns and closes. */
export const layerFromClient = (client: RedisConnection): Layer.Layer<RedisClient> =>
  Layer.succeed(RedisClient, fromClient(client))

/** How long a closing connection waits for QUIT's answer before it just disconnects. */
export const QUIT_BOUND_MS = 1000

/**
 * QUIT (pending replies are delivered first), or a plain disconnect when Redis does not
 * answer within `ms`: a frozen link or a paused Redis never holds a closing scope.
 */
export const quitWithin = (client: RedisConnection, ms = QUIT_BOUND_MS): Promise<void> =>
  new Promise<void>((done) => {
    const timer = setTimeout(() => {
      client.disconnect()
      done()
    }, ms)
    client.quit().then(
      () => {
        clearTimeout(timer)
        done()
      },
      () => {
        clearTimeout(timer)
        client.disconnect()
        done()
      }
    )
  })

/**
 * Opens a connection for the scope's life and quits it when the scope closes. The URL
 * may be `Redacted` (it carries the password): it is unwrapped only to connect.
 */
export const connect = (url: string | Redacted.Redacted<string>, options?: RedisOptions) =>
  Effect.acquireRelease(
    // ioredis is loaded here, not at import: code that is handed a client never loads it.
    Effect.map(
      Effect.promise(() => import("ioredis")),
      ({ Redis }) => {
        const plain = Redacted.isRedacted(url) ? Redacted.value(url) : url
        const client = options ? new Redis(plain, options) : new Redis(plain)
        // Connection errors reach callers as RedisUnavailable on their commands; without a
        // listener ioredis would also print each one as an "Unhandled error event".
        client.on("error", () => {})
        return fromClient(client)
      }
    ),
    ({ client }) => Effect.promise(() => quitWithin(client))
  )

/** A layer that opens its own connection to `url` (plain or `Redacted`) and quits it with the layer. */
export const layer = (url: string | Redacted.Redacted<string>, options?: RedisOptions): Layer.Layer<RedisClient> =>
  Layer.scoped(RedisClient, connect(url, options))

/** Like `layer`, with the URL from `REDIS_URL` (read as a redacted secret, never logged). */
export const layerConfig = (
  url: Config.Config<Redacted.Redacted> = Config.redacted("REDIS_URL"),
  options?: RedisOptions
) =>
  Layer.scoped(
    RedisClient,
    Effect.flatMap(url, (secret) => connect(secret as Redacted.Redacted<string>, options))
  )
