/**
 * verifyStore and exportJsonl against the real shared redis-server.
 *
 * Chains are written THROUGH the store (AuditStore.transaction + Chain.buildNextRecord)
 * and tampered with DIRECTLY in Redis (LSET, LREM, LINSERT, LTRIM, SET head). Every
 * result is checked two ways:
 * - against an independent oracle written here from the contract page's rules (no code
 *   shared with src/Chain.ts or src/Verify.ts), extended with the store rule that the
 *   chain must reach and pass through the head the store recorded;
 * - against where the tampering happened: the first list index whose element differs
 *   from the original chain (or the new length, when the list is a prefix of it) is the
 *   failing one, so the failing sequence is that index + 1.
 */
import { randomBytes } from "node:crypto"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { Chunk, Effect, Layer, Stream } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord, describeFailure, type AuditIntegrity, type VerifyResult } from "../src/Chain.js"
import * as RedisClient from "../src/RedisClient.js"
import { exportJsonl, verifyStore, type VerifyStoreOptions } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"
import { refHash } from "./support/oracle.js"

// ---------------------------------------------------------------------------
// The oracle: the contract page's rules, written the naive way.

interface Expected {
  readonly valid: boolean
  readonly records: number
  readonly failedSequence?: number
  readonly reason?: string
}

/**
 * haechi's verifier over stored texts (from a checkpoint), plus the store rule: the
 * record at the head's sequence must carry the head's eventHash, and the chain must
 * reach the head (else it fails at the first missing sequence, "sequence mismatch").
 */
const oracle = (
  texts: ReadonlyArray<string>,
  head: { sequence: number; eventHash: string } | null,
  from?: { sequence: number; eventHash: string }
): Expected => {
  let expectedSequence = from ? from.sequence + 1 : 1
  let previous: string | null = from ? from.eventHash : null
  let count = 0
  const fail = (reason: string): Expected => ({
    valid: false,
    records: count,
    failedSequence: expectedSequence,
    reason
  })
  for (const text of texts) {
    let record: any
    try {
      record = JSON.parse(text)
    } catch {
      return fail("unparseable")
    }
    if (typeof record !== "object" || record === null || Array.isArray(record)) return fail("not an object")
    const integrity = record.auditIntegrity
    if (!integrity) return fail("missing auditIntegrity")
    if (integrity.sequence !== expectedSequence) return fail("sequence mismatch")
    if ((integrity.previousHash ?? null) !== previous) return fail("previous hash mismatch")
    let hash: string
    try {
      hash = refHash(record)
    } catch {
      return fail("uncanonicalizable")
    }
    if (integrity.eventHash !== hash) return fail("event hash mismatch")
    if (head !== null && expectedSequence === head.sequence && hash !== head.eventHash)
      return fail("event hash mismatch")
    previous = hash
    expectedSequence += 1
    count += 1
  }
  if (head !== null && expectedSequence - 1 < head.sequence) return fail("sequence mismatch")
  return { valid: true, records: count }
}

const summary = (result: VerifyResult): Expected =>
  result.valid
    ? { valid: true, records: result.records }
    : {
        valid: false,
        records: result.records,
        failedSequence: result.failedSequence,
        reason: describeFailure(result.reason)
      }

// ---------------------------------------------------------------------------
// Redis plumbing

let url: string
let redis: Redis

beforeAll(() => {
  url = sharedRedis().url
  redis = new Redis(url)
})

afterAll(async () => {
  await redis.quit()
})

const storeLayer = (prefix: string) =>
  AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layer(url)))

const withStore = <A, E>(prefix: string, effect: Effect.Effect<A, E, AuditStore.AuditStore>): Promise<A> =>
  Effect.runPromise(Effect.provide(effect, storeLayer(prefix)))

const event = (i: number) => ({
  type: "test.event",
  at: `2030-01-01T00:00:${String(i % 60).padStart(2, "0")}Z`,
  n: i,
  tags: ["a", i]
})

/** Writes `n` records through the store; returns their stored JSON in order. */
const writeChain = async (prefix: string, n: number, from = 0): Promise<Array<string>> => {
  await withStore(
    prefix,
    Effect.gen(function* () {
      const store = yield* AuditStore.AuditStore
      for (let i = from; i < from + n; i++) {
        yield* store.transaction((tx) =>
          Effect.flatMap(tx.readLastIntegrity, (previous) => tx.persist(buildNextRecord(event(i), previous)))
        )
      }
    })
  )
  return redis.lrange(`${prefix}chain`, 0, -1)
}

