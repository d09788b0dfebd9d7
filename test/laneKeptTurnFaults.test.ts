/**
 * A kept turn lent to the facade's fast lane, under faults and hostile interleavings:
 * whatever the lent attempt meets (its deadline passing with the lock taken or a queue
 * entry made, a lost or held reply, writes of the same store at once, rivals that ignore
 * or hold the lock), it commits at most once, and leaves no lock or queue entry behind
 * that would stall another writer until a TTL. Against real Redis.
 */
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { type Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import * as Metrics from "../src/Metrics.js"
import { append, chainOf, PATHS, runtimeFor } from "./support/facadePaths.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import {
  eventsOf,
  laneStore,
  lentTurns,
  lockLeft,
  settled,
  tagOf,
  takeATurn,
  transactionCount
} from "./support/keptTurns.js"
import { uniquePrefix } from "./support/keys.js"
import { laneLinks } from "./support/laneLinks.js"
import { luaSources } from "../src/internal/luaSources.js"
import { Scripts } from "../src/internal/scripts.js"

const { connect, proxied } = laneLinks()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const count = transactionCount

describe("a kept turn lent to the lane, under faults", () => {
  it("a lent attempt that took the lock on a conflict and then passes its deadline leaves no lock behind", async () => {
    const client = connect()
    const prefix = uniquePrefix("lent-deadline-took")
    const store = laneStore(client, prefix, { timeout: 150 })
    const rival = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await takeATurn(client, prefix, store)
    let persistFailed = ""
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        await append(rival, { rival: true })
        try {
          await persist(buildNextRecord({ ours: true }, head))
        } catch (error) {
          persistFailed = tagOf(error)
          // Holds on to the conflict past the deadline, then rethrows it.
          await sleep(300)
          throw error
        }
      })
    )
    expect(persistFailed).toBe("FenceConflict")
    expect(outcome).toBe("OperationTimeout")
    // The conflict took the lock for the claim's TTL (1 s): given back at the deadline.
    await sleep(20)
    expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
    await sleep(300) // the late rethrow: it changes nothing
    expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted", "rival"])
  })

  it("a lent attempt that yielded (its lease lapsed, a foreign holder) and queued, then fails, leaves no queue entry", async () => {
    const client = connect()
    const prefix = uniquePrefix("lent-yield-queued")
    const store = laneStore(client, prefix)
    await takeATurn(client, prefix, store)
    let persistFailed = ""
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        // The kept lease (10 ms) lapses; a reference replica takes the lock meanwhile.
        await sleep(30)
        await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 5000)
        try {
          await persist(buildNextRecord({ ours: true }, head))
        } catch (error) {
          persistFailed = tagOf(error)
        }
        throw new Error("the caller's own failure")
      })
    )
    expect(persistFailed).toBe("FenceConflict")
    expect(outcome).toBe("Error: the caller's own failure")
    await sleep(20)
    expect(await lockLeft(client, prefix)).toEqual({ holder: "held-by-a-reference-replica", waiters: 0 })
    await client.del(`${prefix}lock`)
    expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted"])
  })

  it("writes of one store at once while its turn is kept, with rivals that queue and that ignore the lock: each commits once, nothing left", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("lent-concurrent")
    const store = laneStore(client, prefix, { commits: 3 })
    const waiter = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "adaptive" })
    const rival = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    const expected: Array<string> = []
    for (let round = 0; round < 4; round++) {
      await takeATurn(client, prefix, store)
      const writes = []
      for (let i = 0; i < 4; i++) {
        expected.push(`ours${round}_${i}`, `waiter${round}_${i}`)
        writes.push(append(store, { [`ours${round}_${i}`]: true }), append(waiter, { [`waiter${round}_${i}`]: true }))
      }
      expected.push(`rival${round}`)
      writes.push(append(rival, { [`rival${round}`]: true }))
      const outcomes = await Promise.all(writes.map(settled))
      expect(outcomes.every((o) => o === "ok")).toBe(true)
      await sleep(30)
      expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
    }
    const chain = await chainOf(client, prefix)
    expect(verifyAuditChain(chain).valid).toBe(true)
    const events = await eventsOf(client, prefix)
    const ours = events.filter((e) => !["warm", "waited", "granted"].includes(e!))
    expect([...ours].sort()).toEqual([...expected].sort())
  })

  for (const passRequest of [true, false]) {
    it(`a lent attempt whose link freezes with its commit in flight (${passRequest ? "it ran" : "it is held"}): CommitOutcomeUnknown, the record once, no lock left`, async () => {
      const direct = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`lent-frozen-${passRequest}`)
      const store = laneStore(client, prefix, { timeout: 200 })
      await takeATurn(client, prefix, store)
      const frozen = proxy.freezeWhen("evalsha", { passRequest })
      const outcome = await settled(append(store, { ours: true }))
      await frozen
      expect(outcome).toBe("CommitOutcomeUnknown")
      proxy.thaw()
      await client.ping()
      await sleep(20)
      expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
      await append(store, { next: true })
      const events = await eventsOf(direct, prefix)
      // (A request held by the frozen link still reaches Redis when it thaws: it lands then.)
      expect(events).toEqual(["warm", "waited", "granted", "ours", "next"])
    })
  }

  it("a lent attempt whose reply is lost (the link cut after it ran) commits once and leaves no lock", async () => {
    const direct = connect()
    const { proxy, client } = await proxied()
    const prefix = uniquePrefix("lent-cut")
    const store = laneStore(client, prefix)
    await takeATurn(client, prefix, store)
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        proxy.cutAfterNextRequest()
        await persist(buildNextRecord({ ours: true }, head))
      })
    )
    expect(outcome).toBe("ok")
    await sleep(30)
    expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
    await append(store, { next: true })
    expect(await eventsOf(direct, prefix)).toEqual(["warm", "waited", "granted", "ours", "next"])
    expect(verifyAuditChain(await chainOf(direct, prefix)).valid).toBe(true)
  })

  it("a lent attempt that loses a race and whose reply is lost goes on with the turn, commits once, leaves no lock", async () => {
    const direct = connect()
    const { proxy, client } = await proxied()
    const prefix = uniquePrefix("lent-cut-lost")
    const store = laneStore(client, prefix)
    const rival = createRedisAuditStore({ client: direct, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await takeATurn(client, prefix, store)
    let builds = 0
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const build = ++builds
        const head = (await readLastIntegrity()) as Integrity | null
        if (build === 1) {
          await append(rival, { rival: true })
          proxy.cutAfterNextRequest()
        }
        await persist(buildNextRecord({ [`ours${build}`]: true }, head))
      })
    )
    expect(outcome).toBe("ok")
    expect(builds).toBe(2)
    await sleep(30)
    expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(direct, prefix)).toEqual(["warm", "waited", "granted", "rival", "ours2"])
    expect(verifyAuditChain(await chainOf(direct, prefix)).valid).toBe(true)
  })

  for (const path of PATHS) {
    it(`a lent-turn write whose fn returns with its losing persist in flight, its reply lost (${path}): no lock left`, async () => {
      const direct = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`lent-floating-${path}`)
      const store = laneStore(client, prefix, { runtime: runtimeFor(path) })
      const rival = createRedisAuditStore({ client: direct, keyPrefix: prefix, startupChecks: "off", lock: "never" })
      await takeATurn(client, prefix, store)
      let floating: Promise<string> = Promise.resolve("")
      const outcome = await settled(
        store.transaction(async ({ readLastIntegrity, persist }) => {
          const head = (await readLastIntegrity()) as Integrity | null
          await append(rival, { rival: true })
          proxy.cutAfterNextRequest()
          floating = persist(buildNextRecord({ ours: true }, head)).then(() => "ok", tagOf)
        })
      )
      expect(outcome).toBe("ok")
      expect(await floating).toBe("FenceConflict")
      await sleep(50)
      expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
    })
  }

  it("a resumed lent attempt queued behind a foreign holder until its deadline leaves its queue entry behind for no one", async () => {
    const client = connect()
    const prefix = uniquePrefix("lent-resumed-deadline")
    const store = laneStore(client, prefix, { timeout: 200 })
    await takeATurn(client, prefix, store)
    let builds = 0
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        if (++builds === 1) {
          await sleep(30)
          await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 5000)
        }
        await persist(buildNextRecord({ ours: true }, head))
      })
    )
    // OperationTimeout, or CommitOutcomeUnknown when the deadline met one of its re-attempts in
    // flight (a loaded run did): both fail closed, and the events below show nothing committed.
    expect(["OperationTimeout", "CommitOutcomeUnknown"]).toContain(outcome)
    await sleep(20)
    expect(await lockLeft(client, prefix)).toEqual({ holder: "held-by-a-reference-replica", waiters: 0 })
    await client.del(`${prefix}lock`)
    await append(store, { next: true })
    expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted", "next"])
  })

  type Misuse = "loses" | "swallows" | "throwsAfter" | "persistsTwice"
  const scenario = async (misuse: Misuse, path: (typeof PATHS)[number]) => {
    const client = connect()
    const prefix = uniquePrefix(`lent-paths-${misuse}-${path}`)
    const store = laneStore(client, prefix, { runtime: runtimeFor(path) })
    const rival = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await takeATurn(client, prefix, store)
    const before = { conflicts: count(Metrics.keys.fenceConflicts), retries: count(Metrics.keys.retries) }
    let builds = 0
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const build = ++builds
        const head = (await readLastIntegrity()) as Integrity | null
        const record = buildNextRecord({ [`ours${build}`]: true }, head)
        if (misuse === "persistsTwice") {
          const twice = await Promise.allSettled([persist(record), persist(record)])
          return twice.map((t) => (t.status === "fulfilled" ? "ok" : tagOf(t.reason)))
        }
        if (build === 1 && misuse !== "throwsAfter") await append(rival, { rival: true })
        if (misuse === "swallows") return persist(record).catch(tagOf)
        await persist(record)
        if (misuse === "throwsAfter") throw new Error("after")
      })
    )
    // Whether the lock is held right after the write ended: a write that failed keeps no turn.
    const heldAtOnce = (await lockLeft(client, prefix)).holder !== null
    const counts = {
      conflicts: count(Metrics.keys.fenceConflicts) - before.conflicts,
      retries: count(Metrics.keys.retries) - before.retries
    }
    await sleep(30)
    const left = await lockLeft(client, prefix)
    await append(store, { next: true })
    const chain = await chainOf(client, prefix)
    return {
      outcome,
      builds,
      counts,
      heldAtOnce: misuse === "throwsAfter" ? heldAtOnce : undefined,
      left,
      events: await eventsOf(client, prefix),
      valid: verifyAuditChain(chain).valid
    }
  }

  for (const misuse of ["loses", "swallows", "throwsAfter", "persistsTwice"] as const) {
    it(`a lent-turn write that ${misuse}: the lane and the Effect path agree on outcome, counts, chain and lock`, async () => {
      const lentBefore = lentTurns.count
      const lane = await scenario(misuse, "lane")
      expect(lentTurns.count - lentBefore).toBeGreaterThanOrEqual(1) // its write was lent the turn
      const effect = await scenario(misuse, "effect")
      expect(lane).toEqual(effect)
      expect(lane.valid).toBe(true)
      expect(lane.left).toEqual({ holder: null, waiters: 0 })
    })
  }

  for (const path of PATHS) {
    it(`a resumed lent attempt whose build persists after the deadline (${path}): refused, nothing written`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`lent-late-persist-${path}`)
      const store = laneStore(client, prefix, { timeout: 150, runtime: runtimeFor(path) })
      const rival = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", lock: "never" })
      await takeATurn(client, prefix, store)
      let builds = 0
      let late = ""
      const lateDone = new Promise<void>((resolve) => {
        void settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            const build = ++builds
            const head = (await readLastIntegrity()) as Integrity | null
            if (build === 1) await append(rival, { rival: true })
            else await sleep(250)
            try {
              await persist(buildNextRecord({ [`ours${build}`]: true }, head))
            } catch (error) {
              if (build > 1) late = tagOf(error)
              throw error
            } finally {
              if (build > 1) resolve()
            }
          })
        ).then((outcome) => expect(outcome).toBe("OperationTimeout"))
      })
      await lateDone
      expect(builds).toBe(2)
      expect(late).not.toBe("")
      await sleep(30)
      expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
      expect(await eventsOf(client, prefix)).toEqual(["warm", "waited", "granted", "rival"])
    })
  }

  type Op = "write" | "slow" | "throws" | "swallows" | "throwsAfter" | "rival" | "waiter" | "foreign" | "pause"
  const ops: ReadonlyArray<Op> = [
    "write",
    "write",
    "slow",
    "throws",
    "swallows",
    "throwsAfter",
    "rival",
    "waiter",
    "foreign",
    "pause"
  ]
  const ownOps = new Set<Op>(["write", "slow", "throws", "swallows", "throwsAfter"])

  it("random interleavings of lent-turn writes, misuses and rivals: a valid chain, each write at most once, nothing left", async () => {
    const client = connect()
    const other = connect()
    const lentBefore = lentTurns.count
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.constantFrom(...ops), { minLength: 1, maxLength: 6 }), { minLength: 2, maxLength: 5 }),
        fc.integer({ min: 2, max: 5 }),
        async (rounds, commits) => {
          const prefix = uniquePrefix("lent-interleavings")
          const store = laneStore(client, prefix, { commits })
          const waiter = createRedisAuditStore({
            client: other,
            keyPrefix: prefix,
            startupChecks: "off",
            lock: "adaptive"
          })
          const rival = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "never" })
          await takeATurn(client, prefix, store)
          const landed = new Set<string>() // resolved after their persist did
          const maybe = new Set<string>() // persisted, then failed
          let n = 0
          const run = (op: Op): Promise<unknown> => {
            const name = `${op}${++n}`
            switch (op) {
              case "rival":
                return append(rival, { [name]: true }).then(() => landed.add(name))
              case "waiter":
                return append(waiter, { [name]: true }).then(() => landed.add(name))
              case "foreign":
                return other.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 20)
              case "pause":
                return sleep(12)
              default:
                return store
                  .transaction(async ({ readLastIntegrity, persist }) => {
                    const head = (await readLastIntegrity()) as Integrity | null
                    if (op === "throws") throw new Error("before")
                    if (op === "slow") await sleep(15) // the kept lease (10 ms) lapses
                    const record = buildNextRecord({ [name]: true }, head)
                    if (op === "swallows") return persist(record).then(() => maybe.add(name), tagOf)
                    await persist(record)
                    maybe.add(name)
                    if (op === "throwsAfter") throw new Error("after")
                  })
                  .then(
                    () => {
                      if (op === "write" || op === "slow") landed.add(name)
                    },
                    () => {}
                  )
            }
          }
          for (const round of rounds) {
            // The store's writes back to back (each may be lent the turn the last kept), the others at once.
            const own = round.filter((op) => ownOps.has(op))
            const ownInTurn = own.reduce<Promise<unknown>>(
              (before, op) => before.then(() => run(op)),
              Promise.resolve()
            )
            await Promise.all([ownInTurn, ...round.filter((op) => !ownOps.has(op)).map(run)])
          }
          await sleep(40)
          expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
          const chain = await chainOf(client, prefix)
          expect(verifyAuditChain(chain).valid).toBe(true)
          const events = (await eventsOf(client, prefix)).slice(3) as Array<string>
          expect(new Set(events).size).toBe(events.length)
          for (const name of landed) expect(events).toContain(name)
          for (const name of events) expect(landed.has(name) || maybe.has(name)).toBe(true)
        }
      ),
      { numRuns: 15 }
    )
    expect(lentTurns.count - lentBefore).toBeGreaterThan(15)
  })
})

