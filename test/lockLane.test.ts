/**
 * `withRedisLock`'s own lane (no fiber per call) against a real redis-server: the same
 * protocol as RedisLock's `withLease` (hand-off to the queued waiter, the poll when no
 * release message comes, the queue left on a timeout, the release after a failure), the
 * same errors, and holders of both excluding and handing over to each other.
 */
import { Deferred, Effect, Fiber, Metric, Schedule } from "effect"
import { Cluster, Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { InvalidConfig, LockTimeout, RedisUnavailable } from "../src/Errors.js"
import type { RedisLockHandle } from "../src/internal/lock/contract.js"
import { withRedisLock } from "../src/internal/lock/facade.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { fenceKeyOf, releaseChannelOf, waitersKeyOf } from "../src/internal/lock/keys.js"
import { lockWaitOf } from "../src/internal/lock/metrics.js"
import { fromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, tcpProxy, type RedisServer } from "./support/redisServer.js"

let server: RedisServer
let clientA: Redis
let clientB: Redis
let raw: Redis
/** An Effect RedisLock on its own connection: another replica using the service. */
let E: RedisLockHandle

beforeAll(async () => {
  server = await startRedis()
  clientA = new Redis(server.port, "127.0.0.1")
  clientB = new Redis(server.port, "127.0.0.1")
  raw = new Redis(server.port, "127.0.0.1")
  E = makeLockHandle(fromClient(new Redis(server.port, "127.0.0.1")))
})

afterAll(async () => {
  await Effect.runPromise(E.close)
  await Promise.all([clientA, clientB, raw].map((c) => c.quit()))
  await server.stop()
})

const lockKey = (name: string) => `${uniquePrefix(name)}lock`
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves once `key`'s waiter queue holds `n` entries (the waiter's first attempt found the lock held). */
const queued = async (key: string, n = 1) => {
  for (let i = 0; i < 200 && (await raw.zcard(waitersKeyOf(key))) < n; i++) await sleep(5)
  expect(await raw.zcard(waitersKeyOf(key))).toBe(n)
}

/** Script calls (EVALSHA, and EVAL after a NOSCRIPT) the server has run so far. */
const scriptCalls = async () =>
  (await raw.info("commandstats"))
    .split("\n")
    .filter((l) => l.startsWith("cmdstat_evalsha:") || l.startsWith("cmdstat_eval:"))
    .reduce((calls, l) => calls + Number(/calls=(\d+)/.exec(l)?.[1] ?? 0), 0)

/** A holder on `client` that keeps the lock until `letGo` is called. */
const holdUntilLetGo = async (client: Redis, key: string) => {
  let letGo!: () => void
  let holding!: () => void
  const held = new Promise<void>((resolve) => (holding = resolve))
  const done = withRedisLock(client, key, () => {
    holding()
    return new Promise<void>((resolve) => (letGo = resolve))
  })
  await held
  return { letGo: () => letGo(), done }
}