const verify = (prefix: string, options?: VerifyStoreOptions) => withStore(prefix, verifyStore(options))

const storedHead = async (prefix: string) => {
  const json = await redis.get(`${prefix}head`)
  return json === null ? null : (JSON.parse(json) as { sequence: number; eventHash: string })
}

const integrityAt = (texts: ReadonlyArray<string>, index: number): AuditIntegrity =>
  JSON.parse(texts[index]!).auditIntegrity

/** First index where `now` differs from `original` (its length if it is a prefix); -1 if equal. */
const firstDifference = (original: ReadonlyArray<string>, now: ReadonlyArray<string>): number => {
  for (let i = 0; i < now.length; i++) if (now[i] !== original[i]) return i
  return now.length === original.length ? -1 : now.length
}

const fakeHash = () => randomBytes(32).toString("base64url")

// ---------------------------------------------------------------------------

describe("verifyStore on chains written through the store", () => {
  it("accepts them and reports the count and the head", async () => {
    for (const n of [0, 1, 2, 37]) {
      const prefix = uniquePrefix("verify-valid")
      const texts = await writeChain(prefix, n)
      const result = await verify(prefix, { pageSize: 5 })
      expect(result).toEqual(
        n === 0
          ? { valid: true, records: 0, headHash: null, headSequence: 0 }
          : { valid: true, records: n, headHash: integrityAt(texts, n - 1).eventHash, headSequence: n }
      )
      expect(summary(result)).toEqual(oracle(texts, await storedHead(prefix)))
    }
  })

  it("reads in pages of pageSize and reports progress up to the whole list", async () => {
    const prefix = uniquePrefix("verify-progress")
    await writeChain(prefix, 23)
    const seen: Array<[number, number]> = []
    const result = await verify(prefix, {
      pageSize: 5,
      onProgress: (read, total) => Effect.sync(() => void seen.push([read, total]))
    })
    expect(result.valid).toBe(true)
    expect(seen).toEqual([5, 10, 15, 20, 23].map((read) => [read, 23]))
  })

  it("verifies records appended while it runs (and never reports a fork)", async () => {
    const prefix = uniquePrefix("verify-concurrent")
    await writeChain(prefix, 50)
    const [result] = await Promise.all([verify(prefix, { pageSize: 3 }), writeChain(prefix, 50, 50)])
    expect(result.valid).toBe(true)
    expect(result.records).toBeGreaterThanOrEqual(50)
    expect((await verify(prefix)).records).toBe(100)
  })

  it("holds a bounded amount of memory whatever the chain's length", async () => {
    // A valid chain of 30,000 ~1 kB records, written directly (fast) with the head keys
    // the store's append script would set.
    const prefix = uniquePrefix("verify-memory")
    let previous: AuditIntegrity | null = null
    for (let start = 0; start < 30_000; start += 2_000) {
      const texts: Array<string> = []
      for (let i = start; i < start + 2_000; i++) {
        const record = buildNextRecord({ ...event(i), pad: "x".repeat(900) }, previous)
        previous = record.auditIntegrity
        texts.push(JSON.stringify(record))
      }
      await redis.rpush(`${prefix}chain`, ...texts)
    }
    await redis.set(`${prefix}head`, JSON.stringify(previous))
    await redis.set(`${prefix}head:hash`, previous!.eventHash)
    // A full GC before each sample, so the samples are what verification keeps alive.
    setFlagsFromString("--expose-gc")
    const gc = runInNewContext("gc") as () => void
    const samples: Array<number> = []
    const result = await verify(prefix, {
      pageSize: 500,
      onProgress: (read) =>
        Effect.sync(() => {
          if (read % 5_000 === 0) {
            gc()
            samples.push(process.memoryUsage().heapUsed)
          }
        })
    })
    expect(result).toMatchObject({ valid: true, records: 30_000 })
    expect(samples.length).toBeGreaterThanOrEqual(6)
    // 25,000 records (~25 MB of JSON) pass between the first sample and the last.
    const growth = samples.at(-1)! - samples[0]!
    expect(growth).toBeLessThan(8 * 1024 * 1024)
    await redis.del(`${prefix}chain`)
  })

  it("refuses a malformed checkpoint or page size with InvalidConfig", async () => {
    const prefix = uniquePrefix("verify-config")
    await writeChain(prefix, 2)
    for (const options of [
      { from: { sequence: -1, eventHash: fakeHash() } },
      { from: { sequence: 1.5, eventHash: fakeHash() } },
      { from: { sequence: 2, eventHash: null } },
      { from: { sequence: 2, eventHash: "" } },
      { pageSize: 0 }
    ] as Array<VerifyStoreOptions>) {
      const error = await withStore(prefix, Effect.flip(verifyStore(options)))
      expect(error._tag).toBe("InvalidConfig")
    }
  })

  it("fails with the store's error (not a result) when a key holds the wrong type", async () => {
    const prefix = uniquePrefix("verify-wrongtype")
    await redis.set(`${prefix}chain`, "not a list")
    const error = await withStore(prefix, Effect.flip(verifyStore()))
    expect(error._tag).toBe("CorruptData")
  })

  it("works on the in-memory store too", async () => {
    const result = await Effect.runPromise(
      Effect.gen(function* () {
        const store = yield* AuditStore.AuditStore
        for (let i = 0; i < 7; i++) {
          yield* store.transaction((tx) =>
            Effect.flatMap(tx.readLastIntegrity, (p) => tx.persist(buildNextRecord(event(i), p)))
          )
        }
        return yield* verifyStore({ pageSize: 2 })
      }).pipe(Effect.provide(AuditStore.layerMemory()))
    )
    expect(result).toMatchObject({ valid: true, records: 7, headSequence: 7 })
  })
})

