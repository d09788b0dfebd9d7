/**
 * The audit store's internals that carry a rule of their own, tested directly:
 * - `prepare` serializes a record once and cuts the integrity's JSON out of it; what it
 *   sends is exactly `JSON.stringify` of the record and of the integrity, whatever the
 *   record's shape (integrity last or not, keys named auditIntegrity elsewhere, nested
 *   values in the integrity), and what Redis then holds as the head is that JSON;
 * - `HeadCache`: its states (Unknown, Known), which writes move `seen`, a rewind reported
 *   once, and a known head handed out as a ready Exit and a private copy.
 */
import type { AuditIntegrity } from "../src/Chain.js"
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { InvalidRecord } from "../src/Errors.js"
import { memoryAuditBacking, type PreparedAppend } from "../src/internal/audit/backing.js"
import { HeadCache } from "../src/internal/audit/headCache.js"
import { prepare } from "../src/internal/audit/prepare.js"
import * as RedisClient from "../src/RedisClient.js"
import { closeAll, connect } from "./support/conformanceStores.js"
import { uniquePrefix } from "./support/keys.js"

afterAll(closeAll)

const integrityOf = (sequence: number, extra: Record<string, unknown> = {}): AuditIntegrity => ({
  alg: "sha256",
  canonicalization: "json-stable-v1",
  sequence,
  previousHash: sequence === 1 ? null : `prev-${sequence - 1}`,
  eventHash: `hash-${sequence}`,
  ...extra
})

const prepared = (record: unknown): PreparedAppend => {
  const write = prepare(record, undefined, null, false, null)
  if (write instanceof InvalidRecord) throw new Error(`refused: ${write.reason}`)
  return write
}

/** Records of many shapes: where the integrity sits, and auditIntegrity keys elsewhere. */
const shapes = fc.record({
  event: fc.dictionary(
    fc.constantFrom("type", "a", "b", "auditIntegrity", "0", "10", "z"),
    fc.jsonValue({ maxDepth: 3 }),
    { maxKeys: 5 }
  ),
  nested: fc.option(fc.record({ auditIntegrity: fc.jsonValue({ maxDepth: 2 }) }), { nil: undefined }),
  extra: fc.dictionary(fc.constantFrom("note", "auditIntegrity", "1", "meta"), fc.jsonValue({ maxDepth: 2 }), {
    maxKeys: 3
  }),
  after: fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }),
  sequence: fc.integer({ min: 1, max: 1_000_000 })
})

describe("prepare", () => {
  it("sends exactly JSON.stringify of the record and of its integrity, whatever the record's shape", () => {
    fc.assert(
      fc.property(shapes, ({ event, nested, extra, after, sequence }) => {
        const { auditIntegrity: _dropped, ...rest } = event
        const record: Record<string, unknown> = { ...rest, ...(nested === undefined ? {} : { nested }) }
        record.auditIntegrity = integrityOf(sequence, extra)
        if (after !== undefined) record.trailing = after
        const write = prepared(record)
        expect(write.recordJson).toBe(JSON.stringify(record))
        expect(write.integrityJson).toBe(JSON.stringify(record.auditIntegrity))
        // (Compared through JSON: -0 stringifies as 0.)
        expect(JSON.parse(write.integrityJson)).toEqual(JSON.parse(JSON.stringify(record.auditIntegrity)))
      }),
      { numRuns: 500 }
    )
  })

  it("keeps a private copy of the integrity: changing the record afterwards changes nothing prepared", () => {
    const record = { type: "x", auditIntegrity: integrityOf(1) }
    const write = prepared(record)
    ;(record.auditIntegrity as { eventHash: string }).eventHash = "changed"
    expect(write.integrity.eventHash).toBe("hash-1")
    expect(JSON.parse(write.integrityJson).eventHash).toBe("hash-1")
  })

  it("on Redis, the head key holds the integrity's JSON for records of each shape", async () => {
    const client = connect()
    const prefix = uniquePrefix("prepare-head")
    const store = await Effect.runPromise(
      Effect.provide(AuditStore.make({ keyPrefix: prefix }), RedisClient.layerFromClient(client))
    )
    const records: Array<Record<string, unknown>> = [
      { type: "last", auditIntegrity: integrityOf(1) },
      { auditIntegrity: integrityOf(2), type: "first" },
      { type: "nested", inner: { auditIntegrity: { x: 1 } }, auditIntegrity: integrityOf(3) },
      { type: "extra", auditIntegrity: integrityOf(4, { note: { auditIntegrity: "x" }, auditIntegrity: 1 }) }
    ]
    for (const [i, record] of records.entries()) {
      const integrity = record.auditIntegrity as AuditIntegrity
      const linked = {
        ...integrity,
        previousHash: i === 0 ? null : (records[i - 1]!.auditIntegrity as AuditIntegrity).eventHash
      }
      // (Spreading keeps each key where the shape put it.)
      const stored = { ...record, auditIntegrity: linked }
      await Effect.runPromise(store.transaction((tx) => tx.persist(stored)))
      expect(await client.get(`${prefix}head`)).toBe(JSON.stringify(linked))
    }
    expect(await client.llen(`${prefix}chain`)).toBe(records.length)
  })
})

