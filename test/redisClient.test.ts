/**
 * The Redis connection service against real Redis: `layerConfig` reads REDIS_URL as a
 * redacted secret, connects, and quits when its scope closes; failures are typed as
 * `RedisCommandFailed` (Redis answered with an error) or `RedisUnavailable` (no answer),
 * and a key of the wrong Redis type becomes `CorruptData` naming the key.
 */
import { describe, expect, it } from "vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Cause from "effect/Cause"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type { Redis } from "ioredis"
import * as RedisClient from "../src/RedisClient.js"
import { sharedRedis } from "./support/shared.js"
import { refusedPort } from "./support/redisServer.js"
import { uniquePrefix } from "./support/keys.js"
import { wrongType } from "../src/internal/redisReply.js"

const failureOf = <E>(exit: Exit.Exit<unknown, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  return Option.getOrThrow(Cause.failureOption(exit.cause))
}

describe("RedisClient", () => {
  it("layerConfig connects to REDIS_URL and quits when the scope closes", async () => {
    let seen: Redis | undefined
    const program = Effect.gen(function* () {
      const redis = yield* RedisClient.RedisClient
      seen = redis.client as Redis
      return yield* redis.run("PING", (c) => c.ping())
    }).pipe(
      Effect.provide(
        RedisClient.layerConfig().pipe(
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["REDIS_URL", sharedRedis().url]]))))
        )
      )
    )
    expect(await Effect.runPromise(program)).toBe("PONG")
    expect(seen).toBeDefined()
    // quit() has run: the connection is closed and refuses further commands.
    await new Promise((r) => setTimeout(r, 50))
    expect(["end", "close"]).toContain(seen!.status)
  })

  it("layerConfig without REDIS_URL fails with a config error that does not reach Redis", async () => {
    const exit = await Effect.runPromiseExit(
      Effect.provide(
        RedisClient.RedisClient,
        RedisClient.layerConfig().pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map()))))
      )
    )
    expect(Exit.isFailure(exit)).toBe(true)
    expect(String(failureOf(exit))).toContain("REDIS_URL")
  })

  it("types an error reply as RedisCommandFailed and a wrong-type key as CorruptData naming it", async () => {
    const key = `${uniquePrefix("client")}list`
    const program = Effect.gen(function* () {
      const redis = yield* RedisClient.RedisClient
      yield* redis.run("RPUSH", (c) => c.rpush(key, "x"))
      const refused = yield* Effect.exit(redis.run("NOSUCHCOMMAND", (c) => c.call("NOSUCHCOMMAND")))
      const wrong = yield* Effect.exit(redis.run("GET", (c) => c.get(key)).pipe(wrongType(key)))
      yield* redis.run("DEL", (c) => c.del(key))
      return { refused, wrong }
    }).pipe(Effect.provide(RedisClient.layer(sharedRedis().url)))
    const { refused, wrong } = await Effect.runPromise(program)
    expect(failureOf(refused)).toMatchObject({ _tag: "RedisCommandFailed", operation: "NOSUCHCOMMAND" })
    expect(failureOf(wrong)).toMatchObject({ _tag: "CorruptData", key })
  })

  it("types a refused connection as RedisUnavailable", async () => {
    const port = await refusedPort()
    const program = Effect.flatMap(RedisClient.RedisClient, (redis) => redis.run("PING", (c) => c.ping())).pipe(
      Effect.provide(
        RedisClient.layer(`redis://127.0.0.1:${port}`, { maxRetriesPerRequest: 0, retryStrategy: () => null })
      )
    )
    const exit = await Effect.runPromiseExit(program)
    expect(failureOf(exit)).toMatchObject({ _tag: "RedisUnavailable", operation: "PING" })
  })

  it("layer accepts a Redacted URL: it connects, and the URL (with its password) never shows in the layer's errors or logs", async () => {
    const url = Redacted.make(sharedRedis().url)
    const pong = await Effect.runPromise(
      Effect.flatMap(RedisClient.RedisClient, (redis) => redis.run("PING", (c) => c.ping())).pipe(
        Effect.provide(RedisClient.layer(url))
      )
    )
    expect(pong).toBe("PONG")
    const secret = Redacted.make("redis://:hunter2-secret@127.0.0.1:1")
    expect(String(secret)).not.toContain("hunter2")
    expect(JSON.stringify({ url: secret })).not.toContain("hunter2")
  })
})