// ---------------------------------------------------------------------------

type Tamper =
  | { readonly kind: "field"; readonly index: number; readonly path: ReadonlyArray<string>; readonly value: unknown }
  | { readonly kind: "drop"; readonly index: number }
  | { readonly kind: "swap"; readonly i: number; readonly j: number }
  | { readonly kind: "duplicate"; readonly index: number; readonly after: number }
  | { readonly kind: "truncate"; readonly start: number; readonly stop: number }
  | { readonly kind: "hash"; readonly index: number; readonly which: "eventHash" | "previousHash" }
  | { readonly kind: "garbage"; readonly index: number; readonly text: string }

const fieldPath = fc.oneof(
  fc.constantFrom(["type"], ["n"], ["at"], ["tags"], ["extra"]),
  fc.constantFrom(
    ["auditIntegrity", "sequence"],
    ["auditIntegrity", "previousHash"],
    ["auditIntegrity", "eventHash"],
    ["auditIntegrity", "alg"],
    ["auditIntegrity", "canonicalization"],
    ["auditIntegrity"]
  ),
  fc.string({ minLength: 1, maxLength: 6 }).map((key) => [key])
)

const tamperFor = (n: number): fc.Arbitrary<Tamper> => {
  const index = fc.nat(n - 1)
  return fc.oneof(
    fc.record({ kind: fc.constant("field" as const), index, path: fieldPath, value: fc.jsonValue({ maxDepth: 2 }) }),
    fc.record({ kind: fc.constant("drop" as const), index }),
    fc.record({ kind: fc.constant("swap" as const), i: index, j: index }),
    fc.record({ kind: fc.constant("duplicate" as const), index, after: fc.integer({ min: -1, max: n - 1 }) }),
    fc.record({ kind: fc.constant("truncate" as const), start: fc.nat(n), stop: fc.integer({ min: -1, max: n - 1 }) }),
    fc.record({
      kind: fc.constant("hash" as const),
      index,
      which: fc.constantFrom("eventHash" as const, "previousHash" as const)
    }),
    fc.record({
      kind: fc.constant("garbage" as const),
      index,
      text: fc.oneof(
        fc.string(),
        fc.jsonValue().map((v) => JSON.stringify(v))
      )
    })
  )
}

const setPath = (record: any, path: ReadonlyArray<string>, value: unknown) => {
  let target = record
  for (const key of path.slice(0, -1)) target = target[key]
  Object.defineProperty(target, path[path.length - 1]!, { value, enumerable: true, writable: true, configurable: true })
}

