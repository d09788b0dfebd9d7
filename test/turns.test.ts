/**
 * Adversarial checks of the adaptive policy's turns against real Redis: what a hand-off
 * message or a turn reply carries is only a hint (a forged one costs a retry, never a
 * fork, a lost record, a missed rewind or a caller blamed for a record it built right),
 * and nothing a turn takes (the lock, a queue entry) outlives its lease.
 */
import { describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import { createAuditSink, verifyAuditChain } from "./support/haechiCore.js"
import { sharedRedis } from "./support/shared.js"
import { until } from "./support/laneLinks.js"
import { appendKeysOf } from "../src/internal/audit/backing.js"
import { auditKeys, waitersKeyOf } from "../src/internal/keys.js"
import { buildNextRecord } from "../src/Chain.js"
import { fromClient } from "../src/RedisClient.js"
import { Scripts } from "../src/internal/scripts.js"
import { uniquePrefix } from "./support/keys.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { Effect, Metric } from "effect"
import * as Metrics from "../src/Metrics.js"

const connect = () => new Redis(sharedRedis().url)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const turnsCounted = (lockKey: string, how: "granted" | "handed" | "timedOut") =>
  Effect.runSync(Metric.value(Metrics.turns.pipe(Metric.tagged("key", lockKey), Metric.tagged("how", how)))).count

const chainOf = async (client: Redis, keyPrefix: string) =>
  (await client.lrange(`${keyPrefix}chain`, 0, -1)).map((line) => JSON.parse(line))

/**
 * Starts a write that queues behind a foreign holder, and answers its queue entry with a
 * hostile hand-off (addressed to its token) carrying `forged` as the head, the lock freed
 * just after. Resolves with the write's outcome.
 */
const forgedHandOff = async (client: Redis, keyPrefix: string, write: () => Promise<unknown>, forged: unknown) => {
  const lockKey = `${keyPrefix}lock`
  await client.set(lockKey, "held-by-a-reference-replica", "PX", 2000)
  const pending = write().then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error })
  )
  const entries = await until(
    () => client.zrange(waitersKeyOf(lockKey), 0, -1),
    (e) => e.length > 0
  )
  expect(entries).toHaveLength(1)
  const token = entries[0]!.split(" ")[0]!
  // Once the writer listens (else the message is lost, which its poll covers).
  const channel = `${lockKey}:released`
  await until(
    async () => Number(((await client.pubsub("NUMSUB", channel)) as Array<unknown>)[1]),
    (n) => n > 0
  )
  // Published while the foreign lock still holds (so no retry of the writer's can commit
  // before the message is in), then the lock freed.
  await client.publish(`${lockKey}:released`, `${token} 999999 ${JSON.stringify(forged)}`)
  await client.del(lockKey)
  return pending
}

