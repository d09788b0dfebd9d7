/**
 * Kept commit ids that Redis lost (eviction, a manual DEL) while the chain or vault stayed,
 * against real Redis: the audit's `commits` with its floor kept, the vault's `log` with its
 * mark kept. A re-sent call then cannot prove it did not commit before, so the scripts flag
 * its conflict (unproven 2) and the store fails it closed at any age; the next commit
 * restarts the proof with a loss mark that holds for the keep. Neither key at all is a
 * store only haechi-store-redis wrote so far, and no alarm.
 */
import { describe, expect, it } from "vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import * as AuditStore from "../src/AuditStore.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import { fromClient } from "../src/RedisClient.js"
import { appendOnce, type AppendContext } from "../src/internal/audit/append.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { now } from "../src/internal/deadline.js"
import { COMMIT_IDS_KEPT_SECONDS, COMMITS_KEPT } from "../src/internal/keys.js"
import { redisVaultBacking } from "../src/internal/vault/backing.js"
import { resolvingApply } from "../src/internal/vault/commit.js"
import { append } from "./support/facadePaths.js"
import { uniquePrefix } from "./support/keys.js"
import { sleep } from "./support/replica.js"
import {
  appendCall,
  appendMany,
  referenceApply,
  vaultApplyCall,
  vaultCommits,
  vaultWrite
} from "./support/resentCalls.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

/** Appends `event` as haechi's core does, through the Promise facade. */
const facadeAppender = (client: Redis, prefix: string) => {
  const store = createRedisAuditStore({ client, keyPrefix: prefix })
  return (event: object) => append(store, event)
}

/** Appends `event` through the Effect store (`AuditStore.make`). */
const effectAppender = async (client: Redis, prefix: string) => {
  const store = await Effect.runPromise(
    AuditStore.make({ keyPrefix: prefix }).pipe(Effect.provide(RedisClient.layerFromClient(client)))
  )
  return (event: object) =>
    Effect.runPromise(
      store.transaction((tx) =>
        Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord(event, head as Integrity | null)))
      )
    )
}

/** The failure's tag of a failed exit, else the exit. */
const failureTag = (exit: Exit.Exit<unknown, { readonly _tag: string }>) =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : exit