/** Applies the tampering directly in Redis. */
const applyTamper = async (prefix: string, texts: ReadonlyArray<string>, tamper: Tamper): Promise<void> => {
  const chain = `${prefix}chain`
  switch (tamper.kind) {
    case "field": {
      const record = JSON.parse(texts[tamper.index]!)
      setPath(record, tamper.path, tamper.value)
      await redis.lset(chain, tamper.index, JSON.stringify(record))
      return
    }
    case "drop":
      await redis.lrem(chain, 1, texts[tamper.index]!)
      return
    case "swap":
      await redis.lset(chain, tamper.i, texts[tamper.j]!)
      await redis.lset(chain, tamper.j, texts[tamper.i]!)
      return
    case "duplicate":
      if (tamper.after === -1) await redis.lpush(chain, texts[tamper.index]!)
      else await redis.linsert(chain, "AFTER", texts[tamper.after]!, texts[tamper.index]!)
      return
    case "truncate":
      await redis.ltrim(chain, tamper.start, tamper.stop)
      return
    case "hash": {
      const record = JSON.parse(texts[tamper.index]!)
      record.auditIntegrity[tamper.which] = fakeHash()
      await redis.lset(chain, tamper.index, JSON.stringify(record))
      return
    }
    case "garbage":
      await redis.lset(chain, tamper.index, tamper.text)
      return
  }
}

describe("verifyStore on tampered chains", () => {
  it("catches every tampering at the first changed list position, agreeing with the rules (fast-check)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 9 }).chain((n) => fc.tuple(fc.constant(n), tamperFor(n))),
        async ([n, tamper]) => {
          const prefix = uniquePrefix("verify-tamper")
          const original = await writeChain(prefix, n)
          await applyTamper(prefix, original, tamper)
          const now = await redis.lrange(`${prefix}chain`, 0, -1)
          const head = await storedHead(prefix)
          const result = await verify(prefix, { pageSize: 4 })
          // The rules, independently.
          expect(summary(result)).toEqual(oracle(now, head))
          // The place.
          const at = firstDifference(original, now)
          if (at === -1) {
            expect(result.valid).toBe(true)
            expect(result.records).toBe(n)
          } else {
            expect(result.valid).toBe(false)
            if (!result.valid) {
              expect(result.failedSequence).toBe(at + 1)
              expect(result.index).toBe(at)
              expect(result.records).toBe(at)
            }
          }
          await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
        }
      ),
      { numRuns: 150 }
    )
  }, 120_000)

  it("names each kind of tampering as haechi's verifier does", async () => {
    const prefix = uniquePrefix("verify-kinds")
    const original = await writeChain(prefix, 10)
    const cases: Array<[Tamper, number, string]> = [
      [{ kind: "field", index: 4, path: ["n"], value: 99 }, 5, "event hash mismatch"],
      [{ kind: "field", index: 4, path: ["auditIntegrity", "sequence"], value: 7 }, 5, "sequence mismatch"],
      [{ kind: "hash", index: 4, which: "previousHash" }, 5, "previous hash mismatch"],
      [{ kind: "hash", index: 4, which: "eventHash" }, 5, "event hash mismatch"],
      [{ kind: "field", index: 4, path: ["auditIntegrity"], value: null }, 5, "missing auditIntegrity"],
      [{ kind: "garbage", index: 4, text: "{not json" }, 5, "unparseable"],
      [{ kind: "garbage", index: 4, text: "[1,2]" }, 5, "not an object"],
      [{ kind: "drop", index: 4 }, 5, "sequence mismatch"],
      [{ kind: "drop", index: 9 }, 10, "sequence mismatch"],
      [{ kind: "swap", i: 2, j: 6 }, 3, "sequence mismatch"],
      [{ kind: "duplicate", index: 3, after: 3 }, 5, "sequence mismatch"],
      [{ kind: "duplicate", index: 9, after: 9 }, 11, "sequence mismatch"],
      [{ kind: "truncate", start: 0, stop: 5 }, 7, "sequence mismatch"],
      [{ kind: "truncate", start: 3, stop: -1 }, 1, "sequence mismatch"]
    ]
    for (const [tamper, sequence, reason] of cases) {
      await redis.del(`${prefix}chain`)
      await redis.rpush(`${prefix}chain`, ...original)
      await applyTamper(prefix, original, tamper)
      const result = await verify(prefix)
      expect({ tamper, ...summary(result) }).toEqual({
        tamper,
        valid: false,
        records: sequence - 1,
        failedSequence: sequence,
        reason
      })
    }
  })

  it("catches a head that names no record of the chain (alter the head's hash)", async () => {
    const prefix = uniquePrefix("verify-head")
    const original = await writeChain(prefix, 6)
    const head = JSON.parse((await redis.get(`${prefix}head`))!)
    await redis.set(`${prefix}head`, JSON.stringify({ ...head, eventHash: fakeHash() }))
    const result = await verify(prefix)
    expect(summary(result)).toEqual({ valid: false, records: 5, failedSequence: 6, reason: "event hash mismatch" })
    expect(summary(result)).toEqual(oracle(original, await storedHead(prefix)))
  })
})

