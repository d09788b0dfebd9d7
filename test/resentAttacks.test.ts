/**
 * Attacks on the kept commit ids (audit `commits`, the vault's change log), against real
 * Redis: fleets mixed with haechi-store-redis writers, commit ids whose shape could starve
 * a trim, stamps and floors that do not read, re-sent and lost calls in a log with gaps.
 * Each holds that no call commits twice, no script writes half of anything, and what is
 * kept stays bounded.
 */
import { describe, expect, it } from "vitest"
import * as Effect from "effect/Effect"
import type { Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import type { Integrity } from "../src/haechi.js"
import { fromClient } from "../src/RedisClient.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { now } from "../src/internal/deadline.js"
import { COMMITS_KEPT, fenceKeyOf, waitersKeyOf } from "../src/internal/keys.js"
import { callScriptBySha, Scripts } from "../src/internal/scripts.js"
import { LOG_BOUND, redisVaultBacking, type VaultWrite } from "../src/internal/vault/backing.js"
import { resolvingApply } from "../src/internal/vault/commit.js"
import { uniquePrefix } from "./support/keys.js"
import {
  appendCall,
  keptIds,
  referenceAppend,
  referenceApply,
  vaultApplyCall,
  vaultCommits,
  vaultWrite
} from "./support/resentCalls.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

/** `n` appends of ours (ids `<tag><i>`, kept by count only), with `between` run before each. */
const ourAppends = async (
  client: Redis,
  prefix: string,
  n: number,
  idOf: (i: number) => string,
  between: (i: number, head: Integrity | null) => Promise<Integrity | null> = async (_, head) => head
) => {
  let head: Integrity | null = null
  for (let i = 1; i <= n; i++) {
    head = await between(i, head)
    const { reply, integrity } = await appendCall(client, prefix, head, idOf(i), 0)
    expect(reply[0]).toBe(1)
    head = integrity
  }
  return head
}

/** A `between` for `ourAppends` that runs `action` once, before the `step`-th append. */
const at =
  (step: number, action: () => Promise<unknown>) =>
  async (i: number, head: Integrity | null): Promise<Integrity | null> => {
    if (i === step) await action()
    return head
  }

describe("audit `commits` stays bounded", () => {
  it("one of our appends per 50 records (the rest haechi-store-redis writers): the ids of the last COMMITS_KEPT records, the floor just below", async () => {
    const client = connect()
    const prefix = uniquePrefix("bound-fleet")
    let n = 0
    await ourAppends(
      client,
      prefix,
      300,
      (i) => `p-${i.toString(36)}`,
      async (_, head) => {
        for (let j = 0; j < 49; j++) head = await referenceAppend(client, prefix, head, { ref: n++ })
        return head
      }
    )
    const total = 300 * 50
    const { sequences, floor } = await keptIds(client, prefix)
    expect(sequences.length).toBeLessThanOrEqual(COMMITS_KEPT / 50 + 1)
    expect(floor).toBeGreaterThan(total - COMMITS_KEPT - 50)
  }, 60_000)

  // One process's audit and vault stores share the id counter: 1 append and 3 vault
  // commits a request leave the audit ids one shape of last character.
  it("ids of one shape (a counter at a period of 4): the last COMMITS_KEPT kept, no more", async () => {
    const client = connect()
    const prefix = uniquePrefix("bound-period")
    await ourAppends(client, prefix, COMMITS_KEPT + 400, (i) => `proc${(4 * i + 2).toString(36)}`)
    expect((await keptIds(client, prefix)).sequences.length).toBe(COMMITS_KEPT)
  }, 60_000)

  it("an id stamped far in the future (hostile, or a clock stepped back) at the floor does not stall the trim", async () => {
    const client = connect()
    const prefix = uniquePrefix("bound-future")
    await ourAppends(
      client,
      prefix,
      COMMITS_KEPT + 300,
      (i) => `f-${i}`,
      at(2, () => client.hset(`${prefix}commits`, "1", "f-1 99999999999"))
    )
    expect((await keptIds(client, prefix)).sequences.length).toBe(COMMITS_KEPT)
  }, 60_000)

  for (const floor of ["-50", "2.5", "garbage", "9 x"]) {
    it(`a floor of ${JSON.stringify(floor)} reads as none: the trim walks from the start and rewrites it`, async () => {
      const client = connect()
      const prefix = uniquePrefix("bound-floor")
      await ourAppends(
        client,
        prefix,
        COMMITS_KEPT + 200,
        (i) => `o-${i}`,
        at(10, () => client.set(`${prefix}commits:floor`, floor))
      )
      expect(await keptIds(client, prefix)).toEqual({
        sequences: Array.from({ length: COMMITS_KEPT }, (_, i) => 201 + i),
        floor: 201
      })
    }, 60_000)
  }
})

describe("audit re-sends against odd state", () => {
  const twoRecords = async (client: Redis, prefix: string) => {
    const a = await appendCall(client, prefix, null, "a-1", 30)
    await appendCall(client, prefix, a.integrity, "a-2", 30)
  }

  it("a floor that does not read: a stale call that asks for the lock is a Conflict, the lock taken as asked", async () => {
    const client = connect()
    const prefix = uniquePrefix("odd-floor-claim")
    await twoRecords(client, prefix)
    await client.set(`${prefix}commits:floor`, "garbage")
    const stale = await appendCall(client, prefix, null, "stale", 30, { token: "tok", ttl: 5000 })
    expect([stale.reply[0], stale.reply[2], stale.reply[3]]).toEqual([0, 1, 0])
    expect(await client.get(`${prefix}lock`)).toBe("tok")
  })

  it("a floor above the call's sequence (at the chain's end): the script and the lost-reply lookup both call it unproven", async () => {
    const client = connect()
    const prefix = uniquePrefix("odd-floor-agree")
    await twoRecords(client, prefix)
    await client.set(`${prefix}commits:floor`, "3 0")
    const script = (await appendCall(client, prefix, null, "stale", 30)).reply[3]
    const lookup = await Effect.runPromise(redisAuditBacking(fromClient(client), prefix).isCommitted(1, "stale", null))
    expect({ script, lookup }).toEqual({ script: 1, lookup: "unproven" })
  })

  it("`commits` of the wrong type on a re-send that asks for the lock: WrongType, no lock, no append", async () => {
    const client = connect()
    const prefix = uniquePrefix("odd-wrongtype")
    await twoRecords(client, prefix)
    await client.del(`${prefix}commits`)
    await client.set(`${prefix}commits`, "x")
    const again = await appendCall(client, prefix, null, "a-1", 30, { token: "tok", ttl: 5000 })
    expect(again.reply).toEqual([3, `${prefix}commits`])
    expect(await client.get(`${prefix}lock`)).toBeNull()
    expect(await client.llen(`${prefix}chain`)).toBe(2)
  })
})

describe("vault re-sends in a log with gaps", () => {
  /** The vault's backing with `target` committed, then `unlogged` haechi-store-redis bumps and `later` commits of ours. */
  const afterTarget = async (client: Redis, prefix: string, unlogged: number, later: number) => {
    const backing = redisVaultBacking(fromClient(client), prefix)
    const apply = (w: VaultWrite) => Effect.runPromise(backing.apply(w))
    expect(await apply(vaultWrite("", "", 0, "v1"))).toMatchObject({ _tag: "Committed" })
    const target = vaultWrite("1", "v1", 1, "target")
    expect(await apply(target)).toMatchObject({ _tag: "Committed", version: "2" })
    for (let i = 0; i < unlogged; i++) await referenceApply(client, prefix, `ref-${i}`)
    let point = { version: String(2 + unlogged), commit: unlogged > 0 ? "" : "target" }
    for (let i = 0; i < later; i++) {
      const o = await apply(vaultWrite(point.version, point.commit, 2 + unlogged + i, `w${i}`))
      expect(o._tag).toBe("Committed")
      point = { version: (o as { version: string }).version, commit: `w${i}` }
    }
    return { backing, target, version: point.version }
  }

  // Catches: the search for the re-sent call's entry limited to the newest LOG_BOUND
  // entries once a version went unlogged: an unproven Conflict on a young call, retried:
  // the token minted twice.
  for (const [unlogged, later] of [
    [1, LOG_BOUND],
    [5, 10],
    [40, LOG_BOUND + 30]
  ] as const) {
    it(`re-sent after ${unlogged} unlogged bumps and ${later} commits of ours: AlreadyCommitted`, async () => {
      const client = connect()
      const prefix = uniquePrefix("gap-resend")
      const { backing, target, version } = await afterTarget(client, prefix, unlogged, later)
      const again = await Effect.runPromise(resolvingApply(backing, prefix)({ ...target, madeAt: now() }))
      expect(again).toEqual({ _tag: "AlreadyCommitted", version })
      expect(await client.hlen(`${prefix}tokens`)).toBe(2 + unlogged + later)
    }, 60_000)
  }

  // Catches: the lost-reply lookup replaying at most LOG_BOUND entries, so a young call
  // whose first send committed failed with CommitOutcomeUnknown though the log held it.
  it("a lost reply after LOG_BOUND + 10 later commits resolves as AlreadyCommitted", async () => {
    const client = connect()
    const prefix = uniquePrefix("gap-lost")
    const { backing, target, version } = await afterTarget(client, prefix, 0, LOG_BOUND + 10)
    const lost = Promise.reject(new Error("Connection is closed."))
    lost.catch(() => {})
    const outcome = await Effect.runPromise(resolvingApply(backing, prefix)({ ...target, madeAt: now() }, lost))
    expect(outcome).toEqual({ _tag: "AlreadyCommitted", version })
  }, 60_000)

  it("an entry that does not read where the re-sent call's would be: an unproven Conflict, nothing written", async () => {
    const client = connect()
    const prefix = uniquePrefix("gap-garbage")
    const { backing, target } = await afterTarget(client, prefix, 0, 5)
    await client.lset(`${prefix}log`, 1, "garbage")
    expect(await Effect.runPromise(backing.apply(target))).toMatchObject({ _tag: "Conflict", unproven: true })
    expect(await client.get(`${prefix}version`)).toBe("7")
  })

  it("a log entry stamped far in the future does not stall the log's trim", async () => {
    const client = connect()
    const prefix = uniquePrefix("gap-future")
    await vaultCommits(client, prefix, LOG_BOUND + 200, async (v) => {
      if (v === 0) await client.lset(`${prefix}log`, 0, '1 c0 99999999999 ["tok-c0"]')
    })
    expect(await client.llen(`${prefix}log`)).toBeLessThan(LOG_BOUND + 16)
  }, 60_000)
})

describe("state that Redis lost or others wrote, round two", () => {
  // Catches: the vault's log going 1..10 and then 1, 2 after the version key was lost, so
  // the binary search read a miss as proof and the re-sent call ran again.
  it("a vault whose version key was deleted: the log restarts with it, and a re-sent call is AlreadyCommitted (script, store, lost reply)", async () => {
    const client = connect()
    const prefix = uniquePrefix("lost-version")
    await vaultCommits(client, prefix, 10)
    await client.del(`${prefix}version`)
    expect(await vaultApplyCall(client, prefix, { expected: "", seen: "", size: 10, id: "k" })).toEqual([1, "1"])
    const target = { expected: "1", seen: "k", size: 11, id: "target" }
    expect(await vaultApplyCall(client, prefix, target)).toEqual([1, "2"])
    for (let i = 0; i < 3; i++) await referenceApply(client, prefix, `ref-${i}`)
    expect((await client.lrange(`${prefix}log`, 0, -1)).map((e) => e.split(" ")[0])).toEqual(["1", "2"])
    expect(await vaultApplyCall(client, prefix, target)).toEqual([2, "5"])
    const backing = redisVaultBacking(fromClient(client), prefix)
    const write = vaultWrite("1", "k", 11, "target")
    expect(await Effect.runPromise(resolvingApply(backing, prefix)(write))).toMatchObject({ _tag: "AlreadyCommitted" })
    const lost = Promise.reject(new Error("Connection is closed."))
    lost.catch(() => {})
    expect(await Effect.runPromise(resolvingApply(backing, prefix)(write, lost))).toMatchObject({
      _tag: "AlreadyCommitted"
    })
  })

  // Catches: the walk of 512 sequences a trim falling behind for good when more than 512
  // haechi-store-redis records come between two appends of ours.
  it("one of our appends per 2,000 records: the floor jumps past the other writers' records, a couple of ids kept", async () => {
    const client = connect()
    const prefix = uniquePrefix("sparse")
    let head: Integrity | null = null
    for (let i = 1; i <= 40; i++) {
      const records: Array<string> = []
      for (let j = 0; j < 1999; j++) {
        const record = buildNextRecord({ ref: `${i}-${j}` }, head)
        head = record.auditIntegrity as Integrity
        records.push(JSON.stringify(record))
      }
      const batch = client.multi()
      for (let k = 0; k < records.length; k += 500) batch.rpush(`${prefix}chain`, ...records.slice(k, k + 500))
      await batch.set(`${prefix}head`, JSON.stringify(head)).set(`${prefix}head:hash`, head!.eventHash).exec()
      const { reply, integrity } = await appendCall(client, prefix, head, `sparse-${i}`, 0)
      expect(reply[0]).toBe(1)
      head = integrity
    }
    const { sequences, floor } = await keptIds(client, prefix)
    expect(sequences.length).toBeLessThanOrEqual(2)
    expect(floor).toBeGreaterThan(40 * 2000 - COMMITS_KEPT - 2000)
  }, 120_000)

  // Catches: a fence counter that is a string but no integer passing the type check, so the
  // INCR after the lock was taken (lock_acquire) or the record written (a hand-off) failed.
  it("a fence counter holding no integer: lock_acquire leaves the lock free, a commit that would hand the lock on is refused with nothing written", async () => {
    const client = connect()
    const prefix = uniquePrefix("fence-abc")
    const lock = `${prefix}lock`
    await client.set(fenceKeyOf(lock), "abc")
    const acquire = await callScriptBySha(
      client,
      Scripts.lockAcquire,
      [lock, fenceKeyOf(lock), waitersKeyOf(lock)],
      ["tok", 60_000, ""]
    ).then(
      () => "answered",
      (error: Error) => error.message
    )
    expect(acquire).toBe(`WRONGTYPE ${fenceKeyOf(lock)} holds the wrong type: nothing written (no integer)`)
    expect(await client.get(lock)).toBeNull()
    await client.set(lock, "mine")
    await client.zadd(waitersKeyOf(lock), Date.now() + 60_000, "other 5000")
    const { reply } = await appendCall(client, prefix, null, "fenced-1", 0, { token: "mine", ttl: 5000 })
    expect(reply).toEqual([3, fenceKeyOf(lock)])
    expect(await client.llen(`${prefix}chain`)).toBe(0)
    expect(await client.get(lock)).toBe("mine")
  })

  it("commits:floor of the wrong type: the commit is refused naming it, nothing written", async () => {
    const client = connect()
    const prefix = uniquePrefix("floor-list")
    await client.rpush(`${prefix}commits:floor`, "x")
    const { reply } = await appendCall(client, prefix, null, "f-1", 30)
    expect(reply).toEqual([3, `${prefix}commits:floor`])
    expect(await client.exists(`${prefix}chain`, `${prefix}commits`, `${prefix}head`)).toBe(0)
  })
})
