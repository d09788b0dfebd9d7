/**
 * Ways a lease could pass for sound when it is not, on both the Promise facade's lane
 * and RedisLock's `withLease`, against a real redis-server: a hand-off message held past
 * the TTL (a frozen link) while another waiter took the lock, also when only the
 * subscriber link froze and the waiter's poll was refused meanwhile (the refusal's fence
 * counter proves the message stale); a holder whose event loop was blocked past its TTL
 * (the loss found only once the work ends); and a holder whose key was deleted and taken
 * by another while the work ran (the loss found by the release: LockLost, "taken").
 */
import { Effect, Exit, Schedule } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { LockLost } from "../src/Errors.js"
import { withRedisLock } from "../src/internal/lock/facade.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { fenceKeyOf, waitersKeyOf } from "../src/internal/lock/keys.js"
import { handedFence, handedSince } from "../src/internal/lock/releases.js"
import { callScriptBySha, Scripts } from "../src/internal/scripts.js"
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

/**
 * A hand-off to a late waiter whose link freezes (all of it, or only its subscriber
 * connection) as the holder releases, thawed `thawAfterMs` after the late waiter queued;
 * meanwhile the handed lock's 300 ms TTL lapses and another waiter's poll takes it. The
 * late waiter polls every `lateRetryMs`. Returns who ran, in order, and the most at once.
 */
const staleHandoff = async (
  path: "lane" | "withLease",
  freezing: "link" | "subscriber",
  lateRetryMs: number,
  thawAfterMs: number,
  renewEvery?: number
) => {
  const key = `${uniquePrefix(`stale-${freezing}`)}lock`
  const proxy = await tcpProxy(server.port)
  const late = new Redis(freezing === "link" ? proxy.port : server.port, "127.0.0.1")
  if (freezing === "subscriber") late.duplicate = () => new Redis(proxy.port, "127.0.0.1")
  const first = new Redis(server.port, "127.0.0.1")
  const other = new Redis(server.port, "127.0.0.1")
  const handle = makeLockHandle(fromClient(late))
  const entered: Array<string> = []
  let inside = 0
  let maxInside = 0
  const work = (who: string, ms: number) => async () => {
    entered.push(who)
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
        holding()
        await new Promise<void>((resolve) => (letGo = resolve))
      },
      { ttlMs: 300 }
    )
    await held
    const start = performance.now()
    // The late waiter queues first, then the other behind it.
    const lateWaiter =
      path === "lane"
        ? withRedisLock(late, key, work("late", 20), { ttlMs: 300, retryMs: lateRetryMs, timeoutMs: 5000 })
        : Effect.runPromise(
            handle.lock.withLock(key, Effect.promise(work("late", 20)), {
              ttl: 300,
              waitTimeout: 5000,
              retrySchedule: Schedule.spaced(lateRetryMs),
              ...(renewEvery === undefined ? {} : { renewEvery })
            })
          )
    await queued(key, 1)
    await sleep(100) // the late waiter's subscription is live
    const otherWaiter = withRedisLock(other, key, work("other", 1500), { ttlMs: 3000, retryMs: 20, timeoutMs: 5000 })
    await queued(key, 2)
    proxy.freeze()
    letGo()
    await holder // handed to the late waiter, whose message the frozen link holds
    await sleep(Math.max(0, start + thawAfterMs - performance.now()))
    proxy.thaw()
    const settled = await Promise.allSettled([lateWaiter, otherWaiter])
    expect(await raw.exists(key, waitersKeyOf(key))).toBe(0)
    return { entered, maxInside, settled: settled.map((s) => s.status) }
  } finally {
    late.disconnect()
    first.disconnect()
    other.disconnect()
    await Effect.runPromise(handle.close)
    await proxy.stop()
  }
}

