/**
 * The audit append's fast path (one MGET, `commits` refused by its own HSET), against
 * real Redis: a refusal of that HSET for another reason than the key's type is reported
 * as Redis said it, and a refused append writes nothing. (How the commit ids are kept and
 * trimmed: test/resentCalls.test.ts.)
 */
import { describe, expect, it } from "vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { Redis } from "ioredis"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import { fenceKeyOf, waitersKeyOf } from "../src/internal/keys.js"
import { fromClient } from "../src/RedisClient.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { callScriptBySha, Scripts } from "../src/internal/scripts.js"
import { append, losingRaces } from "./support/facadePaths.js"
import { laneStore } from "./support/keptTurns.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis } from "./support/redisServer.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

const rejectionOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error as { _tag?: string; reply?: string; key?: string }
  )

describe("the audit append's fast path", () => {
  it("on a read-only replica the append fails with Redis's READONLY refusal, not as a commits key of the wrong type", async () => {
    const primary = await startRedis()
    const replica = await startRedis()
    const client = new Redis(replica.port, "127.0.0.1", { maxRetriesPerRequest: 1 })
    client.on("error", () => {})
    try {
      await client.replicaof("127.0.0.1", String(primary.port))
      const store = createRedisAuditStore({ client, keyPrefix: "ro:", startupChecks: "off", timeout: 2000 })
      const error = await rejectionOf(append(store, { on: "replica" }))
      expect(error?._tag).toBe("RedisCommandFailed")
      expect(error?.reply).toMatch(/^READONLY/)
      expect(await client.keys("ro:*")).toEqual([])
    } finally {
      client.disconnect()
      await replica.stop()
      await primary.stop()
    }
  })
})

/** Every key under `prefix` with its type and DUMP, to show that nothing was written. */
const snapshot = async (client: Redis, prefix: string) => {
  const keys = (await client.keys(`${prefix.replace(/[[\]*?\\{}]/g, "\\$&")}*`)).sort()
  const out: Record<string, unknown> = {}
  for (const key of keys) out[key] = [await client.type(key), (await client.dumpBuffer(key))?.toString("hex")]
  return out
}

/** An append with lock `policy` on a chain of `records` records whose `key` is a set: its error and the keys around it. */
const appendOver = async (policy: "never" | "adaptive" | "always", records: number, key: string, held = false) => {
  const client = connect()
  const prefix = uniquePrefix(`wrongtype-${policy}-${records}`)
  const options = { client, keyPrefix: prefix, startupChecks: "off", lock: policy, timeout: 1500 } as const
  const seed = createRedisAuditStore({ ...options, lock: "never" })
  for (let i = 0; i < records; i++) await append(seed, { i })
  await client.del(`${prefix}${key}`)
  await client.sadd(`${prefix}${key}`, "not-audit")
  if (held) await client.set(`${prefix}lock`, "another-writer", "PX", 60_000)
  const before = await snapshot(client, prefix)
  const error = await rejectionOf(append(createRedisAuditStore(options), { on: key }))
  return { prefix, error, before, after: await snapshot(client, prefix) }
}

describe("an audit key of the wrong type", () => {
  const chainKeys = ["head:hash", "head", "chain", "commits"] as const
  for (const records of [0, 3])
    for (const policy of ["never", "adaptive", "always"] as const) {
      for (const key of chainKeys)
        it(`lock "${policy}", ${records} records, ${key} a set: the append fails with CorruptData naming it, nothing written`, async () => {
          const { prefix, error, before, after } = await appendOver(policy, records, key)
          expect(error?._tag).toBe("CorruptData")
          expect(error?.key).toBe(`${prefix}${key}`)
          expect(after).toEqual(before)
        })
      if (policy === "adaptive")
        for (const key of chainKeys)
          it(`lock "adaptive", ${records} records, the lock held by another writer, ${key} a set: CorruptData naming it, nothing written`, async () => {
            const { prefix, error, before, after } = await appendOver(policy, records, key, true)
            expect(error?._tag).toBe("CorruptData")
            expect(error?.key).toBe(`${prefix}${key}`)
            expect(after).toEqual(before)
          })
      if (policy === "adaptive")
        it(`lock "adaptive", ${records} records, lock a set: the append fails with CorruptData naming the lock, nothing written`, async () => {
          const { prefix, error, before, after } = await appendOver(policy, records, "lock")
          expect(error?._tag).toBe("CorruptData")
          expect(error?.key).toBe(`${prefix}lock`)
          expect(after).toEqual(before)
        })
      if (policy === "always")
        it(`lock "always", ${records} records, lock a set: the append fails with a typed error, nothing written`, async () => {
          const { error, before, after } = await appendOver(policy, records, "lock")
          expect(error?._tag).toMatch(/^(CorruptData|RedisCommandFailed)$/)
          expect(after).toEqual(before)
        })
    }

  it('lock "adaptive", the lock\'s waiter queue a set: the attempt that took the lock after losing a race fails without its record, or commits it', async () => {
    const client = connect()
    const prefix = uniquePrefix("wrongtype-waiters")
    const options = { client, keyPrefix: prefix, startupChecks: "off", timeout: 1500 } as const
    const rival = createRedisAuditStore({ ...options, lock: "never" })
    await append(rival, { first: true })
    await client.sadd(waitersKeyOf(`${prefix}lock`), "not-a-queue")
    const race = losingRaces(createRedisAuditStore({ ...options, lock: "adaptive" }), rival, 2)
    const error = await rejectionOf(race.done)
    const ours = (await client.lrange(`${prefix}chain`, 0, -1)).filter((json) => json.includes('"ours"'))
    expect(race.builds()).toBe(3)
    expect({ failed: error !== undefined, ours: ours.length }).toEqual(
      error === undefined ? { failed: false, ours: 1 } : { failed: true, ours: 0 }
    )
  })
})

