/**
 * A kept turn in the facade's fast lane: the writes a holder makes back to back after
 * its turn came (the adaptive policy's burst) run their first attempt with no fiber, in
 * the turn the guard lends (`StoreGuard.lendTurn`), and keep, hand on or give back the
 * lock exactly as on the Effect path. Against real Redis.
 *
 * A kept turn lasts only while writes follow one another at once (it is handed on once
 * the event loop moves on), so these look at the lock from inside the next write's fn.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import type { Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type HaechiAuditStore, type Integrity } from "../src/haechi.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { type AppendLane, appendStoreOnBacking } from "../src/internal/audit/store.js"
import { callerTransactions } from "../src/internal/facade/auditTransaction.js"
import { waitersKeyOf } from "../src/internal/keys.js"
import { guardFor } from "../src/internal/lock/policy.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import { fromClient } from "../src/RedisClient.js"
import { append, chainOf, losingRaces } from "./support/facadePaths.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

type Transactions = Pick<HaechiAuditStore, "transaction">

const counted = (key: typeof Metrics.keys.fenceConflicts) =>
  Effect.runSync(Metric.value(withTags(key, { store: "audit", operation: "transaction" }))).count

/**
 * A facade transaction over a store with the adaptive policy and a burst of `commits`
 * (no time bound within a test), counting the operations that enter the store's Effect
 * transaction (`entered`) and the lane's attempts that go on there (`resumed`).
 */
const laneStore = (client: Redis, prefix: string, commits: number) => {
  const redis = fromClient(client)
  const { lane, store } = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
    guard: guardFor("adaptive", redis, `${prefix}lock`, { burst: { commits, ms: 60_000 } })
  })
  expect(lane).toBeDefined()
  const counts = { entered: 0, resumed: 0 }
  const counting: AppendLane = {
    ...lane!,
    resume: (build, first, lent) => {
      counts.resumed += 1
      return lane!.resume(build, first, lent)
    }
  }
  const transaction = callerTransactions(
    {
      transaction: (build) => {
        counts.entered += 1
        return store.transaction(build)
      }
    },
    counting
  )
  return { store: { transaction } as Transactions, counts }
}

/** The store made busy, then granted a turn that it keeps: a foreign lock it waits out, then a write that asks first. */
const takeATurn = async (client: Redis, prefix: string, store: Transactions) => {
  await append(store, { warm: true })
  await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 40)
  await append(store, { waited: true }) // yields, waits the foreign lock out: the store is busy
  await append(store, { granted: true }) // asks first: granted, and keeps the lock
}

/** One write whose fn reads who holds the lock (and its lease) before it persists. */
const appendLooking = async (client: Redis, prefix: string, store: Transactions, event: object) => {
  let seen = { holder: null as string | null, ttl: 0 }
  await store.transaction(async ({ readLastIntegrity, persist }) => {
    const head = (await readLastIntegrity()) as Integrity | null
    seen = { holder: await client.get(`${prefix}lock`), ttl: await client.pttl(`${prefix}lock`) }
    await persist(buildNextRecord(event, head))
  })
  return seen
}

const eventsOf = async (client: Redis, prefix: string) =>
  (await chainOf(client, prefix)).map((r) => Object.keys(r).find((k) => k !== "auditIntegrity"))