describe.each(["lane", "withLease"] as const)("%s", (path) => {
  it("a hand-off message held by a frozen link past the TTL does not run the work while another holds the lock", async () => {
    // Thawed at 900 ms, long after the late waiter's last attempt (its poll is 4 s off).
    const { maxInside } = await staleHandoff(path, "link", 4000, 900)
    expect(maxInside).toBe(1)
  }, 15_000)

  it("a hand-off held on the subscriber link alone past the TTL, read after a refused poll, does not run the work", async () => {
    // The late waiter's poll at about 600 ms is refused (the other holds the lock); thawed
    // at 640 ms, within renewMs (100 ms) of that attempt: only the refusal's fence tells.
    const { entered, maxInside, settled } = await staleHandoff(path, "subscriber", 600, 640)
    expect(settled).toEqual(["fulfilled", "fulfilled"])
    expect(maxInside).toBe(1)
    expect(entered).toEqual(["other", "late"])
  }, 15_000)

  it("a holder whose key is deleted and taken by another while the work runs gets LockLost (taken), its signal aborted", async () => {
    const key = `${uniquePrefix("taken")}lock`
    const a = new Redis(server.port, "127.0.0.1")
    const b = new Redis(server.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(a))
    let aborted: unknown
    const work = async (signal: AbortSignal) => {
      await raw.del(key) // lost, as after a failover to a replica that never had it
      await withRedisLock(b, key, () => sleep(10), { ttlMs: 3000, retryMs: 5, timeoutMs: 1000 })
      signal.addEventListener("abort", () => (aborted = signal.reason))
      return "done"
    }
    try {
      const outcome =
        path === "lane"
          ? await withRedisLock(a, key, ({ signal }) => work(signal), { ttlMs: 3000 }).then(
              (value) => value,
              (e: unknown) => e
            )
          : await Effect.runPromiseExit(
              handle.lock.withLease(key, (lease) => Effect.promise(() => work(lease.signal)), {
                ttl: 3000,
                onLost: "after"
              })
            ).then((exit) => (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : exit))
      expect(outcome).toEqual(new LockLost({ key, reason: "taken" }))
      expect(aborted).toEqual(new LockLost({ key, reason: "taken" }))
      expect(await raw.exists(key)).toBe(0)
    } finally {
      await Effect.runPromise(handle.close)
      await Promise.all([a.quit(), b.quit()])
    }
  })

  it("a release whose reply was lost, re-sent by ioredis after the reconnect (it finds its own first run's work), is no loss", async () => {
    const key = `${uniquePrefix("resent-release")}lock`
    const proxy = await tcpProxy(server.port)
    const client = new Redis(proxy.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(client))
    const work = async () => {
      proxy.cutAfterNextRequest() // the release runs, its reply is lost, the link drops
      return "done"
    }
    try {
      await client.ping()
      const outcome =
        path === "lane"
          ? await withRedisLock(client, key, work, { ttlMs: 3000 }).then(
              (value) => value,
              (e: unknown) => e
            )
          : await Effect.runPromiseExit(handle.lock.withLock(key, Effect.promise(work), { ttl: 3000 })).then((exit) =>
              Exit.isSuccess(exit) ? exit.value : exit.cause
            )
      expect(outcome).toBe("done")
      expect(await raw.exists(key)).toBe(0)
    } finally {
      client.disconnect()
      await Effect.runPromise(handle.close)
      await proxy.stop()
    }
  })

  it("a fence counter below zero fails the acquire closed: the work never runs while another holds the lock", async () => {
    const key = `${uniquePrefix("negative-fence")}lock`
    const client = new Redis(server.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(client))
    await raw.set(fenceKeyOf(key), "-5")
    await raw.set(key, "a-reference-holder", "PX", 3000)
    let ran = false
    const work = async () => void (ran = true)
    try {
      const error =
        path === "lane"
          ? await withRedisLock(client, key, work, { ttlMs: 3000, timeoutMs: 300 }).then(
              () => undefined,
              (e: unknown) => e
            )
          : await Effect.runPromiseExit(
              handle.lock.withLock(key, Effect.promise(work), { ttl: 3000, waitTimeout: 300 })
            ).then((exit) => (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : exit))
      expect(ran).toBe(false)
      expect(error).toMatchObject({ _tag: "RedisCommandFailed" })
      expect(await raw.get(key)).toBe("a-reference-holder")
    } finally {
      await raw.del(key, fenceKeyOf(key), waitersKeyOf(key))
      await Effect.runPromise(handle.close)
      await client.quit()
    }
  })

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

describe("a hand-off read late, with a renewal interval past the TTL", () => {
  it("is still confirmed by an attempt a third of the TTL after the last one: the work does not run beside another holder", async () => {
    // renewEvery 10 s on a 300 ms TTL: the renewal interval alone would trust a message read 800 ms late.
    const { entered, maxInside, settled } = await staleHandoff("withLease", "subscriber", 6000, 900, 10_000)
    expect(settled).toEqual(["fulfilled", "fulfilled"])
    expect(maxInside).toBe(1)
    expect(entered).toEqual(["other", "late"])
  }, 15_000)
})

describe("what a release proves", () => {
  it("a release Redis runs only after the lease's TTL (Redis stalled) is no loss: the work ended inside its lease", async () => {
    const key = `${uniquePrefix("late-release")}lock`
    const client = new Redis(server.port, "127.0.0.1")
    const stalling = new Redis(server.port, "127.0.0.1")
    const handle = makeLockHandle(fromClient(client))
    const stall =
      "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] " +
      "while true do local u = redis.call('TIME') if u[1] * 1000000 + u[2] - s > 150000 then break end end return 1"
    const work = async () => {
      await sleep(250)
      void stalling.eval(stall, 0) // Redis busy 150 ms: the release runs after the 300 ms TTL
      await sleep(5)
      return "done"
    }
    try {
      await stalling.ping()
      const exit = await Effect.runPromiseExit(
        handle.lock.withLock(key, Effect.promise(work), { ttl: 300, renewEvery: 10_000, onLost: "after" })
      )
      expect(exit).toEqual(Exit.succeed("done"))
    } finally {
      await Effect.runPromise(handle.close)
      await Promise.all([client.quit(), stalling.quit()])
    }
  })
})

describe("what a hand-off message proves", () => {
  it("its fence is a positive decimal integer as the scripts write it: anything else is no hand-off", () => {
    expect(handedFence("tok 42", "tok")).toBe(42)
    expect(handedFence("tok 42 {head}", "tok")).toBe(42)
    for (const forged of ["Infinity", "1e999", "0x10", "-3", "0", "007", "4.5", "", "9007199254740993"])
      expect([forged, handedFence(`tok ${forged}`, "tok")]).toEqual([forged, 0])
    expect(handedFence("other 42", "tok")).toBe(0)
  })

  it("a fence counter INCR could not count up to a safe integer is refused before anything is written", async () => {
    const key = `${uniquePrefix("bad-fence")}lock`
    const keys = [key, fenceKeyOf(key), waitersKeyOf(key)]
    for (const counter of ["007", "-5", "9007199254740992", "99999999999999999999", "1.5"]) {
      await raw.set(fenceKeyOf(key), counter)
      const answer = await callScriptBySha(raw, Scripts.lockAcquire, keys, ["tok", 5000, ""]).then(
        (reply) => reply,
        (error: Error) => error.message
      )
      expect([counter, answer]).toEqual([
        counter,
        `WRONGTYPE ${fenceKeyOf(key)} holds the wrong type: nothing written (no integer)`
      ])
      expect(await raw.exists(key)).toBe(0)
    }
    await raw.set(fenceKeyOf(key), "999999999999999") // 15 digits: the largest counted
    expect(await callScriptBySha(raw, Scripts.lockAcquire, keys, ["tok", 5000, ""])).toBe(1_000_000_000_000_000)
    await raw.del(...keys)
  })

  it("a refused attempt answers the fence counter, negated: a hand-off at or below it is stale, one above it is ours", async () => {
    const key = `${uniquePrefix("refused-fence")}lock`
    const keys = [key, fenceKeyOf(key), waitersKeyOf(key)]
    const acquire = (token: string) => callScriptBySha(raw, Scripts.lockAcquire, keys, [token, 5000, 1000])
    expect(await acquire("holder")).toBe(1)
    expect(await acquire("waiter")).toBe(-1)
    await raw.set(fenceKeyOf(key), "41")
    expect(await acquire("waiter")).toBe(-41)
    await raw.del(key, fenceKeyOf(key))
    await raw.set(key, "a-reference-holder") // haechi-store-redis's SET NX: nothing counted yet
    expect(await acquire("waiter")).toBe(0)
    await raw.del(key, waitersKeyOf(key))
    const at = 1_000
    expect(handedSince("tok 41", "tok", at, 41, 100, at + 10)).toBeUndefined()
    expect(handedSince("tok 42", "tok", at, 41, 100, at + 10)).toBe(at)
    expect(handedSince("tok 42", "tok", at, 41, 100, at + 100)).toBeUndefined() // confirmed by an attempt instead
  })
})
