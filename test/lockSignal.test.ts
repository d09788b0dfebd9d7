/**
 * A lost lease is never silent, against the shared redis-server: the facade's
 * `withRedisLock` with an event loop blocked past `ttlMs` (a busy loop, so no timer can
 * fire and a second holder gets in) signals `fn` through its AbortSignal and rejects with
 * `LockLost` once `fn` settles, also when `fn` ignores its argument; and the lock's timing
 * runs on real time, so under @effect/vitest's `it.effect` (a TestClock that never
 * advances) two holders cannot overlap and a holder's loss is signalled.
 */
import { it as effectIt } from "@effect/vitest"
import { Cause, Effect, Exit, Option } from "effect"
import { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { LockLost, LockTimeout } from "../src/Errors.js"
import { withRedisLock } from "../src/internal/lock/facade.js"
import { fromClient } from "../src/RedisClient.js"
import type { RedisLockHandle } from "../src/internal/lock/contract.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { uniquePrefix } from "./support/keys.js"
import { sleep, summary } from "./support/replica.js"
import { sharedRedis } from "./support/shared.js"

const opened: Array<Redis> = []
const handles: Array<RedisLockHandle> = []

afterAll(async () => {
  await Promise.all(handles.map((h) => Effect.runPromise(h.close)))
  for (const c of opened) c.disconnect()
})

const client = (): Redis => {
  const c = new Redis(sharedRedis().port, "127.0.0.1")
  c.on("error", () => {})
  opened.push(c)
  return c
}

const lockOn = (redis: Redis) => {
  const handle = makeLockHandle(fromClient(redis))
  handles.push(handle)
  return handle.lock
}

/** Blocks the event loop (no timer, no I/O) for `ms`. */
const busy = (ms: number) => {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // spin
  }
}

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** A real-time sleep (a TestClock does not move it). */
const realSleep = (ms: number) => Effect.promise(() => sleep(ms))

describe("withRedisLock with an event loop blocked past ttlMs", () => {
  it("fn's signal fires, the second holder gets in, and the first call rejects with LockLost after fn settles", async () => {
    const key = `${uniquePrefix("blocked")}lock`
    const a = client()
    const b = client()
    const ttlMs = 300
    const events: Array<string> = []
    let seenSignal: AbortSignal | undefined
    let bStarted = false
    let releaseB: () => void = () => {}
    const bHeld = new Promise<void>((resolve) => (releaseB = resolve))
    let aHolds: () => void = () => {}
    const aHeld = new Promise<void>((resolve) => (aHolds = resolve))

    const first = withRedisLock(
      a,
      key,
      async ({ signal }) => {
        seenSignal = signal
        events.push("a:start")
        aHolds()
        await sleep(50) // B starts waiting meanwhile
        busy(ttlMs + 300) // past the TTL: Redis expires the key, no renewal can run
        // The second holder takes the lock now; wait until it holds it.
        await Promise.race([bHeld, sleep(2_000)])
        // The signal fires while fn still runs (within a second of real time at most).
        if (!signal.aborted) {
          await new Promise<void>((resolve) => {
            signal.addEventListener("abort", () => resolve())
            setTimeout(resolve, 1_000)
          })
        }
        events.push(`a:end aborted=${signal.aborted}`)
        return "a"
      },
      { ttlMs, retryMs: 20, timeoutMs: 5_000 }
    )
    // B starts waiting while A holds the lock.
    await aHeld
    const second = withRedisLock(
      b,
      key,
      async () => {
        bStarted = true
        events.push("b:start")
        releaseB()
        await sleep(50)
        return "b"
      },
      { ttlMs: 1_000, retryMs: 20, timeoutMs: 5_000 }
    )
    const [firstResult, secondResult] = await Promise.allSettled([first, second])

    expect(bStarted).toBe(true)
    // B got in while A's fn was still running: a lapse that a TTL lock cannot prevent...
    expect(events.indexOf("b:start")).toBeLessThan(events.findIndex((e) => e.startsWith("a:end")))
    // ...but A was told: its signal fired while fn ran, and its call rejected with LockLost.
    expect(events).toContain("a:end aborted=true")
    expect(seenSignal?.reason).toBeInstanceOf(LockLost)
    expect(firstResult.status).toBe("rejected")
    const error = (firstResult as PromiseRejectedResult).reason
    expect(error).toBeInstanceOf(LockLost)
    expect((error as LockLost).key).toBe(key)
    expect(secondResult).toEqual({ status: "fulfilled", value: "b" })
    summary("blocked event loop", {
      ttlMs,
      blockedMs: ttlMs + 300,
      reason: (error as LockLost).reason,
      events: events.join(" | ")
    })
  })

  it("a fn that ignores its argument keeps working, and the call still rejects with LockLost", async () => {
    const key = `${uniquePrefix("blocked-plain")}lock`
    let finished = false
    const call = withRedisLock(
      client(),
      key,
      async () => {
        busy(400)
        await sleep(10)
        finished = true
        return 42
      },
      { ttlMs: 200, retryMs: 20, timeoutMs: 1_000 }
    )
    const error = await call.then(
      () => undefined,
      (e: unknown) => e
    )
    expect(finished).toBe(true)
    expect(error).toBeInstanceOf(LockLost)
    // An undisturbed fn that ignores its argument resolves as before.
    expect(await withRedisLock(client(), `${key}:calm`, async () => 7, { ttlMs: 1_000 })).toBe(7)
  })
})

