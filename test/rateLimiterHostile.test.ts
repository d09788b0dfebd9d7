/**
 * The rate limiter against what one caller, one replica or one write into Redis can do to
 * the others: a prefix that reaches the stores' keys, ids that UTF-8 cannot tell apart,
 * a rule with another window on the same key, a caller editing its answer, a log holding
 * what the script never writes, a reply lost on the wire. None of them
 * may let another key through, wipe its budget or spend it twice.
 */
import { Effect, Metric } from "effect"
import { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { CorruptData, InvalidConfig } from "../src/Errors.js"
import { createRedisRateLimiter } from "../src/haechi.js"
import { rateLimitKey } from "../src/internal/keys.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import * as RateLimiter from "../src/RateLimiter.js"
import { layerFromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { refusedPort, tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

const opened: Array<Redis> = []
const proxies: Array<TcpProxy> = []
afterAll(async () => {
  opened.forEach((c) => c.disconnect())
  await Promise.all(proxies.map((p) => p.stop()))
})
const connect = (port = sharedRedis().port, options = {}) => {
  const c = new Redis(port, "127.0.0.1", options)
  c.on("error", () => {})
  opened.push(c)
  return c
}
const limiterOn = (client: Redis, keyPrefix: string) =>
  Effect.runPromise(RateLimiter.make({ keyPrefix }).pipe(Effect.provide(layerFromClient(client))))
const counter = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count

describe("rate limiter: one caller cannot reach another's budget", () => {
  it("a prefix under which a key would complete a store's key is refused, whichever is longer", () => {
    const client = connect()
    // "haechi:audit:c" + "hain" is the audit chain, "haechi:tv:t" + "okens" the vault, and
    // "{" + "haechi:audit:lock}:fence" the audit lock's fence.
    for (const keyPrefix of ["haechi:audit:c", "haechi:tv:t", "haechi:audit:", "haechi:audit:x:", "{", "{haechi:"]) {
      expect(() => createRedisRateLimiter({ client, keyPrefix }), keyPrefix).toThrow(InvalidConfig)
    }
    expect(() => createRedisRateLimiter({ client, keyPrefix: "haechi:rl:" })).not.toThrow()
  })

  it("a key with a lone surrogate is refused: UTF-8 would make it U+FFFD, another id's key", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-surrogate")
    const limiter = createRedisRateLimiter({ client, keyPrefix })
    for (const key of ["user-\uD800", "user-\uDBFF", "\uDC00user", "a\uDFFFb"]) {
      await expect(limiter.allow(key, 1), JSON.stringify(key)).rejects.toThrow(/lone surrogate/)
    }
    // A well-formed pair and U+FFFD itself are ids of their own.
    expect(await limiter.allow("user-\uD83D\uDE00", 1)).toBe(true)
    expect(await limiter.allow("user-\uFFFD", 1)).toBe(true)
    expect(await client.keys(`${keyPrefix}*`)).toHaveLength(2)
  })

  it("a rule with another window on the same key keeps a log of its own: a per-second rule never trims the per-minute one", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-windows")
    const limiter = await limiterOn(client, keyPrefix)
    const perMinute = () => Effect.runPromise(limiter.consume("alice", { limit: 5, window: "1 minute" }))
    const perSecond = () => Effect.runPromise(limiter.consume("alice", { limit: 100, window: "1 second" }))
    expect((await Promise.all(Array.from({ length: 5 }, perMinute))).every((r) => r.allowed)).toBe(true)
    expect((await perMinute()).allowed).toBe(false)
    await perSecond()
    await new Promise((r) => setTimeout(r, 1_100))
    // The per-second rule's second call trims its log by its window: the minute's stays whole.
    expect((await perSecond()).allowed).toBe(true)
    const after = await Promise.all(Array.from({ length: 5 }, perMinute))
    expect(after.filter((r) => r.allowed)).toHaveLength(0)
    expect(await client.zcard(`${keyPrefix}alice`)).toBe(5)
    expect(await client.zcard(`${keyPrefix}\u001f1000\u001falice`)).toBe(1)
  })

  it("no two (key, window) pairs share a log key", () => {
    const pairs: Array<[string, number]> = [
      ["bob", 60_000],
      ["bob", 1_000],
      ["\u001f1000\u001fbob", 60_000],
      ["\u001fbob", 60_000],
      ["\u001fbob", 1_000],
      ["1000\u001fbob", 1],
      ["bob", 10_001],
      ["0\u001fbob", 1_000]
    ]
    const keys = pairs.map(([key, window]) => rateLimitKey("p:", key, window))
    expect(new Set(keys).size).toBe(pairs.length)
    expect(rateLimitKey("p:", "bob", 60_000)).toBe("p:bob")
  })

  it("a caller that edits the fail mode's answer changes no later answer", async () => {
    const client = connect(await refusedPort(), { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    const limiter = createRedisRateLimiter({ client, keyPrefix: uniquePrefix("rl-answer"), timeout: 200 })
    const first = await limiter.consume("mallory", 10)
    expect(first).toMatchObject({ allowed: false, unavailable: true })
    // e.g. a middleware that lets admins through by editing what it was handed
    ;(first as { allowed: boolean }).allowed = true
    expect((await limiter.consume("anonymous", 10)).allowed).toBe(false)
    expect(await limiter.allow("anonymous", 10)).toBe(false)
    const effectAnswer = RateLimiter.withFailMode("deny", "p:")
    const one = await Effect.runPromise(effectAnswer(Effect.fail(new CorruptData({ key: "k", detail: "x" }))))
    ;(one as { allowed: boolean }).allowed = true
    const two = await Effect.runPromise(effectAnswer(Effect.fail(new CorruptData({ key: "k", detail: "x" }))))
    expect(two.allowed).toBe(false)
  })
})

describe("rate limiter: a log holding what the script never writes", () => {
  // A score past every window, one a day and more ahead, one not whole microseconds.
  const damage: Record<string, (client: Redis, key: string) => Promise<unknown>> = {
    infinite: (client, key) => client.zadd(key, "+inf", "1"),
    years: (client, key) => client.zadd(key, "1e17", "1"),
    fraction: (client, key) => client.time().then(([s]) => client.zadd(key, `${s}000000.5`, "1"))
  }

  for (const [name, write] of Object.entries(damage)) {
    it(`${name}: refused even under onUnavailable "allow", nothing logged, the log set to expire within a window; peek says corrupt too`, async () => {
      const client = connect()
      const keyPrefix = uniquePrefix(`rl-damage-${name}`)
      const key = `${keyPrefix}eve`
      await write(client, key)
      const before = await client.dump(key)
      const refused = withTags(Metrics.ratelimitKeys.unavailable, {
        prefix: keyPrefix,
        answer: "deny",
        reason: "corrupt"
      })
      const limiter = createRedisRateLimiter({ client, keyPrefix, onUnavailable: "allow" })
      const answers = await Promise.all(Array.from({ length: 10 }, () => limiter.allow("eve", 5)))
      expect(answers.filter(Boolean)).toHaveLength(0)
      expect(counter(refused)).toBe(10)
      expect(await client.dump(key)).toEqual(before)
      const ttl = await client.pttl(key)
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeLessThanOrEqual(60_000)
      const peeked = await Effect.runPromise(
        Effect.flip((await limiterOn(client, keyPrefix)).peek("eve", { limit: 5 }))
      )
      expect(peeked).toBeInstanceOf(CorruptData)
      // Another key is decided as ever.
      expect(await limiter.allow("frank", 5)).toBe(true)
    })
  }

  it("a key of another type is refused and left exactly as it is: no TTL (it may be another store's data)", async () => {
    const client = connect()
    const app = uniquePrefix("rl-other-type")
    // A deployment whose audit store sits under the limiter's prefix (only the default store prefixes are checked).
    await client.rpush(`${app}audit:chain`, "a record")
    await client.set(`${app}counter`, "0")
    const limiter = createRedisRateLimiter({ client, keyPrefix: app, onUnavailable: "allow" })
    for (const key of ["audit:chain", "counter"]) {
      expect(await limiter.allow(key, 5)).toBe(false)
      expect(await client.pttl(`${app}${key}`)).toBe(-1)
    }
    expect(await client.lrange(`${app}audit:chain`, 0, -1)).toEqual(["a record"])
    const peeked = await Effect.runPromise(Effect.flip((await limiterOn(client, app)).peek("counter")))
    expect(peeked).toBeInstanceOf(CorruptData)
  })

  it("another store's sorted set (a lock's waiter queue) under the prefix is refused and left exactly as it is", async () => {
    const client = connect()
    const app = uniquePrefix("rl-foreign-zset")
    const waiters = `${app}audit:lock:waiters`
    const nowMs = Date.now()
    await client.zadd(waiters, nowMs + 30_000, "tokenA 10000", nowMs + 31_000, "tokenB 10000")
    const before = await client.zrange(waiters, 0, -1, "WITHSCORES")
    const limiter = createRedisRateLimiter({ client, keyPrefix: app, onUnavailable: "allow" })
    expect(await limiter.allow("audit:lock:waiters", 5)).toBe(false)
    expect(await client.zrange(waiters, 0, -1, "WITHSCORES")).toEqual(before)
    expect(await client.pttl(waiters)).toBe(-1)
    const peeked = await Effect.runPromise(Effect.flip((await limiterOn(client, app)).peek("audit:lock:waiters")))
    expect(peeked).toBeInstanceOf(CorruptData)
  })

  it("a log whose TTL is already shorter than a window keeps it", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-damage-ttl")
    await client.zadd(`${keyPrefix}eve`, "+inf", "1")
    await client.pexpire(`${keyPrefix}eve`, 500)
    const limiter = createRedisRateLimiter({ client, keyPrefix })
    expect(await limiter.allow("eve", 5)).toBe(false)
    expect(await client.pttl(`${keyPrefix}eve`)).toBeLessThanOrEqual(500)
  })

  it("an entry a day or more ahead is refused by consume and peek alike", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-ahead")
    const [s] = (await client.time()) as [number, number]
    await client.zadd(`${keyPrefix}eve`, `${BigInt(s) * 1_000_000n + 2n * 86_400_000_000n}`, "1")
    const limiter = await limiterOn(client, keyPrefix)
    expect(await Effect.runPromise(Effect.flip(limiter.consume("eve", { limit: 5 })))).toBeInstanceOf(CorruptData)
    expect(await Effect.runPromise(Effect.flip(limiter.peek("eve", { limit: 5 })))).toBeInstanceOf(CorruptData)
  })

  it("an impossible entry in the middle of the log is found when it becomes the pivot: refused then", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-middle")
    const [s] = (await client.time()) as [number, number]
    const now = BigInt(s) * 1_000_000n
    const key = `${keyPrefix}eve`
    await client.zadd(key, `${now - 3_000_000n}`, "1", `${now - 2_000_000n}.5`, "2", `${now - 1_000_000n}`, "3")
    const limiter = await limiterOn(client, keyPrefix)
    // Limit 4: allowed, the fourth entry's pivot is the oldest, "a" (whole microseconds).
    expect((await Effect.runPromise(limiter.consume("eve", { limit: 4 }))).allowed).toBe(true)
    // Limit 3 over those 4: the pivot is the second entry, the broken one.
    expect(await Effect.runPromise(Effect.flip(limiter.consume("eve", { limit: 3 })))).toBeInstanceOf(CorruptData)
  })
})