describe("the lock's fence counter of the wrong type", () => {
  it('lock "adaptive": the commit that would hand the lock to a waiter is refused naming the fence, before its record is written', async () => {
    const client = connect()
    const prefix = uniquePrefix("wrongtype-fence")
    const lock = `${prefix}lock`
    const options = { client, keyPrefix: prefix, startupChecks: "off", timeout: 1500 } as const
    const rival = createRedisAuditStore({ ...options, lock: "never" })
    await append(rival, { first: true })
    // A live waiter (its deadline a minute off, in server ms), and a fence counter that is a list.
    const [seconds] = await client.time()
    await client.zadd(waitersKeyOf(lock), Number(seconds) * 1000 + 60_000, "another-waiter 1000")
    await client.rpush(fenceKeyOf(lock), "not-a-counter")
    // A turn of one commit: the commit that took the lock hands it on (a longer turn keeps it).
    const race = losingRaces(laneStore(client, prefix, { commits: 1 }), rival, 2)
    const error = (await rejectionOf(race.done)) as { _tag?: string; key?: string } | undefined
    const ours = (await client.lrange(`${prefix}chain`, 0, -1)).filter((json) => json.includes('"ours"'))
    expect(race.builds()).toBe(3)
    expect({ tag: error?._tag, key: error?.key, ours: ours.length }).toEqual({
      tag: "CorruptData",
      key: fenceKeyOf(lock),
      ours: 0
    })
    expect(await client.lrange(fenceKeyOf(lock), 0, -1)).toEqual(["not-a-counter"])
  })
})

describe("lock_release with a fence counter of the wrong type", () => {
  it("refuses before anything is written: the lock stays its holder's and the waiter keeps its place", async () => {
    const client = connect()
    const lock = `${uniquePrefix("release-wrong-fence")}lock`
    const keys = [lock, fenceKeyOf(lock), waitersKeyOf(lock)]
    const [seconds] = await client.time()
    await client.set(lock, "holder", "PX", 60_000)
    await client.zadd(waitersKeyOf(lock), Number(seconds) * 1000 + 60_000, "waiter 1000")
    await client.rpush(fenceKeyOf(lock), "not-a-counter")
    const before = await Promise.all(keys.map((k) => client.dumpBuffer(k)))
    const release = (token: string, entry: string) =>
      callScriptBySha(client, Scripts.lockRelease, keys, [token, `${lock}:released`, entry])
    // The holder's release, and a waiter's that gives up while the lock is ours: both refused, nothing moved.
    for (const [token, entry] of [
      ["holder", ""],
      ["holder", "holder 1000"]
    ] as const) {
      const error = (await rejectionOf(release(token, entry))) as Error | undefined
      expect(await Promise.all(keys.map((k) => client.dumpBuffer(k)))).toEqual(before)
      expect(error?.message).toMatch(/^WRONGTYPE .*fence counter/)
    }
    // Not ours: nothing is checked or handed; the caller only leaves the queue.
    expect(await release("someone-else", "waiter 1000")).toBe(0)
    expect(await client.zcard(waitersKeyOf(lock))).toBe(0)
    expect(await client.get(lock)).toBe("holder")
  })
})

