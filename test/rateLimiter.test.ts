/**
 * The rate limiter against real Redis (and its in-memory twin on the TestClock): exactly
 * the limit within a window, a retry time that is neither early nor late, the whole
 * limit back after an idle window, keys that expire, a read that takes nothing, bad
 * input refused with an error naming what is wrong (nothing written), a key of another
 * type reported, the per-minute meaning through the facade, spans and metrics.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Layer, Metric, Option, TestClock, Tracer } from "effect"
import { Redis } from "ioredis"
import { CorruptData, InvalidConfig } from "../src/Errors.js"
import { createMemoryRateLimiter, createRedisRateLimiter } from "../src/haechi.js"
import * as Metrics from "../src/Metrics.js"
import * as RateLimiter from "../src/RateLimiter.js"
import { layerFromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"
import { withTags } from "../src/internal/metricTags.js"

const withClient = Effect.acquireRelease(
  Effect.sync(() => new Redis(sharedRedis().url)),
  (client) => Effect.promise(() => client.quit())
)

const limiterOn = (client: Redis, keyPrefix: string) =>
  RateLimiter.make({ keyPrefix }).pipe(Effect.provide(layerFromClient(client)))

const counter = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

describe("rate limiter on Redis (Effect API)", () => {
  it.live(
    "the limit within a window, then a retry time that is neither early nor late, then the whole limit after an idle window",
    () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const limiter = yield* limiterOn(client, uniquePrefix("rl-window"))
        // Each call is decided between when it was sent and when its answer came (the real
        // clock, which Redis's TIME reads on this host): the bounds below follow from that.
        const take = Effect.gen(function* () {
          const sent = performance.now()
          const result = yield* limiter.consume("alice", { limit: 5, window: "1500 millis" })
          return { ...result, sent, received: performance.now() }
        })
        const answer = ({
          sent: _s,
          received: _r,
          ...result
        }: { sent: number; received: number } & RateLimiter.RateLimitResult) => result
        const first = yield* take
        expect(answer(first)).toEqual({ allowed: true, remaining: 4, retryAfterMs: 0, resetAfterMs: 1500 })
        yield* Effect.sleep("300 millis")
        const rest = yield* Effect.all([take, take, take, take])
        expect(rest.map((r) => [r.allowed, r.remaining])).toEqual([
          [true, 3],
          [true, 2],
          [true, 1],
          [true, 0]
        ])
        const restSent = Math.min(...rest.map((r) => r.sent))
        const denied = yield* take
        expect(denied.allowed).toBe(false)
        expect(denied.remaining).toBe(0)
        // The first request leaves the window 1,500 ms after it was decided.
        expect(denied.retryAfterMs).toBeGreaterThanOrEqual(Math.floor(first.sent + 1500 - denied.received))
        expect(denied.retryAfterMs).toBeLessThanOrEqual(Math.ceil(first.received + 1500 - denied.sent) + 1)
        expect(denied.resetAfterMs).toBeGreaterThanOrEqual(Math.floor(restSent + 1500 - denied.received))
        // Not early: a call answered before the retry time is still denied.
        yield* Effect.sleep(Math.max(0, denied.retryAfterMs - 300))
        const early = yield* take
        if (early.received < denied.sent + denied.retryAfterMs - 1) expect(early.allowed).toBe(false)
        // Not late: a call sent after it is allowed, as the first request has left...
        yield* Effect.sleep(Math.max(0, denied.received + denied.retryAfterMs + 5 - performance.now()))
        const onTime = yield* take
        expect(onTime.allowed).toBe(true)
        // ...and only that one (unless this machine overslept past the others' time too).
        const next = yield* take
        if (next.received < restSent + 1500) expect(next.allowed).toBe(false)
        yield* Effect.sleep(next.resetAfterMs + 20)
        const again = yield* Effect.all(Array.from({ length: 6 }, () => take))
        expect(again.map((r) => r.allowed)).toEqual([true, true, true, true, true, false])
      }).pipe(Effect.scoped)
  )

  it.live("one sorted set per key, expiring a window after its newest request; denied requests are not logged", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const prefix = uniquePrefix("rl-expiry")
      const limiter = yield* limiterOn(client, prefix)
      const take = (key: string) => limiter.consume(key, { limit: 2, window: 2_000 })
      const started = performance.now()
      yield* Effect.all([take("bob"), take("bob"), take("bob"), take("carol")])
      const done = performance.now()
      // (A window other than a minute names itself in the key.)
      const key = `${prefix}\u001f2000\u001fbob`
      expect(yield* Effect.promise(() => client.type(key))).toBe("zset")
      expect(yield* Effect.promise(() => client.zcard(key))).toBe(2)
      const ttl = yield* Effect.promise(() => client.pttl(key))
      // A window after the newest allowed request, which was decided after `started`.
      expect(ttl).toBeGreaterThanOrEqual(Math.floor(2_000 - (performance.now() - started)))
      expect(ttl).toBeLessThanOrEqual(2_000)
      expect(yield* Effect.promise(() => client.keys(`${prefix}*`))).toHaveLength(2)
      yield* Effect.sleep(Math.max(0, done + 2_100 - performance.now()))
      expect(yield* Effect.promise(() => client.exists(key, `${prefix}\u001f2000\u001fcarol`))).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("peek reports the count without taking from it", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const limiter = yield* limiterOn(client, uniquePrefix("rl-peek"))
      expect(yield* limiter.peek("dave", { window: 5_000 })).toEqual({ count: 0, resetAfterMs: 0 })
      yield* Effect.all(Array.from({ length: 3 }, () => limiter.consume("dave", { limit: 3, window: 5_000 })))
      const seen = yield* limiter.peek("dave", { window: 5_000, limit: 3 })
      expect(seen.count).toBe(3)
      expect(seen.remaining).toBe(0)
      expect(seen.retryAfterMs).toBeGreaterThan(4_000)
      expect(seen.resetAfterMs).toBeGreaterThan(4_000)
      expect((yield* limiter.peek("dave", { window: 5_000, limit: 4 })).remaining).toBe(1)
      expect(
        (yield* RateLimiter.peek("dave", { window: 5_000 }).pipe(
          Effect.provideService(RateLimiter.RateLimiter, limiter)
        )).count
      ).toBe(3)
      // A narrower window sees fewer: nothing was taken within the last millisecond.
      expect((yield* limiter.peek("dave", { window: 1 })).count).toBe(0)
      expect((yield* limiter.consume("dave", { limit: 4, window: 5_000 })).allowed).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live(
    "bad keys, limits, windows, prefixes and timeouts are refused with InvalidConfig naming the option; nothing is written",
    () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const prefix = uniquePrefix("rl-bad")
        const limiter = yield* limiterOn(client, prefix)
        const cases: Array<[unknown, unknown, unknown, string]> = [
          [42, 5, 1000, "rate limit key"],
          ["", 5, 1000, "rate limit key"],
          ["x".repeat(RateLimiter.MAX_KEY_LENGTH + 1), 5, 1000, "rate limit key"],
          ["k", 0, 1000, "limit"],
          ["k", 1.5, 1000, "limit"],
          ["k", -1, 1000, "limit"],
          ["k", "5", 1000, "limit"],
          ["k", Number.NaN, 1000, "limit"],
          ["k", undefined, 1000, "limit"],
          ["k", RateLimiter.MAX_LIMIT + 1, 1000, "limit"],
          ["k", 5, 0, "window"],
          ["k", 5, 1.5, "window"],
          ["k", 5, "soon", "window"],
          ["k", 5, RateLimiter.MAX_WINDOW_MS + 1, "window"]
        ]
        for (const [key, limit, window, option] of cases) {
          const exit = yield* Effect.exit(
            limiter.consume(key as string, { limit: limit as number, window: window as number })
          )
          const error = failureOf(exit)
          expect(error, JSON.stringify([key, limit, window])).toBeInstanceOf(InvalidConfig)
          expect((error as InvalidConfig).option).toBe(option)
        }
        expect(yield* Effect.promise(() => client.keys(`${prefix}*`))).toEqual([])
        for (const keyPrefix of ["", "haechi:", "haechi:a", 7]) {
          const error = failureOf(yield* Effect.exit(limiterOn(client, keyPrefix as string)))
          expect(error, String(keyPrefix)).toBeInstanceOf(InvalidConfig)
          expect((error as InvalidConfig).option).toBe("keyPrefix")
        }
        for (const timeout of [0, -5, "never", Number.POSITIVE_INFINITY]) {
          const made = RateLimiter.make({ keyPrefix: prefix, timeout: timeout as number }).pipe(
            Effect.provide(layerFromClient(client))
          )
          expect((failureOf(yield* Effect.exit(made)) as InvalidConfig).option).toBe("timeout")
        }
      }).pipe(Effect.scoped)
  )

  it.live("a key that holds another Redis type is CorruptData, left exactly as it was (no TTL)", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const prefix = uniquePrefix("rl-corrupt")
      yield* Effect.promise(() => client.set(`${prefix}eve`, "not a log"))
      const limiter = yield* limiterOn(client, prefix)
      const error = failureOf(yield* Effect.exit(limiter.consume("eve", { limit: 5 })))
      expect(error).toBeInstanceOf(CorruptData)
      expect((error as CorruptData).key).toBe(`${prefix}eve`)
      expect(yield* Effect.promise(() => client.get(`${prefix}eve`))).toBe("not a log")
      expect(yield* Effect.promise(() => client.pttl(`${prefix}eve`))).toBe(-1)
    }).pipe(Effect.scoped)
  )

  it.live("layerConfig reads the prefix and timeout from the Config provider, and refuses a bad prefix there too", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const prefix = uniquePrefix("rl-config")
      const from = (map: Record<string, string>) =>
        RateLimiter.layerConfig().pipe(
          Layer.provide(layerFromClient(client)),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(map)))))
        )
      const limiter = yield* Effect.provide(
        RateLimiter.RateLimiter,
        from({ HAECHI_RATELIMIT_PREFIX: prefix, HAECHI_RATELIMIT_TIMEOUT: "250 millis" })
      )
      expect(limiter.prefix).toBe(prefix)
      yield* limiter.consume("frank", { limit: 1 })
      expect(yield* Effect.promise(() => client.exists(`${prefix}frank`))).toBe(1)
      const bad = yield* Effect.exit(
        Effect.provide(RateLimiter.RateLimiter, from({ HAECHI_RATELIMIT_PREFIX: "haechi:" }))
      )
      expect(failureOf(bad)).toBeInstanceOf(InvalidConfig)
    }).pipe(Effect.scoped)
  )

  it.live("a span per call with the outcome, allowed and denied counted by prefix, latency measured", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const prefix = uniquePrefix("rl-observe")
      const limiter = yield* limiterOn(client, prefix)
      const allowed = withTags(Metrics.ratelimitKeys.allowed, { prefix })
      const denied = withTags(Metrics.ratelimitKeys.denied, { prefix })
      const latency = withTags(Metrics.keys.operationLatency, { store: "ratelimit", operation: "consume" })
      const latencyBefore = Effect.runSync(Metric.value(latency)).count
      const spans: Array<{ name: string; attributes: Map<string, unknown> }> = []
      const tracer = Tracer.make({
        span: (name, parent, context, links, startTime, kind) => {
          const attributes = new Map<string, unknown>()
          spans.push({ name, attributes })
          return {
            _tag: "Span",
            name,
            spanId: String(spans.length),
            traceId: "t",
            parent,
            context,
            links,
            sampled: true,
            kind,
            status: { _tag: "Started", startTime },
            attributes,
            end: () => {},
            attribute: (k, v) => void attributes.set(k, v),
            event: () => {},
            addLinks: () => {}
          }
        },
        context: (f) => f()
      })
      const take = limiter.consume("gina", { limit: 2 }).pipe(Effect.withTracer(tracer))
      yield* Effect.all([take, take, take])
      expect(counter(allowed)).toBe(2)
      expect(counter(denied)).toBe(1)
      expect(Effect.runSync(Metric.value(latency)).count - latencyBefore).toBe(3)
      const consumes = spans.filter((s) => s.name === "haechi.ratelimit.consume")
      expect(consumes).toHaveLength(3)
      expect(consumes.map((s) => s.attributes.get("haechi.ratelimit.allowed"))).toEqual([true, true, false])
      expect(
        consumes.every(
          (s) => s.attributes.get("haechi.outcome") === "ok" && s.attributes.get("haechi.prefix") === prefix
        )
      ).toBe(true)
    }).pipe(Effect.scoped)
  )
})

describe("rate limiter facade (createRedisRateLimiter)", () => {
  it("the per-minute meaning: two replicas on one key get exactly the limit, and are told a retry within the minute", async () => {
    const clients = [new Redis(sharedRedis().url), new Redis(sharedRedis().url)]
    try {
      const keyPrefix = uniquePrefix("rl-minute")
      const replicas = clients.map((client) => createRedisRateLimiter({ client, keyPrefix }))
      const answers = await Promise.all(
        Array.from({ length: 80 }, (_, i) =>
          i % 4 === 0 ? replicas[i % 2]!.allow("anonymous", 30) : replicas[i % 2]!.consume("anonymous", 30)
        )
      )
      const allowed = answers.filter((a) => (typeof a === "boolean" ? a : a.allowed)).length
      expect(allowed).toBe(30)
      const denied = answers.filter((a): a is RateLimiter.RateLimitResult => typeof a !== "boolean" && !a.allowed)
      expect(denied.length).toBeGreaterThan(20)
      for (const d of denied) {
        expect(d.remaining).toBe(0)
        expect(d.retryAfterMs).toBeGreaterThan(58_000)
        expect(d.retryAfterMs).toBeLessThanOrEqual(60_000)
        expect(d.resetAfterMs).toBeGreaterThanOrEqual(d.retryAfterMs)
        expect(d.resetAfterMs).toBeLessThanOrEqual(60_000)
        expect(d.unavailable).toBeUndefined()
      }
      const ttl = await clients[0]!.pttl(`${keyPrefix}anonymous`)
      expect(ttl).toBeGreaterThan(58_000)
      expect(ttl).toBeLessThanOrEqual(60_000)
      expect(await replicas[0]!.allow("someone-else", 30)).toBe(true)
    } finally {
      await Promise.all(clients.map((c) => c.quit()))
    }
  })

  it("bad options throw when it is made; a bad key or limit rejects with InvalidConfig (not the fail mode, not counted)", async () => {
    const client = new Redis(sharedRedis().url)
    try {
      const keyPrefix = uniquePrefix("rl-facade-bad")
      expect(() => createRedisRateLimiter({ client: {} as Redis })).toThrow(InvalidConfig)
      expect(() => createRedisRateLimiter({ client, keyPrefix: "haechi:" })).toThrow(/keyPrefix/)
      expect(() => createRedisRateLimiter({ client, onUnavailable: "maybe" as "deny" })).toThrow(/onUnavailable/)
      expect(() => createRedisRateLimiter({ client, timeout: 0 })).toThrow(/timeout/)
      expect(() => createRedisRateLimiter({ client, window: -1 })).toThrow(/window/)
      const limiter = createRedisRateLimiter({ client, keyPrefix, onUnavailable: "allow" })
      const unavailable = withTags(Metrics.ratelimitKeys.unavailable, {
        prefix: keyPrefix,
        answer: "allow",
        reason: "refused"
      })
      await expect(limiter.allow("k", 0)).rejects.toBeInstanceOf(InvalidConfig)
      await expect(limiter.allow(undefined as unknown as string, 10)).rejects.toThrow(/rate limit key/)
      await expect(limiter.consume("k", 2.5)).rejects.toThrow(/limit/)
      expect(counter(unavailable)).toBe(0)
      expect(await client.keys(`${keyPrefix}*`)).toEqual([])
    } finally {
      await client.quit()
    }
  })

  it("a key of another type answers with the fail mode and is counted as corrupt", async () => {
    const client = new Redis(sharedRedis().url)
    try {
      const keyPrefix = uniquePrefix("rl-facade-corrupt")
      await client.rpush(`${keyPrefix}hank`, "x")
      const counted = withTags(Metrics.ratelimitKeys.unavailable, {
        prefix: keyPrefix,
        answer: "deny",
        reason: "corrupt"
      })
      const limiter = createRedisRateLimiter({ client, keyPrefix })
      expect(await limiter.allow("hank", 10)).toBe(false)
      expect(await limiter.consume("hank", 10)).toEqual({
        allowed: false,
        remaining: 0,
        retryAfterMs: 0,
        resetAfterMs: 0,
        unavailable: true
      })
      expect(counter(counted)).toBe(2)
      expect(await limiter.allow("ivan", 10)).toBe(true)
    } finally {
      await client.quit()
    }
  })
})

describe("rate limiter in memory (the same rule on the Effect Clock)", () => {
  it.effect("exact boundaries on the TestClock: a request leaves the window exactly W after it was taken", () =>
    Effect.gen(function* () {
      const limiter = yield* RateLimiter.makeMemory()
      const take = limiter.consume("k", { limit: 3, window: 1000 })
      yield* take
      yield* TestClock.adjust(400)
      yield* take
      yield* take
      const denied = yield* take
      expect(denied).toEqual({ allowed: false, remaining: 0, retryAfterMs: 600, resetAfterMs: 1000 })
      yield* TestClock.adjust(599)
      expect((yield* take).allowed).toBe(false)
      yield* TestClock.adjust(1)
      expect(yield* take).toEqual({ allowed: true, remaining: 0, retryAfterMs: 400, resetAfterMs: 1000 })
      expect(yield* limiter.peek("k", { window: 1000, limit: 3 })).toEqual({
        count: 3,
        remaining: 0,
        retryAfterMs: 400,
        resetAfterMs: 1000
      })
      yield* TestClock.adjust(1000)
      expect(yield* limiter.peek("k", { window: 1000 })).toEqual({ count: 0, resetAfterMs: 0 })
      const burst = yield* Effect.all([take, take, take, take])
      expect(burst.map((r) => r.allowed)).toEqual([true, true, true, false])
    })
  )

  it("the facade twin answers like the Redis one", async () => {
    const limiter = createMemoryRateLimiter({ window: 60_000 })
    const answers = await Promise.all(Array.from({ length: 5 }, () => limiter.allow("anonymous", 3)))
    expect(answers).toEqual([true, true, true, false, false])
    const denied = await limiter.consume("anonymous", 3)
    expect(denied.allowed).toBe(false)
    expect(denied.retryAfterMs).toBeGreaterThan(59_000)
    await expect(limiter.allow("anonymous", 0)).rejects.toBeInstanceOf(InvalidConfig)
  })
})
