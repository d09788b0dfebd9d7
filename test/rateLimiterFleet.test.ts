/**
 * Several replicas in their own processes on one key, through the Effect API with a 1 s
 * window: together they are never allowed more than the limit within any window, also
 * when one replica's clock is a minute ahead; they are allowed about the limit per
 * window (not just refused); and after an idle window the whole limit is back at once.
 */
import { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { uniquePrefix } from "./support/keys.js"
import { runFleet, windowViolations, type Call } from "./support/rateLimitFleet.js"
import { summary } from "./support/replica.js"
import { sharedRedis } from "./support/shared.js"

const LIMIT = 20
const WINDOW_MS = 1_000

const redis = new Redis(sharedRedis().url)
afterAll(() => redis.quit())

const count = (calls: ReadonlyArray<Call>, replica?: number) =>
  calls.filter((c) => c.allowed && (replica === undefined || c.replica === replica)).length

describe("rate limiter across processes", () => {
  it("never allows more than the limit in any window, whatever one replica's clock says, and the whole limit after an idle window", async () => {
    const prefix = uniquePrefix("rl-fleet")
    const common = { url: sharedRedis().url, prefix, key: "identity-1", limit: LIMIT, windowMs: WINDOW_MS }
    // Three replicas, one of them with Date.now a minute ahead, each offering 150 requests/s.
    const durationMs = 3_500
    const busy = await runFleet({ ...common, durationMs, perSecond: 150, inFlight: 3 }, [{}, {}, { skewMs: 60_000 }])
    const violations = windowViolations(busy, LIMIT, WINDOW_MS)
    summary("rate limiter fleet (busy)", {
      calls: busy.length,
      allowed: count(busy),
      byReplica: [0, 1, 2].map((r) => count(busy, r)).join("/"),
      violations: violations.length
    })
    expect(busy.length).toBeGreaterThan(LIMIT * 10)
    expect(violations).toEqual([])
    // Busy for 3.5 windows: the limit in each of the first three at least (nothing starved).
    expect(count(busy)).toBeGreaterThanOrEqual(LIMIT * Math.floor(durationMs / WINDOW_MS))
    expect(count(busy, 2)).toBeGreaterThan(0)
    // What callers are told is on Redis's clock: never beyond one window, skewed replica or not.
    for (const call of busy) {
      expect(call.retryAfterMs).toBeLessThanOrEqual(WINDOW_MS)
      expect(call.resetAfterMs).toBeLessThanOrEqual(WINDOW_MS)
      if (!call.allowed) expect(call.retryAfterMs).toBeGreaterThan(0)
      else expect(call.remaining).toBeLessThan(LIMIT)
    }

    // Idle for a whole window, then a burst of 300 ms from all three: exactly the limit.
    const idleUntil = Math.max(...busy.map((c) => c.received)) + WINDOW_MS + 50
    const burst = await runFleet(
      { ...common, durationMs: 300, perSecond: 400, inFlight: 4 },
      [{}, {}, { skewMs: 60_000 }],
      idleUntil
    )
    summary("rate limiter fleet (burst after idle)", { calls: burst.length, allowed: count(burst) })
    expect(burst.length).toBeGreaterThan(LIMIT * 2)
    const span = Math.max(...burst.map((c) => c.received)) - Math.min(...burst.map((c) => c.sent))
    // The burst fits in one window, so "exactly the limit" is the rule's answer.
    expect(span).toBeLessThan(WINDOW_MS)
    expect(count(burst)).toBe(LIMIT)
  }, 60_000)
})