describe("turns: a hand-off's head is only a hint", () => {
  it("a forged hand-off whose head names no record of the chain is reported as a rewind (the caller was handed it), never built on: the gap is recorded and the caller's record commits on the real head", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-forged-head")
    try {
      const sink = createAuditSink({ store: createRedisAuditStore({ client, keyPrefix, lock: "adaptive" }) as never })
      await sink.record({ n: 0 })
      await sink.record({ n: 1 })
      // The real head is sequence 2; the forged one claims sequence 2 with a hash no record has.
      const outcome = await forgedHandOff(client, keyPrefix, () => sink.record({ n: 2 }), {
        sequence: 2,
        eventHash: "f".repeat(64),
        previousHash: "e".repeat(64)
      })
      expect(turnsCounted(`${keyPrefix}lock`, "handed")).toBe(1)
      expect(outcome.ok ? "committed" : String((outcome.error as { _tag?: string })._tag ?? outcome.error)).toBe(
        "committed"
      )
      // readLastIntegrity handed the forged head to the caller, as a read would: losing it is
      // reported (here recorded as a gap naming it, the default onRewind), never built on.
      const chain = await chainOf(client, keyPrefix)
      expect(chain).toHaveLength(4)
      expect(verifyAuditChain(chain).valid).toBe(true)
      expect(JSON.stringify(chain[2])).toContain("f".repeat(64))
      expect(chain[3].n).toBe(2)
      expect(
        await until(
          () => client.exists(`${keyPrefix}lock`, waitersKeyOf(`${keyPrefix}lock`)),
          (n) => n === 0
        )
      ).toBe(0)
    } finally {
      await client.quit()
    }
  })

  /** Rewinds the chain to its first `keep` records (what a failover to a lagging replica leaves). */
  const rewindTo = async (client: Redis, keyPrefix: string, keep: number) => {
    const chain = await chainOf(client, keyPrefix)
    const last = chain[keep - 1]
    await client.ltrim(`${keyPrefix}chain`, 0, keep - 1)
    await client.set(`${keyPrefix}head`, JSON.stringify(last.auditIntegrity))
    await client.set(`${keyPrefix}head:hash`, last.auditIntegrity.eventHash)
    return last.auditIntegrity
  }

  const tagOf = (outcome: { ok: boolean; error?: unknown }) =>
    outcome.ok ? "committed" : String((outcome.error as { _tag?: string })._tag ?? outcome.error)

  it("a rewind is still seen when a hand-off (forged or not) carries the rewound chain's real head", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-forged-rewind")
    try {
      const store = createRedisAuditStore({ client, keyPrefix, lock: "adaptive", onRewind: "fail" })
      const sink = createAuditSink({ store: store as never })
      for (let n = 0; n < 3; n++) await sink.record({ n })
      const current = await rewindTo(client, keyPrefix, 1)
      const outcome = await forgedHandOff(client, keyPrefix, () => sink.record({ n: 3 }), current)
      expect(turnsCounted(`${keyPrefix}lock`, "handed")).toBe(1)
      expect(tagOf(outcome)).toBe("ChainRewound")
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
    } finally {
      await client.quit()
    }
  })

  it("a rewind is still seen when a busy store's turn is granted with the rewound chain's head", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-granted-rewind")
    const lockKey = `${keyPrefix}lock`
    try {
      const store = createRedisAuditStore({ client, keyPrefix, lock: "adaptive", onRewind: "fail" })
      const sink = createAuditSink({ store: store as never })
      for (let n = 0; n < 2; n++) await sink.record({ n })
      // A short foreign hold makes the store busy (it yielded): its next writes start with a turn.
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 20)
      await sink.record({ n: 2 })
      const granted = turnsCounted(lockKey, "granted")
      await rewindTo(client, keyPrefix, 1)
      const outcome = await sink.record({ n: 3 }).then(
        () => ({ ok: true as const }),
        (error: unknown) => ({ ok: false as const, error })
      )
      expect(turnsCounted(lockKey, "granted")).toBe(granted + 1)
      expect(tagOf(outcome)).toBe("ChainRewound")
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
      expect(
        await until(
          () => client.exists(lockKey, waitersKeyOf(lockKey)),
          (n) => n === 0
        )
      ).toBe(0)
    } finally {
      await client.quit()
    }
  })
})

