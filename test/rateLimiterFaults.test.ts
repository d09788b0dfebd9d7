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
import { refusedPort, tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sleep, summary } from "./support/replica.js"
import { sharedRedis } from "./support/shared.js"
import { withTags } from "../src/internal/metricTags.js"

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
  Effect.runSync(Metric.value(withTags(Metrics.ratelimitKeys.unavailable, { prefix, answer, reason }))).count

/**
 * Runs `calls` allow()s at once: their answers, the slowest one's time in ms, and when a
 * timer of `timeoutMs` started with them fired (on a busy machine a timer fires late; the
 * answers can be no more on time than this process's timers are).
 */
const timedAllows = async (
  limiter: { allow(key: string, limit: number): Promise<boolean> },
  calls: number,
  timeoutMs: number
) => {
  const started = performance.now()
  const timer = new Promise<number>((resolve) => setTimeout(() => resolve(performance.now() - started), timeoutMs))
  const answers = await Promise.all(
    Array.from({ length: calls }, () =>
      limiter.allow("anonymous", 100).then((a) => ({ a, at: performance.now() - started }))
    )
  )
  return { answers: answers.map((x) => x.a), slowestMs: Math.max(...answers.map((x) => x.at)), timerMs: await timer }
}

/** Answered within the timeout: not before it, and no later than a timer of the same length (plus a little). */
const expectWithin = (timed: { slowestMs: number; timerMs: number }, timeoutMs: number) => {
  expect(timed.slowestMs).toBeGreaterThanOrEqual(timeoutMs - 5)
  expect(timed.slowestMs).toBeLessThan(timed.timerMs + 250)
}

describe("rate limiter when Redis cannot decide", () => {
  it("refused (nothing listening): the fail mode within the timeout, every call, counted; a client without an offline queue answers at once", async () => {
    const port = await refusedPort()
    for (const mode of ["deny", "allow"] as const) {
      const keyPrefix = uniquePrefix(`rl-down-${mode}`)
      const limiter = createRedisRateLimiter({ client: client(port), keyPrefix, onUnavailable: mode, timeout: 300 })
      const timed = await timedAllows(limiter, 50, 300)
      summary(`rate limiter refused (${mode})`, {
        calls: 50,
        slowestMs: timed.slowestMs.toFixed(0),
        timerMs: timed.timerMs.toFixed(0)
      })
      expect(timed.answers).toEqual(Array(50).fill(mode === "allow"))
      expectWithin(timed, 300)
      expect(counted(keyPrefix, mode, "timeout")).toBe(50)
      expect(await limiter.consume("anonymous", 100)).toEqual({
        allowed: mode === "allow",
        remaining: 0,
        retryAfterMs: 0,
        resetAfterMs: 0,
        unavailable: true
      })
    }
    const keyPrefix = uniquePrefix("rl-down-noqueue")
    const noQueue = createRedisRateLimiter({ client: client(port, { enableOfflineQueue: false }), keyPrefix })
    const immediate = await timedAllows(noQueue, 10, 1_000)
    expect(immediate.answers).toEqual(Array(10).fill(false))
    expect(immediate.slowestMs).toBeLessThan(immediate.timerMs)
    expect(counted(keyPrefix, "deny", "unavailable")).toBe(10)
    // The default timeout is one second: well inside the 2 s a gateway can afford.
    const defaults = createRedisRateLimiter({ client: client(port), keyPrefix: uniquePrefix("rl-down-default") })
    const timed = await timedAllows(defaults, 5, 1_000)
    expect(timed.answers).toEqual(Array(5).fill(false))
    expectWithin(timed, 1_000)
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
      const timed = await timedAllows(limiter, 20, 400)
      summary(`rate limiter ${mode}`, {
        calls: 20,
        slowestMs: timed.slowestMs.toFixed(0),
        timerMs: timed.timerMs.toFixed(0)
      })
      expect(timed.answers).toEqual(Array(20).fill(false))
      expectWithin(timed, 400)
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
    const limiter = createRedisRateLimiter({
      client: client(proxy.port),
      keyPrefix,
      timeout: 200,
      onUnavailable: "allow"
    })
    expect(await limiter.allow("liz", 1)).toBe(true)
    expect(await limiter.allow("liz", 1)).toBe(false) // decided by Redis: over the limit
    proxy.delayReplies(600)
    const slow = await timedAllows(limiter, 10, 200)
    expect(slow.answers).toEqual(Array(10).fill(true))
    expectWithin(slow, 200)
    expect(counted(keyPrefix, "allow", "timeout")).toBe(10)
    proxy.delayReplies(0)
    await sleep(700)
    expect(unhandled).toEqual([])
  }, 30_000)
})
