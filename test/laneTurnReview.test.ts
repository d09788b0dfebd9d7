/**
 * A busy store's turn asked for in the facade's lane (`takeTurnThen`), against real
 * Redis, under interleavings the turn's request and its wait can meet: a hand-off that
 * arrives before the request's reply, a plain release while queued, a wait abandoned at
 * the deadline and a turn that comes after it, writes of one store at once. Each write
 * commits at most once, the chain verifies, no lock or queue entry of ours is left, and
 * the turns counted match the Effect path's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, type Runtime } from "effect"
import { type Redis } from "ioredis"
import { redisAuditBacking, type AuditBacking } from "../src/internal/audit/backing.js"
import { appendStoreOnBacking } from "../src/internal/audit/store.js"
import { callerTransactions } from "../src/internal/facade/auditTransaction.js"
import { waitersKeyOf } from "../src/internal/keys.js"
import { guardFor } from "../src/internal/lock/policy.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import * as Metrics from "../src/Metrics.js"
import { fromClient } from "../src/RedisClient.js"
import { append, chainOf, runtimeFor, type Path } from "./support/facadePaths.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { eventsOf, lockLeft, settled } from "./support/keptTurns.js"
import { uniquePrefix } from "./support/keys.js"
import { laneLinks, until } from "./support/laneLinks.js"
import { luaSources } from "../src/internal/luaSources.js"
import { Scripts } from "../src/internal/scripts.js"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"

const { connect, proxied } = laneLinks()

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const turnsCounted = (lockKey: string, how: "granted" | "handed" | "timedOut") =>
  Effect.runSync(Metric.value(Metrics.turns.pipe(Metric.tagged("key", lockKey), Metric.tagged("how", how)))).count
const lockWaits = (lockKey: string) =>
  Effect.runSync(Metric.value(Metrics.lockWait.pipe(Metric.tagged("key", lockKey)))).count

/** The lock's counts now, to compare paths by their differences. */
const countsOf = (lockKey: string) => ({
  granted: turnsCounted(lockKey, "granted"),
  handed: turnsCounted(lockKey, "handed"),
  timedOut: turnsCounted(lockKey, "timedOut"),
  waits: lockWaits(lockKey)
})
const minus = (a: ReturnType<typeof countsOf>, b: ReturnType<typeof countsOf>) => ({
  granted: a.granted - b.granted,
  handed: a.handed - b.handed,
  timedOut: a.timedOut - b.timedOut,
  waits: a.waits - b.waits
})

interface BusyLaneOptions {
  readonly timeout?: number
  readonly runtime?: Runtime.Runtime<never>
  /** Wraps the backing's bare turn request (to hold its reply, or see its claim). */
  readonly sendTurn?: (send: NonNullable<AuditBacking["sendTurn"]>) => NonNullable<AuditBacking["sendTurn"]>
}

/**
 * The facade's transaction over a Redis store under `prefix` (adaptive policy), counting
 * the operations that enter the store's Effect transaction and the lane's that go on there.
 */
const busyLane = (client: Redis, prefix: string, options: BusyLaneOptions = {}) => {
  const redis = fromClient(client)
  const backing = redisAuditBacking(redis, prefix)
  const sendTurn =
    options.sendTurn !== undefined && backing.sendTurn !== undefined ? options.sendTurn(backing.sendTurn) : undefined
  const { lane, store } = appendStoreOnBacking(sendTurn === undefined ? backing : { ...backing, sendTurn }, {
    guard: guardFor("adaptive", redis, `${prefix}lock`),
    timeout: options.timeout ?? 2000
  })
  expect(lane).toBeDefined()
  const counts = { entered: 0, resumed: 0 }
  const counting = {
    ...lane!,
    resume: ((build, first, lent) => {
      counts.resumed += 1
      return lane!.resume(build, first, lent)
    }) as NonNullable<typeof lane>["resume"]
  }
  const entering: Pick<typeof store, "transaction"> = {
    transaction: (build) => {
      counts.entered += 1
      return store.transaction(build)
    }
  }
  return { transaction: callerTransactions(entering, counting, options.runtime), counts }
}

