/**
 * Verify before persist, on real Redis, through the facade and the Effect API, on
 * replicas that cached the head and fresh ones (which have not read it):
 * - a record that is not the head's successor (sequence skipping ahead or lagging on the
 *   head's hash, a previousHash naming no record) is `InvalidRecord`, nothing written;
 * - a record JSON would not store as it was hashed is `InvalidRecord` naming the path,
 *   nothing written, and the other replicas go on (a fast-check property over hostile
 *   events through haechi's core: each is stored and then verifies and reads back
 *   identically, or is refused);
 * - `verifyRecords: "full"` also refuses a record whose eventHash is not its own;
 * - `persist` twice in one transaction is `PersistCalledTwice`;
 * - unusable `onRewind` / `verifyRecords` options are `InvalidConfig`.
 */
import { Effect, Layer } from "effect"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord, type AuditIntegrity } from "../src/Chain.js"
import { createMemoryAuditStore, createRedisAuditStore } from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import { auditReplica, chainOf, dumpKeys, expectTag, rejection, styles } from "./support/auditFaults.js"
import { closeAll, connect } from "./support/conformanceStores.js"
import { createAuditSink, verifyAuditChain } from "./support/haechiCore.js"
import { hostile } from "./support/hostileValues.js"
import { uniquePrefix } from "./support/keys.js"

afterAll(closeAll)

const inspect = () => connect()

/** A chain of `n` records written by one replica; returns the head. */
const seed = async (style: "layer" | "facade", prefix: string, n: number) => {
  const store = await auditReplica(style, connect(), prefix)
  const sink = createAuditSink({ store })
  let last: AuditIntegrity | null = null
  for (let i = 0; i < n; i++) last = (await sink.record({ id: `seed-${i}` })).auditIntegrity
  return { store, head: last! }
}

describe.each(styles)("a record that does not continue the head (%s)", (style) => {
  describe.each(["cached", "fresh"] as const)("%s replica", (freshness) => {
    const replicaFor = async (prefix: string, seeded: Awaited<ReturnType<typeof seed>>) =>
      freshness === "cached" ? seeded.store : auditReplica(style, connect(), prefix)

    const cases: ReadonlyArray<readonly [string, (head: AuditIntegrity) => object, RegExp]> = [
      [
        "its sequence skips ahead on the head's hash",
        (h) => buildNextRecord({ id: "skip" }, { ...h, sequence: h.sequence + 1 }),
        /skips ahead|does not follow/
      ],
      [
        "its sequence lags on the head's hash",
        (h) => buildNextRecord({ id: "lag" }, { ...h, sequence: h.sequence - 1 }),
        /does not follow/
      ],
      [
        "its previousHash names no record",
        (h) => buildNextRecord({ id: "nowhere" }, { ...h, eventHash: "Z".repeat(43) }),
        /is not the eventHash/
      ]
    ]
    it.each(cases)("%s: InvalidRecord, nothing written", async (_, build, says) => {
      const prefix = uniquePrefix("not-successor")
      const seeded = await seed(style, prefix, 3)
      const store = await replicaFor(prefix, seeded)
      const client = inspect()
      const before = await dumpKeys(client, prefix)
      // The writer skips readLastIntegrity: the store has not read the head (when fresh).
      const error = await rejection(store.transaction(async ({ persist }) => persist(build(seeded.head) as never)))
      const invalid = expectTag(error, "InvalidRecord", { store: "audit" })
      expect(String(invalid["reason"])).toMatch(says)
      expect(await dumpKeys(client, prefix)).toEqual(before)
      // And the replica goes on normally.
      await createAuditSink({ store }).record({ id: "next" })
      expect(verifyAuditChain(await chainOf(client, prefix))).toMatchObject({ valid: true, records: 4 })
    })
  })

  it("a first record that is not sequence 1 on an empty chain: InvalidRecord, nothing written", async () => {
    const prefix = uniquePrefix("not-genesis")
    const store = await auditReplica(style, connect(), prefix)
    const fake = {
      alg: "sha256",
      canonicalization: "json-stable-v1",
      sequence: 4,
      previousHash: "Y".repeat(43),
      eventHash: "Y".repeat(43)
    } as const
    const error = await rejection(
      store.transaction(async ({ persist }) => persist(buildNextRecord({ id: "x" }, fake as never) as never))
    )
    expectTag(error, "InvalidRecord")
    expect(await inspect().exists(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)).toBe(0)
  })
})