describe("turns: nothing a turn takes outlives the operation", () => {
  const settled = (p: Promise<unknown>) =>
    p.then(
      () => ({ ok: true as const, at: performance.now() }),
      (error: unknown) => ({ ok: false as const, error, at: performance.now() })
    )

  it("a write that times out while queued leaves the queue at once, so no holder hands the lock to it", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-queued-timeout")
    const lockKey = `${keyPrefix}lock`
    try {
      const sink = createAuditSink({
        // (A deadline well past a round trip: on a loaded machine a 100 ms one could pass while
        // the first append is still in flight, which is CommitOutcomeUnknown, not this case.)
        store: createRedisAuditStore({ client, keyPrefix, lock: "adaptive", timeout: 250 }) as never
      })
      await sink.record({ n: 0 })
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 1000)
      const started = performance.now()
      const outcome = await settled(sink.record({ n: 1 }))
      expect(outcome.ok).toBe(false)
      // OperationTimeout, or CommitOutcomeUnknown when the deadline met one of its attempts in
      // flight (it retries every 15 ms while it waits; a loaded machine stretches each): both
      // fail closed, and the chain below shows nothing committed.
      expect(["OperationTimeout", "CommitOutcomeUnknown"]).toContain(
        (outcome as { error: { _tag?: string } }).error._tag
      )
      expect(outcome.at - started).toBeLessThan(600)
      // Its place in the queue is gone (a hand-off to it would stall every writer for its TTL).
      expect(
        await until(
          () => client.zcard(waitersKeyOf(lockKey)),
          (n) => n === 0,
          100
        )
      ).toBe(0)
      expect(await client.get(lockKey)).toBe("held-by-a-reference-replica")
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
    } finally {
      await client.quit()
    }
  })

  it("a queued writer whose hand-off message is lost finds the lock is its own within a turn's wait, not the lock's TTL", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-lost-message")
    const lockKey = `${keyPrefix}lock`
    try {
      const sink = createAuditSink({ store: createRedisAuditStore({ client, keyPrefix, lock: "adaptive" }) as never })
      await sink.record({ n: 0 })
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 2000)
      const pending = settled(sink.record({ n: 1 }))
      const entries = await until(
        () => client.zrange(waitersKeyOf(lockKey), 0, -1),
        (e) => e.length > 0
      )
      const [token, ttl] = entries[0]!.split(" ")
      // What a holder's hand-off does, but the message never arrives.
      const handed = performance.now()
      await client.set(lockKey, token!, "PX", Number(ttl))
      await client.zrem(waitersKeyOf(lockKey), entries[0]!)
      const outcome = await pending
      expect(outcome.ok).toBe(true)
      expect(outcome.at - handed).toBeLessThan(500)
      expect(await client.llen(`${keyPrefix}chain`)).toBe(2)
      expect(
        await until(
          () => client.exists(lockKey, waitersKeyOf(lockKey)),
          (n) => n === 0,
          200
        )
      ).toBe(0)
    } finally {
      await client.quit()
    }
  })

  it("a busy store's write that is granted its turn and then runs out of time gives the lock back at once", async () => {
    const client = connect()
    const other = connect()
    const keyPrefix = uniquePrefix("turn-granted-timeout")
    const lockKey = `${keyPrefix}lock`
    try {
      const store = createRedisAuditStore({ client, keyPrefix, lock: "adaptive", timeout: 100 })
      const sink = createAuditSink({ store: store as never })
      await sink.record({ n: 0 })
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 20)
      await sink.record({ n: 1 }) // yields: the store is busy, its next write asks for its turn first
      const granted = turnsCounted(lockKey, "granted")
      const slow = settled(
        store.transaction(async (tx) => {
          await tx.readLastIntegrity()
          await sleep(400)
          return "late"
        })
      )
      await until(
        async () => turnsCounted(lockKey, "granted"),
        (n) => n > granted,
        200
      )
      expect(turnsCounted(lockKey, "granted")).toBe(granted + 1)
      const outcome = await slow
      expect(outcome.ok).toBe(false)
      // (The facade settles once the caller's fn returns.) The turn is given back when the
      // operation ends, not when the lock's 1 s lease runs out.
      expect(
        await until(
          () => other.exists(lockKey),
          (n) => n === 0,
          100
        )
      ).toBe(0)
      const rival = createAuditSink({
        store: createRedisAuditStore({ client: other, keyPrefix, lock: "adaptive" }) as never
      })
      const started = performance.now()
      await rival.record({ n: 2 })
      expect(performance.now() - started).toBeLessThan(200)
    } finally {
      await Promise.all([client.quit(), other.quit()])
    }
  })
})

describe("turns: liveness alongside the other policies", () => {
  it('an "always" writer is not overtaken by the turns of writers that keep coming back', async () => {
    const keyPrefix = uniquePrefix("turn-always-fifo")
    const clients = [0, 1, 2].map(() => connect())
    try {
      const [a, b, c] = clients as [Redis, Redis, Redis]
      const hot = [a, b].map((client) =>
        createAuditSink({ store: createRedisAuditStore({ client, keyPrefix, lock: "adaptive" }) as never })
      )
      const always = createAuditSink({
        store: createRedisAuditStore({ client: c, keyPrefix, lock: "always" }) as never
      })
      await hot[0]!.record({ warm: true })
      await always.record({ warm: true })
      let stop = false
      // Two replicas writing back to back (each its own client, so each its own turns), bounded in time.
      const loops = hot.map(async (sink, i) => {
        const end = performance.now() + 2500
        while (!stop && performance.now() < end) await sink.record({ i })
      })
      await sleep(100)
      const waits: Array<number> = []
      for (let i = 0; i < 3; i++) {
        const started = performance.now()
        await always.record({ always: i })
        waits.push(performance.now() - started)
      }
      stop = true
      await Promise.all(loops)
      // Its place in the queue comes up within a few turns, not once the others' places
      // (scored by a shorter wait) stop jumping ahead of it.
      expect(Math.max(...waits)).toBeLessThan(400)
      const chain = await chainOf(a, keyPrefix)
      expect(verifyAuditChain(chain).valid).toBe(true)
    } finally {
      await Promise.all(clients.map((client) => client.quit()))
    }
  })
})

