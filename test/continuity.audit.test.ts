/**
 * Continuity of the audit chain when Redis loses or rewinds state, on real Redis,
 * through the Promise facade and the Effect API (and AuditLog), for replicas that cached
 * the head and fresh ones:
 * - a store key deleted by hand (head, head:hash, chain, or both head keys): `ChainBroken`
 *   naming the keys, nothing written, never a new genesis on a non-empty list; `commits`
 *   deleted costs nothing; `verify` fails with one line naming the keys;
 * - an older snapshot of the keys restored (DUMP/RESTORE: what a failover to a lagging
 *   replica looks like), also with other writers climbing past the seen head after it
 *   (ABA), and FLUSHALL and eviction under allkeys-lru on dedicated servers: a replica that
 *   saw the lost head gets `ChainRewound` ("fail") or records the gap ("record"), counted;
 * - a head read fresh (not committed on) and then lost is such a head too; a fresh head
 *   that does not continue what the replica saw (ABA) does not replace it;
 * - a fast-check property: any interleaving of writers with a rewind injected at any point
 *   ends in a chain that verifies and continues the restored chain, with every lost
 *   acknowledged record accounted for by a rewind record or a typed rewind error.
 */
import { spawn } from "node:child_process"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import * as RedisClient from "../src/RedisClient.js"
import { verifyStore } from "../src/Verify.js"
import {
  auditReplica,
  chainOf,
  dumpKeys,
  expectTag,
  rejection,
  restoreSnapshot,
  rewindCount,
  styles,
  takeSnapshot,
  type AuditReplicaOptions
} from "./support/auditFaults.js"
import { closeAll, connect, sleep } from "./support/conformanceStores.js"
import { createAuditSink, verifyAuditChain } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, type RedisServer } from "./support/redisServer.js"

afterAll(closeAll)

const inspect = () => connect()

/** Verifies the stored chain with the store's own verifier (head keys included). */
const verifyAt = (client: Redis, prefix: string) =>
  Effect.runPromise(
    verifyStore().pipe(
      Effect.provide(AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layerFromClient(client))))
    )
  )

/** A replica that has written `n` records (so its head is cached) and its sink. */
const seeded = async (style: "layer" | "facade", prefix: string, n: number, options: AuditReplicaOptions = {}) => {
  const store = await auditReplica(style, connect(), prefix, options)
  const sink = createAuditSink({ store })
  for (let i = 0; i < n; i++) await sink.record({ id: `seed-${i}` })
  return { store, sink }
}

const isRewindRecord = (record: Record<string, any>) => record["type"] === "haechi_store.chain_rewound"