// ---------------------------------------------------------------------------

/** A hostile value placed somewhere in an otherwise ordinary event. */
const hostileEvent = fc
  .record({
    where: fc.constantFrom("top", "nested", "inArray"),
    bad: hostile,
    big: fc.boolean()
  })
  .map(({ where, bad, big }) => {
    const base: Record<string, unknown> = { type: "request", request: { headers: { host: "h" } }, list: [1, "two"] }
    if (big) base["body"] = "b".repeat(1 << 20)
    if (where === "top") base["x"] = bad.value
    else if (where === "nested") (base["request"] as { headers: Record<string, unknown> }).headers["x"] = bad.value
    else (base["list"] as Array<unknown>).push(bad.value)
    return base
  })

describe.each(styles)("events JSON would not store as they were hashed (%s)", (style) => {
  it("through haechi's core: refused with the path named, nothing written, other replicas unaffected", async () => {
    const prefix = uniquePrefix("hostile-named")
    const client = inspect()
    const sink = createAuditSink({ store: await auditReplica(style, connect(), prefix) })
    await sink.record({ id: "first" })
    const before = await dumpKeys(client, prefix)
    const error = await rejection(sink.record({ request: { headers: { x: undefined } } }))
    expectTag(error, "InvalidRecord", { reason: "undefined value at request.headers.x" })
    for (const event of [{ s: "lone \uD800" }, { a: [1, , 3] }, { t: { toJSON: () => "x" } }]) {
      expectTag(await rejection(sink.record(event)), "InvalidRecord")
    }
    expect(await dumpKeys(client, prefix)).toEqual(before)
    await createAuditSink({ store: await auditReplica(style, connect(), prefix) }).record({ id: "other" })
    await sink.record({ id: "same-replica" })
    expect(verifyAuditChain(await chainOf(client, prefix))).toMatchObject({ valid: true, records: 3 })
  })

  it("property: each hostile event is stored (then verifies and reads back identically, cached and fresh) or refused, and others go on", async () => {
    const prefix = uniquePrefix("hostile-prop")
    const client = inspect()
    const writer = await auditReplica(style, connect(), prefix)
    const other = createAuditSink({ store: await auditReplica(style, connect(), prefix) })
    const sink = createAuditSink({ store: writer })
    let stored = 0
    let refused = 0
    await fc.assert(
      fc.asyncProperty(hostileEvent, async (event) => {
        const before = await client.llen(`${prefix}chain`)
        const outcome = await sink.record(event).then(
          (record) => ({ record }),
          (error: unknown) => ({ error })
        )
        if ("record" in outcome) {
          stored++
          const text = await client.lindex(`${prefix}chain`, -1)
          expect(JSON.parse(text!)).toEqual(outcome.record)
          expect(JSON.stringify(outcome.record)).toBe(text)
          // The cached replica and a fresh one both see it as the head.
          const fresh = await auditReplica(style, connect(), prefix)
          for (const store of [writer, fresh]) {
            expect(await store.transaction(async ({ readLastIntegrity }) => readLastIntegrity())).toEqual(
              outcome.record.auditIntegrity
            )
          }
        } else {
          refused++
          // (haechi's own hashing throws on a bigint before the store sees the record.)
          if (!(outcome.error instanceof TypeError && /BigInt/.test(outcome.error.message)))
            expectTag(outcome.error, "InvalidRecord")
          expect(await client.llen(`${prefix}chain`)).toBe(before)
        }
        await other.record({ id: `other-${before}` })
      }),
      { numRuns: 40 }
    )
    expect(verifyAuditChain(await chainOf(client, prefix))).toMatchObject({ valid: true })
    expect(refused).toBeGreaterThan(0)
    expect(stored + refused).toBe(40)
  }, 120_000)
})