// ---------------------------------------------------------------------------

describe("verifyStore from a trusted checkpoint", () => {
  /** The store with its reads counted: which list index each read starts at, and how many elements came back. */
  const counting = (
    prefix: string,
    body: (reads: {
      starts: Array<number>
      elements: number
    }) => Effect.Effect<VerifyResult, unknown, AuditStore.AuditStore>
  ) =>
    withStore(
      prefix,
      Effect.gen(function* () {
        const store = yield* AuditStore.AuditStore
        const reads = { starts: [] as Array<number>, elements: 0 }
        const spied: AuditStore.AuditStoreShape = {
          ...store,
          readChainJson: (options) => {
            reads.starts.push(options?.from ?? 0)
            return store.readChainJson(options).pipe(Stream.tap(() => Effect.sync(() => void reads.elements++)))
          }
        }
        const result = yield* Effect.provideService(body(reads), AuditStore.AuditStore, spied)
        return { result, reads }
      })
    )

  it("reads only the checkpoint's record and the suffix, and ignores damage before it", async () => {
    const prefix = uniquePrefix("verify-checkpoint")
    const texts = await writeChain(prefix, 40)
    const checkpoint = { sequence: 30, eventHash: integrityAt(texts, 29).eventHash }
    await redis.lset(`${prefix}chain`, 3, "damage before the checkpoint")
    const { result, reads } = await counting(prefix, () => verifyStore({ from: checkpoint, pageSize: 4 }))
    expect(result).toEqual({ valid: true, records: 10, headHash: integrityAt(texts, 39).eventHash, headSequence: 40 })
    expect(reads.starts).toEqual([29])
    expect(reads.elements).toBe(11)
    // Without the checkpoint the damage shows.
    expect(summary(await verify(prefix))).toMatchObject({ valid: false, failedSequence: 4 })
  })

  it("agrees with a full verification on every later tampering, for any checkpoint (fast-check)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .integer({ min: 1, max: 8 })
          .chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 1, max: n }), tamperFor(n))),
        async ([n, k, tamper]) => {
          const prefix = uniquePrefix("verify-checkpoint-prop")
          const original = await writeChain(prefix, n)
          const checkpoint = { sequence: k, eventHash: integrityAt(original, k - 1).eventHash }
          await applyTamper(prefix, original, tamper)
          const now = await redis.lrange(`${prefix}chain`, 0, -1)
          const full = await verify(prefix)
          const fromCheckpoint = await verify(prefix, { from: checkpoint, pageSize: 3 })
          // What the checkpoint covers: its own record (list index k - 1) and the rest.
          const suffixAt = firstDifference(original.slice(k - 1), now.slice(k - 1))
          if (suffixAt === -1) {
            expect(fromCheckpoint).toMatchObject({ valid: true, records: n - k, headSequence: n })
          } else {
            expect(fromCheckpoint.valid).toBe(false)
            if (!fromCheckpoint.valid) {
              expect(fromCheckpoint.failedSequence).toBe(k + suffixAt)
              expect(fromCheckpoint.index).toBe(k - 1 + suffixAt)
            }
          }
          // Where the list is unchanged before the checkpoint, both find the same failure.
          const at = firstDifference(original, now)
          if (at >= k - 1) {
            expect(full.valid).toBe(false)
            expect(fromCheckpoint.valid).toBe(false)
            if (!fromCheckpoint.valid && !full.valid) {
              expect(fromCheckpoint.failedSequence).toBe(full.failedSequence)
              expect(fromCheckpoint.index).toBe(full.index)
              // Past the checkpoint's record, for the same reason too (that record's own
              // previousHash cannot be checked: its predecessor is not read).
              if (at > k - 1) expect(describeFailure(fromCheckpoint.reason)).toBe(describeFailure(full.reason))
            }
          }
          await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
        }
      ),
      { numRuns: 100 }
    )
  }, 120_000)

  it("fails at the checkpoint when its record no longer hashes to the trusted eventHash", async () => {
    const prefix = uniquePrefix("verify-checkpoint-wrong")
    const texts = await writeChain(prefix, 12)
    const wrong = await verify(prefix, { from: { sequence: 8, eventHash: fakeHash() } })
    expect(summary(wrong)).toEqual({ valid: false, records: 0, failedSequence: 8, reason: "event hash mismatch" })
    // The checkpoint is the head: nothing new, and the head must still be it.
    const atHead = await verify(prefix, { from: { sequence: 12, eventHash: integrityAt(texts, 11).eventHash } })
    expect(atHead).toEqual({ valid: true, records: 0, headHash: integrityAt(texts, 11).eventHash, headSequence: 12 })
  })

  it("fails when the chain was cut below the checkpoint", async () => {
    const prefix = uniquePrefix("verify-checkpoint-cut")
    const texts = await writeChain(prefix, 12)
    const checkpoint = { sequence: 10, eventHash: integrityAt(texts, 9).eventHash }
    await redis.ltrim(`${prefix}chain`, 0, 6)
    const result = await verify(prefix, { from: checkpoint })
    expect(summary(result)).toEqual({ valid: false, records: 0, failedSequence: 10, reason: "sequence mismatch" })
    expect(result.valid === false && result.reason._tag === "SequenceMismatch" && result.reason.actual).toBe(undefined)
  })
})

