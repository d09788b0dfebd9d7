/**
 * The stores' lock policies against real Redis: "never" ignores the lock, "always" and
 * "adaptive" wait for a holder (a haechi-store-redis replica holds it with SET NX PX),
 * an adaptive lock-free attempt yields to a lock holder instead of racing it, and every
 * policy keeps the chain whole and the vault exact when replicas race.
 */
import { describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { createRedisAuditStore, createRedisTokenStore, type LockPolicy } from "../src/haechi.js"
import { createAuditSink, createTokenVault, verifyAuditChain } from "./support/haechiCore.js"
import { sharedRedis } from "./support/shared.js"
import { Effect, Metric } from "effect"
import { buildNextRecord } from "../src/Chain.js"
import { CLAIM_AFTER } from "../src/internal/lock/policy.js"
import { fromClient } from "../src/RedisClient.js"
import { Scripts } from "../src/internal/scripts.js"
import type { LockClaim } from "../src/internal/storeGuard.js"
import { redisVaultBacking } from "../src/internal/vault/backing.js"
import { appendKeysOf, redisAuditBacking } from "../src/internal/audit/backing.js"
import { auditKeys, waitersKeyOf } from "../src/internal/keys.js"
import { handedFence, handedPayload } from "../src/internal/lock/releases.js"
import { BURST_COMMITS } from "../src/internal/lock/claimState.js"
import * as Metrics from "../src/Metrics.js"
import { uniquePrefix } from "./support/keys.js"

const connect = () => new Redis(sharedRedis().url)

const appendOne = (store: ReturnType<typeof createRedisAuditStore>, n: number) =>
  createAuditSink({ store: store as never }).record({ n })

describe("store lock policies", () => {
  for (const [policy, waits] of [
    ["never", false],
    ["always", true],
    ["adaptive", true]
  ] as const) {
    it(`"${policy}" ${waits ? "waits for" : "ignores"} a foreign lock holder`, async () => {
      const client = connect()
      const keyPrefix = uniquePrefix(`policy-${policy}`)
      try {
        const store = createRedisAuditStore({ client, keyPrefix, lock: policy })
        await appendOne(store, 0) // warm: the head is cached, scripts loaded
        await client.set(`${keyPrefix}lock`, "held-by-a-reference-replica", "PX", 300)
        const started = performance.now()
        await appendOne(store, 1)
        const waited = performance.now() - started
        if (waits) expect(waited).toBeGreaterThan(200)
        else expect(waited).toBeLessThan(200)
        expect(await client.llen(`${keyPrefix}chain`)).toBe(2)
      } finally {
        await client.quit()
      }
    })
  }

  it("an adaptive vault attempt yields to a lock holder too, and writes nothing while it is held", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("policy-vault")
    try {
      const store = createRedisTokenStore({ client, keyPrefix, lock: "adaptive" })
      await store.mutate((v) => v.set("warm", { type: "t" }))
      await client.set(`${keyPrefix}lock`, "held", "PX", 300)
      const pending = store.mutate((v) => v.set("late", { type: "t" }))
      await new Promise((r) => setTimeout(r, 150))
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(0)
      await pending
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(1)
    } finally {
      await client.quit()
    }
  })

  it("an adaptive writer that keeps losing takes the lock in the script that rejects it; others yield; failing gives it back", async () => {
    const client = connect()
    const other = connect()
    const keyPrefix = uniquePrefix("policy-claim")
    const lockKey = `${keyPrefix}lock`
    try {
      const store = createRedisAuditStore({ client, keyPrefix, lock: "adaptive" })
      const rival = createAuditSink({
        store: createRedisAuditStore({ client: other, keyPrefix, lock: "never" }) as never
      })
      const adaptiveRival = createAuditSink({
        store: createRedisAuditStore({ client: other, keyPrefix, lock: "adaptive" }) as never
      })
      await rival.record({ warm: true })
      const seen: Array<string | null> = []
      let runs = 0
      const outcome = store.transaction(async ({ readLastIntegrity, persist }) => {
        runs += 1
        seen.push(await client.get(lockKey))
        if (runs === CLAIM_AFTER + 2) {
          // We hold the lock now: an adaptive rival yields (writes nothing) while we do.
          const before = await client.llen(`${keyPrefix}chain`)
          const yielding = adaptiveRival.record({ yields: true })
          await new Promise((r) => setTimeout(r, 50))
          expect(await client.llen(`${keyPrefix}chain`)).toBe(before)
          void yielding.catch(() => {})
          throw new Error("stop after taking the lock")
        }
        const record = buildNextRecord({ mine: runs }, (await readLastIntegrity()) as never)
        await rival.record({ rival: runs }) // moves the head: our persist loses the race
        await persist(record as never)
      })
      await expect(outcome).rejects.toThrow("stop after taking the lock")
      // Lock-free for CLAIM_AFTER lost races, then the next rejection took the lock.
      expect(seen.slice(0, CLAIM_AFTER + 1)).toEqual(Array(CLAIM_AFTER + 1).fill(null))
      expect(seen[CLAIM_AFTER + 1]).toMatch(/^[0-9a-f]{32}$/)
      // Failing gave it back (compare-and-delete, handing it to the rival queued for it), and the rival got through.
      expect(await client.get(lockKey)).not.toBe(seen[CLAIM_AFTER + 1])
      for (
        let i = 0;
        i < 100 && (await client.lrange(`${keyPrefix}chain`, -1, -1))[0]?.includes('"yields"') !== true;
        i++
      ) {
        await new Promise((r) => setTimeout(r, 10))
      }
      const chain = (await client.lrange(`${keyPrefix}chain`, 0, -1)).map((line) => JSON.parse(line))
      expect(verifyAuditChain(chain).valid).toBe(true)
      expect(chain.at(-1).yields).toBe(true)
      // And once it is done nobody holds the lock or waits for it.
      for (let i = 0; i < 100 && (await client.exists(lockKey)) === 1; i++) await new Promise((r) => setTimeout(r, 5))
      expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
    } finally {
      await Promise.all([client.quit(), other.quit()])
    }
  })

  it("the claim lives in the fence script: a rejected attempt takes the lock, a yielding one queues, the commit hands the lock on with the new head", async () => {
    const client = connect()
    const sub = connect()
    const keyPrefix = uniquePrefix("claim-script")
    const lockKey = `${keyPrefix}lock`
    const channel = `${lockKey}:released`
    try {
      const redis = fromClient(client)
      const keys = appendKeysOf(auditKeys(keyPrefix))
      const first = buildNextRecord({ n: 1 }, null)
      const second = buildNextRecord({ n: 2 }, first.auditIntegrity as never)
      const third = buildNextRecord({ n: 3 }, second.auditIntegrity as never)
      const hashOf = (record: typeof first) => (record.auditIntegrity as { eventHash: string }).eventHash
      const args = (
        record: typeof first,
        expected: string,
        claim: readonly [string, string, string, string, string]
      ) => [
        expected,
        JSON.stringify(record),
        JSON.stringify(record.auditIntegrity),
        hashOf(record),
        (record.auditIntegrity as { sequence: number }).sequence,
        `commit-${(record.auditIntegrity as { sequence: number }).sequence}-${Math.random()}`,
        ...claim
      ]
      const run = (a: Array<string | number>) => Effect.runPromise(redis.script(Scripts.auditAppend, keys, a))
      expect(await run(args(first, "", ["", "", "", "", ""]))).toEqual([1, 0])
      const messages: Array<string> = []
      await sub.subscribe(channel)
      sub.on("message", (_c: string, m: string) => messages.push(m))
      // Built on a stale head (the empty chain) and asking for the lock: rejected, and the lock is ours.
      const stale = buildNextRecord({ n: "stale" }, null)
      const reply = (await run(args(stale, "", ["1", "tok-a", "1000", channel, "1000"]))) as Array<unknown>
      expect(reply[0]).toBe(0)
      expect(reply[2]).toBe(1)
      expect(await client.get(lockKey)).toBe("tok-a")
      expect(await client.pttl(lockKey)).toBeGreaterThan(0)
      // Other lock-free attempts yield (nothing written), even on the right head; one that asks queues, once.
      expect(await run(args(second, hashOf(first), ["1", "tok-c", "", channel, ""]))).toEqual([4])
      for (let i = 0; i < 2; i++) {
        expect(await run(args(second, hashOf(first), ["1", "tok-b", "1000", channel, "1000"]))).toEqual([4])
      }
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
      expect(await client.zrange(waitersKeyOf(lockKey), 0, -1)).toEqual(["tok-b 1000"])
      // The holder commits: the lock goes to the queued writer, with the head it is to build on.
      expect(await run(args(second, hashOf(first), ["1", "tok-a", "1000", channel, "1000"]))).toEqual([1, 0])
      expect(await client.get(lockKey)).toBe("tok-b")
      expect(await client.zcard(waitersKeyOf(lockKey))).toBe(0)
      for (let i = 0; i < 50 && messages.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
      expect(messages).toHaveLength(1)
      expect(handedFence(messages[0]!, "tok-b")).toBeGreaterThan(0)
      expect(JSON.parse(handedPayload(messages[0]!, "tok-b")!)).toEqual(second.auditIntegrity)
      expect(handedPayload(messages[0]!, "tok-a")).toBeUndefined()
      // Its turn: built on the handed head, it commits; nobody is queued, so the lock is freed.
      expect(await run(args(third, hashOf(second), ["1", "tok-b", "1000", channel, "1000"]))).toEqual([1, 0])
      expect(await client.exists(lockKey)).toBe(0)
      for (let i = 0; i < 50 && messages.length === 1; i++) await new Promise((r) => setTimeout(r, 5))
      expect(messages.slice(1)).toEqual([""])
    } finally {
      await Promise.all([client.quit(), sub.quit()])
    }
  })

  it("a writer that got its turn keeps it for back-to-back writes, a bounded burst, and hands it on once no write follows", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("kept-turn")
    const lockKey = `${keyPrefix}lock`
    const granted = () =>
      Effect.runSync(Metric.value(Metrics.turns.pipe(Metric.tagged("key", lockKey), Metric.tagged("how", "granted"))))
        .count
    try {
      const sink = createAuditSink({ store: createRedisAuditStore({ client, keyPrefix, lock: "adaptive" }) as never })
      await sink.record({ warm: true })
      // A holder that hands nothing on (a reference replica): our writer yields, then asks for turns.
      await client.set(lockKey, "held-by-a-reference-replica", "PX", 100)
      await sink.record({ after: "yield" })
      const before = granted()
      const writes = 4 * BURST_COMMITS
      for (let i = 0; i < writes; i++) await sink.record({ i })
      const asked = granted() - before
      // Kept: far fewer turns asked for than writes; bounded: at least one per burst.
      expect(asked).toBeGreaterThanOrEqual(writes / BURST_COMMITS)
      expect(asked).toBeLessThan(writes / 2)
      // No write follows: the kept turn is handed on (here: freed) as soon as the event loop moves on.
      await new Promise((r) => setTimeout(r, 5))
      expect(await client.exists(lockKey, waitersKeyOf(lockKey))).toBe(0)
      const chain = (await client.lrange(`${keyPrefix}chain`, 0, -1)).map((line) => JSON.parse(line))
      expect(verifyAuditChain(chain).valid).toBe(true)
      expect(chain).toHaveLength(writes + 2)
    } finally {
      await client.quit()
    }
  })

  it("a turn asked for before building: granted with the head while the lock is free, else queued for the holder's hand-off", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("turn-script")
    const lockKey = `${keyPrefix}lock`
    try {
      const backing = redisAuditBacking(fromClient(client), keyPrefix)
      const claim = (token: string): LockClaim => ({
        token,
        ttlMs: 1000,
        channel: `${lockKey}:released`,
        ask: true,
        queueMs: 1000
      })
      const turn = (token: string) => Effect.runPromise(backing.requestTurn!(claim(token)))
      expect(await turn("tok-a")).toEqual({ _tag: "Granted", handed: "null" })
      expect(await client.get(lockKey)).toBe("tok-a")
      // Asking again with the same token (a re-sent call) keeps the turn.
      expect(await turn("tok-a")).toEqual({ _tag: "Granted", handed: "null" })
      expect(await turn("tok-b")).toEqual({ _tag: "Queued" })
      expect(await turn("tok-b")).toEqual({ _tag: "Queued" })
      expect(await client.zrange(waitersKeyOf(lockKey), 0, -1)).toEqual(["tok-b 1000"])
      expect(await client.llen(`${keyPrefix}chain`)).toBe(0)
      // With a head in the chain, a granted turn hands it over.
      await client.del(lockKey)
      await client.set(`${keyPrefix}head`, '{"sequence":1,"eventHash":"h1","previousHash":null}')
      expect(await turn("tok-b")).toEqual({
        _tag: "Granted",
        handed: '{"sequence":1,"eventHash":"h1","previousHash":null}'
      })
      expect(await client.zcard(waitersKeyOf(lockKey))).toBe(0)
    } finally {
      await client.quit()
    }
  })

  it("the vault's fence script takes a claimed lock when it rejects, others yield to it, and its commit gives it back", async () => {
    const client = connect()
    const sub = connect()
    const keyPrefix = uniquePrefix("claim-vault")
    const lockKey = `${keyPrefix}lock`
    const channel = `${lockKey}:released`
    try {
      const backing = redisVaultBacking(fromClient(client), keyPrefix)
      const claimOf = (token: string, ask: boolean): LockClaim => ({ token, ttlMs: 1000, channel, ask, queueMs: 0 })
      // The fence's proof of continuity: the commit logged at the expected version, and the token count.
      const seen = { commit: "", size: 0 }
      const apply = async (expected: string, token: string, claim: LockClaim | undefined) => {
        const commitId = `c-${Math.random()}`
        const write = {
          expected,
          expectedCommit: seen.commit,
          expectedSize: seen.size,
          commitId,
          madeAt: Date.now(),
          claim
        }
        const outcome = await Effect.runPromise(
          backing.apply({ ...write, sets: [[token, '{"type":"t"}']], deletes: [] })
        )
        if (outcome._tag === "Committed") Object.assign(seen, { commit: commitId, size: seen.size + 1 })
        return outcome
      }
      expect(await apply("", "first", undefined)).toEqual({ _tag: "Committed", version: "1" })
      const messages: Array<string> = []
      await sub.subscribe(channel)
      sub.on("message", (_c: string, m: string) => messages.push(m))
      // A stale version, asking for the lock: rejected, and the lock is ours.
      const mine = claimOf("tok-a", true)
      const rejected = await apply("", "stale", mine)
      expect(rejected).toEqual({ _tag: "Conflict", version: "1", tookLock: true, rewound: false })
      expect(await client.get(lockKey)).toBe("tok-a")
      // Another lock-free attempt on the right version yields, writing nothing.
      expect(await apply("1", "other", claimOf("tok-b", false))).toEqual({ _tag: "LockHeld", version: "1" })
      expect(await client.hexists(`${keyPrefix}tokens`, "other")).toBe(0)
      // The holder commits: its write lands, the lock is gone and the release is announced.
      expect(await apply("1", "mine", mine)).toEqual({ _tag: "Committed", version: "2" })
      expect(await client.exists(lockKey)).toBe(0)
      expect(await client.hexists(`${keyPrefix}tokens`, "mine")).toBe(1)
      for (let i = 0; i < 50 && messages.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
      expect(messages).toEqual([""])
    } finally {
      await Promise.all([client.quit(), sub.quit()])
    }
  })

  // Catches: as below for the vault, an append re-sent after its first send committed
  // yielding to a writer that took the lock in between, so the record was built and
  // appended again.
  it("the audit's fence script answers a re-sent append whose first send committed AlreadyCommitted, though another writer holds the lock now", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("resent-audit")
    const lockKey = `${keyPrefix}lock`
    try {
      const redis = fromClient(client)
      const keys = appendKeysOf(auditKeys(keyPrefix))
      const record = buildNextRecord({ n: 1 }, null)
      const integrity = record.auditIntegrity as { eventHash: string; sequence: number }
      // A lock-free first attempt (yields to a holder; no claim token, no ask).
      const args = (commitId: string) => [
        "",
        JSON.stringify(record),
        JSON.stringify(integrity),
        integrity.eventHash,
        integrity.sequence,
        commitId,
        "1",
        "",
        "",
        `${lockKey}:released`,
        ""
      ]
      const run = (a: Array<string | number>) => Effect.runPromise(redis.script(Scripts.auditAppend, keys, a))
      expect(await run(args("c-resent"))).toEqual([1, 0])
      await client.set(lockKey, "another-writer", "PX", 5000)
      expect(await run(args("c-resent"))).toEqual([2])
      // Nothing appended the second time, and the other writer's lock is left as it was.
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
      expect(await client.get(lockKey)).toBe("another-writer")
      // Another call for that place in the chain still yields to the holder, writing nothing.
      expect(await run(args("c-other"))).toEqual([4])
      expect(await client.llen(`${keyPrefix}chain`)).toBe(1)
    } finally {
      await client.quit()
    }
  })

  // Catches: a re-sent call (ioredis re-sends a call in flight after a reconnect) whose
  // first send committed yielding to a writer that took the lock in between: LockHeld
  // says "nothing written", so the store ran fn again over its own commit.
  it("the vault's fence script answers a re-sent call whose first send committed AlreadyCommitted, though another writer holds the lock now", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("resent-vault")
    const lockKey = `${keyPrefix}lock`
    try {
      const backing = redisVaultBacking(fromClient(client), keyPrefix)
      // The first attempt of a lock-free operation (the adaptive policy's: no claim token, no ask).
      const claim: LockClaim = { token: "", ttlMs: 1000, channel: `${lockKey}:released`, ask: false, queueMs: 0 }
      const write = {
        expected: "",
        expectedCommit: "",
        expectedSize: 0,
        commitId: "c-resent",
        madeAt: Date.now(),
        sets: [["tok", '{"type":"t"}']] as Array<readonly [string, string]>,
        deletes: [],
        claim
      }
      const apply = () => Effect.runPromise(backing.apply(write))
      expect(await apply()).toEqual({ _tag: "Committed", version: "1" })
      await client.set(lockKey, "another-writer", "PX", 5000)
      expect(await apply()).toEqual({ _tag: "AlreadyCommitted", version: "1" })
      // Nothing written the second time, and the other writer's lock is left as it was.
      expect(await client.get(`${keyPrefix}version`)).toBe("1")
      expect(await client.llen(`${keyPrefix}log`)).toBe(1)
      expect(await client.get(lockKey)).toBe("another-writer")
      // A call whose commit is not logged still yields to the holder, writing nothing.
      expect(
        await Effect.runPromise(
          backing.apply({ ...write, expected: "1", expectedCommit: "c-resent", expectedSize: 1, commitId: "c-new" })
        )
      ).toEqual({
        _tag: "LockHeld",
        version: "1"
      })
      expect(await client.get(`${keyPrefix}version`)).toBe("1")
    } finally {
      await client.quit()
    }
  })

  for (const policy of ["never", "always", "adaptive"] as Array<LockPolicy>) {
    it(`"${policy}": 4 racing replicas keep one valid chain and lose no token`, async () => {
      const clients = Array.from({ length: 4 }, connect)
      const auditPrefix = uniquePrefix(`race-audit-${policy}`)
      const vaultPrefix = uniquePrefix(`race-vault-${policy}`)
      try {
        const replicas = clients.map((client) => ({
          sink: createAuditSink({
            store: createRedisAuditStore({ client, keyPrefix: auditPrefix, lock: policy }) as never
          }),
          vault: createTokenVault({
            store: createRedisTokenStore({ client, keyPrefix: vaultPrefix, lock: policy }) as never
          })
        }))
        const perReplica = 25
        const tokens = await Promise.all(
          replicas.map(async ({ sink, vault }, r) => {
            const mine: Array<string> = []
            for (let i = 0; i < perReplica; i++) {
              await sink.record({ replica: r, i })
              mine.push((await vault.tokenize(`value-${r}-${i}`, { type: "email" })).token)
            }
            return mine
          })
        )
        const chain = (await clients[0]!.lrange(`${auditPrefix}chain`, 0, -1)).map((line) => JSON.parse(line))
        expect(verifyAuditChain(chain).valid).toBe(true)
        expect(chain).toHaveLength(4 * perReplica)
        const events = new Set(chain.map((r: { replica: number; i: number }) => `${r.replica}/${r.i}`))
        expect(events.size).toBe(4 * perReplica)
        expect(await clients[0]!.hlen(`${vaultPrefix}tokens`)).toBe(4 * perReplica)
        const all = tokens.flat()
        expect(new Set(all).size).toBe(4 * perReplica)
        // No lock is left behind, whoever took it (a waiter, or a claim in a fenced script).
        expect(await clients[0]!.exists(`${auditPrefix}lock`, `${vaultPrefix}lock`)).toBe(0)
        // Nor a place in the lock's queue: a waiter leaves it when its turn comes, it commits or it gives up.
        expect(await clients[0]!.zcard(waitersKeyOf(`${auditPrefix}lock`))).toBe(0)
        expect(await clients[0]!.zcard(waitersKeyOf(`${vaultPrefix}lock`))).toBe(0)
      } finally {
        await Promise.all(clients.map((c) => c.quit()))
      }
    })
  }
})