describe.each(styles)("a store key deleted by hand (%s)", (style) => {
  const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
    ["head", ["head"]],
    ["head:hash", ["head:hash"]],
    ["chain", ["chain"]],
    ["both head keys", ["head", "head:hash"]]
  ]
  describe.each(["cached", "fresh"] as const)("%s replica", (freshness) => {
    it.each(cases)("%s: ChainBroken naming the keys, nothing written, no new genesis", async (_, deleted) => {
      const prefix = uniquePrefix(`del-${deleted.join("-")}`)
      const client = inspect()
      const seed = await seeded(style, prefix, 5)
      await client.del(...deleted.map((k) => `${prefix}${k}`))
      const before = await dumpKeys(client, prefix)
      const sink =
        freshness === "cached" ? seed.sink : createAuditSink({ store: await auditReplica(style, connect(), prefix) })
      for (let attempt = 0; attempt < 2; attempt++) {
        const error = expectTag(await rejection(sink.record({ id: "after" })), "ChainBroken", { prefix })
        const keys = error["keys"] as ReadonlyArray<string>
        expect(keys.some((k) => deleted.some((d) => k === `${prefix}${d}`))).toBe(true)
        expect(String(error["message"])).toContain("nothing was written")
      }
      expect(await dumpKeys(client, prefix)).toEqual(before)
      // The verifier agrees: the head keys do not match the list.
      const result = await verifyAt(client, prefix)
      expect(result.valid).toBe(false)
      if (!result.valid)
        expect(result.reason._tag === "HeadKeysDisagree" || result.reason._tag === "SequenceMismatch").toBe(true)
    })
  })

  it("head:hash lost alone is ChainBroken at once, not 128 fence conflicts", async () => {
    const prefix = uniquePrefix("del-hash-fast")
    const client = inspect()
    const { sink } = await seeded(style, prefix, 3)
    await client.del(`${prefix}head:hash`)
    const started = Date.now()
    const error = await rejection(sink.record({ id: "x" }))
    expectTag(error, "ChainBroken", { keys: [`${prefix}head:hash`, `${prefix}chain`] })
    expect(String((error as Error).message)).toContain("head:hash is missing while chain holds 3 records")
    expect(Date.now() - started).toBeLessThan(2_000)
  })

  it("commits deleted: nothing is lost, the chain continues and verifies", async () => {
    const prefix = uniquePrefix("del-commits")
    const client = inspect()
    const { sink } = await seeded(style, prefix, 3)
    await client.del(`${prefix}commits`)
    await sink.record({ id: "after-1" })
    await createAuditSink({ store: await auditReplica(style, connect(), prefix) }).record({ id: "after-2" })
    const chain = await chainOf(client, prefix)
    expect(chain.map((r) => r["id"])).toEqual(["seed-0", "seed-1", "seed-2", "after-1", "after-2"])
    expect(verifyAuditChain(chain)).toMatchObject({ valid: true, records: 5 })
    expect(await verifyAt(client, prefix)).toMatchObject({ valid: true, records: 5 })
  })
})