describe("HeadCache", () => {
  const head = (sequence: number) => integrityOf(sequence)

  it("starts Unknown; learn makes the head Known and seen; hold hands it out without moving seen; forget goes back to Unknown", () => {
    const cache = new HeadCache(memoryAuditBacking(uniquePrefix("cache")))
    expect(cache.hint).toEqual({ _tag: "Unknown" })
    expect(cache.seen).toBeNull()
    cache.learn(head(3))
    expect(cache.hint).toEqual({ _tag: "Known", head: head(3), hash: "hash-3" })
    expect(cache.seen).toEqual({ sequence: 3, eventHash: "hash-3" })
    cache.hold(head(5))
    expect(cache.hint).toEqual({ _tag: "Known", head: head(5), hash: "hash-5" })
    expect(cache.seen).toEqual({ sequence: 3, eventHash: "hash-3" })
    expect(cache.knows({ sequence: 5, eventHash: "hash-5" })).toBe(true)
    expect(cache.knows({ sequence: 3, eventHash: "hash-3" })).toBe(true)
    expect(cache.knows({ sequence: 4, eventHash: "hash-4" })).toBe(false)
    cache.forget()
    expect(cache.hint).toEqual({ _tag: "Unknown" })
    expect(cache.seen).toEqual({ sequence: 3, eventHash: "hash-3" })
    cache.learn(null)
    expect(cache.hint).toEqual({ _tag: "Known", head: null, hash: "" })
    expect(cache.seen).toBeNull()
  })

  it("reports a rewind of one head once", () => {
    const cache = new HeadCache(memoryAuditBacking(uniquePrefix("cache")))
    const lost = { sequence: 2, eventHash: "hash-2" }
    expect(cache.firstReport(lost)).toBe(true)
    expect(cache.firstReport({ ...lost })).toBe(false)
    expect(cache.firstReport({ sequence: 3, eventHash: "hash-3" })).toBe(true)
  })

  it("hands a known head out as a ready Exit holding a private copy; an unknown one is read, and becomes seen", async () => {
    const backing = memoryAuditBacking(uniquePrefix("cache"))
    const first = { type: "x", auditIntegrity: head(1) }
    const write = prepared(first)
    expect((await Effect.runPromise(backing.append(write)))._tag).toBe("Committed")
    const cache = new HeadCache(backing)
    const read = await Effect.runPromise(cache.read)
    expect(read).toEqual(head(1))
    expect(cache.seen).toEqual({ sequence: 1, eventHash: "hash-1" })
    const ready = cache.current()
    expect(Exit.isExit(ready)).toBe(true)
    const handed = Effect.runSync(ready)!
    expect(handed).toEqual(head(1))
    ;(handed as { eventHash: string }).eventHash = "mutated"
    expect(Effect.runSync(cache.current())).toEqual(head(1))
  })
})