describe("AuditLog: normalized through JSON, then checked", () => {
  it("stores a Date as its ISO string and drops undefined fields, but refuses a lone surrogate with the path", async () => {
    const client = inspect()
    const prefix = uniquePrefix("auditlog-json")
    const layer = AuditLog.layer.pipe(
      Layer.provideMerge(AuditStore.layer({ keyPrefix: prefix })),
      Layer.provide(RedisClient.layerFromClient(connect()))
    )
    const [stored, refused] = await Effect.runPromise(
      Effect.gen(function* () {
        const log = yield* AuditLog.AuditLog
        const stored = yield* log.record({ at: new Date(0), gone: undefined, ok: 1 })
        const refused = yield* Effect.flip(log.record({ user: { name: "x\uDC00" } }))
        return [stored, refused] as const
      }).pipe(Effect.provide(layer))
    )
    expect(stored).toMatchObject({ at: "1970-01-01T00:00:00.000Z", ok: 1 })
    expect("gone" in stored).toBe(false)
    expect(refused).toMatchObject({
      _tag: "InvalidRecord",
      reason: "a lone UTF-16 surrogate in the string at user.name"
    })
    expect(await client.llen(`${prefix}chain`)).toBe(1)
  })
})

// ---------------------------------------------------------------------------

describe('verifyRecords: "full"', () => {
  const tampered = (previous: AuditIntegrity | null) => {
    const record = buildNextRecord({ id: "t", amount: 1 }, previous)
    return { ...record, amount: 2 }
  }

  it.each(styles)("refuses a record whose eventHash is not its own (%s); the default stores it", async (style) => {
    const client = inspect()
    const full = uniquePrefix("full")
    const strict = await auditReplica(style, connect(), full, { verifyRecords: "full" })
    await createAuditSink({ store: strict }).record({ id: "ok" })
    const error = await rejection(
      strict.transaction(async ({ readLastIntegrity, persist }) =>
        persist(tampered(await readLastIntegrity()) as never)
      )
    )
    expectTag(error, "InvalidRecord")
    expect(String((error as { reason: string }).reason)).toMatch(/is not the record's json-stable-v1 hash/)
    expect(await client.llen(`${full}chain`)).toBe(1)

    const loose = uniquePrefix("chain-only")
    const lax = await auditReplica(style, connect(), loose)
    await lax.transaction(async ({ readLastIntegrity, persist }) =>
      persist(tampered(await readLastIntegrity()) as never)
    )
    expect(verifyAuditChain(await chainOf(client, loose))).toMatchObject({ valid: false })
  })

  it("works on the in-memory facade too", async () => {
    const store = createMemoryAuditStore({ verifyRecords: "full" })
    const error = await rejection(store.transaction(async ({ persist }) => persist(tampered(null))))
    expectTag(error, "InvalidRecord")
    expect(await store._records()).toEqual([])
  })
})

describe("the in-memory stores make the same checks", () => {
  it("not-successor records, hostile records and persist twice are refused there too, nothing kept", async () => {
    const store = createMemoryAuditStore()
    const sink = createAuditSink({ store: store as never })
    const head = (await sink.record({ id: "one" })).auditIntegrity
    const refused = [
      await rejection(
        store.transaction(async ({ persist }) => persist(buildNextRecord({ id: "skip" }, { ...head, sequence: 5 })))
      ),
      await rejection(
        store.transaction(async ({ persist }) =>
          persist(buildNextRecord({ id: "nowhere" }, { ...head, eventHash: "Q".repeat(43) }))
        )
      ),
      await rejection(sink.record({ bad: [1, , 2] }))
    ]
    for (const error of refused) expectTag(error, "InvalidRecord")
    const twice = await rejection(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const next = buildNextRecord({ id: "two" }, await readLastIntegrity())
        await persist(next)
        await persist(buildNextRecord({ id: "three" }, next.auditIntegrity))
      })
    )
    expectTag(twice, "PersistCalledTwice", { first: "committed" })
    expect((await store._records()).map((r) => r["id"])).toEqual(["one", "two"])
  })
})