describe.each(styles)("an older snapshot restored (DUMP/RESTORE) (%s)", (style) => {
  it('onRewind "fail": the replica that saw the lost head gets ChainRewound, counted, and nothing is written', async () => {
    const prefix = uniquePrefix("restore-fail")
    const client = inspect()
    const { sink } = await seeded(style, prefix, 3, { onRewind: "fail" })
    const old = await takeSnapshot(client, prefix)
    for (let i = 0; i < 3; i++) await sink.record({ id: `lost-${i}` })
    const seenHash = (await chainOf(client, prefix))[5]!.auditIntegrity.eventHash
    const currentHash = (await chainOf(client, prefix))[2]!.auditIntegrity.eventHash
    await restoreSnapshot(client, old)
    const before = await dumpKeys(client, prefix)
    const counted = rewindCount(prefix)
    for (let attempt = 0; attempt < 2; attempt++) {
      expectTag(await rejection(sink.record({ id: "after" })), "ChainRewound", {
        prefix,
        seen: { sequence: 6, eventHash: seenHash },
        current: { sequence: 3, eventHash: currentHash }
      })
    }
    expect(rewindCount(prefix)).toBe(counted + 1)
    expect(await dumpKeys(client, prefix)).toEqual(before)
    // It keeps failing until the chain holds what it saw again: restoring that lets it go on.
  })

  it('onRewind "record" (default): a record naming the lost head is appended on the current head, then the caller\'s', async () => {
    const prefix = uniquePrefix("restore-record")
    const client = inspect()
    const { sink } = await seeded(style, prefix, 3)
    const old = await takeSnapshot(client, prefix)
    const kept = old.chain
    for (let i = 0; i < 3; i++) await sink.record({ id: `lost-${i}` })
    const lost = (await chainOf(client, prefix))[5]!.auditIntegrity
    await restoreSnapshot(client, old)
    const counted = rewindCount(prefix)
    const appended = await sink.record({ id: "after" })
    expect(rewindCount(prefix)).toBe(counted + 1)
    const texts = await client.lrange(`${prefix}chain`, 0, -1)
    expect(texts.slice(0, 3)).toEqual(kept)
    const chain = texts.map((t) => JSON.parse(t))
    expect(chain).toHaveLength(5)
    expect(isRewindRecord(chain[3])).toBe(true)
    expect(chain[3]!.rewind).toMatchObject({
      lostSequence: 6,
      lostEventHash: lost.eventHash,
      resumedOnSequence: 3,
      resumedOnEventHash: chain[2].auditIntegrity.eventHash
    })
    expect(chain[4]!).toEqual(appended)
    expect(verifyAuditChain(chain)).toMatchObject({ valid: true, records: 5 })
    const result = await verifyAt(client, prefix)
    expect(result).toMatchObject({ valid: true, records: 5 })
    expect(result.rewinds).toEqual([
      expect.objectContaining({
        lost: { sequence: 6, eventHash: lost.eventHash },
        resumedOn: { sequence: 3, eventHash: chain[2].auditIntegrity.eventHash }
      })
    ])
  })

  it("ABA: rewound, then climbed past the seen head by a fresh replica: still a rewind", async () => {
    const prefix = uniquePrefix("restore-aba")
    const client = inspect()
    const { sink } = await seeded(style, prefix, 3, { onRewind: "fail" })
    const old = await takeSnapshot(client, prefix)
    for (let i = 0; i < 2; i++) await sink.record({ id: `lost-${i}` })
    await restoreSnapshot(client, old)
    const other = createAuditSink({ store: await auditReplica(style, connect(), prefix) })
    for (let i = 0; i < 4; i++) await other.record({ id: `other-${i}` })
    const before = await dumpKeys(client, prefix)
    expectTag(await rejection(sink.record({ id: "after" })), "ChainRewound", {
      seen: { sequence: 5 },
      current: { sequence: 7 }
    })
    expect(await dumpKeys(client, prefix)).toEqual(before)
  })

  it("the whole store's keys restored to empty: ChainRewound with current null (fail), a rewind record at sequence 1 (record)", async () => {
    const prefix = uniquePrefix("restore-empty")
    const client = inspect()
    const failing = await seeded(style, prefix, 2, { onRewind: "fail" })
    const recording = createAuditSink({ store: await auditReplica(style, connect(), prefix) })
    await recording.record({ id: "seen-by-both" })
    await failing.sink.record({ id: "three" })
    await client.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`, `${prefix}commits`)
    expectTag(await rejection(failing.sink.record({ id: "x" })), "ChainRewound", {
      seen: { sequence: 4 },
      current: null
    })
    expect(await client.exists(`${prefix}chain`)).toBe(0)
    await recording.record({ id: "after" })
    const chain = await chainOf(client, prefix)
    expect(chain.map((r) => r.auditIntegrity.sequence)).toEqual([1, 2])
    expect(chain[0]!.rewind).toMatchObject({ lostSequence: 3, resumedOnSequence: 0, resumedOnEventHash: null })
    expect(chain[1]!["id"]).toBe("after")
  })
})

describe("the Effect API: AuditLog over a rewound store", () => {
  it("AuditLog.record fails with ChainRewound (fail) and goes on after a rewind record (record)", async () => {
    const client = connect()
    for (const onRewind of ["fail", "record"] as const) {
      const prefix = uniquePrefix(`auditlog-rewind-${onRewind}`)
      const layer = AuditLog.layer.pipe(
        Layer.provideMerge(AuditStore.layer({ keyPrefix: prefix, onRewind, lock: "never" })),
        Layer.provide(RedisClient.layerFromClient(connect()))
      )
      const outcome = await Effect.runPromise(
        Effect.gen(function* () {
          const log = yield* AuditLog.AuditLog
          yield* log.record({ id: "a" })
          const old = yield* Effect.promise(() => takeSnapshot(client, prefix))
          yield* log.record({ id: "b" })
          yield* Effect.promise(() => restoreSnapshot(client, old))
          return yield* Effect.either(log.record({ id: "c" }))
        }).pipe(Effect.provide(layer))
      )
      if (onRewind === "fail") {
        expect(outcome._tag).toBe("Left")
        if (outcome._tag === "Left")
          expect(outcome.left).toMatchObject({ _tag: "ChainRewound", seen: { sequence: 2 }, current: { sequence: 1 } })
        expect(await client.llen(`${prefix}chain`)).toBe(1)
      } else {
        expect(outcome._tag).toBe("Right")
        const chain = await chainOf(client, prefix)
        expect(chain.map((r) => r["id"] ?? r["type"])).toEqual(["a", "haechi_store.chain_rewound", "c"])
        expect(verifyAuditChain(chain)).toMatchObject({ valid: true, records: 3 })
      }
    }
  })
})

// ---------------------------------------------------------------------------
// Dedicated servers: FLUSHALL and eviction must not touch the shared one.

describe("FLUSHALL and eviction (dedicated servers)", () => {
  let flushed: RedisServer
  let evicting: RedisServer
  beforeAll(async () => {
    ;[flushed, evicting] = await Promise.all([
      startRedis(),
      startRedis({ config: ["maxmemory 4mb", "maxmemory-policy allkeys-lru", "maxmemory-samples 10"] })
    ])
  }, 30_000)
  afterAll(async () => {
    await Promise.all([flushed?.stop(), evicting?.stop()])
  })

  it.each(styles)("FLUSHALL under running sinks (%s): no silent restart at sequence 1", async (style) => {
    const prefix = uniquePrefix("flushall")
    const client = new Redis(flushed.url)
    const clients: Array<Redis> = [client]
    try {
      const replica = async (options: AuditReplicaOptions) => {
        const c = new Redis(flushed.url)
        clients.push(c)
        return createAuditSink({ store: await auditReplica(style, c, prefix, options) })
      }
      const failing = await replica({ onRewind: "fail" })
      const recording = await replica({})
      for (let i = 0; i < 3; i++) {
        await failing.record({ id: `f-${i}` })
        await recording.record({ id: `r-${i}` })
      }
      await client.flushall()
      const counted = rewindCount(prefix)
      expectTag(await rejection(failing.record({ id: "x" })), "ChainRewound", { seen: { sequence: 5 }, current: null })
      expect(await client.dbsize()).toBe(0)
      await recording.record({ id: "after" })
      expect(rewindCount(prefix)).toBe(counted + 2)
      const chain = await chainOf(client, prefix)
      expect(chain[0]!.rewind).toMatchObject({ lostSequence: 6, resumedOnSequence: 0 })
      expect(chain[1]!["id"]).toBe("after")
      const result = await verifyAt(client, prefix)
      expect(result).toMatchObject({ valid: true, records: 2 })
      expect(result.rewinds).toHaveLength(1)
    } finally {
      await Promise.all(clients.map((c) => c.quit()))
    }
  })

  it.each(styles)(
    "eviction under allkeys-lru (%s): the next append is refused with a typed error and writes nothing",
    async (style) => {
      const prefix = uniquePrefix("evict")
      const client = new Redis(evicting.url)
      const clients: Array<Redis> = [client]
      try {
        await client.flushall()
        const c = new Redis(evicting.url)
        clients.push(c)
        const sink = createAuditSink({ store: await auditReplica(style, c, prefix, { onRewind: "fail" }) })
        for (let i = 0; i < 40; i++) await sink.record({ id: `e-${i}`, pad: "p".repeat(2_000) })
        // Fill memory until the LRU policy has evicted one of the store's keys (bounded).
        const keys = ["chain", "head", "head:hash"].map((k) => `${prefix}${k}`)
        let filler = 0
        while ((await client.exists(...keys)) === keys.length && filler < 2_000) {
          await client.set(`filler:${filler++}`, "f".repeat(50_000))
        }
        expect((await client.exists(...keys)) < keys.length).toBe(true)
        const before = await dumpKeys(client, prefix)
        const error = (await rejection(sink.record({ id: "after" }))) as { _tag?: string }
        expect(["ChainBroken", "ChainRewound"]).toContain(error._tag)
        expect(error).toBeInstanceOf(Error)
        // Nothing written: no key gained or changed. (Redis may evict more of them meanwhile:
        // over maxmemory it evicts before it runs any script that may write, ours refused or not.)
        const after = await dumpKeys(client, prefix)
        expect(Object.keys(after).every((key) => key in before)).toBe(true)
        expect(after).toEqual(Object.fromEntries(Object.keys(after).map((key) => [key, before[key]])))
      } finally {
        await Promise.all(clients.map((c) => c.quit()))
      }
    }
  )
})

// ---------------------------------------------------------------------------

describe("`haechi-store verify` on broken head keys and recorded rewinds", () => {
  const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
  const cli = (args: ReadonlyArray<string>) =>
    new Promise<{ code: number | null; stdout: string }>((done, fail) => {
      const child = spawn(process.execPath, [join(root, "cli", "dist", "bin.js"), ...args], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
      child.on("error", fail)
      child.on("close", (code) => {
        clearTimeout(timer)
        done({ code, stdout })
      })
    })

  it("exits 1 with one line naming the keys when head:hash is missing, and lists a recorded rewind", async () => {
    const client = inspect()
    const url = `redis://127.0.0.1:${client.options.port}`
    const prefix = uniquePrefix("cli-broken")
    const { sink } = await seeded("facade", prefix, 3)
    const old = await takeSnapshot(client, prefix)
    await sink.record({ id: "lost" })
    await restoreSnapshot(client, old)
    await sink.record({ id: "after" })
    const valid = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(valid.code).toBe(0)
    expect(valid.stdout).toMatch(
      /^recorded rewind at sequence 4: a replica had seen head 4 \S+, the chain resumed on head 3 /m
    )
    const json = await cli(["verify", "--json", "--url", url, "--prefix", prefix])
    expect(json.code).toBe(0)
    const rewinds = (
      JSON.parse(json.stdout) as {
        rewinds: ReadonlyArray<{ lost: { sequence: number }; resumedOn: { sequence: number } | null }>
      }
    ).rewinds
    expect(rewinds.map((r) => [r.lost.sequence, r.resumedOn?.sequence])).toEqual([[4, 3]])
    await client.del(`${prefix}head:hash`)
    const broken = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(broken.code).toBe(1)
    const last = broken.stdout.trim().split("\n").at(-1)!
    expect(last).toBe(
      `invalid: chain broken: head:hash is missing while chain holds 5 records (keys ${prefix}head:hash, ${prefix}chain); the list's 5 records verify`
    )
  }, 120_000)
})

