/**
 * A call re-sent behind the store's back (ioredis after a reconnect) meeting its own
 * first send's commit, however many commits followed it, against real Redis: the scripts
 * keep commit ids for the last 1,000 commits and for every commit younger than
 * COMMIT_IDS_KEPT_SECONDS (ARGV), trim the rest a few per commit, and flag a conflict
 * they cannot prove; the store fails such a conflict closed on a call too old for the
 * kept ids to prove it, and retries it on a younger one (an idle replica far behind).
 */
import { describe, expect, it } from "vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { fromClient } from "../src/RedisClient.js"
import { appendOnce, type AppendContext } from "../src/internal/audit/append.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { now } from "../src/internal/deadline.js"
import { COMMIT_IDS_KEPT_SECONDS, COMMITS_KEPT } from "../src/internal/keys.js"
import { PROVABLE_CALL_AGE_MS } from "../src/internal/resentCalls.js"
import { LOG_BOUND, redisVaultBacking } from "../src/internal/vault/backing.js"
import { resolvingApply } from "../src/internal/vault/commit.js"
import { append } from "./support/facadePaths.js"
import { uniquePrefix } from "./support/keys.js"
import { sleep } from "./support/replica.js"
import {
  appendCall,
  appendMany,
  keptIds,
  referenceAppend,
  vaultApplyCall,
  vaultCommits,
  vaultWrite
} from "./support/resentCalls.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

describe("audit_append: commit ids kept by count and by time", () => {
  // Catches: the ids of the last 1,000 records as the only proof, so a call ioredis
  // re-sent after 1,300 commits (a quarter of a second at full speed) answered Conflict
  // and the store appended the event twice.
  it("a call re-sent after COMMITS_KEPT + 300 later commits, all younger than the kept seconds, is AlreadyCommitted", async () => {
    const client = connect()
    const prefix = uniquePrefix("resend-time")
    const { calls } = await appendMany(client, prefix, COMMITS_KEPT + 300, COMMIT_IDS_KEPT_SECONDS)
    for (const index of [0, 1, 150, 299]) {
      const call = calls[index]!
      const again = await appendCall(client, prefix, call.previous, call.id, COMMIT_IDS_KEPT_SECONDS)
      expect({ index, reply: again.reply }).toEqual({ index, reply: [2] })
    }
    expect(await client.llen(`${prefix}chain`)).toBe(COMMITS_KEPT + 300)
    expect(await keptIds(client, prefix)).toEqual({
      sequences: Array.from({ length: COMMITS_KEPT + 300 }, (_, i) => i + 1),
      floor: 1
    })
  })

  // (The last call, id-1300, ends in "0": a commit whose id's last byte is a multiple of 8 trims.)
  it("kept by count only (no kept seconds), a call re-sent with COMMITS_KEPT - 1 records after it is AlreadyCommitted; one further back is an unproven Conflict", async () => {
    const client = connect()
    const prefix = uniquePrefix("resend-count")
    const total = COMMITS_KEPT + 300
    const { calls } = await appendMany(client, prefix, total)
    const known = calls[total - COMMITS_KEPT]!
    expect((await appendCall(client, prefix, known.previous, known.id)).reply).toEqual([2])
    const older = calls[total - COMMITS_KEPT - 1]!
    const again = (await appendCall(client, prefix, older.previous, older.id)).reply
    expect([again[0], again[2], again[3]]).toEqual([0, 0, 1])
    // A conflict on a place still kept is proven (the fourth element 0).
    const other = await appendCall(client, prefix, known.previous, "another-id")
    expect([other.reply[0], other.reply[3]]).toEqual([0, 0])
    expect(await client.llen(`${prefix}chain`)).toBe(total)
    const kept = await keptIds(client, prefix)
    expect(kept.sequences).toEqual(Array.from({ length: COMMITS_KEPT }, (_, i) => total - COMMITS_KEPT + 1 + i))
    expect(kept.floor).toBe(total - COMMITS_KEPT + 1)
  })

  it("once ids are older than the kept seconds, a commit drops them down to the last COMMITS_KEPT, at most 512 at a time", async () => {
    const client = connect()
    const prefix = uniquePrefix("resend-trim")
    // Kept 30 s while the chain fills, however slow the machine; then asked to keep 1 s.
    const { head } = await appendMany(client, prefix, COMMITS_KEPT + 800, COMMIT_IDS_KEPT_SECONDS)
    expect(await keptIds(client, prefix)).toEqual({
      sequences: Array.from({ length: COMMITS_KEPT + 800 }, (_, i) => i + 1),
      floor: 1
    })
    await sleep(2100)
    let previous = head
    const lengths: Array<number> = []
    for (let i = 1; i <= 3; i++) {
      const { reply, integrity } = await appendCall(client, prefix, previous, `late-${i}`, 1)
      expect(reply).toEqual([1, 0])
      previous = integrity
      lengths.push((await keptIds(client, prefix)).sequences.length)
    }
    // 1,801 ids: drop 512, then the 289 left beyond the last 1,000 and the one that joined them, then 1.
    expect(lengths).toEqual([1289, 1000, 1000])
    const appended = COMMITS_KEPT + 803
    expect((await keptIds(client, prefix)).floor).toBe(appended - COMMITS_KEPT + 1)
  })

  it("with a reference writer appending every other record, the floor walks past its sequences and keeps up with the last COMMITS_KEPT records", async () => {
    const client = connect()
    const prefix = uniquePrefix("resend-mixed")
    const total = COMMITS_KEPT + 1400
    let head: Integrity | null = null
    for (let i = 1; i <= total; i++) {
      if (i % 2 === 0) {
        head = await referenceAppend(client, prefix, head, { i })
      } else {
        // Ids as the store makes them: a process part, then a base-36 counter.
        const { reply, integrity } = await appendCall(client, prefix, head, `p-${i.toString(36)}`, 0)
        expect(reply).toEqual([1, 0])
        head = integrity
      }
    }
    const { sequences, floor } = await keptIds(client, prefix)
    const ours = (from: number) => Array.from({ length: (total - from) / 2 }, (_, k) => from + 1 + 2 * k)
    // Every id of the last COMMITS_KEPT records is kept; below them, only what the floor has not passed yet.
    expect(sequences.filter((s) => s > total - COMMITS_KEPT)).toEqual(ours(total - COMMITS_KEPT))
    expect(floor).toBeGreaterThan(total - COMMITS_KEPT - 64)
    expect(sequences.every((s) => s >= floor! && s % 2 === 1)).toBe(true)
  })
})