describe("a busy store's turn asked for in the lane, under faults", () => {
  /** A facade store on `client` made busy (it yielded to a foreign lock), with no turn kept. */
  const busyStore = async (client: Redis, prefix: string) => {
    const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", timeout: 200 })
    await append(store, { warm: true })
    await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 40)
    await append(store, { waited: true })
    await new Promise((resolve) => setImmediate(resolve))
    return store
  }

  for (const holder of [null, "held-by-a-reference-replica"])
    for (const passRequest of [true, false])
      it(`a turn request whose link freezes (${holder === null ? "granted" : "queued"}, ${passRequest ? "it ran" : "it is held"}) ends at the deadline; no lock or queue entry of ours is left`, async () => {
        const direct = connect()
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`busy-frozen-${holder === null}-${passRequest}`)
        const store = await busyStore(client, prefix)
        if (holder !== null) await direct.set(`${prefix}lock`, holder, "PX", 5000)
        const frozen = proxy.freezeWhen(luaSources[Scripts.auditTurn.file]!.sha1, { passRequest })
        const started = performance.now()
        const outcome = await settled(append(store, { frozen: true }))
        await frozen
        expect(outcome).toBe("OperationTimeout")
        expect(performance.now() - started).toBeLessThan(1000)
        proxy.thaw()
        await client.ping()
        await sleep(20)
        // (The turn request, held or not, ran before the give-back sent after it on the same link.)
        expect(await lockLeft(direct, prefix)).toEqual({ holder, waiters: 0 })
        await direct.del(`${prefix}lock`)
        await append(store, { next: true })
        expect(await eventsOf(direct, prefix)).toEqual(["warm", "waited", "next"])
      })
})