describe("turns: a kept turn", () => {
  it("is kept only by the lock's holder, on a lease of its own length; one nobody renews frees itself", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-keep-script")
    const lockKey = `${keyPrefix}lock`
    const channel = `${lockKey}:released`
    try {
      const redis = fromClient(client)
      const keys = appendKeysOf(auditKeys(keyPrefix))
      let head: unknown = null
      const append = async (claim: readonly [string, string, string, string, string]) => {
        const record = buildNextRecord({ at: Math.random() }, head as never)
        const integrity = record.auditIntegrity as { sequence: number; eventHash: string; previousHash: string | null }
        const reply = await Effect.runPromise(
          redis.script(Scripts.auditAppend, keys, [
            integrity.previousHash ?? "",
            JSON.stringify(record),
            JSON.stringify(integrity),
            integrity.eventHash,
            integrity.sequence,
            `commit-${Math.random()}`,
            ...claim
          ])
        )
        if ((reply as Array<number>)[0] === 1) head = integrity
        return reply
      }
      // Free lock: asking to keep takes nothing (only a holder keeps its turn).
      expect(await append(["keep 10", "tok-a", "1000", channel, "5000"])).toEqual([1, 0])
      expect(await client.exists(lockKey)).toBe(0)
      // Another writer's lock: the attempt yields (and queues), keeping nothing.
      await client.set(lockKey, "tok-b", "PX", 1000)
      expect(await append(["keep 10", "tok-a", "1000", channel, "5000"])).toEqual([4])
      expect(await client.get(lockKey)).toBe("tok-b")
      // The holder keeps it, on the kept lease (not its 1 s one), with the waiter still queued.
      expect(await append(["keep 10", "tok-b", "1000", channel, "5000"])).toEqual([1, 1])
      expect(await client.get(lockKey)).toBe("tok-b")
      expect(await client.pttl(lockKey)).toBeLessThanOrEqual(10)
      expect(await client.zrange(waitersKeyOf(lockKey), 0, -1)).toEqual(["tok-a 1000"])
      // Nobody renews it (its process quit): it frees itself within its lease, and the waiter's next attempt commits.
      await sleep(25)
      expect(await client.exists(lockKey)).toBe(0)
      expect(await append(["1", "tok-a", "1000", channel, "5000"])).toEqual([1, 0])
      expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
      expect(await client.llen(`${keyPrefix}chain`)).toBe(3)
    } finally {
      await client.quit()
    }
  })

  it("that is followed by a write that throws is given back when that write ends", async () => {
    const client = connect()
    const other = connect()
    const keyPrefix = uniquePrefix("turn-keep-throws")
    const lockKey = `${keyPrefix}lock`
    try {
      const store = createRedisAuditStore({ client, keyPrefix, lock: "adaptive" })
      const sink = createAuditSink({ store: store as never })
      await sink.record({ n: 0 })
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 20)
      await sink.record({ n: 1 }) // yields, then its turns come: the store is busy
      await sink.record({ n: 2 }) // granted a turn, and keeps it
      const failed = await store
        .transaction(async (tx) => {
          await tx.readLastIntegrity()
          throw new Error("the caller's own failure")
        })
        .then(
          () => "resolved",
          (error: Error) => error.message
        )
      expect(failed).toBe("the caller's own failure")
      expect(await other.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
      const chain = await chainOf(other, keyPrefix)
      expect(chain).toHaveLength(3)
      expect(verifyAuditChain(chain).valid).toBe(true)
    } finally {
      await Promise.all([client.quit(), other.quit()])
    }
  })
})