// ---------------------------------------------------------------------------

describe("property: writers racing with a rewind injected at any point", () => {
  it("end in a chain that verifies and continues the restored chain, every lost record accounted for", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          writers: fc.array(
            fc.record({
              style: fc.constantFrom<"layer" | "facade">("layer", "facade"),
              ops: fc.integer({ min: 1, max: 4 }),
              delay: fc.integer({ min: 0, max: 3 })
            }),
            { minLength: 2, maxLength: 4 }
          ),
          onRewind: fc.constantFrom<"record" | "fail">("record", "fail"),
          snapshotAt: fc.integer({ min: 0, max: 6 }),
          restoreAfter: fc.integer({ min: 0, max: 6 })
        }),
        async ({ writers, onRewind, snapshotAt, restoreAfter }) => {
          const prefix = uniquePrefix("prop-rewind")
          const client = connect()
          const total = writers.reduce((n, w) => n + w.ops, 0)
          const sinks = await Promise.all(
            writers.map(async (w) =>
              createAuditSink({ store: await auditReplica(w.style, connect(), prefix, { onRewind }) })
            )
          )
          // Every writer has seen the empty chain or more before anything happens.
          const acked: Array<Array<{ sequence: number; eventHash: string }>> = writers.map(() => [])
          const errors: Array<Array<unknown>> = writers.map(() => [])
          const run = (i: number, id: string) =>
            sinks[i]!.record({ id }).then(
              (record) => void acked[i]!.push(record.auditIntegrity),
              (error: unknown) => void errors[i]!.push(error)
            )
          let snapshotLength = 0
          let kept: Array<string> = []
          const injector = (async () => {
            const deadline = Date.now() + 5_000
            const waitFor = async (n: number) => {
              while ((await client.llen(`${prefix}chain`)) < n && Date.now() < deadline) await sleep(1)
            }
            await waitFor(Math.min(snapshotAt, total))
            const snapshot = await takeSnapshot(client, prefix)
            kept = [...snapshot.chain]
            snapshotLength = kept.length
            await waitFor(Math.min(snapshotLength + restoreAfter, total))
            await restoreSnapshot(client, snapshot)
          })()
          await Promise.all([
            injector,
            ...writers.map(async (w, i) => {
              for (let k = 0; k < w.ops; k++) {
                await run(i, `w${i}-${k}`)
                await sleep(w.delay)
              }
            })
          ])
          // After the rewind each writer appends once more: whatever it saw is checked then.
          await Promise.all(writers.map((_, i) => run(i, `w${i}-probe`)))

          const texts = await client.lrange(`${prefix}chain`, 0, -1)
          const chain = texts.map((t) => JSON.parse(t) as Record<string, any>)
          // Never a chain failing verify; nothing restored was overwritten.
          expect(verifyAuditChain(chain)).toMatchObject({ valid: true, records: chain.length })
          expect(await verifyAt(client, prefix)).toMatchObject({ valid: true })
          expect(texts.slice(0, snapshotLength)).toEqual(kept)
          const held = new Set(chain.map((r) => r.auditIntegrity.eventHash as string))
          const recorded = chain.filter(isRewindRecord).map((r) => r.rewind.lostSequence as number)
          writers.forEach((_, i) => {
            // Only typed rewind errors, and only under "fail".
            for (const error of errors[i]!) {
              expect(error).toBeInstanceOf(Error)
              expect(error).toMatchObject({ _tag: onRewind === "fail" ? "ChainRewound" : "never" })
            }
            const lost = acked[i]!.filter((point) => !held.has(point.eventHash))
            if (lost.length === 0) return
            const highest = Math.max(...lost.map((p) => p.sequence))
            if (onRewind === "fail") {
              // The writer that lost an acknowledged record was told, at the latest on its probe.
              expect(errors[i]!.length).toBeGreaterThan(0)
            } else {
              expect(recorded.some((sequence) => sequence >= highest)).toBe(true)
            }
          })
        }
      ),
      { numRuns: 40 }
    )
  }, 240_000)
})