describe("audit_append: a floor that is not a number", () => {
  // Catches: the conflict path comparing the sequence with tonumber(floor) = nil, a Lua
  // error instead of a reply, so no replica could append behind such a floor.
  it("is read as no floor: a stale call is a proven Conflict, and the next commit lands", async () => {
    const client = connect()
    const prefix = uniquePrefix("floor-garbage")
    const { calls, head } = await appendMany(client, prefix, 20, 0)
    await client.set(`${prefix}commits:floor`, "not-a-number")
    const stale = await appendCall(client, prefix, calls[0]!.previous, "stale", 0)
    expect([stale.reply[0], stale.reply[3]]).toEqual([0, 0])
    const next = await appendCall(client, prefix, head, "next-0", 0)
    expect(next.reply).toEqual([1, 0])
    expect((await keptIds(client, prefix)).sequences.length).toBe(21)
  })

  // Catches: a floor past the chain's end (no commit writes one: a hostile write, or left
  // by a rewind) trusted, so the trim never ran again and every stale call was unproven.
  it.each(["5000 0", "99999999999999999999 0"])(
    "past the chain's end (%s), is read as no floor: a stale call is proven in the script and the lookup, and the next commit rewrites it",
    async (floor) => {
      const client = connect()
      const prefix = uniquePrefix("floor-past-end")
      const { calls, head } = await appendMany(client, prefix, 20, 0)
      await client.set(`${prefix}commits:floor`, floor)
      const stale = await appendCall(client, prefix, calls[2]!.previous, "stale", 0)
      expect([stale.reply[0], stale.reply[3]]).toEqual([0, 0])
      const backing = redisAuditBacking(fromClient(client), prefix)
      expect(await Effect.runPromise(backing.isCommitted(3, "stale", null))).toBe("not committed")
      expect((await appendCall(client, prefix, head, "next", 0)).reply).toEqual([1, 0])
      expect((await keptIds(client, prefix)).floor).toBe(1)
    }
  )
})

