/**
 * Two ways a lease could pass for sound when it is not, on both the Promise facade's lane
 * and RedisLock's `withLease`, against a real redis-server: a hand-off message held past
 * the TTL (a frozen link) while another waiter took the lock, and a holder whose event
 * loop was blocked past its TTL (the loss found only once the work ends).
 */
import { Effect, Exit, Schedule } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { LockLost } from "../src/Errors.js"
import { withRedisLock } from "../src/internal/lock/facade.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { waitersKeyOf } from "../src/internal/lock/keys.js"
import { fromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, tcpProxy, type RedisServer } from "./support/redisServer.js"

let server: RedisServer
let raw: Redis
beforeAll(async () => {
  server = await startRedis()
  raw = new Redis(server.port, "127.0.0.1")
})
afterAll(async () => {
  await raw.quit()
  await server.stop()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const block = (ms: number) => {
  const end = Date.now() + ms
  while (Date.now() < end) {
    // a busy loop: no timer, no renewal, no message runs meanwhile
  }
}
const queued = async (key: string, n: number) => {
  for (let i = 0; i < 200 && (await raw.zcard(waitersKeyOf(key))) < n; i++) await sleep(5)
  expect(await raw.zcard(waitersKeyOf(key))).toBe(n)
}

describe.each(["lane", "withLease"] as const)("%s", (path) => {
  it("a hand-off message held by a frozen link past the TTL does not run the work while another holds the lock", async () => {
    const key = `${uniquePrefix("stale-handoff")}lock`
    const proxy = await tcpProxy(server.port)
    const late = new Redis(proxy.port, "127.0.0.1")
    const first = new Redis(server.port, "127.0.0.1")
    const other = new Redis(server.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(late))
    let inside = 0
    let maxInside = 0
    const work = async (ms: number) => {
      maxInside = Math.max(maxInside, ++inside)
      await sleep(ms)
      inside--
    }
    try {
      await late.ping()
      let letGo!: () => void
      let holding!: () => void
      const held = new Promise<void>((resolve) => (holding = resolve))
      const holder = withRedisLock(
        first,
        key,
        async () => {
          maxInside = Math.max(maxInside, ++inside)
          holding()
          await new Promise<void>((resolve) => (letGo = resolve))
          inside--
        },
        { ttlMs: 300 }
      )
      await held
      // The late waiter queues first (its poll is far off), then the other behind it.
      const lateWaiter =
        path === "lane"
          ? withRedisLock(late, key, () => work(20), { ttlMs: 300, retryMs: 4000, timeoutMs: 5000 })
          : Effect.runPromise(
              handle.lock.withLock(
                key,
                Effect.promise(() => work(20)),
                { ttl: 300, waitTimeout: 5000, retrySchedule: Schedule.spaced(4000) }
              )
            )
      await queued(key, 1)
      await sleep(100) // the late waiter's subscription is live
      const otherWaiter = withRedisLock(other, key, () => work(1500), { ttlMs: 3000, retryMs: 20, timeoutMs: 5000 })
      await queued(key, 2)
      proxy.freeze()
      letGo()
      await holder // handed to the late waiter, whose message the frozen link holds
      await sleep(700) // the handed lock's 300 ms TTL lapses, and the other waiter's poll takes it
      proxy.thaw()
      await Promise.allSettled([lateWaiter, otherWaiter])
      expect(maxInside).toBe(1)
      expect(await raw.exists(key, waitersKeyOf(key))).toBe(0)
    } finally {
      late.disconnect()
      first.disconnect()
      other.disconnect()
      await Effect.runPromise(handle.close)
      await proxy.stop()
    }
  }, 15_000)

  it("a holder whose event loop was blocked past its TTL gets LockLost (expired), not an untyped failure", async () => {
    const key = `${uniquePrefix("blocked")}lock`
    const client = new Redis(server.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(client))
    try {
      const error =
        path === "lane"
          ? await withRedisLock(client, key, () => Promise.resolve(block(400)), { ttlMs: 200 }).then(
              () => undefined,
              (e: unknown) => e
            )
          : await Effect.runPromiseExit(
              handle.lock.withLock(
                key,
                Effect.sync(() => block(400)),
                { ttl: 200, onLost: "after" }
              )
            ).then((exit) => (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : exit))
      expect(error).toEqual(new LockLost({ key, reason: "expired" }))
    } finally {
      await Effect.runPromise(handle.close)
      await client.quit()
    }
  })
})