describe("the lock runs on real time (it.effect's TestClock never advances)", () => {
  effectIt.effect("a second acquirer cannot get in while the first scope is open", () =>
    Effect.gen(function* () {
      const key = `${uniquePrefix("testclock-hold")}lock`
      const first = lockOn(client())
      const second = lockOn(client())
      const holder = client()
      const started = performance.now()
      const outcome = yield* Effect.scoped(
        Effect.gen(function* () {
          const lease = yield* first.acquire(key, { ttl: "300 millis" })
          // Three TTLs of real time: only a renewal on real time keeps the lock.
          const other = yield* Effect.exit(Effect.scoped(second.acquire(key, { waitTimeout: "700 millis" })))
          yield* realSleep(Math.max(0, 900 - (performance.now() - started)))
          const value = yield* Effect.promise(() => holder.get(key))
          return { other, still: value === lease.token }
        })
      )
      expect(failureOf(outcome.other)).toBeInstanceOf(LockTimeout)
      expect(outcome.still).toBe(true)
      summary("testclock hold", {
        ttlMs: 300,
        heldMs: Math.round(performance.now() - started),
        secondAcquirer: "LockTimeout"
      })
    })
  )

  effectIt.effect("a holder whose lock is taken is told at once: withLock fails with LockLost", () =>
    Effect.gen(function* () {
      const key = `${uniquePrefix("testclock-loss")}lock`
      const lock = lockOn(client())
      const thief = client()
      const started = performance.now()
      const run = lock.withLock(
        key,
        Effect.gen(function* () {
          yield* Effect.promise(() => thief.set(key, "someone-else", "PX", 5_000))
          yield* realSleep(3_000)
          return "finished"
        }),
        { ttl: "300 millis" }
      )
      // Bounded on real time, so a loss that is never signalled fails the test instead of hanging it.
      const exit = yield* Effect.exit(
        Effect.raceFirst(run, Effect.zipRight(realSleep(2_000), Effect.succeed("never told" as const)))
      )
      const ms = performance.now() - started
      expect(failureOf(exit)).toBeInstanceOf(LockLost)
      expect((failureOf(exit) as LockLost).reason).toBe("taken")
      expect(ms).toBeLessThan(1_000)
      summary("testclock loss", { ttlMs: 300, toldAfterMs: Math.round(ms) })
    })
  )

  effectIt.effect("a lease's signal aborts with the LockLost, and withLease's work is told through it", () =>
    Effect.gen(function* () {
      const key = `${uniquePrefix("testclock-signal")}lock`
      const lock = lockOn(client())
      const thief = client()
      let aborted: unknown
      const exit = yield* Effect.exit(
        lock.withLease(
          key,
          (lease) =>
            Effect.gen(function* () {
              yield* Effect.promise(() => thief.set(key, "someone-else", "PX", 5_000))
              // Work that stops early when told (here: polls its signal on real time).
              for (let i = 0; i < 100 && !lease.signal.aborted; i++) yield* realSleep(20)
              aborted = lease.signal.reason
              return "stopped"
            }),
          { ttl: "300 millis", onLost: "after" }
        )
      )
      expect(aborted).toBeInstanceOf(LockLost)
      // "after": the work finished, then the call failed with the loss.
      expect(failureOf(exit)).toBe(aborted)
    })
  )
})