describe("a kept turn in the fast lane", () => {
  it("the writes after the turn came run in the lane, keep the lock up to the burst, then free it", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-kept")
    const lockKey = `${prefix}lock`
    const { store, counts } = laneStore(client, prefix, 4)
    await takeATurn(client, prefix, store)
    const before = { ...counts }
    // The burst is 4 commits: the one granted, two more kept, the fourth gives the lock back.
    const seen = []
    for (const n of [2, 3, 4]) seen.push(await appendLooking(client, prefix, store, { [`burst${n}`]: true }))
    expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
    // Each found the lock kept for it (one token), on the kept lease.
    expect(seen[0]!.holder).toMatch(/^[0-9a-f]{32}$/)
    expect(seen.map((s) => s.holder)).toEqual([seen[0]!.holder, seen[0]!.holder, seen[0]!.holder])
    expect(seen.every((s) => s.ttl > 0 && s.ttl <= 10)).toBe(true)
    // No fiber for any of them: neither the store's transaction nor the lane's continuation.
    expect(counts).toEqual(before)
    const chain = await chainOf(client, prefix)
    expect(chain).toHaveLength(6)
    expect(verifyAuditChain(chain).valid).toBe(true)
  })

  it("a burst's last write hands the lock to a writer queued behind it, and nothing is left behind", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("lane-kept-handoff")
    const lockKey = `${prefix}lock`
    const { store } = laneStore(client, prefix, 3)
    await takeATurn(client, prefix, store)
    // Another replica's write: it yields to the kept lock and queues (or, should the lease
    // lapse first, commits on its own); either way it commits once.
    const waiter = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "adaptive" })
    const queued = append(waiter, { waiter: true })
    await append(store, { kept: true })
    await append(store, { last: true })
    await queued
    const chain = await chainOf(client, prefix)
    expect(chain).toHaveLength(6)
    expect(verifyAuditChain(chain).valid).toBe(true)
    expect((await eventsOf(client, prefix)).filter((e) => e === "waiter")).toHaveLength(1)
    await new Promise((r) => setTimeout(r, 50))
    expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
  })

  it("a write in a kept turn that loses a race (a writer that ignores the lock) goes on with the turn and commits once", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-kept-lost")
    const { store, counts } = laneStore(client, prefix, 8)
    // A writer with no lock policy at all ("never") does not yield to the holder.
    const rival = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await takeATurn(client, prefix, store)
    const before = { ...counts }
    const conflicts = counted(Metrics.keys.fenceConflicts)
    const retries = counted(Metrics.keys.retries)
    // The rival commits inside the kept turn's next write (lent the turn as it started).
    const { done, builds } = losingRaces(store, rival, 1)
    await done
    const next = await appendLooking(client, prefix, store, { next: true })
    // One lost attempt, counted, retried once in the store's transaction, with the turn:
    // the write after it found the lock still the turn's, and ran in the lane.
    expect(builds()).toBe(2)
    expect(counts).toEqual({ entered: before.entered, resumed: before.resumed + 1 })
    expect(counted(Metrics.keys.fenceConflicts) - conflicts).toBe(1)
    expect(counted(Metrics.keys.retries) - retries).toBe(1)
    expect(next.holder).toMatch(/^[0-9a-f]{32}$/)
    expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted", "rival", "ours", "next"])
    expect(verifyAuditChain(await chainOf(client, prefix)).valid).toBe(true)
  })

  it("a write in a kept turn whose fn throws, or returns without persisting, gives the lock back at once", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-kept-throws")
    const lockKey = `${prefix}lock`
    const { store } = laneStore(client, prefix, 8)
    for (const misuse of ["throws", "returns"] as const) {
      await takeATurn(client, prefix, store)
      let holder: string | null = null
      const outcome = await store
        .transaction(async ({ readLastIntegrity }) => {
          await readLastIntegrity()
          holder = await client.get(lockKey)
          if (misuse === "throws") throw new Error("the caller's own failure")
          return "nothing persisted"
        })
        .then(
          (value) => value,
          (error: Error) => error.message
        )
      expect(outcome).toBe(misuse === "throws" ? "the caller's own failure" : "nothing persisted")
      expect(holder).toMatch(/^[0-9a-f]{32}$/)
      // Given back by the caller's call, not by the kept lease lapsing (10 ms).
      expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
    }
    const chain = await chainOf(client, prefix)
    expect(chain).toHaveLength(6)
    expect(verifyAuditChain(chain).valid).toBe(true)
  })
})
