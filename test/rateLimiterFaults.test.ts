/**
 * The facade when Redis cannot decide: nothing listening (refused), a connection whose
 * bytes stop (a stalled or black-holed TCP proxy), replies slower than the timeout. In
 * each case `allow` answers with the configured fail mode within its timeout on the real
 * clock, the answer is counted by reason, and nothing rejects, hangs or goes unhandled;
 * once Redis answers again, so does the limiter, still within the limit.
 */
import { Effect, Metric } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest"
import { createRedisRateLimiter, type FailMode } from "../src/haechi.js"
import * as Metrics from "../src/Metrics.js"
import { uniquePrefix } from "./support/keys.js"
import { freePort, tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sleep, summary } from "./support/replica.js"
import { sharedRedis } from "./support/shared.js"

const opened: Array<Redis> = []
const proxies: Array<TcpProxy> = []
afterAll(async () => {
  opened.forEach((c) => c.disconnect())
  await Promise.all(proxies.map((p) => p.stop()))
})

const client = (port: number, options: RedisOptions = {}): Redis => {
  const c = new Redis(port, "127.0.0.1", options)
  c.on("error", () => {})
  opened.push(c)
  return c
}

let unhandled: Array<unknown> = []
const onUnhandled = (reason: unknown) => void unhandled.push(reason)
beforeEach(() => {
  unhandled = []
  process.on("unhandledRejection", onUnhandled)
})
afterEach(() => void process.off("unhandledRejection", onUnhandled))

const counted = (prefix: string, answer: FailMode, reason: string) =>
  Effect.runSync(Metric.value(Metrics.withTags(Metrics.ratelimitKeys.unavailable, { prefix, answer, reason }))).count

/** Runs `calls` allow()s at once; their answers and the slowest one's time in ms. */
const timedAllows = async (limiter: { allow(key: string, limit: number): Promise<boolean> }, calls: number) => {
  const started = performance.now()
  const answers = await Promise.all(
    Array.from({ length: calls }, () => limiter.allow("anonymous", 100).then((a) => ({ a, at: performance.now() - started })))
  )
  return { answers: answers.map((x) => x.a), slowestMs: Math.max(...answers.map((x) => x.at)) }
}

describe("rate limiter when Redis cannot decide", () => {
  it("refused (nothing listening): the fail mode within the timeout, every call, counted; a client without an offline queue answers at once", async () => {
    const port = await freePort()
    for (const mode of ["deny", "allow"] as const) {
      const keyPrefix = uniquePrefix(`rl-down-${mode}`)
      const limiter = createRedisRateLimiter({ client: client(port), keyPrefix, onUnavailable: mode, timeout: 300 })
      const { answers, slowestMs } = await timedAllows(limiter, 50)
      summary(`rate limiter refused (${mode})`, { calls: 50, slowestMs: slowestMs.toFixed(0) })
      expect(answers).toEqual(Array(50).fill(mode === "allow"))
      expect(slowestMs).toBeGreaterThanOrEqual(295)
      expect(slowestMs).toBeLessThan(1_000)
      expect(counted(keyPrefix, mode, "timeout")).toBe(50)
      expect(await limiter.consume("anonymous", 100)).toEqual({
        allowed: mode === "allow", remaining: 0, retryAfterMs: 0, resetAfterMs: 0, unavailable: true
      })
    }
    const keyPrefix = uniquePrefix("rl-down-noqueue")
    const noQueue = createRedisRateLimiter({ client: client(port, { enableOfflineQueue: false }), keyPrefix })
    const { answers, slowestMs } = await timedAllows(noQueue, 10)
    expect(answers).toEqual(Array(10).fill(false))
    expect(slowestMs).toBeLessThan(250)
    expect(counted(keyPrefix, "deny", "unavailable")).toBe(10)
    // The default timeout is one second: well inside the 2 s a gateway can afford.
    const defaults = createRedisRateLimiter({ client: client(port), keyPrefix: uniquePrefix("rl-down-default") })
    const timed = await timedAllows(defaults, 5)
    expect(timed.answers).toEqual(Array(5).fill(false))
    expect(timed.slowestMs).toBeGreaterThanOrEqual(995)
    expect(timed.slowestMs).toBeLessThan(2_000)
    // The calls ioredis still queues fail later, when the client gives up: none goes unhandled.
    opened.splice(0).forEach((c) => c.disconnect())
    await sleep(50)
    expect(unhandled).toEqual([])
  }, 30_000)

  it("frozen (a proxy that stops forwarding, or drops everything) and slow: the fail mode within the timeout, counted; then back to deciding, within the limit", async () => {
    const proxy = await tcpProxy(sharedRedis().port)
    proxies.push(proxy)
    const direct = client(sharedRedis().port)
    for (const mode of ["stall", "blackhole"] as const) {
      const keyPrefix = uniquePrefix(`rl-${mode}`)
      const limiter = createRedisRateLimiter({ client: client(proxy.port), keyPrefix, timeout: 400 })
      expect(await limiter.allow("ken", 5)).toBe(true) // connected, and the script loaded
      proxy.setMode(mode)
      const { answers, slowestMs } = await timedAllows(limiter, 20)
      summary(`rate limiter ${mode}`, { calls: 20, slowestMs: slowestMs.toFixed(0) })
      expect(answers).toEqual(Array(20).fill(false))
      expect(slowestMs).toBeGreaterThanOrEqual(395)
      expect(slowestMs).toBeLessThan(1_200)
      expect(counted(keyPrefix, "deny", "timeout")).toBe(20)
      proxy.resume()
      let back = false
      for (let i = 0; i < 50 && !back; i++) {
        back = (await limiter.consume("ken", 5)).unavailable === undefined
        if (!back) await sleep(100)
      }
      expect(back).toBe(true)
      expect(await direct.zcard(`${keyPrefix}ken`)).toBe(2)
      // The calls answered "deny" still reach Redis late and are counted there: stalled bytes
      // are delivered, and ioredis re-sends what a black hole swallowed once it reconnects
      // (autoResendUnfulfilledCommands). Budget spent, never exceeded.
      const late = await direct.zcard(`${keyPrefix}anonymous`)
      summary(`rate limiter ${mode}, after`, { lateArrivals: late })
      expect(late).toBe(20)
    }
    const keyPrefix = uniquePrefix("rl-slow")
    const limiter = createRedisRateLimiter({ client: client(proxy.port), keyPrefix, timeout: 200, onUnavailable: "allow" })
    expect(await limiter.allow("liz", 1)).toBe(true)
    expect(await limiter.allow("liz", 1)).toBe(false) // decided by Redis: over the limit
    proxy.delayReplies(600)
    const { answers, slowestMs } = await timedAllows(limiter, 10)
    expect(answers).toEqual(Array(10).fill(true))
    expect(slowestMs).toBeLessThan(600)
    expect(counted(keyPrefix, "allow", "timeout")).toBe(10)
    proxy.delayReplies(0)
    await sleep(700)
    expect(unhandled).toEqual([])
  }, 30_000)
})
