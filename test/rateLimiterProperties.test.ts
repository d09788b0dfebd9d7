/**
 * Arrival patterns (fast-check) against an exact model of the rule, written here apart
 * from the library: an arrival at t is allowed iff fewer than `limit` allowed arrivals lie
 * in (t - W, t]. Every decision, count, retry time and reset time must be the model's, and
 * every rolling window (the fullest windows end at an allowed arrival, so those are the
 * ones checked) must hold at most `limit`. On the in-memory limiter the arrivals are put
 * on the TestClock; on Redis they happen in real time, and the model replays them at the
 * times Redis's own clock gave the script (which the backing reports).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock, TestContext } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { redisBacking } from "../src/internal/ratelimit/backing.js"
import type { Decision } from "../src/internal/ratelimit/rule.js"
import * as RateLimiter from "../src/RateLimiter.js"
import { fromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

/** The rule, directly: allowed arrival times (µs) so far, ascending. */
const model = (limit: number, windowUs: number) => {
  const allowed: Array<number> = []
  return (t: number) => {
    const inWindow = allowed.filter((a) => a > t - windowUs)
    const ok = inWindow.length < limit
    if (ok) {
      allowed.push(t)
      inWindow.push(t)
    }
    const count = inWindow.length
    return {
      allowed: ok,
      count,
      retryAfterUs: count >= limit ? inWindow[count - limit]! + windowUs - t : 0,
      resetAfterUs: count > 0 ? inWindow[count - 1]! + windowUs - t : 0
    }
  }
}

/** Windows (t - W, t] ending at an allowed time that hold more than `limit` allowed times. */
const overfull = (times: ReadonlyArray<number>, limit: number, windowUs: number) =>
  times.filter((t) => times.filter((a) => a > t - windowUs && a <= t).length > limit)

const ms = (us: number) => Math.ceil(us / 1000)

const pattern = (maxGapMs: number) =>
  fc.array(fc.record({ gapMs: fc.integer({ min: 0, max: maxGapMs }), burst: fc.integer({ min: 1, max: 4 }) }), {
    minLength: 1,
    maxLength: 14
  })

describe("rate limiter against the model", () => {
  it.effect("in memory, on the TestClock: every answer is the model's, no window over the limit", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 6 }),
          fc.integer({ min: 1, max: 1_000 }),
          pattern(1_500),
          (limit, windowMs, arrivals) =>
            Effect.gen(function* () {
              const limiter = yield* RateLimiter.makeMemory()
              const rule = model(limit, windowMs * 1000)
              const allowedAt: Array<number> = []
              let now = 0
              for (const { gapMs, burst } of arrivals) {
                yield* TestClock.adjust(gapMs)
                now += gapMs
                for (let i = 0; i < burst; i++) {
                  const got = yield* limiter.consume("k", { limit, window: windowMs })
                  const want = rule(now * 1000)
                  expect(got).toEqual({
                    allowed: want.allowed,
                    remaining: limit - want.count,
                    retryAfterMs: ms(want.retryAfterUs),
                    resetAfterMs: ms(want.resetAfterUs)
                  })
                  if (got.allowed) allowedAt.push(now * 1000)
                }
                const seen = yield* limiter.peek("k", { limit, window: windowMs })
                expect(seen.count).toBe(allowedAt.filter((a) => a > (now - windowMs) * 1000).length)
              }
              expect(overfull(allowedAt, limit, windowMs * 1000)).toEqual([])
            }).pipe(Effect.provide(TestContext.TestContext), Effect.runPromise)
        ),
        { numRuns: 100 }
      )
    )
  )

  it.live(
    "on Redis, in real time: every decision is the model's at Redis's times, no window over the limit",
    () =>
      Effect.gen(function* () {
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(sharedRedis().url)),
          (c) => Effect.promise(() => c.quit())
        )
        let runs = 0
        const seen = { allowed: 0, denied: 0 }
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(
              fc.integer({ min: 1, max: 5 }),
              fc.integer({ min: 20, max: 150 }),
              pattern(90),
              (limit, windowMs, arrivals) =>
                Effect.gen(function* () {
                  runs++
                  const backing = redisBacking(fromClient(client), uniquePrefix("rl-model"), 5_000)
                  const decisions: Array<Decision> = []
                  for (const { gapMs, burst } of arrivals) {
                    yield* Effect.sleep(gapMs)
                    // A burst arrives at once: the scripts run one after another on Redis.
                    decisions.push(
                      ...(yield* Effect.all(
                        Array.from({ length: burst }, () => backing.consume({ key: "k", limit, windowMs })),
                        { concurrency: "unbounded" }
                      ))
                    )
                  }
                  decisions.sort((a, b) => a.nowUs - b.nowUs)
                  const rule = model(limit, windowMs * 1000)
                  for (const d of decisions) {
                    const want = rule(d.nowUs)
                    expect([d.allowed, d.count]).toEqual([want.allowed, want.count])
                    expect(d.pivotUs === null ? 0 : d.pivotUs + windowMs * 1000 - d.nowUs).toBe(want.retryAfterUs)
                    expect(d.newestUs === null ? 0 : d.newestUs + windowMs * 1000 - d.nowUs).toBe(want.resetAfterUs)
                  }
                  const allowedAt = decisions.filter((d) => d.allowed).map((d) => d.nowUs)
                  seen.allowed += allowedAt.length
                  seen.denied += decisions.length - allowedAt.length
                  expect(overfull(allowedAt, limit, windowMs * 1000)).toEqual([])
                }).pipe(Effect.runPromise)
            ),
            { numRuns: 25 }
          )
        )
        expect(runs).toBeGreaterThanOrEqual(25)
        // The patterns did reach the limit (the property is not about an idle key only).
        expect(seen.denied).toBeGreaterThan(0)
        expect(seen.allowed).toBeGreaterThan(seen.denied / 10)
      }).pipe(Effect.scoped),
    60_000
  )
})
