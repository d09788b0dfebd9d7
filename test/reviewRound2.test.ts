/**
 * Review round 2, against real Redis: a Promise caller's fn that never settles (vault
 * `mutate` and `read`, on the fiber-free read and on the Effect path), and a fn that
 * returns a thenable whose `then` throws, on the lane and on the Effect path.
 */
import { describe, expect, it } from "@effect/vitest"
import { afterAll } from "vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import { FenceConflict, PersistAfterTransaction, ViewChangedAfterMutate } from "../src/Errors.js"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, createRedisTokenStore, type Integrity } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { within } from "../src/internal/deadline.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { fromClient } from "../src/RedisClient.js"
import { type Path, runtimeFor } from "./support/facadePaths.js"
import { sharedRedis } from "./support/shared.js"

const clients: Array<Redis> = []
const connect = () => {
  const client = new Redis(sharedRedis().port, "127.0.0.1")
  client.on("error", () => {})
  clients.push(client)
  return client
}
afterAll(() => {
  for (const c of clients) c.disconnect()
})

/** A connection, a fresh prefix, and the facade options that make a store take `path`. */
const onPath = (path: Path, name: string) => {
  const client = connect()
  const prefix = uniquePrefix(`${name}-${path}`)
  const options = { client, keyPrefix: prefix, startupChecks: "off", runtime: runtimeFor(path) } as const
  return { client, prefix, options }
}

const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; message?: string }
    return { error: e?._tag ?? String(error) }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const never = () => new Promise<never>(() => {})

describe("a vault fn that never settles", () => {
  for (const path of ["lane", "effect"] as const) {
    it(`${path}: mutate rejects at the deadline, its later set writes nothing, and the store goes on`, async () => {
      const { client, prefix, options } = onPath(path, "review2-mutate")
      const store = createRedisTokenStore({ ...options, timeout: 150 })
      const other = createRedisTokenStore(options)
      await store.mutate((view) => view.set("a", { v: 1 }))
      let late: { set: (token: string, record: Record<string, unknown>) => void } | undefined
      const outcome = await settled(
        store.mutate((view) => {
          view.set("a", { v: "before the deadline" })
          late = view
          return never()
        })
      )
      expect(outcome).toEqual({ error: "OperationTimeout" })
      expect(() => late!.set("b", { v: "after the deadline" })).toThrow(ViewChangedAfterMutate)
      await sleep(50)
      expect(await client.hgetall(`${prefix}tokens`)).toEqual({ a: JSON.stringify({ v: 1 }) })
      await store.mutate((view) => view.set("c", { v: 3 }))
      const seen = (s: typeof store) => s.read((view) => Object.fromEntries(view.entries()))
      expect(await seen(store)).toEqual({ a: { v: 1 }, c: { v: 3 } })
      expect(await seen(other)).toEqual({ a: { v: 1 }, c: { v: 3 } })
    })

    it(`${path}: an fn that sets after its deadline passed gets the refusal as its own rejection, not an unhandled one`, async () => {
      const { client, prefix, options } = onPath(path, "review2-mutate-late-set")
      const store = createRedisTokenStore({ ...options, timeout: 100 })
      const unhandled: Array<unknown> = []
      const onUnhandled = (reason: unknown) => void unhandled.push(reason)
      process.on("unhandledRejection", onUnhandled)
      let thrown: unknown
      try {
        const outcome = await settled(
          store.mutate(async (view) => {
            await sleep(250)
            try {
              view.set("late", { v: "after the deadline" })
            } catch (error) {
              thrown = error
              throw error
            }
          })
        )
        expect(outcome).toEqual({ error: "OperationTimeout" })
        await sleep(350)
      } finally {
        process.off("unhandledRejection", onUnhandled)
      }
      expect(thrown).toBeInstanceOf(ViewChangedAfterMutate)
      expect(unhandled).toEqual([])
      expect(await client.hgetall(`${prefix}tokens`)).toEqual({})
    })

    it(`${path}: read rejects at the deadline and the next reads and mutates work`, async () => {
      const { options } = onPath(path, "review2-read")
      const store = createRedisTokenStore({ ...options, timeout: 150 })
      await store.mutate((view) => view.set("a", { v: 1 }))
      let view: { get: (token: string) => unknown } | undefined
      const outcome = await settled(store.read((v) => ((view = v), never())))
      expect(outcome).toEqual({ error: "OperationTimeout" })
      expect(view!.get("a")).toEqual({ v: 1 })
      await store.mutate((v) => v.set("a", { v: 2 }))
      await store.mutate((v) => v.set("a", { v: 3 }))
      expect(await store.read((v) => v.get("a"))).toEqual({ v: 3 })
      expect(await createRedisTokenStore(options).read((v) => v.get("a"))).toEqual({ v: 3 })
    })
  }
})