describe.each(styles)("persist twice in one transaction (%s)", (style) => {
  it("the second call is PersistCalledTwice and writes nothing, sequential or concurrent", async () => {
    const client = inspect()
    const prefix = uniquePrefix("persist-twice")
    const store = await auditReplica(style, connect(), prefix)
    const error = await rejection(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const first = buildNextRecord({ id: "one" }, await readLastIntegrity())
        await persist(first)
        await persist(buildNextRecord({ id: "two" }, first.auditIntegrity))
      })
    )
    expectTag(error, "PersistCalledTwice", { first: "committed" })
    expect(String((error as Error).message)).toContain("persist was called twice in one transaction")
    expect((await chainOf(client, prefix)).map((r) => r["id"])).toEqual(["one"])

    const concurrent = await rejection(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const previous = await readLastIntegrity()
        await Promise.all([
          persist(buildNextRecord({ id: "a" }, previous)),
          persist(buildNextRecord({ id: "b" }, previous))
        ])
      })
    )
    expectTag(concurrent, "PersistCalledTwice", { first: "pending" })
    expect(await client.llen(`${prefix}chain`)).toBe(2)
    // Each re-run of fn after a conflict gets its own persist: a normal record still goes in.
    await createAuditSink({ store }).record({ id: "three" })
    expect(verifyAuditChain(await chainOf(client, prefix))).toMatchObject({ valid: true, records: 3 })
  })
})

describe("unusable options", () => {
  it("onRewind and verifyRecords outside their values are InvalidConfig (facade, Effect make, memory)", async () => {
    const client = connect()
    for (const options of [{ onRewind: "sometimes" }, { verifyRecords: "yes" }] as const) {
      const option = Object.keys(options)[0]
      expect(() => createRedisAuditStore({ client, ...(options as object) })).toThrow(
        expect.objectContaining({ _tag: "InvalidConfig", option })
      )
      expect(() => createMemoryAuditStore(options as never)).toThrow(
        expect.objectContaining({ _tag: "InvalidConfig", option })
      )
      const made = await Effect.runPromise(
        Effect.flip(AuditStore.make(options as never).pipe(Effect.provide(RedisClient.layerFromClient(client))))
      )
      expect(made).toMatchObject({ _tag: "InvalidConfig", option })
    }
  })
})

describe("a persist after the Effect transaction ended", () => {
  const leakAndPersistLate = (layer: Layer.Layer<AuditStore.AuditStore, unknown>) =>
    Effect.gen(function* () {
      const store = yield* AuditStore.AuditStore
      let leaked: AuditStore.AuditTransaction | undefined
      const head = yield* store.transaction((tx) =>
        Effect.flatMap(tx.readLastIntegrity, (last) => {
          leaked = tx
          return Effect.succeed(last)
        })
      )
      // The build ended without persisting; its transaction persists later, from outside it.
      const late = yield* Effect.either(leaked!.persist(buildNextRecord({ id: "late" }, head)))
      // And a build that persisted once, then returned: its transaction refuses the same way.
      let twice: AuditStore.AuditTransaction | undefined
      yield* store.transaction((tx) =>
        Effect.flatMap(tx.readLastIntegrity, (last) => {
          twice = tx
          return tx.persist(buildNextRecord({ id: "in time" }, last))
        })
      )
      const afterCommit = yield* Effect.either(twice!.persist(buildNextRecord({ id: "after" }, head)))
      const length = yield* store.length
      return { late, afterCommit, length }
    }).pipe(Effect.provide(layer))

  it.each(["redis", "memory"] as const)(
    "is PersistAfterTransaction naming the prefix, and writes nothing (%s)",
    async (backing) => {
      const prefix = uniquePrefix("persist-late-effect")
      const layer =
        backing === "redis"
          ? AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layerFromClient(connect())))
          : AuditStore.layerMemory({ keyPrefix: prefix })
      const { late, afterCommit, length } = await Effect.runPromise(leakAndPersistLate(layer))
      for (const outcome of [late, afterCommit]) {
        expect(outcome._tag).toBe("Left")
        expectTag((outcome as { left: unknown }).left, "PersistAfterTransaction", { prefix })
      }
      expect(length).toBe(1)
    }
  )
})
