/**
 * The rate limiter on the shared Redis Cluster: one key per limit, so any prefix works
 * (the default among them) and keys spread over the masters, each exact; what a script
 * wrote with TIME reaches the replica as the same entries (Redis 7 replicates a script's
 * effects, not the script, so a replica never reads its own clock).
 */
import { Effect, Layer } from "effect"
import { Cluster, Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { InvalidConfig } from "../src/Errors.js"
import { createRedisRateLimiter } from "../src/haechi.js"
import * as RateLimiter from "../src/RateLimiter.js"
import * as RedisClient from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { keySlot } from "./support/redisServer.js"
import { sharedCluster } from "./support/shared.js"

const opened: Array<Cluster | Redis> = []
afterAll(() => Promise.all(opened.map((c) => c.quit().catch(() => c.disconnect()))))

const cluster = (): Cluster => {
  const c = new Cluster([...sharedCluster().startupNodes], { redisOptions: { maxRetriesPerRequest: 5 } })
  opened.push(c)
  return c
}

describe("rate limiter on a Redis Cluster", () => {
  it("the default prefix works; keys on several masters each get exactly the limit (facade and Effect API)", async () => {
    const client = cluster()
    const facade = createRedisRateLimiter({ client })
    const effect = await Effect.runPromise(
      Effect.provide(
        RateLimiter.RateLimiter,
        RateLimiter.layer().pipe(Layer.provide(RedisClient.layerFromClient(client)))
      )
    )
    expect(effect.prefix).toBe("haechi:rl:")
    const run = uniquePrefix("rl-cluster")
    const keys = Array.from({ length: 12 }, (_, i) => `${run}id-${i}`)
    await client.ping()
    const slots = (client as unknown as { slots: Array<Array<string>> }).slots
    const masters = new Set(keys.map((k) => slots[keySlot(`haechi:rl:${k}`)]?.[0]))
    expect(masters.size).toBeGreaterThan(1)
    const answers = await Promise.all(
      keys.flatMap((key, i) =>
        Array.from({ length: 7 }, () =>
          i % 2 === 0
            ? facade.allow(key, 4)
            : Effect.runPromise(Effect.map(effect.consume(key, { limit: 4, window: "10 seconds" }), (r) => r.allowed))
        )
      )
    )
    keys.forEach((_, i) => expect(answers.slice(i * 7, i * 7 + 7).filter(Boolean)).toHaveLength(4))
    expect(await client.zcard(`haechi:rl:${keys[0]}`)).toBe(4)
    expect(await client.pttl(`haechi:rl:${keys[1]}`)).toBeLessThanOrEqual(10_000)
    await Promise.all(keys.map((k) => client.del(`haechi:rl:${k}`)))
    expect(() => createRedisRateLimiter({ client, keyPrefix: 5 as unknown as string })).toThrow(InvalidConfig)
  })

  it("the replica holds the same entries as its master (script effects, not Redis's clock on the replica)", async () => {
    const client = cluster()
    const limiter = createRedisRateLimiter({ client, keyPrefix: "{rl-replication}:" })
    const key = `{rl-replication}:${uniquePrefix("r")}`
    const id = key.slice("{rl-replication}:".length)
    for (let i = 0; i < 5; i++) await limiter.allow(id, 10)
    const master = client.nodes("master").find((node) => {
      const slots = (client as unknown as { slots: Array<Array<string>> }).slots[keySlot(key)] ?? []
      return slots[0] === `${node.options.host}:${node.options.port}`
    })
    expect(master).toBeDefined()
    expect(await master!.call("WAIT", 1, 5_000)).toBe(1)
    const role = (await master!.call("ROLE")) as [string, number, Array<[string, string, string]>]
    const [host, port] = role[2][0]!
    const replica = new Redis(Number(port), host)
    opened.push(replica)
    await replica.call("READONLY")
    const onMaster = await master!.zrange(key, 0, -1, "WITHSCORES")
    expect(onMaster).toHaveLength(10)
    expect(await replica.zrange(key, 0, -1, "WITHSCORES")).toEqual(onMaster)
    await client.del(key)
  })
})