/** The store made busy (it yielded to a foreign lock and waited it out), with no turn kept. */
const makeBusy = async (client: Redis, prefix: string, store: Parameters<typeof append>[0]) => {
  await append(store, { warm: true })
  await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 30)
  await append(store, { waited: true })
  await new Promise((resolve) => setImmediate(resolve))
}

/** The foreign holder hands the lock on (lock_release: to the first waiter, or freed). */
const releaseForeign = (client: Redis, lockKey: string) =>
  Effect.runPromise(makeLockHandle(fromClient(client)).releaseToken(lockKey, "foreign-holder"))

describe("a busy store's turn in the lane: review", () => {
  it("a hand-off that arrives before the turn request's reply is kept and wakes the write at once, in the lane", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("review-early-handoff")
    const lockKey = `${prefix}lock`
    let held = false
    let release: (() => void) | undefined
    const store = busyLane(client, prefix, {
      sendTurn: (send) => (claim) =>
        held ? send(claim).then((turn) => new Promise((resolve) => (release = () => resolve(turn)))) : send(claim)
    })
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    held = true
    const before = countsOf(lockKey)
    const entered = store.counts.entered
    const resumed = store.counts.resumed
    const write = settled(append(store, { ours: true }))
    const entries = await until(
      () => other.zrange(waitersKeyOf(lockKey), 0, -1),
      (e) => e.length > 0
    )
    expect(entries).toHaveLength(1)
    // The holder hands the lock on (lock_release) while the request's reply is still held.
    await Effect.runPromise(makeLockHandle(fromClient(other)).releaseToken(lockKey, "foreign-holder"))
    await sleep(20)
    expect(release).toBeDefined()
    held = false
    release!()
    expect(await write).toBe("ok")
    expect(store.counts.entered - entered).toBe(0)
    expect(store.counts.resumed - resumed).toBe(0)
    expect(minus(countsOf(lockKey), before)).toEqual({ granted: 0, handed: 1, timedOut: 0, waits: 1 })
    await sleep(20)
    expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(other, prefix)).toEqual(["warm", "waited", "ours"])
  })

  for (const path of ["lane", "effect"] as const)
    it(`a queued write woken by a hand-off from a rival's commit (${path}): one turn handed, one wait, nothing left`, async () => {
      const client = connect()
      const other = connect()
      const prefix = uniquePrefix(`review-handed-${path}`)
      const lockKey = `${prefix}lock`
      const store = busyLane(client, prefix, { runtime: runtimeFor(path) })
      await makeBusy(client, prefix, store)
      const handle = makeLockHandle(fromClient(other))
      await client.set(lockKey, "foreign-holder", "PX", 5000)
      const before = countsOf(lockKey)
      const write = settled(append(store, { ours: true }))
      await until(
        () => other.zcard(waitersKeyOf(lockKey)),
        (n) => n > 0
      )
      await sleep(5)
      await Effect.runPromise(handle.releaseToken(lockKey, "foreign-holder"))
      expect(await write).toBe("ok")
      expect(minus(countsOf(lockKey), before)).toEqual({ granted: 0, handed: 1, timedOut: 0, waits: 1 })
      await sleep(20)
      expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
      expect(verifyAuditChain(await chainOf(other, prefix)).valid).toBe(true)
    })

  /**
   * A busy write queued behind a foreign holder, an "always" rival queued behind it, then
   * (`plain`) a plain release ("") published while both wait, and the holder hands on
   * after `holdMs`: who goes first.
   */
  const queueOrder = async (path: Path, plain: boolean, holdMs: number) => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix(`review-order-${path}`)
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix, { runtime: runtimeFor(path) })
    const rival = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "always" })
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    const started = performance.now()
    const write = settled(append(store, { ours: true }))
    const [ours] = await until(
      () => other.zrange(waitersKeyOf(lockKey), 0, -1),
      (e) => e.length > 0
    )
    // (The queue orders by deadline in server ms, and equal ones by token: the rival's comes a few ms later.)
    await sleep(3)
    const rivalWrite = settled(append(rival, { rival: true }))
    await until(
      () => other.zcard(waitersKeyOf(lockKey)),
      (n) => n > 1,
      200
    )
    if (plain) await other.publish(`${lockKey}:released`, "")
    await sleep(5)
    await sleep(Math.max(0, holdMs - (performance.now() - started)))
    // Its place is still first: it queued first, and nothing it does gives the place up.
    const queue = await other.zrange(waitersKeyOf(lockKey), 0, -1, "WITHSCORES")
    expect(queue[0], JSON.stringify({ path, queue, ours, counts: store.counts, at: performance.now() - started })).toBe(
      ours
    )
    await releaseForeign(other, lockKey)
    const outcomes = [await write, await rivalWrite]
    await sleep(20)
    return { outcomes, events: await eventsOf(other, prefix), left: await lockLeft(other, prefix) }
  }

  for (const [plain, holdMs] of [
    [true, 5],
    [false, 40]
  ] as const)
    it(`a queued write ${plain ? "told of a plain release" : "whose holder holds past a turn's wait"}: the lane and the Effect path agree on the order the queue gives`, async () => {
      const lane = await queueOrder("lane", plain, holdMs)
      const effect = await queueOrder("effect", plain, holdMs)
      expect(effect.outcomes).toEqual(["ok", "ok"])
      expect(effect.events).toEqual(["warm", "waited", "ours", "rival"])
      expect(lane).toEqual(effect)
    })

  /** A busy write whose first attempt, in the turn it waited for, loses to a rival that ignores the lock. */
  const lentLoses = async (path: Path) => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix(`review-lent-loses-${path}`)
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix, { runtime: runtimeFor(path) })
    const rival = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    const before = countsOf(lockKey)
    let builds = 0
    const write = settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const build = ++builds
        const head = (await readLastIntegrity()) as never
        if (build === 1) await append(rival, { rival: true })
        await persist(buildNextRecord({ [`ours${build}`]: true }, head))
      })
    )
    await until(
      () => other.zcard(waitersKeyOf(lockKey)),
      (n) => n > 0
    )
    await sleep(3)
    await releaseForeign(other, lockKey)
    const outcome = await write
    const counts = minus(countsOf(lockKey), before)
    await sleep(20)
    return {
      outcome,
      builds,
      counts,
      events: await eventsOf(other, prefix),
      left: await lockLeft(other, prefix),
      valid: verifyAuditChain(await chainOf(other, prefix)).valid
    }
  }

  it("a first attempt in a waited-for turn that loses: the lane and the Effect path agree", async () => {
    const lane = await lentLoses("lane")
    const effect = await lentLoses("effect")
    expect(effect.outcome).toBe("ok")
    expect(lane).toEqual(effect)
  })

  /** A busy write queued behind a foreign holder that never hands on, until its deadline. */
  const queuedPastDeadline = async (path: Path) => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix(`review-deadline-${path}`)
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix, { runtime: runtimeFor(path), timeout: 150 })
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    const before = countsOf(lockKey)
    const outcome = await settled(append(store, { ours: true }))
    const counts = minus(countsOf(lockKey), before)
    await sleep(20)
    const left = await lockLeft(other, prefix)
    await other.del(lockKey)
    // OperationTimeout, or CommitOutcomeUnknown when the deadline met one of its attempts in
    // flight (it tries again every 15 ms while it waits): both fail closed, nothing committed.
    expect(["OperationTimeout", "CommitOutcomeUnknown"]).toContain(outcome)
    return {
      left,
      events: await eventsOf(other, prefix),
      counts: { granted: counts.granted, handed: counts.handed }
    }
  }

  it("a write queued until its deadline: the lane and the Effect path agree, and leave the queue", async () => {
    const lane = await queuedPastDeadline("lane")
    const effect = await queuedPastDeadline("effect")
    expect(effect.left).toEqual({ holder: "foreign-holder", waiters: 0 })
    expect(lane).toEqual(effect)
  })

  it("writes of one busy store at once, with or without a foreign holder handing on, and a rival that ignores the lock: each commits once, nothing left", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("review-concurrent")
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix)
    const rival = createRedisAuditStore({ client: other, keyPrefix: prefix, startupChecks: "off", lock: "never" })
    const expected: Array<string> = []
    for (let round = 0; round < 5; round++) {
      await makeBusy(client, prefix, store)
      expected.push("warm", "waited")
      // (Odd rounds: no holder, the first write is granted its turn and the others queue behind it.)
      const held = round % 2 === 0
      if (held) await client.set(lockKey, "foreign-holder", "PX", 5000)
      const writes = []
      for (let i = 0; i < 5; i++) {
        expected.push(`ours${round}_${i}`)
        writes.push(settled(append(store, { [`ours${round}_${i}`]: true })))
      }
      await sleep(round * 3)
      expected.push(`rival${round}`)
      writes.push(settled(append(rival, { [`rival${round}`]: true })))
      if (held) await releaseForeign(other, lockKey)
      expect(await Promise.all(writes)).toEqual(writes.map(() => "ok"))
      await sleep(30)
      expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
    }
    expect(verifyAuditChain(await chainOf(other, prefix)).valid).toBe(true)
    expect([...(await eventsOf(other, prefix))].sort()).toEqual([...expected].sort())
  })

  it("a turn request that rejects after it ran (granted or queued) leaves nothing, and the write commits once", async () => {
    for (const holder of [false, true]) {
      const client = connect()
      const other = connect()
      const prefix = uniquePrefix(`review-reject-${holder}`)
      const lockKey = `${prefix}lock`
      let failing = false
      const store = busyLane(client, prefix, {
        sendTurn: (send) => (claim) =>
          failing ? ((failing = false), send(claim).then(() => Promise.reject(new Error("reply lost")))) : send(claim)
      })
      await makeBusy(client, prefix, store)
      if (holder) await client.set(lockKey, "foreign-holder", "PX", 60)
      failing = true
      expect(await settled(append(store, { ours: true }))).toBe("ok")
      await sleep(20)
      expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
      expect(await eventsOf(other, prefix)).toEqual(["warm", "waited", "ours"])
    }
  })

  for (const passRequest of [true, false])
    it(`a first attempt in a granted turn whose commit's link freezes (${passRequest ? "it ran" : "it is held"}): CommitOutcomeUnknown, the record once, no lock left`, async () => {
      const direct = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`review-granted-frozen-${passRequest}`)
      const store = busyLane(client, prefix, { timeout: 200 })
      await makeBusy(client, prefix, store)
      const granted = turnsCounted(`${prefix}lock`, "granted")
      const frozen = proxy.freezeWhen(luaSources[Scripts.auditAppend.file]!.sha1, { passRequest })
      const outcome = await settled(append(store, { ours: true }))
      await frozen
      expect(outcome).toBe("CommitOutcomeUnknown")
      expect(turnsCounted(`${prefix}lock`, "granted")).toBe(granted + 1)
      proxy.thaw()
      await client.ping()
      await sleep(20)
      expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
      await append(store, { next: true })
      expect(await eventsOf(direct, prefix)).toEqual(["warm", "waited", "ours", "next"])
      expect(verifyAuditChain(await chainOf(direct, prefix)).valid).toBe(true)
    })

  it("a forged hand-off to a queued write while a foreign holder still holds the lock: it never commits under that holder", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("review-forged-held")
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix)
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    let committedAt = 0
    const write = settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as never
        await persist(buildNextRecord({ ours: true }, head))
        committedAt = performance.now()
      })
    )
    const entries = await until(
      () => other.zrange(waitersKeyOf(lockKey), 0, -1),
      (e) => e.length > 0
    )
    const token = entries[0]!.split(" ")[0]!
    const head = await other.get(`${prefix}head`)
    await other.publish(`${lockKey}:released`, `${token} 77 ${head}`)
    await sleep(60)
    expect(committedAt).toBe(0)
    expect(await eventsOf(other, prefix)).toEqual(["warm", "waited"])
    const freed = performance.now()
    await other.del(lockKey)
    expect(await write).toBe("ok")
    expect(committedAt).toBeGreaterThan(freed)
    await sleep(20)
    expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(other, prefix)).toEqual(["warm", "waited", "ours"])
  })

  it("a malformed hand-off (no fence, a zero fence, another token) wakes no queued write; its own hand-off does", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("review-malformed")
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix)
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    const before = countsOf(lockKey)
    const write = settled(append(store, { ours: true }))
    const entries = await until(
      () => other.zrange(waitersKeyOf(lockKey), 0, -1),
      (e) => e.length > 0
    )
    const token = entries[0]!.split(" ")[0]!
    const channel = `${lockKey}:released`
    for (const message of [token, `${token} `, `${token} 0 null`, `${token} x {}`, `${token}x 5 null`, `x${token} 5`])
      await other.publish(channel, message)
    await sleep(5)
    expect(minus(countsOf(lockKey), before).handed).toBe(0)
    await releaseForeign(other, lockKey)
    expect(await write).toBe("ok")
    await sleep(20)
    expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(other, prefix)).toEqual(["warm", "waited", "ours"])
  })

  it("a vault store on the same lock alongside a busy audit store's queued write: both commit, nothing is left", async () => {
    const client = connect()
    const other = connect()
    const prefix = uniquePrefix("review-vault")
    const lockKey = `${prefix}lock`
    const vault = createRedisTokenStore({ client, keyPrefix: prefix, startupChecks: "off" })
    const store = busyLane(client, prefix)
    await makeBusy(client, prefix, store)
    await client.set(lockKey, "foreign-holder", "PX", 5000)
    const write = settled(append(store, { ours: true }))
    await until(
      () => other.zcard(waitersKeyOf(lockKey)),
      (n) => n > 0
    )
    const mutated = settled(vault.mutate((view) => view.set("tok_a", { type: "a" } as never)))
    await sleep(10)
    await releaseForeign(other, lockKey)
    expect([await write, await mutated]).toEqual(["ok", "ok"])
    expect(await vault.read((view) => view.get("tok_a"))).toEqual({ type: "a" })
    await sleep(30)
    expect(await lockLeft(other, prefix)).toEqual({ holder: null, waiters: 0 })
    expect(await eventsOf(other, prefix)).toEqual(["warm", "waited", "ours"])
  })
})