describe("audit_append: kept ids that Redis lost", () => {
  const kept = COMMIT_IDS_KEPT_SECONDS
  const floorOf = async (client: Redis, prefix: string) => (await client.get(`${prefix}commits:floor`)) ?? ""

  // Catches: a floor trusted with `commits` gone (evicted, DEL), so a call re-sent after
  // the loss missed its own first send's commit, answered a proven Conflict, and the store
  // appended the event twice.
  it("`commits` deleted: a re-sent call is a Conflict with unproven 2, and the store fails it closed at any age", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-lost")
    const { calls } = await appendMany(client, prefix, 5, COMMIT_IDS_KEPT_SECONDS)
    await client.del(`${prefix}commits`)
    const again = await appendCall(client, prefix, calls[4]!.previous, calls[4]!.id, COMMIT_IDS_KEPT_SECONDS)
    expect([again.reply[0], again.reply[3]]).toEqual([0, 2])

    const backing = redisAuditBacking(fromClient(client), prefix)
    const record = buildNextRecord({ commitId: "young" }, calls[4]!.previous)
    const integrity = record.auditIntegrity as Integrity
    const write = {
      expectedPrev: integrity.previousHash ?? "",
      recordJson: JSON.stringify(record),
      integrityJson: JSON.stringify(integrity),
      integrity,
      eventHash: integrity.eventHash,
      sequence: integrity.sequence,
      commitId: "young",
      madeAt: now(),
      seen: null,
      claim: undefined,
      witness: null
    }
    const exit = await Effect.runPromiseExit(appendOnce({ backing, prefix } as AppendContext, write))
    expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : exit).toBe(
      "CommitOutcomeUnknown"
    )
    expect(await Effect.runPromise(backing.isCommitted(5, calls[4]!.id, null))).toBe("ids lost")
    expect(await client.llen(`${prefix}chain`)).toBe(5)
  })

  // Catches: the next commit after the loss trimming as usual, so the floor went on
  // vouching for ids it never held and the re-send after it appended twice.
  it("the next commit restarts the floor at its own sequence; below it, a re-send is unproven 2 and a later call a proven Conflict", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-restart")
    const { calls, head } = await appendMany(client, prefix, 5, COMMIT_IDS_KEPT_SECONDS)
    await client.del(`${prefix}commits`)
    const next = await appendCall(client, prefix, head, "after-loss", COMMIT_IDS_KEPT_SECONDS)
    expect(next.reply).toEqual([1, 0])
    const [floor, stamp, lostAt] = (await floorOf(client, prefix)).split(" ").map(Number)
    expect(floor).toBe(6)
    expect(lostAt).toBe(stamp)
    const resent = await appendCall(client, prefix, calls[3]!.previous, calls[3]!.id, COMMIT_IDS_KEPT_SECONDS)
    expect([resent.reply[0], resent.reply[3]]).toEqual([0, 2])
    // Built on the head the restart committed on: its place (6) is kept, so a miss is proof.
    const later = await appendCall(client, prefix, head, "built-on-5", COMMIT_IDS_KEPT_SECONDS)
    expect([later.reply[0], later.reply[3]]).toEqual([0, 0])
    const backing = redisAuditBacking(fromClient(client), prefix)
    expect(await Effect.runPromise(backing.isCommitted(4, calls[3]!.id, null))).toBe("ids lost")
    expect(await Effect.runPromise(backing.isCommitted(6, "after-loss", null))).toBe("committed")
    expect(await client.llen(`${prefix}chain`)).toBe(6)
  })

  // Catches: a chain that only haechi-store-redis wrote so far (neither key: it keeps no ids)
  // taken for a loss, so our first commit there restarted the floor and every young call
  // of ours racing it failed CommitOutcomeUnknown. (Both keys lost together look the same:
  // that loss is not told apart, as the README says.)
  it("neither `commits` nor its floor on a non-empty chain is no loss: the first commit writes a plain floor, and a stale call is a proven Conflict", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-none-yet")
    const { calls, head } = await appendMany(client, prefix, 5, COMMIT_IDS_KEPT_SECONDS)
    await client.del(`${prefix}commits`, `${prefix}commits:floor`)
    const stranger = await appendCall(client, prefix, calls[2]!.previous, "before-ours", COMMIT_IDS_KEPT_SECONDS)
    expect([stranger.reply[0], stranger.reply[3]]).toEqual([0, 0])
    expect((await appendCall(client, prefix, head, "first-ours", COMMIT_IDS_KEPT_SECONDS)).reply).toEqual([1, 0])
    expect((await floorOf(client, prefix)).split(" ")).toHaveLength(2)
    const stale = await appendCall(client, prefix, calls[2]!.previous, "racing-ours", COMMIT_IDS_KEPT_SECONDS)
    expect([stale.reply[0], stale.reply[3]]).toEqual([0, 0])
    expect(await client.llen(`${prefix}chain`)).toBe(6)
  })

  // Catches: `commits` lost with its floor read as a chain only haechi-store-redis wrote,
  // so a call re-sent after that loss answered a proven Conflict and appended twice: the
  // caller's own last commit, sent with every append, is missing where the trim keeps it.
  it("`commits` and its floor lost together: the caller's own last commit, missing, makes a re-send unproven 2 and the next commit restart the floor", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-both-lost")
    const { calls, head } = await appendMany(client, prefix, 5, kept)
    await client.del(`${prefix}commits`, `${prefix}commits:floor`)
    const own = { sequence: 4, commitId: "id-4" }
    const resent = await appendCall(client, prefix, calls[4]!.previous, calls[4]!.id, kept, undefined, own)
    expect([resent.reply[0], resent.reply[3]]).toEqual([0, 2])
    const backing = redisAuditBacking(fromClient(client), prefix)
    expect(await Effect.runPromise(backing.isCommitted(5, calls[4]!.id, own))).toBe("ids lost")
    const next = await appendCall(client, prefix, head, "after", kept, undefined, { sequence: 5, commitId: "id-5" })
    expect(next.reply).toEqual([1, 0])
    const [floor, stamp, lostAt] = (await floorOf(client, prefix)).split(" ").map(Number)
    expect([floor, lostAt]).toEqual([6, stamp])
    expect(await client.llen(`${prefix}chain`)).toBe(6)
  })

  // Catches: a witness read where the trim may have dropped it, or past a chain that got
  // shorter (a rewind), as a loss: a false alarm failing every young call closed.
  it("no false alarm from the witness: kept and found, beyond the chain's end, or older than the last COMMITS_KEPT records", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-witness-ok")
    const { calls } = await appendMany(client, prefix, 5, kept)
    const backing = redisAuditBacking(fromClient(client), prefix)
    const found = await appendCall(client, prefix, calls[2]!.previous, "stranger", kept, undefined, {
      sequence: 5,
      commitId: "id-5"
    })
    expect([found.reply[0], found.reply[3]]).toEqual([0, 0])
    await client.del(`${prefix}commits`, `${prefix}commits:floor`)
    for (const witness of [
      { sequence: 9, commitId: "id-9" },
      { sequence: 5 - COMMITS_KEPT, commitId: "old" }
    ]) {
      const call = await appendCall(client, prefix, calls[2]!.previous, "stranger", kept, undefined, witness)
      expect({ witness, code: call.reply[3] }).toEqual({ witness, code: 0 })
      expect(await Effect.runPromise(backing.isCommitted(3, "stranger", witness))).toBe("not committed")
    }
  })

  // Catches: the stores not sending their own last commit, so the rule above never ran.
  it("the facade and the Effect store send their own last commit: after both keys are lost, their next commit restarts the floor with a loss mark", async () => {
    const client = connect()
    for (const style of ["facade", "layer"] as const) {
      const prefix = uniquePrefix(`ids-own-${style}`)
      const add = style === "facade" ? facadeAppender(client, prefix) : await effectAppender(client, prefix)
      for (let n = 0; n < 3; n++) await add({ n })
      await client.del(`${prefix}commits`, `${prefix}commits:floor`)
      await add({ n: 3 })
      expect({ style, fields: (await floorOf(client, prefix)).split(" ").length }).toEqual({ style, fields: 3 })
      await add({ n: 4 })
      expect(await client.llen(`${prefix}chain`)).toBe(5)
    }
  })

  // Catches: the witness read only where no floor was, so a fresh replica (no commit of
  // its own) committing after the double loss wrote a plain floor, and the re-send after
  // it was a proven Conflict again.
  it("after the double loss a replica with no commit of its own writes a plain floor; a re-send with a witness at or above it is still unproven 2", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-both-lost-fresh")
    const { calls, head } = await appendMany(client, prefix, 4, kept)
    await client.del(`${prefix}commits`, `${prefix}commits:floor`)
    expect((await appendCall(client, prefix, head, "fresh-replica", kept)).reply).toEqual([1, 0])
    expect((await floorOf(client, prefix)).split(" ")).toHaveLength(2)
    const own = { sequence: 3, commitId: "id-3" }
    const resent = await appendCall(client, prefix, calls[3]!.previous, calls[3]!.id, kept, undefined, own)
    expect([resent.reply[0], resent.reply[3]]).toEqual([0, 2])
    const backing = redisAuditBacking(fromClient(client), prefix)
    expect(await Effect.runPromise(backing.isCommitted(4, calls[3]!.id, own))).toBe("ids lost")
    expect(await client.llen(`${prefix}chain`)).toBe(5)
  })

  // Catches: the lookup reading the lost-at field of a floor that reads as none, where the
  // script does not ("ids lost" against the script's unproven 1).
  it("a floor whose first number is 0 reads as none in the script and the lookup alike", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-floor-zero")
    await appendMany(client, prefix, COMMITS_KEPT + 5)
    const [seconds] = (await client.time()) as [number | string, number | string]
    await client.set(`${prefix}commits:floor`, `0 5 ${seconds}`)
    const stale = await appendCall(client, prefix, null, "stale", kept)
    expect([stale.reply[0], stale.reply[3]]).toEqual([0, 1])
    const backing = redisAuditBacking(fromClient(client), prefix)
    expect(await Effect.runPromise(backing.isCommitted(1, "stale", null))).toBe("unproven")
  })

  it("the restart ages out with the keep: below it, a stale call is then unproven 1 (the age rule), not 2", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-restart-old")
    const { calls, head } = await appendMany(client, prefix, 3, 1)
    await client.del(`${prefix}commits`)
    expect((await appendCall(client, prefix, head, "after-loss", 1)).reply).toEqual([1, 0])
    const young = await appendCall(client, prefix, calls[0]!.previous, "stale-young", 1)
    expect(young.reply[3]).toBe(2)
    // Kept 1 s on Redis's clock, whole seconds, and a second's slack: past it after 3 s.
    await sleep(3_100)
    const old = await appendCall(client, prefix, calls[0]!.previous, "stale-old", 1)
    expect([old.reply[0], old.reply[3]]).toEqual([0, 1])
  })

  it("no loss: a first commit on an empty chain and the commits after it write a floor with no loss mark; the floor lost alone still finds a re-send", async () => {
    const client = connect()
    const prefix = uniquePrefix("ids-not-lost")
    const { calls, head } = await appendMany(client, prefix, 4, COMMIT_IDS_KEPT_SECONDS)
    expect((await floorOf(client, prefix)).split(" ")).toHaveLength(2)
    await client.del(`${prefix}commits:floor`)
    const again = await appendCall(client, prefix, calls[3]!.previous, calls[3]!.id, COMMIT_IDS_KEPT_SECONDS)
    expect(again.reply).toEqual([2])
    expect((await appendCall(client, prefix, head, "next", COMMIT_IDS_KEPT_SECONDS)).reply).toEqual([1, 0])
    expect((await floorOf(client, prefix)).split(" ")).toHaveLength(2)
    const stale = await appendCall(client, prefix, calls[1]!.previous, "stale", COMMIT_IDS_KEPT_SECONDS)
    expect([stale.reply[0], stale.reply[3]]).toEqual([0, 0])
  })
})