describe("a fn returning a thenable whose then throws", () => {
  it("transaction: the same rejection on the lane and the Effect path", async () => {
    const outcomes: Array<unknown> = []
    for (const path of ["lane", "effect"] as const) {
      const { client, prefix, options } = onPath(path, "review2-thenable")
      const store = createRedisAuditStore(options)
      const thenable = {
        then: () => {
          throw new TypeError("then threw")
        }
      }
      const outcome = await settled(store.transaction(() => thenable as never))
      outcomes.push({ outcome, chain: await client.llen(`${prefix}chain`) })
    }
    expect(outcomes[0]).toEqual({ outcome: { error: "TypeError: then threw" }, chain: 0 })
    expect(outcomes[1]).toEqual(outcomes[0])
  })

  it("transaction: a FenceConflict it throws is retried on the lane and the Effect path alike", async () => {
    const outcomes: Array<unknown> = []
    for (const path of ["lane", "effect"] as const) {
      const { options } = onPath(path, "review2-thenable-conflict")
      const store = createRedisAuditStore(options)
      let builds = 0
      const outcome = await settled(
        store.transaction(() => {
          builds += 1
          if (builds > 1) return "built again"
          return {
            then: () => {
              throw new FenceConflict({ store: "audit", prefix: "its own", expected: "" })
            }
          } as never
        })
      )
      outcomes.push({ outcome, builds })
    }
    expect(outcomes[0]).toEqual({ outcome: { value: "built again" }, builds: 2 })
    expect(outcomes[1]).toEqual(outcomes[0])
  })

  it("mutate and read: rejected with what then threw, on both paths", async () => {
    for (const path of ["lane", "effect"] as const) {
      const { options } = onPath(path, "review2-thenable-vault")
      const store = createRedisTokenStore(options)
      const thenable = {
        then: () => {
          throw new TypeError("then threw")
        }
      }
      expect(await settled(store.mutate(() => thenable as never))).toEqual({ error: "TypeError: then threw" })
      expect(await settled(store.read(() => thenable as never))).toEqual({ error: "TypeError: then threw" })
    }
  })
})

describe("a turn wait inside an operation", () => {
  it("ends at the operation's deadline, while hand-offs to other waiters keep restarting it", async () => {
    const client = connect()
    const publisher = connect()
    const handle = makeLockHandle(fromClient(client))
    const lockKey = `${uniquePrefix("review2-turn-deadline")}lock`
    const channel = `${lockKey}:released`
    try {
      const wakeup = handle.releases(lockKey, "our-token")
      expect(await Effect.runPromise(wakeup.next(2000))).toBe("") // the subscription is live
      let going = true
      const moving = (async () => {
        for (let i = 0; going && i < 400; i++) {
          await publisher.publish(channel, `waiter-ahead-${i} ${1000 + i}`)
          await sleep(5)
        }
      })()
      const started = performance.now()
      const bounded = within({ operation: "turn wait", timeoutMs: 50 })(wakeup.next(30, 5_000))
      const exit = await Effect.runPromiseExit(bounded)
      const elapsed = performance.now() - started
      going = false
      await moving
      expect(exit._tag === "Failure" && exit.cause._tag === "Fail" ? exit.cause.error._tag : exit).toBe(
        "OperationTimeout"
      )
      // (Not waited until the queue stopped moving: 2 s of hand-offs, the wait's own bound 5 s.)
      expect(elapsed).toBeLessThan(1000)
      // The wake-up is still usable: its own hand-off wakes it.
      const own = Effect.runPromise(wakeup.next(5_000))
      await publisher.publish(channel, "our-token 7 payload")
      expect(await own).toBe("our-token 7 payload")
      wakeup.close()
    } finally {
      await Effect.runPromise(handle.close)
    }
  })
})