describe("the audit store on a conflict the kept ids cannot prove", () => {
  // A chain of COMMITS_KEPT + 50 ids kept by count only, and a write of sequence 1 on it
  // (below the floor) that no call ever sent: answered Conflict with unproven = 1.
  const belowTheFloor = async (client: Redis, prefix: string) => {
    await appendMany(client, prefix, COMMITS_KEPT + 50, 0)
    const record = buildNextRecord({ commitId: "never-sent" }, null)
    const integrity = record.auditIntegrity as Integrity
    return {
      backing: redisAuditBacking(fromClient(client), prefix),
      write: (madeAt: number) => ({
        expectedPrev: "",
        recordJson: JSON.stringify(record),
        integrityJson: JSON.stringify(integrity),
        integrity,
        eventHash: integrity.eventHash,
        sequence: 1,
        commitId: `call-${madeAt}`,
        madeAt,
        seen: null,
        claim: undefined,
        witness: null
      })
    }
  }
  const contextOf = (backing: AppendContext["backing"], prefix: string) => ({ backing, prefix }) as AppendContext

  // Catches: an unproven conflict trusted on a call older than the kept ids can prove,
  // so a re-send whose first send committed has the event appended twice.
  it("on a call older than PROVABLE_CALL_AGE_MS: CommitOutcomeUnknown, nothing written", async () => {
    const client = connect()
    const prefix = uniquePrefix("unproven-old")
    const { backing, write } = await belowTheFloor(client, prefix)
    const exit = await Effect.runPromiseExit(
      appendOnce(contextOf(backing, prefix), write(now() - PROVABLE_CALL_AGE_MS - 1))
    )
    expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : exit).toBe(
      "CommitOutcomeUnknown"
    )
    expect(await client.llen(`${prefix}chain`)).toBe(COMMITS_KEPT + 50)
  })

  // Catches: every unproven conflict failed closed, so an idle replica far behind could
  // never append again.
  it("on a young call: a Conflict; an idle replica whose head is 1,050 commits below the floor appends on its second try", async () => {
    const client = connect()
    const prefix = uniquePrefix("unproven-young")
    const { backing, write } = await belowTheFloor(client, prefix)
    const outcome = await Effect.runPromise(appendOnce(contextOf(backing, prefix), write(now())))
    expect(outcome).toMatchObject({ _tag: "Conflict", unproven: true })

    const idlePrefix = uniquePrefix("idle-replica")
    const idle = createRedisAuditStore({ client, keyPrefix: idlePrefix, startupChecks: "off" })
    await append(idle, { n: 0 })
    // Another writer appends 1,050 records, its ids kept by count only: the floor passes 2.
    let head = JSON.parse((await client.get(`${idlePrefix}head`))!) as Integrity
    for (let i = 1; i <= COMMITS_KEPT + 50; i++) {
      const { reply, integrity } = await appendCall(client, idlePrefix, head, `other-${i}`, 0)
      expect(reply).toEqual([1, 0])
      head = integrity
    }
    expect((await keptIds(client, idlePrefix)).floor).toBeGreaterThan(2)
    let builds = 0
    await idle.transaction(async ({ readLastIntegrity, persist }) => {
      builds++
      await persist(buildNextRecord({ n: "again" }, (await readLastIntegrity()) as Integrity | null))
    })
    // Built on its cached head (sequence 1), refused as unproven, built again on the real one.
    expect(builds).toBe(2)
    const chain = await client.lrange(`${idlePrefix}chain`, 0, -1)
    expect(chain.length).toBe(COMMITS_KEPT + 52)
    expect(chain.filter((json) => json.includes('"again"')).length).toBe(1)
  })
})