describe("a busy store's turns counted under a key prefix with a line break", () => {
  for (const path of ["lane", "effect"] as const)
    it(`(${path}) the turn is counted under the store's lock key`, async () => {
      const client = connect()
      const prefix = `${uniquePrefix(`review-newline-${path}`)}tenant\nb:`
      const lockKey = `${prefix}lock`
      const store = busyLane(client, prefix, { runtime: runtimeFor(path) })
      await makeBusy(client, prefix, store)
      const granted = turnsCounted(lockKey, "granted")
      expect(await settled(append(store, { ours: true }))).toBe("ok")
      expect(turnsCounted(lockKey, "granted")).toBe(granted + 1)
      await sleep(20)
      expect(await lockLeft(client, prefix)).toEqual({ holder: null, waiters: 0 })
    })
})

describe("a busy store's turn in the lane when its connections close", () => {
  for (const [when, holder] of [
    ["during the request", false],
    ["during the request", true],
    ["during the wait", true]
  ] as const)
    it(`closed ${when} (${holder ? "queued" : "granted"}): the write commits once, within a wait, and nothing is left`, async () => {
      const direct = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`review-closed-${when === "during the wait"}-${holder}`)
      const lockKey = `${prefix}lock`
      const store = busyLane(client, prefix)
      await makeBusy(client, prefix, store)
      if (holder) await direct.set(lockKey, "foreign-holder", "PX", 5000)
      const started = performance.now()
      let write: Promise<string>
      if (when === "during the request") {
        const frozen = proxy.freezeWhen(luaSources[Scripts.auditTurn.file]!.sha1, { passRequest: true })
        write = settled(append(store, { ours: true }))
        await frozen
        proxy.closeAllConnections()
        proxy.thaw()
        if (holder) {
          await sleep(30)
          await releaseForeign(direct, lockKey)
        }
      } else {
        write = settled(append(store, { ours: true }))
        await until(
          () => direct.zcard(waitersKeyOf(lockKey)),
          (n) => n > 0
        )
        proxy.closeAllConnections()
        await releaseForeign(direct, lockKey)
      }
      expect(await write).toBe("ok")
      expect(performance.now() - started).toBeLessThan(900)
      await sleep(30)
      expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
      expect(await eventsOf(direct, prefix)).toEqual(["warm", "waited", "ours"])
      expect(verifyAuditChain(await chainOf(direct, prefix)).valid).toBe(true)
    })
})