describe("rate limiter: a reply lost on the wire", () => {
  it("the call ioredis re-sends after a reconnect is the same request: one entry, not two", async () => {
    const proxy = await tcpProxy(sharedRedis().port)
    proxies.push(proxy)
    const client = connect(proxy.port, { retryStrategy: () => 10 })
    const direct = connect()
    const keyPrefix = uniquePrefix("rl-resend")
    const limiter = createRedisRateLimiter({ client, keyPrefix, timeout: 3_000 })
    expect(await limiter.allow("warmup", 5)).toBe(true)
    proxy.cutAfterNextRequest()
    const first = await limiter.consume("kim", 2)
    expect(first).toMatchObject({ allowed: true, remaining: 1 })
    expect(first.unavailable).toBeUndefined()
    expect(await direct.zcard(`${keyPrefix}kim`)).toBe(1)
    expect(await limiter.allow("kim", 2)).toBe(true)
    expect(await limiter.allow("kim", 2)).toBe(false)
  }, 20_000)

  it("each entry's member is the call's id, an integer Redis stores compactly", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("rl-members")
    const limiter = createRedisRateLimiter({ client, keyPrefix })
    for (let i = 0; i < 60; i++) expect(await limiter.allow("ann", 60)).toBe(true)
    const members = await client.zrange(`${keyPrefix}ann`, 0, -1)
    expect(new Set(members).size).toBe(60)
    for (const member of members) expect(member).toMatch(/^[1-9][0-9]{0,18}$/)
    expect(await client.object("ENCODING", `${keyPrefix}ann`)).toBe("listpack")
  })
})