describe("vault_apply: a change log that Redis lost", () => {
  const markOf = async (client: Redis, prefix: string) => client.get(`${prefix}log:mark`)
  const kept = COMMIT_IDS_KEPT_SECONDS

  // Catches: an empty log read as "the log no longer reaches back", so a young call re-sent
  // after the log was deleted answered a Conflict the store retried, and the diff was made
  // twice (a token minted again).
  it("`log` deleted: a re-sent apply is a Conflict with unproven 2, failed closed at any age; the lost-reply lookup says so too", async () => {
    const client = connect()
    const prefix = uniquePrefix("log-lost")
    await vaultCommits(client, prefix, 3, undefined, kept)
    expect(await markOf(client, prefix)).toBe("0")
    await client.del(`${prefix}log`)
    const again = await vaultApplyCall(client, prefix, { expected: "2", seen: "c1", size: 2, id: "c2" }, kept)
    expect(again).toEqual([0, "3", 0, 2])

    const backing = redisVaultBacking(fromClient(client), prefix)
    const resend = { ...vaultWrite("2", "c1", 2, "c2"), sets: [["tok-c2", '{"type":"t"}']] as const }
    const young = await Effect.runPromiseExit(resolvingApply(backing, prefix)({ ...resend, madeAt: now() }))
    expect(failureTag(young)).toBe("CommitOutcomeUnknown")
    const lookup = await Effect.runPromise(backing.changes({ version: "", commit: "" }, "c0"))
    expect(lookup).toMatchObject({ _tag: "Reload", lookup: { found: false, unproven: true, idsLost: true } })
    expect(await client.get(`${prefix}version`)).toBe("3")
    expect(await client.hlen(`${prefix}tokens`)).toBe(3)
  })

  // Catches: the next commit after the loss starting a log no one could tell from a whole
  // one, so a re-send below it answered a proven-looking Conflict and ran again.
  it("the next commit restarts the log and stamps the mark; below it a re-send is unproven 2, at it a stranger a proven Conflict", async () => {
    const client = connect()
    const prefix = uniquePrefix("log-restart")
    await vaultCommits(client, prefix, 3, undefined, kept)
    await client.del(`${prefix}log`)
    expect(await vaultApplyCall(client, prefix, { expected: "3", seen: "", size: 3, id: "after" }, kept)).toEqual([
      1,
      "4"
    ])
    const [seconds] = (await client.time()) as [number | string, number | string]
    expect(Number(await markOf(client, prefix))).toBeGreaterThan(Number(seconds) - 5)
    const below = await vaultApplyCall(client, prefix, { expected: "1", seen: "c0", size: 1, id: "c1" }, kept)
    expect(below).toEqual([0, "4", 0, 2])
    const at = await vaultApplyCall(client, prefix, { expected: "3", seen: "", size: 3, id: "stranger" }, kept)
    expect(at).toEqual([0, "4", 0, 0])
    expect(await client.llen(`${prefix}log`)).toBe(1)
  })

  it("the restart ages out with the keep: below it a stale call is then unproven 1 (the age rule), not 2", async () => {
    const client = connect()
    const prefix = uniquePrefix("log-restart-old")
    await vaultCommits(client, prefix, 2, undefined, 1)
    await client.del(`${prefix}log`)
    expect((await vaultApplyCall(client, prefix, { expected: "2", seen: "", size: 2, id: "after" }, 1))[0]).toBe(1)
    const young = await vaultApplyCall(client, prefix, { expected: "1", seen: "c0", size: 1, id: "stale-young" }, 1)
    expect(young[3]).toBe(2)
    // Kept 1 s on Redis's clock, whole seconds, and a second's slack: past it after 3 s.
    await sleep(3_100)
    const old = await vaultApplyCall(client, prefix, { expected: "1", seen: "c0", size: 1, id: "stale-old" }, 1)
    expect(old).toEqual([0, "3", 0, 1])
  })

  // Catches: a vault only haechi-store-redis wrote so far (it logs nothing) taken for a
  // lost log, so every conflict of ours there failed CommitOutcomeUnknown.
  it('no loss: on a vault only haechi-store-redis wrote, our first commit writes the mark "0" and a stale call stays unproven 1', async () => {
    const client = connect()
    const prefix = uniquePrefix("log-none-yet")
    for (const token of ["r1", "r2", "r3"]) await referenceApply(client, prefix, token)
    expect(await vaultApplyCall(client, prefix, { expected: "3", seen: "", size: 3, id: "ours" }, kept)).toEqual([
      1,
      "4"
    ])
    expect(await markOf(client, prefix)).toBe("0")
    const stale = await vaultApplyCall(client, prefix, { expected: "1", seen: "", size: 1, id: "stale" }, kept)
    expect(stale).toEqual([0, "4", 0, 1])
  })

  it("the mark lost alone costs nothing: a re-send is still AlreadyCommitted and the next commit writes it again; a mark of the wrong type is refused, nothing written", async () => {
    const client = connect()
    const prefix = uniquePrefix("mark-lost")
    await vaultCommits(client, prefix, 3, undefined, kept)
    await client.del(`${prefix}log:mark`)
    expect(await vaultApplyCall(client, prefix, { expected: "2", seen: "c1", size: 2, id: "c2" }, kept)).toEqual([
      2,
      "3"
    ])
    expect((await vaultApplyCall(client, prefix, { expected: "3", seen: "c2", size: 3, id: "c3" }, kept))[0]).toBe(1)
    expect(await markOf(client, prefix)).toBe("0")

    await client.del(`${prefix}log:mark`)
    await client.hset(`${prefix}log:mark`, "f", "v")
    const refused = await vaultApplyCall(client, prefix, { expected: "4", seen: "c3", size: 4, id: "c4" }, kept)
    expect(refused).toEqual([3, `${prefix}log:mark`])
    expect(await client.get(`${prefix}version`)).toBe("4")
    expect(await client.llen(`${prefix}log`)).toBe(4)
  })

  // Catches: the version key lost while the log stayed read as proof (a re-sent apply a
  // proven Conflict, made again), and a version below the call's read as proof after the
  // restart dropped the log.
  it("`version` deleted: a re-send is found in the log, a stranger is unproven 1; after the restart drops the log, a re-send is unproven 1, not proven", async () => {
    const client = connect()
    const prefix = uniquePrefix("version-lost")
    await vaultCommits(client, prefix, 5, undefined, kept)
    await client.del(`${prefix}version`)
    const resend = { expected: "4", seen: "c3", size: 4, id: "c4" }
    expect(await vaultApplyCall(client, prefix, resend, kept)).toEqual([2, null])
    const stranger = await vaultApplyCall(client, prefix, { ...resend, id: "stranger" }, kept)
    expect(stranger).toEqual([0, null, 0, 1])
    expect((await vaultApplyCall(client, prefix, { expected: "", seen: "", size: 5, id: "y" }, kept))[0]).toBe(1)
    expect(await client.llen(`${prefix}log`)).toBe(1)
    expect(await markOf(client, prefix)).toBe("0")
    expect(await vaultApplyCall(client, prefix, resend, kept)).toEqual([0, "1", 0, 1])
  })

  // Catches: an unreadable mark taken for no mark, so the log lost after it went unseen.
  it.each(["", "abc", "-1", " 0", "0 "])(
    "a mark %j that does not read still counts: the log lost is unproven 2, and a commit rewrites it",
    async (mark) => {
      const client = connect()
      const prefix = uniquePrefix("mark-garbage")
      await vaultCommits(client, prefix, 3, undefined, kept)
      await client.set(`${prefix}log:mark`, mark)
      expect((await vaultApplyCall(client, prefix, { expected: "3", seen: "c2", size: 3, id: "c3" }, kept))[0]).toBe(1)
      expect(await markOf(client, prefix)).toBe("0")
      await client.set(`${prefix}log:mark`, mark)
      await client.del(`${prefix}log`)
      const again = await vaultApplyCall(client, prefix, { expected: "3", seen: "c2", size: 3, id: "c3" }, kept)
      expect(again).toEqual([0, "4", 0, 2])
    }
  )
})