describe("a persist made after fn settled", () => {
  const hops = async (n: number) => {
    for (let i = 0; i < n; i++) await Promise.resolve()
  }
  const cases = [0, 1, 2, 5, "immediate"] as const
  for (const returns of ["a promise", "a plain value"] as const) {
    for (const delay of cases) {
      it(`fn returns ${returns}, the persist ${delay} microtask hops later: the same outcome on the lane and the Effect path`, async () => {
        const results: Array<unknown> = []
        for (const path of ["lane", "effect"] as const) {
          const { client, prefix, options } = onPath(path, "review2-late-persist")
          const store = createRedisAuditStore(options)
          await store.transaction(async ({ readLastIntegrity, persist }) => {
            await persist(buildNextRecord({ warm: true }, (await readLastIntegrity()) as Integrity | null))
          })
          let late: Promise<unknown> | undefined
          const head = await store.transaction(({ readLastIntegrity }) => readLastIntegrity())
          const outcome = await settled(
            store.transaction((ctx) => {
              const record = buildNextRecord({ late: delay }, head as Integrity | null)
              const after = delay === "immediate" ? new Promise((r) => setImmediate(r)) : hops(delay)
              late = after.then(() => ctx.persist(record))
              return returns === "a promise" ? Promise.resolve("resolved") : "resolved"
            })
          )
          const lateOutcome = await settled(late!)
          results.push({ outcome, lateOutcome, chain: await client.llen(`${prefix}chain`) })
        }
        // (A persist queued before a promise fn returned, already resolved, runs before the
        // transaction sees it settle: it is in time, not awaited. Anything later is refused.)
        const inTime = returns === "a promise" && delay === 0
        expect(results[0]).toEqual({
          outcome: { value: "resolved" },
          lateOutcome: inTime ? { value: undefined } : { error: "PersistAfterTransaction" },
          chain: inTime ? 2 : 1
        })
        expect(results[1]).toEqual(results[0])
      })
    }
  }
})

describe("what a caller does after its call settled", () => {
  it("a vault view's set or delete after mutate's fn settled is refused, and writes nothing, now or with the next mutate", async () => {
    const client = connect()
    const prefix = uniquePrefix("review2-late-set")
    const store = createRedisTokenStore({ client, keyPrefix: prefix, startupChecks: "off" })
    let kept: { set: (token: string, record: Record<string, unknown>) => void } | undefined
    await store.mutate((view) => {
      kept = view
      view.set("a", { v: 1 })
    })
    const refusal = (() => {
      try {
        kept!.set("late", { v: "after" })
      } catch (error) {
        return error
      }
    })()
    expect(refusal).toBeInstanceOf(ViewChangedAfterMutate)
    expect(refusal).toMatchObject({ prefix, token: "late" })
    expect((refusal as Error).message).toContain("nothing was written")
    expect(() => (kept as unknown as { delete: (token: string) => boolean }).delete("a")).toThrow(
      ViewChangedAfterMutate
    )
    await store.mutate((view) => view.set("b", { v: 2 }))
    expect(await client.hgetall(`${prefix}tokens`)).toEqual({
      a: JSON.stringify({ v: 1 }),
      b: JSON.stringify({ v: 2 })
    })
    expect(await store.read((view) => view.get("late"))).toBeUndefined()
  })

  for (const path of ["lane", "effect"] as const) {
    it(`${path}: PersistAfterTransaction names the store's prefix and says nothing was written`, async () => {
      const { client, prefix, options } = onPath(path, "review2-after-error")
      const store = createRedisAuditStore(options)
      let persist: ((record: Record<string, unknown>) => Promise<void>) | undefined
      await store.transaction((ctx) => void (persist = ctx.persist))
      const error = await persist!(buildNextRecord({ late: true }, null)).then(
        () => undefined,
        (e: unknown) => e
      )
      expect(error).toBeInstanceOf(PersistAfterTransaction)
      expect((error as PersistAfterTransaction).prefix).toBe(prefix)
      expect((error as Error).message).toContain(prefix)
      expect((error as Error).message).toContain("not written")
      expect(await client.llen(`${prefix}chain`)).toBe(0)
    })
  }
})