describe("the vault's lock key of the wrong type", () => {
  it('lock "adaptive": the mutate fails with CorruptData naming the lock, nothing written', async () => {
    const client = connect()
    const prefix = uniquePrefix("vault-wrongtype-lock")
    const options = { client, keyPrefix: prefix, startupChecks: "off", timeout: 1500 } as const
    await createRedisTokenStore({ ...options, lock: "never" }).mutate((view) => view.set("first", { type: "email" }))
    await client.sadd(`${prefix}lock`, "not-a-lock")
    const before = await snapshot(client, prefix)
    const error = (await rejectionOf(
      createRedisTokenStore({ ...options, lock: "adaptive" }).mutate((view) => view.set("ours", { type: "email" }))
    )) as { _tag?: string; key?: string } | undefined
    expect({ tag: error?._tag, key: error?.key }).toEqual({ tag: "CorruptData", key: `${prefix}lock` })
    expect(await snapshot(client, prefix)).toEqual(before)
  })
})

describe("the vault's waiter queue of the wrong type", () => {
  it('lock "adaptive": the apply that took the lock after losing two races fails without its change, or makes it', async () => {
    const client = connect()
    const prefix = uniquePrefix("vault-wrongtype-waiters")
    const options = { client, keyPrefix: prefix, startupChecks: "off", timeout: 1500 } as const
    const rival = createRedisTokenStore({ ...options, lock: "never" })
    await rival.mutate((view) => view.set("first", { type: "email", n: 0 }))
    await client.sadd(waitersKeyOf(`${prefix}lock`), "not-a-queue")
    const store = createRedisTokenStore({ ...options, lock: "adaptive" })
    let runs = 0
    const error = await rejectionOf(
      store.mutate(async (view) => {
        runs += 1
        if (runs <= 2) await rival.mutate((v) => v.set(`rival-${runs}`, { type: "email", n: runs }))
        view.set("ours", { type: "email", n: 9 })
      })
    )
    const ours = await client.hexists(`${prefix}tokens`, "ours")
    expect(runs).toBe(3)
    expect({ failed: error !== undefined, ours }).toEqual(
      error === undefined ? { failed: false, ours: 1 } : { failed: true, ours: 0 }
    )
  })
})

// Catches: lock_acquire and audit_turn taking the lock (SET NX) before a waiter queue,
// fence counter or head of the wrong type failed the call, so the lock stayed taken for
// nobody until its TTL and every writer of the store waited that long.
describe("a script that may take the lock, and a key of the wrong type", () => {
  const refusal = (promise: Promise<unknown>) =>
    promise.then(
      (reply) => ({ reply }),
      (error: Error) => ({ error: error.message })
    )
  const cases = [
    { script: "lock_acquire", key: "waiters", plant: (c: Redis, k: string) => c.sadd(k, "x") },
    { script: "lock_acquire", key: "fence", plant: (c: Redis, k: string) => c.rpush(k, "x") },
    { script: "audit_turn", key: "waiters", plant: (c: Redis, k: string) => c.sadd(k, "x") },
    { script: "audit_turn", key: "head", plant: (c: Redis, k: string) => c.hset(k, "x", "y") }
  ] as const
  for (const { script, key, plant } of cases) {
    it(`${script} with a ${key} of the wrong type: WRONGTYPE naming it, the lock not taken`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`turn-wrongtype-${key}`)
      const lock = `${prefix}lock`
      const named = { waiters: waitersKeyOf(lock), fence: fenceKeyOf(lock), head: `${prefix}head` }[key]
      await plant(client, named)
      const outcome =
        script === "lock_acquire"
          ? await refusal(
              callScriptBySha(
                client,
                Scripts.lockAcquire,
                [lock, fenceKeyOf(lock), waitersKeyOf(lock)],
                ["t", 1000, 500]
              )
            )
          : await refusal(
              callScriptBySha(client, Scripts.auditTurn, [`${prefix}head`, lock, waitersKeyOf(lock)], ["t", 1000, 500])
            )
      expect(outcome).toEqual({ error: `WRONGTYPE ${named} holds the wrong type: nothing written` })
      expect(await client.exists(lock)).toBe(0)
    })
  }

  it("the Effect path's turn request names the key as CorruptData", async () => {
    const client = connect()
    const prefix = uniquePrefix("turn-wrongtype-named")
    const lock = `${prefix}lock`
    await client.sadd(waitersKeyOf(lock), "x")
    const backing = redisAuditBacking(fromClient(client), prefix)
    const claim = { token: "t", ttlMs: 1000, channel: `${lock}:released`, ask: true, queueMs: 500 }
    const exit = await Effect.runPromiseExit(backing.requestTurn!(claim))
    expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : exit).toMatchObject({
      _tag: "CorruptData",
      key: waitersKeyOf(lock)
    })
    expect(await client.exists(lock)).toBe(0)
  })
})