// ---------------------------------------------------------------------------

describe("exportJsonl", () => {
  it("streams the stored records one per line, in order, as haechi's file verifier reads them", async () => {
    const prefix = uniquePrefix("export")
    const texts = await writeChain(prefix, 31)
    const pages = await withStore(
      prefix,
      Effect.map(Stream.runCollect(Stream.chunks(exportJsonl({ pageSize: 7 }))), (chunks) =>
        Chunk.toArray(chunks).map(Chunk.toArray)
      )
    )
    expect(pages.map((page) => page.length)).toEqual([7, 7, 7, 7, 3])
    const lines = pages.flat()
    expect(lines).toEqual(texts)
    expect(lines.every((line) => !line.includes("\n"))).toBe(true)
    expect(oracle(lines, null)).toEqual({ valid: true, records: 31 })
  })

  it("never emits an empty page (the list's length a multiple of the page size)", async () => {
    const prefix = uniquePrefix("export-full-pages")
    const texts = await writeChain(prefix, 20)
    const pages = await withStore(
      prefix,
      Effect.map(Stream.runCollect(Stream.chunks(exportJsonl({ pageSize: 10 }))), (chunks) =>
        Chunk.toArray(chunks).map(Chunk.toArray)
      )
    )
    expect(pages.map((page) => page.length)).toEqual([10, 10])
    expect(pages.flat()).toEqual(texts)
    const empty = await withStore(
      uniquePrefix("export-empty"),
      Effect.map(Stream.runCollect(exportJsonl()), Chunk.toArray)
    )
    expect(empty).toEqual([])
  })

  it("puts a stored element spread over lines back on one line, and refuses one that is not JSON", async () => {
    const prefix = uniquePrefix("export-lines")
    const texts = await writeChain(prefix, 3)
    await redis.lset(`${prefix}chain`, 1, JSON.stringify(JSON.parse(texts[1]!), null, 2))
    const lines = await withStore(prefix, Effect.map(Stream.runCollect(exportJsonl()), Chunk.toArray))
    expect(lines).toEqual(texts)
    await redis.lset(`${prefix}chain`, 2, "not\njson")
    const error = await withStore(prefix, Effect.flip(Stream.runDrain(exportJsonl())))
    expect(error).toMatchObject({ _tag: "CorruptData", element: 2 })
  })
})