describe("turns: the vault", () => {
  it("a forged hand-off while another writer still holds the lock makes a queued vault write wait, never write under that holder", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-vault-forged")
    const lockKey = `${keyPrefix}lock`
    try {
      const store = createRedisTokenStore({ client, keyPrefix, lock: "adaptive" })
      await store.mutate(async (v) => v.set("warm", { type: "t" }))
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 300)
      const started = performance.now()
      const pending = store.mutate(async (v) => v.set("late", { type: "t" }))
      const entries = await until(
        () => client.zrange(waitersKeyOf(lockKey), 0, -1),
        (e) => e.length > 0
      )
      expect(entries).toHaveLength(1)
      const token = entries[0]!.split(" ")[0]!
      await until(
        async () => Number(((await client.pubsub("NUMSUB", `${lockKey}:released`)) as Array<unknown>)[1]),
        (n) => n > 0
      )
      await client.publish(`${lockKey}:released`, `${token} 999999 `)
      await sleep(100)
      // The holder's lock stands, and the write has not gone under it.
      expect(await client.get(lockKey)).toBe("held-by-a-reference-replica")
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(0)
      await pending
      expect(performance.now() - started).toBeGreaterThan(250)
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(1)
      expect(
        await until(
          () => client.exists(lockKey, waitersKeyOf(lockKey)),
          (n) => n === 0,
          200
        )
      ).toBe(0)
    } finally {
      await client.quit()
    }
  })
})

describe("turns: a queued waiter's wait", () => {
  const listening = async (client: Redis, channel: string) =>
    until(
      async () => Number(((await client.pubsub("NUMSUB", channel)) as Array<unknown>)[1]),
      (n) => n > 0
    )

  /** Hand-offs to other waiters on `channel` every 5 ms while `going()`; resolves when stopped. */
  const handOffsToOthers = async (client: Redis, channel: string, going: () => boolean) => {
    for (let i = 0; going() && i < 1000; i++) {
      await client.publish(channel, `waiter-ahead-${i} ${1000 + i}`)
      await sleep(5)
    }
  }

  it("starts again while the queue moves (hand-offs to others), up to its bound in all; without one it ends on time; its own hand-off wakes it", async () => {
    const client = connect()
    const handle = makeLockHandle(fromClient(client))
    const lockKey = `${uniquePrefix("turn-wait")}lock`
    const channel = `${lockKey}:released`
    try {
      const wakeup = handle.releases(lockKey, "our-token")
      await listening(client, channel)
      expect(await Effect.runPromise(wakeup.next(1000))).toBe("") // the subscription going live wakes it once

      // 50 ms waits, restarted by each hand-off to another waiter, for 300 ms: it is still waiting.
      let going = true
      const moving = handOffsToOthers(client, channel, () => going)
      const started = performance.now()
      let endedAt: number | undefined
      const restarted = Effect.runPromise(wakeup.next(50, 10_000)).then((message) => {
        endedAt = performance.now()
        return message
      })
      await sleep(300)
      expect(endedAt).toBeUndefined()
      going = false
      await moving
      const stoppedAt = performance.now()
      expect(await restarted).toBeUndefined() // timed out, not woken
      expect(endedAt! - stoppedAt).toBeGreaterThanOrEqual(35) // a wait's 50 ms after the last hand-off, less the last 5 ms gap
      expect(endedAt! - started).toBeGreaterThanOrEqual(295)

      // Bounded: with the queue moving all along, it ends `upToMs` after it began.
      going = true
      const movingOn = handOffsToOthers(client, channel, () => going)
      const boundedStart = performance.now()
      expect(await Effect.runPromise(wakeup.next(50, 150))).toBeUndefined()
      const bounded = performance.now() - boundedStart
      // Without `upToMs`, a hand-off to others changes nothing: it ends after its own 50 ms.
      const plainStart = performance.now()
      expect(await Effect.runPromise(wakeup.next(50))).toBeUndefined()
      const plain = performance.now() - plainStart
      going = false
      await movingOn
      expect(bounded).toBeGreaterThanOrEqual(145) // (a timer may fire up to a ms early on the loop's clock)
      expect(plain).toBeGreaterThanOrEqual(45)
      expect(plain).toBeLessThan(bounded)

      // Its own hand-off wakes it at once, with the message.
      const own = Effect.runPromise(wakeup.next(5_000, 10_000))
      await client.publish(channel, "our-token 7 payload")
      expect(await own).toBe("our-token 7 payload")
      wakeup.close()
    } finally {
      await Effect.runPromise(handle.close)
      await client.quit()
    }
  })
})