// A record the replica built itself on a head it was never handed (not a rewind): refused as invalid.
describe.each(styles)("a rewind is only what the replica saw (%s)", (style) => {
  it("a record built on a head no replica ever saw is InvalidRecord, not ChainRewound", async () => {
    const prefix = uniquePrefix("not-seen")
    const client = inspect()
    const { store } = await seeded(style, prefix, 2)
    const stranger = buildNextRecord(
      { id: "s" },
      { alg: "sha256", canonicalization: "json-stable-v1", sequence: 2, previousHash: null, eventHash: "A".repeat(43) }
    )
    const error = await rejection(store.transaction(async ({ persist }) => persist(stranger as never)))
    expectTag(error, "InvalidRecord")
    expect(await client.llen(`${prefix}chain`)).toBe(2)
  })
})

// A head read fresh (here: every transaction under lock "always" re-reads it) is one the
// replica saw once the chain held what it had seen with it; losing it is a rewind.
describe.each(styles)("a head read fresh, then lost (%s)", (style) => {
  /** A replica that committed 2 records, then read head 4 (written by another) in a transaction that failed. */
  const readAhead = async (prefix: string, onRewind: AuditStore.OnRewind, snapshotAt: "after-own" | "before-own") => {
    const client = inspect()
    const store = await auditReplica(style, connect(), prefix, { onRewind, lock: "always" })
    const sink = createAuditSink({ store })
    await sink.record({ id: "own-1" })
    let old = await takeSnapshot(client, prefix)
    await sink.record({ id: "own-2" })
    if (snapshotAt === "after-own") old = await takeSnapshot(client, prefix)
    else await restoreSnapshot(client, old) // own-2 lost already, then another replica climbs past it (ABA)
    const other = createAuditSink({ store: await auditReplica(style, connect(), prefix) })
    for (let i = 0; i < (snapshotAt === "after-own" ? 2 : 3); i++) await other.record({ id: `other-${i}` })
    const read = (await chainOf(client, prefix))[3]!.auditIntegrity
    const failed = await rejection(
      store.transaction(async ({ readLastIntegrity }) => {
        expect(await readLastIntegrity()).toEqual(read)
        throw new Error("build failed")
      })
    )
    expect(failed).toMatchObject({ message: "build failed" })
    return { client, sink, old, read }
  }

  it('onRewind "fail": the append after the read head is lost is ChainRewound naming it, nothing written', async () => {
    const prefix = uniquePrefix("fresh-lost-fail")
    const { client, sink, old, read } = await readAhead(prefix, "fail", "after-own")
    await restoreSnapshot(client, old)
    const before = await dumpKeys(client, prefix)
    const counted = rewindCount(prefix)
    expectTag(await rejection(sink.record({ id: "after" })), "ChainRewound", {
      prefix,
      seen: { sequence: 4, eventHash: read.eventHash },
      current: { sequence: 2, eventHash: JSON.parse(old.chain[1]!).auditIntegrity.eventHash }
    })
    expect(rewindCount(prefix)).toBe(counted + 1)
    expect(await dumpKeys(client, prefix)).toEqual(before)
  })

  it('onRewind "record": a record naming the read head is appended before the caller\'s', async () => {
    const prefix = uniquePrefix("fresh-lost-record")
    const { client, sink, old, read } = await readAhead(prefix, "record", "after-own")
    await restoreSnapshot(client, old)
    const appended = await sink.record({ id: "after" })
    const chain = await chainOf(client, prefix)
    expect(chain.map((r) => r["id"] ?? r["type"])).toEqual(["own-1", "own-2", "haechi_store.chain_rewound", "after"])
    expect(chain[2]!.rewind).toMatchObject({ lostSequence: 4, lostEventHash: read.eventHash, resumedOnSequence: 2 })
    expect(chain[3]).toEqual(appended)
    expect(verifyAuditChain(chain)).toMatchObject({ valid: true, records: 4 })
  })

  it("a fresh head that does not continue what the replica saw does not replace it (ABA): still ChainRewound", async () => {
    const prefix = uniquePrefix("fresh-aba")
    const { client, sink } = await readAhead(prefix, "fail", "before-own")
    const before = await dumpKeys(client, prefix)
    expectTag(await rejection(sink.record({ id: "after" })), "ChainRewound", {
      seen: { sequence: 2 },
      current: { sequence: 4 }
    })
    expect(await dumpKeys(client, prefix)).toEqual(before)
  })
})

