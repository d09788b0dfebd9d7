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
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { waitersKeyOf } from "../src/internal/keys.js"
import * as Metrics from "../src/Metrics.js"
import { append, chainOf, losingRaces, type Path, runtimeFor } from "./support/facadePaths.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { eventsOf, laneStore, lentTurns, takeATurn, transactionCount, type Transactions } from "./support/keptTurns.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

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

describe("a kept turn in the fast lane", () => {
  it("the writes after the turn came run in the lane, keep the lock up to the burst, then free it", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-kept")
    const lockKey = `${prefix}lock`
    // (A 2 s lease: each write's fn looks at Redis twice, which a loaded machine can stretch past 10 ms.)
    const store = laneStore(client, prefix, { commits: 4, keepMs: 2000 })
    const counts = store.counts
    await takeATurn(client, prefix, store)
    const before = { ...counts }
    // The burst is 4 commits: the one granted, two more kept, the fourth gives the lock back.
    const seen = []
    for (const n of [2, 3, 4]) seen.push(await appendLooking(client, prefix, store, { [`burst${n}`]: true }))
    expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
    // Each found the lock kept for it (one token), on the kept lease (longer than a claim's 1 s).
    expect(seen[0]!.holder).toMatch(/^[0-9a-f]{32}$/)
    expect(seen.map((s) => s.holder)).toEqual([seen[0]!.holder, seen[0]!.holder, seen[0]!.holder])
    expect(seen.every((s) => s.ttl > 1000 && s.ttl <= 2000)).toBe(true)
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
    const store = laneStore(client, prefix, { commits: 3 })
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
    const store = laneStore(client, prefix, { commits: 8 })
    const counts = store.counts
    // A writer with no lock policy at all ("never") does not yield to the holder.
    const rival = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await takeATurn(client, prefix, store)
    const before = { ...counts }
    const conflicts = transactionCount(Metrics.keys.fenceConflicts)
    const retries = transactionCount(Metrics.keys.retries)
    // The rival commits inside the kept turn's next write (lent the turn as it started).
    const { done, builds } = losingRaces(store, rival, 1)
    await done
    const next = await appendLooking(client, prefix, store, { next: true })
    // One lost attempt, counted, retried once in the store's transaction, with the turn:
    // the write after it found the lock still the turn's, and ran in the lane.
    expect(builds()).toBe(2)
    expect(counts).toEqual({ entered: before.entered, resumed: before.resumed + 1 })
    expect(transactionCount(Metrics.keys.fenceConflicts) - conflicts).toBe(1)
    expect(transactionCount(Metrics.keys.retries) - retries).toBe(1)
    expect(next.holder).toMatch(/^[0-9a-f]{32}$/)
    expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted", "rival", "ours", "next"])
    expect(verifyAuditChain(await chainOf(client, prefix)).valid).toBe(true)
  })

  it("a write in a kept turn whose fn throws, or returns without persisting, gives the lock back at once", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-kept-throws")
    const lockKey = `${prefix}lock`
    const store = laneStore(client, prefix, { commits: 8 })
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

describe("a chain rewound under a kept turn", () => {
  const rewoundInTurn = async (path: Path, onRewind: "record" | "fail") => {
    const client = connect()
    const prefix = uniquePrefix(`lane-kept-rewind-${onRewind}-${path}`)
    const store = laneStore(client, prefix, { runtime: runtimeFor(path), onRewind })
    await takeATurn(client, prefix, store)
    const rewinds = Metrics.chainRewinds.pipe(Metric.tagged("prefix", prefix))
    const rewindsBefore = Effect.runSync(Metric.value(rewinds)).count
    const lentBefore = lentTurns.count
    // The next write, back to back (lent the turn), finds its chain gone (a FLUSHALL) before it persists.
    let builds = 0
    const outcome = await store
      .transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        if (++builds === 1) await client.del(...(await client.keys(`${prefix}*`)))
        await persist(buildNextRecord({ ours: true }, head))
        return "ok"
      })
      .then(
        (value) => value,
        (error: { _tag?: string }) => error._tag
      )
    await new Promise((r) => setTimeout(r, 30))
    return {
      outcome,
      builds,
      lent: lentTurns.count - lentBefore,
      rewinds: Effect.runSync(Metric.value(rewinds)).count - rewindsBefore,
      events: await eventsOf(client, prefix),
      lock: await client.exists(`${prefix}lock`, waitersKeyOf(`${prefix}lock`))
    }
  }

  for (const onRewind of ["record", "fail"] as const) {
    it(`onRewind "${onRewind}": the rewind is reported once, as on the Effect path, and nothing is left of the lock`, async () => {
      const lane = await rewoundInTurn("lane", onRewind)
      const effect = await rewoundInTurn("effect", onRewind)
      expect(lane.lent).toBe(1)
      expect(effect.lent).toBe(0)
      expect({ ...lane, lent: 0 }).toEqual({ ...effect, lent: 0 })
      expect(lane.rewinds).toBe(1)
      expect(lane.builds).toBe(onRewind === "fail" ? 1 : 2)
      expect(lane.lock).toBe(0)
      expect(lane.outcome).toBe(onRewind === "fail" ? "ChainRewound" : "ok")
      if (onRewind === "record") expect(lane.events.at(-1)).toBe("ours")
      else expect(lane.events).toEqual([])
    })
  }
})