describe("vault_apply: the change log kept by count and by time", () => {
  // Catches: the log trimmed to its last 1,000 entries as the only proof, so an apply
  // re-sent after 1,200 commits answered Conflict and the diff was made again (a token
  // minted twice).
  it("an apply re-sent after LOG_BOUND + 200 later commits is AlreadyCommitted, and the log keeps them all", async () => {
    const client = connect()
    const prefix = uniquePrefix("resend-vault")
    const backing = redisVaultBacking(fromClient(client), prefix)
    const first = vaultWrite("", "", 0, "first")
    expect(await Effect.runPromise(backing.apply(first))).toEqual({ _tag: "Committed", version: "1" })
    let point = { version: "1", commit: "first" }
    for (let i = 1; i <= LOG_BOUND + 200; i++) {
      const write = vaultWrite(point.version, point.commit, i, `w${i}`)
      const outcome = await Effect.runPromise(backing.apply(write))
      expect(outcome._tag).toBe("Committed")
      point = { version: String(i + 1), commit: `w${i}` }
    }
    expect(await Effect.runPromise(backing.apply(first))).toEqual({ _tag: "AlreadyCommitted", version: point.version })
    const middle = vaultWrite("100", "w99", 100, "w100")
    expect(await Effect.runPromise(backing.apply(middle))).toEqual({ _tag: "AlreadyCommitted", version: point.version })
    expect(await Effect.runPromise(backing.apply(vaultWrite("1", "first", 1, "stranger")))).toEqual({
      _tag: "Conflict",
      version: point.version,
      tookLock: false,
      rewound: false
    })
    expect(await client.llen(`${prefix}log`)).toBe(LOG_BOUND + 201)
    expect(await client.hlen(`${prefix}tokens`)).toBe(LOG_BOUND + 201)
  })
})

describe("vault_apply: the change log kept by count only", () => {
  // Catches: a re-sent apply whose version left the log answered as a proven Conflict
  // (fn run again on a call too old for the kept entries to prove it).
  it("a re-send whose version left the log is an unproven Conflict, CommitOutcomeUnknown on an old call; the log stays within 16 of its bound", async () => {
    const client = connect()
    const prefix = uniquePrefix("vault-count")
    await vaultCommits(client, prefix, LOG_BOUND + 200)
    const length = await client.llen(`${prefix}log`)
    expect(length).toBeGreaterThanOrEqual(LOG_BOUND)
    expect(length).toBeLessThan(LOG_BOUND + 16)
    const current = String(LOG_BOUND + 200)
    // The first apply, re-sent: its entry is gone.
    expect(await vaultApplyCall(client, prefix, { expected: "", seen: "", size: 0, id: "c0" })).toEqual([
      0,
      current,
      0,
      1
    ])
    // One still logged, re-sent: already committed; a stranger at that version: a proven Conflict.
    const at300 = { expected: "300", seen: "c299", size: 300 }
    expect(await vaultApplyCall(client, prefix, { ...at300, id: "c300" })).toEqual([2, current])
    expect(await vaultApplyCall(client, prefix, { ...at300, id: "stranger" })).toEqual([0, current, 0, 0])

    const backing = redisVaultBacking(fromClient(client), prefix)
    const resend = { ...vaultWrite("", "", 0, "c0"), sets: [["tok-c0", '{"type":"t"}']] as const }
    const young = await Effect.runPromise(resolvingApply(backing, prefix)({ ...resend, madeAt: now() }))
    expect(young).toMatchObject({ _tag: "Conflict", unproven: true })
    const old = await Effect.runPromiseExit(
      resolvingApply(backing, prefix)({ ...resend, madeAt: now() - PROVABLE_CALL_AGE_MS - 1 })
    )
    expect(Exit.isFailure(old) && old.cause._tag === "Fail" ? old.cause.error._tag : old).toBe("CommitOutcomeUnknown")
    expect(await client.get(`${prefix}version`)).toBe(current)
  })
})