describe("a busy store's turn in the lane after its deadline", () => {
  it("a hand-off that lands after the wait was abandoned, before the give-back ran: the give-back hands the lock on, no stall", async () => {
    const direct = connect()
    const { proxy, client } = await proxied()
    const prefix = uniquePrefix("review-after-abandon")
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix, { timeout: 120 })
    await makeBusy(client, prefix, store)
    await direct.set(lockKey, "foreign-holder", "PX", 5000)
    // The give-back at the deadline is held (not yet run) while the holder hands on to it.
    const frozen = proxy.freezeWhen(luaSources[Scripts.lockRelease.file]!.sha1, { passRequest: false })
    const outcome = await settled(append(store, { ours: true }))
    expect(["OperationTimeout", "CommitOutcomeUnknown"]).toContain(outcome)
    await frozen
    const [entry] = await direct.zrange(waitersKeyOf(lockKey), 0, -1)
    expect(entry).toBeDefined()
    await releaseForeign(direct, lockKey)
    expect(await direct.get(lockKey)).toBe(entry!.split(" ")[0])
    proxy.thaw()
    await client.ping()
    await sleep(20)
    expect(await lockLeft(direct, prefix)).toEqual({ holder: null, waiters: 0 })
    await append(store, { next: true })
    // (CommitOutcomeUnknown: the append was in flight at the deadline, and may have landed;
    // OperationTimeout: nothing of it was sent.)
    const events = await eventsOf(direct, prefix)
    if (outcome === "OperationTimeout") expect(events).toEqual(["warm", "waited", "next"])
    else expect(events.filter((e) => e !== "ours")).toEqual(["warm", "waited", "next"])
  })
})

describe("a busy store's turn request refused by Redis", () => {
  /** A busy write whose lock key holds a hash (WRONGTYPE): its outcome, and what is left. */
  const refused = async (path: Path) => {
    const client = connect()
    const prefix = uniquePrefix(`review-wrongtype-${path}`)
    const lockKey = `${prefix}lock`
    const store = busyLane(client, prefix, { runtime: runtimeFor(path) })
    await makeBusy(client, prefix, store)
    await client.hset(lockKey, "not", "a lock")
    const outcome = await settled(append(store, { ours: true }))
    await sleep(20)
    const left = { type: await client.type(lockKey), waiters: await client.zcard(waitersKeyOf(lockKey)) }
    await client.del(lockKey)
    return { outcome, left, events: await eventsOf(client, prefix) }
  }

  it("a lock key of the wrong type: the lane and the Effect path fail alike, with the typed error, and write nothing", async () => {
    const lane = await refused("lane")
    const effect = await refused("effect")
    expect(effect.outcome).not.toBe("ok")
    expect(effect.outcome).not.toMatch(/^Error/)
    expect(lane).toEqual(effect)
    expect(lane.events).toEqual(["warm", "waited"])
  })
})
