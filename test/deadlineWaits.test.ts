/**
 * The deadline without a fiber of its own: every wait an operation makes watches it. A
 * Clock sleep (a retry schedule's) ends at the deadline even under a TestClock that never
 * advances, and a TestClock still works inside an operation; nothing is sent once the
 * deadline has passed, except a finalizer's call (a lock's release), which is sent and not
 * waited for. Against the shared redis-server, live clock except where a TestClock is the
 * point.
 */
import { it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, Option, TestClock } from "effect"
import { Redis } from "ioredis"
import { afterAll, describe, expect } from "vitest"
import { OperationTimeout } from "../src/Errors.js"
import { within } from "../src/internal/deadline.js"
import { fromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const clients: Array<Redis> = []
afterAll(() => {
  for (const c of clients) c.disconnect()
})
const redis = () => {
  const c = new Redis(sharedRedis().port, "127.0.0.1")
  c.on("error", () => {})
  clients.push(c)
  return fromClient(c)
}

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** A wait that does not watch the deadline (a caller's own). */
const unwatchedWait = (ms: number) => Effect.async<void>((resume) => void setTimeout(() => resume(Effect.void), ms))

const SLACK_MS = 600

describe("every wait of an operation watches its deadline", () => {
  it.effect(
    "a Clock sleep ends at the deadline under a TestClock that never advances; TestClock.adjust still works inside",
    () =>
      Effect.gen(function* () {
        const bounded = within({ operation: "test sleep", timeoutMs: 200 })
        const started = performance.now()
        const exit = yield* Effect.exit(bounded(Effect.sleep("1 hour")))
        const ms = performance.now() - started
        expect(failureOf(exit)).toBeInstanceOf(OperationTimeout)
        expect(ms).toBeGreaterThanOrEqual(195)
        expect(ms).toBeLessThan(200 + SLACK_MS)
        // The operation's Clock is the TestClock underneath: it can be adjusted, and time reads it.
        const before = yield* Clock.currentTimeMillis
        const after = yield* bounded(Effect.zipRight(TestClock.adjust("1 minute"), Clock.currentTimeMillis))
        expect(after - before).toBe(60_000)
      })
  )

  it.live("a live Clock sleep and a Redis call end at the deadline; the budget is gone after the operation", () =>
    Effect.gen(function* () {
      const client = redis()
      const bounded = within({ operation: "test live", timeoutMs: 150 })
      const started = performance.now()
      const exit = yield* Effect.exit(bounded(Effect.sleep("1 hour")))
      expect(failureOf(exit)).toBeInstanceOf(OperationTimeout)
      expect(performance.now() - started).toBeLessThan(150 + SLACK_MS)
      // BLPOP on an empty list waits on the server: the deadline abandons the wait.
      const key = `${uniquePrefix("blpop")}list`
      const blocked = yield* Effect.exit(bounded(client.run("BLPOP", (c) => c.blpop(key, 5))))
      expect(failureOf(blocked)).toBeInstanceOf(OperationTimeout)
      // Outside any operation, the same kind of wait is not cut short.
      expect(yield* Effect.as(Effect.sleep("200 millis"), "slept")).toBe("slept")
    })
  )

  it.live("nothing is sent once the deadline has passed; a finalizer's call is sent, not waited for", () =>
    Effect.gen(function* () {
      const client = redis()
      const prefix = uniquePrefix("after-deadline")
      const bounded = within({ operation: "test send", timeoutMs: 100 })
      // The caller's own wait outlives the deadline; the SET after it must not go out.
      const late = yield* Effect.exit(
        bounded(
          Effect.zipRight(
            unwatchedWait(300),
            client.run("SET late", (c) => c.set(`${prefix}late`, "1"))
          )
        )
      )
      expect(failureOf(late)).toBeInstanceOf(OperationTimeout)
      // A finalizer (a lock's release) after the deadline still reaches Redis.
      const started = performance.now()
      const released = yield* Effect.exit(
        bounded(
          Effect.ensuring(
            Effect.sleep("1 hour"),
            Effect.ignore(client.run("SET released", (c) => c.set(`${prefix}released`, "1")))
          )
        )
      )
      expect(failureOf(released)).toBeInstanceOf(OperationTimeout)
      expect(performance.now() - started).toBeLessThan(100 + SLACK_MS)
      yield* Effect.sleep("100 millis")
      const [lateValue, releasedValue] = yield* client.run("GET", (c) =>
        Promise.all([c.get(`${prefix}late`), c.get(`${prefix}released`)])
      )
      expect(lateValue).toBeNull()
      expect(releasedValue).toBe("1")
    })
  )
})