describe("withRedisLock's lane: the protocol", () => {
  it("the release hands the lock straight to the queued waiter (woken by the message, not the 10 s poll): no gap", async () => {
    const key = lockKey("lane-handoff")
    const holder = await holdUntilLetGo(clientA, key)
    const holderToken = await raw.get(key)
    let waiterToken: string | null = null
    let startedAt = 0
    const waiter = withRedisLock(
      clientB,
      key,
      async () => {
        startedAt = performance.now()
        waiterToken = await raw.get(key)
      },
      { retryMs: 10_000 }
    )
    await queued(key)
    const releasedAt = performance.now()
    holder.letGo()
    await holder.done
    // At once after the holder's release the key holds the waiter's token: a plain SET NX cannot slip in.
    expect(await raw.set(key, "third", "PX", 1000, "NX")).toBeNull()
    await waiter
    expect(waiterToken).not.toBeNull()
    expect(waiterToken).not.toBe(holderToken)
    expect(startedAt - releasedAt).toBeLessThan(1_000)
    expect(await raw.exists(key, waitersKeyOf(key))).toBe(0)
    // 2, or 3 when the hand-off's message came before the waiter's subscription was live
    // (its re-attempt then finds its own token and takes a fresh fence).
    expect(Number(await raw.get(fenceKeyOf(key)))).toBeGreaterThanOrEqual(2)
  })

  it("on a live release channel a contended hand-off costs one command per acquire and per release", async () => {
    const key = lockKey("lane-commands")
    const round = async () => {
      const holder = await holdUntilLetGo(clientA, key)
      const waiter = withRedisLock(clientB, key, async () => {}, { retryMs: 10_000 })
      await queued(key)
      await sleep(20)
      holder.letGo()
      await holder.done
      await waiter
    }
    await round() // clientB's subscription is live (and lingers) from here on
    const before = await scriptCalls()
    await round()
    // Holder: acquire + release (a hand-off). Waiter: one queued acquire, woken by the
    // hand-off message (no second attempt), then its release.
    expect((await scriptCalls()) - before).toBe(4)
  })

  it("without a release message (a plain DEL, as a haechi-store-redis holder releases) the poll takes over", async () => {
    const key = lockKey("lane-poll")
    await raw.set(key, "reference-holder", "PX", 10_000)
    let ran = false
    const waiter = withRedisLock(clientA, key, async () => void (ran = true), { retryMs: 25 })
    await queued(key)
    await sleep(60)
    expect(ran).toBe(false)
    await raw.del(key)
    await waiter
    expect(ran).toBe(true)
    expect(await raw.exists(key)).toBe(0)
  })

  it("a wait that runs out rejects with LockTimeout, never runs fn, leaves the queue, and counts the wait", async () => {
    const key = lockKey("lane-timeout")
    const holder = await holdUntilLetGo(clientA, key)
    const waits = await Effect.runPromise(Metric.value(lockWaitOf(key)))
    let ran = false
    const error = await withRedisLock(clientB, key, async () => void (ran = true), {
      timeoutMs: 120,
      retryMs: 30
    }).then(
      () => undefined,
      (e: unknown) => e
    )
    expect(error).toBeInstanceOf(LockTimeout)
    expect((error as LockTimeout).key).toBe(key)
    expect((error as LockTimeout).waitedMs).toBeGreaterThanOrEqual(120)
    expect(ran).toBe(false)
    expect(await raw.zcard(waitersKeyOf(key))).toBe(0)
    expect((await Effect.runPromise(Metric.value(lockWaitOf(key)))).count).toBe(waits.count + 1)
    holder.letGo()
    await holder.done
    expect(await raw.exists(key)).toBe(0)
  })

  it("timeoutMs 0 is one attempt: free, it runs; held, it rejects at once without queueing", async () => {
    const key = lockKey("lane-zero")
    expect(await withRedisLock(clientA, key, async () => 5, { timeoutMs: 0 })).toBe(5)
    const holder = await holdUntilLetGo(clientA, key)
    const error = await withRedisLock(clientB, key, async () => 6, { timeoutMs: 0 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockTimeout)
    expect(await raw.zcard(waitersKeyOf(key))).toBe(0)
    holder.letGo()
    await holder.done
  })

  it("fn throwing synchronously, or returning a plain value, settles like an async fn and releases", async () => {
    const key = lockKey("lane-sync")
    const boom = new Error("boom")
    const thrown = await withRedisLock(clientA, key, (() => {
      throw boom
    }) as unknown as () => Promise<void>).catch((e: unknown) => e)
    expect(thrown).toBe(boom)
    expect(await raw.exists(key)).toBe(0)
    expect(await withRedisLock(clientA, key, (() => 9) as unknown as () => Promise<number>)).toBe(9)
    expect(await raw.exists(key)).toBe(0)
  })
})

describe("withRedisLock's lane: the subscriber connection", () => {
  it("goes with its parent client: once the client quits, the subscriber ends at once, not after its linger", async () => {
    const key = lockKey("lane-parent-quit")
    const parent = new Redis(server.port, "127.0.0.1")
    const subscribers: Array<Redis> = []
    const duplicate = parent.duplicate.bind(parent)
    parent.duplicate = (...args: Parameters<Redis["duplicate"]>) => {
      const subscriber = duplicate(...args)
      subscribers.push(subscriber)
      return subscriber
    }
    const holder = await holdUntilLetGo(clientA, key)
    const waiter = withRedisLock(parent, key, async () => "ran", { retryMs: 10_000 })
    await queued(key)
    for (let i = 0; i < 200 && subscribers[0]?.status !== "ready"; i++) await sleep(5)
    holder.letGo()
    await holder.done
    expect(await waiter).toBe("ran")
    expect(subscribers.map((c) => c.status)).toEqual(["ready"]) // still subscribed: it lingers for the next wait
    await parent.quit()
    await sleep(50)
    expect(subscribers.map((c) => c.status)).toEqual(["end"])
  })
})

describe("withRedisLock's lane: a client that ends and connects again", () => {
  /** How long after the holder's release the waiter on `client` ran (a hand-off: a few ms; the poll: 2 s). */
  const handOffMs = async (client: Redis, key: string) => {
    const holder = await holdUntilLetGo(clientA, key)
    let ranAt = 0
    const waiter = withRedisLock(client, key, async () => void (ranAt = performance.now()), { retryMs: 2000 })
    await queued(key)
    await sleep(100) // subscribed
    const releasedAt = performance.now()
    holder.letGo()
    await Promise.all([holder.done, waiter])
    return ranAt - releasedAt
  }

  it("still gets hand-offs: its subscriber subscribes afresh", async () => {
    const key = lockKey("lane-reconnect")
    const client = new Redis(server.port, "127.0.0.1")
    try {
      expect(await handOffMs(client, key)).toBeLessThan(500)
      const ended = new Promise((resolve) => client.once("end", resolve))
      await client.quit()
      await ended
      await client.connect()
      expect(await handOffMs(client, key)).toBeLessThan(500)
    } finally {
      client.disconnect()
    }
  })

  it("many lock handles on one client follow its end with one listener, not one each", async () => {
    const client = new Redis(server.port, "127.0.0.1")
    const handles = Array.from({ length: 12 }, () => makeLockHandle(fromClient(client)))
    const keys = handles.map((_, i) => lockKey(`lane-many-${i}`))
    const listenersBefore = client.listenerCount("end")
    const holders = await Promise.all(keys.map((key) => holdUntilLetGo(clientA, key)))
    const waits = handles.map((handle, i) =>
      Effect.runPromise(handle.lock.withLock(keys[i]!, Effect.void, { waitTimeout: 5000 }))
    )
    for (const key of keys) await queued(key)
    await sleep(200) // every handle's subscriber is open
    expect(client.listenerCount("end") - listenersBefore).toBe(1)
    holders.forEach((holder) => holder.letGo())
    await Promise.all([...waits, ...holders.map((holder) => holder.done)])
    await Promise.all(handles.map((handle) => Effect.runPromise(handle.close)))
    await client.quit()
  })
})

describe("a poll interval longer than a Node timer can wait", () => {
  it("does not poll at once (Node runs a delay past 2^31 - 1 ms after 1 ms): the waiter waits for the release", async () => {
    for (const path of ["lane", "withLock"] as const) {
      const key = lockKey(`long-poll-${path}`)
      await raw.set(key, "someone", "PX", 400)
      const before = await scriptCalls()
      const waiting =
        path === "lane"
          ? withRedisLock(clientB, key, async () => "ran", { retryMs: 3e9, timeoutMs: 6e9 })
          : Effect.runPromise(
              E.lock.withLock(key, Effect.succeed("ran"), {
                waitTimeout: "60 days",
                retrySchedule: Schedule.spaced("30 days")
              })
            )
      await sleep(300)
      // The first attempt, and one more when the new subscription goes live (a release may
      // have come just before); with the delay taken as 1 ms, about 200.
      expect([path, (await scriptCalls()) - before <= 2]).toEqual([path, true])
      await raw.del(key)
      await raw.publish(releaseChannelOf(key), "") // a plain release, as the lock announces it
      expect(await waiting).toBe("ran")
    }
  })
})

describe("withRedisLock's lane: failures", () => {
  it("Redis unreachable before fn runs: RedisUnavailable, fn never runs", async () => {
    const dead = new Redis(1, "127.0.0.1", { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    dead.on("error", () => {})
    let ran = false
    const error = await withRedisLock(dead, lockKey("lane-down"), async () => void (ran = true)).catch(
      (e: unknown) => e
    )
    expect(error).toBeInstanceOf(RedisUnavailable)
    expect(ran).toBe(false)
    dead.disconnect()
  })

  it("an acquire with no answer in time (a frozen link) fails closed with LockTimeout; nothing stays held", async () => {
    const proxy = await tcpProxy(server.port)
    const client = new Redis(proxy.port, "127.0.0.1")
    try {
      const key = lockKey("lane-frozen")
      await client.ping()
      proxy.freeze()
      let ran = false
      const started = performance.now()
      const error = await withRedisLock(client, key, async () => void (ran = true), { timeoutMs: 100 }).catch(
        (e: unknown) => e
      )
      // The attempt's bound is at least a second (ATTEMPT_FLOOR_MS), then the release is tried and abandoned.
      expect(error).toBeInstanceOf(LockTimeout)
      expect(performance.now() - started).toBeLessThan(5_000)
      expect(ran).toBe(false)
      proxy.thaw()
      // The acquire held by the proxy ran once thawed, and so did the release sent after it: nothing is left.
      for (let i = 0; i < 100 && (await raw.exists(key)) === 1; i++) await sleep(10)
      expect(await raw.exists(key)).toBe(0)
    } finally {
      client.disconnect()
      await proxy.stop()
    }
  })

  it("on a Cluster, a key whose fence cannot share its slot rejects with InvalidConfig before touching Redis", async () => {
    const cluster = new Cluster([{ host: "127.0.0.1", port: 1 }], { lazyConnect: true })
    const error = await withRedisLock(cluster, "a}b", async () => 1).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(InvalidConfig)
    expect((error as InvalidConfig).option).toBe("key")
    cluster.disconnect()
  })
})

describe("withRedisLock's lane with RedisLock holders", () => {
  it("an Effect holder's release hands the lock to a facade waiter, and a facade release to an Effect waiter", async () => {
    const key = lockKey("lane-mixed")
    const order: Array<string> = []
    await Effect.runPromise(
      Effect.gen(function* () {
        const holding = yield* Deferred.make<void>()
        const letGo = yield* Deferred.make<void>()
        const effectHolder = yield* E.lock
          .withLock(key, Effect.zipRight(Deferred.succeed(holding, undefined), Deferred.await(letGo)))
          .pipe(Effect.fork)
        yield* Deferred.await(holding)
        const facadeWaiter = withRedisLock(
          clientA,
          key,
          async () => {
            order.push("facade")
            await sleep(30)
          },
          { retryMs: 10_000 }
        )
        yield* Effect.promise(() => queued(key))
        const effectWaiter = yield* E.lock
          .withLock(
            key,
            Effect.sync(() => order.push("effect")),
            { retrySchedule: Schedule.spaced("10 seconds") }
          )
          .pipe(Effect.fork)
        yield* Effect.promise(() => queued(key, 2))
        yield* Deferred.succeed(letGo, undefined)
        yield* Fiber.join(effectHolder)
        yield* Effect.promise(() => facadeWaiter)
        yield* Fiber.join(effectWaiter)
      })
    )
    expect(order).toEqual(["facade", "effect"])
    expect(Number(await raw.get(fenceKeyOf(key)))).toBeGreaterThanOrEqual(3)
    expect(await raw.exists(key, waitersKeyOf(key))).toBe(0)
  }, 10_000)
})