describe("the Effect API: a head read fresh, then lost", () => {
  it("AuditLog.record fails with ChainRewound naming the head a failed transaction read", async () => {
    const client = connect()
    const prefix = uniquePrefix("fresh-lost-effect")
    const layer = AuditLog.layer.pipe(
      Layer.provideMerge(AuditStore.layer({ keyPrefix: prefix, onRewind: "fail", lock: "always" })),
      Layer.provide(RedisClient.layerFromClient(connect()))
    )
    const other = createAuditSink({ store: await auditReplica("facade", connect(), prefix) })
    const outcome = await Effect.runPromise(
      Effect.gen(function* () {
        const log = yield* AuditLog.AuditLog
        const store = yield* AuditStore.AuditStore
        yield* log.record({ id: "a" })
        const old = yield* Effect.promise(() => takeSnapshot(client, prefix))
        yield* Effect.promise(() => other.record({ id: "b" }))
        const read = yield* Effect.either(
          store.transaction((tx) => Effect.flatMap(tx.readLastIntegrity, (head) => Effect.fail(head)))
        )
        yield* Effect.promise(() => restoreSnapshot(client, old))
        return { read, after: yield* Effect.either(log.record({ id: "c" })) }
      }).pipe(Effect.provide(layer))
    )
    expect(outcome.read).toMatchObject({ _tag: "Left", left: { sequence: 2 } })
    const readHash = outcome.read._tag === "Left" ? (outcome.read.left as { eventHash: string }).eventHash : ""
    expect(outcome.after).toMatchObject({
      _tag: "Left",
      left: { _tag: "ChainRewound", seen: { sequence: 2, eventHash: readHash }, current: { sequence: 1 } }
    })
    expect(await client.llen(`${prefix}chain`)).toBe(1)
  })
})
