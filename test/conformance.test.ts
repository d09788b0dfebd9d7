/**
 * ONE contract-conformance suite (docs: haechi-contracts.md), run over every way of making
 * stores: the in-memory Effect layers, the Redis Effect layers, the Promise facade on
 * Redis and the Promise facade in memory. The stores are driven by test/support/haechiCore
 * exactly as haechi's core drives them; Redis kinds run against the real shared server.
 */
import { afterAll, describe, expect, it } from "vitest"
import { buildNextRecord, computeEventHash, type AuditIntegrity, type AuditRecord } from "../src/Chain.js"
import type { HaechiTokenStore, MutableView, ReadView } from "../src/haechi.js"
import { allKinds, closeAll, inspector, sleep, type StoreKind } from "./support/conformanceStores.js"
import { createAuditSink, createTokenVault, verifyAuditChain, type TokenStore } from "./support/haechiCore.js"

afterAll(closeAll)

/** A token record in the core's shape, with some JSON that must survive exactly. */
const tokenRecord = (token: string, extra: Record<string, unknown> = {}) => ({
  type: "email",
  createdAt: "2030-01-01T00:00:00.000Z",
  expiresAt: "2030-02-01T00:00:00.000Z",
  metadata: { fingerprint: `fp-${token}` },
  envelope: { alg: "test", iv: "aXY", ciphertext: Buffer.from(token).toString("base64url") },
  aad: { purpose: "token-vault", token, type: "email", context: {} },
  ...extra
})

// Loosely typed access to records for in-place edits, as the core does it.
type Loose = { [key: string]: any }
const loose = (value: unknown): Loose => value as Loose

const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`)
    },
    (error: unknown) => error
  )

/** The version counter on Redis ("" in memory, where there is no outside view of it). */
const versionOf = async (kind: StoreKind, prefix: string) =>
  kind.redis ? ((await inspector().get(`${prefix}version`)) ?? "") : ""

/** A view wrapper that counts how many entries each `entries()` call handed the core. */
const countingStore = (store: HaechiTokenStore, seen: Array<number>): TokenStore => ({
  mutate: (fn) =>
    store.mutate((view) =>
      fn({
        get: (t) => view.get(t),
        set: (t, r) => view.set(t, r as Loose),
        delete: (t) => view.delete(t),
        entries: () => {
          const entries = view.entries()
          seen.push(entries.length)
          return entries
        }
      })
    ),
  read: (fn) => store.read(fn)
})

describe.each(allKinds)("$name", (kind) => {
  describe("audit store", () => {
    it("reads null on an empty chain, and ready() is { ok: true }", async () => {
      const { stores, records } = await kind.audits(1, "empty")
      const store = stores[0]!
      expect(await store.ready()).toEqual({ ok: true })
      expect(await createAuditSink({ store }).ready()).toEqual({ ok: true })
      let seen: unknown = "not called"
      await store.transaction(async ({ readLastIntegrity }) => {
        seen = await readLastIntegrity()
      })
      expect(seen).toBeNull()
      expect(await records()).toEqual([])
    })

    it("chains records with sequence, previousHash and eventHash, and verifyAuditChain passes", async () => {
      const { stores, records } = await kind.audits(1, "chain")
      const sink = createAuditSink({ store: stores[0]! })
      const written: Array<AuditRecord> = []
      for (let i = 0; i < 6; i++) written.push(await sink.record({ type: "request", id: `e${i}`, n: i }))

      written.forEach((record, i) => {
        const integrity = record.auditIntegrity
        expect(integrity.sequence).toBe(i + 1)
        expect(integrity.previousHash).toBe(i === 0 ? null : written[i - 1]!.auditIntegrity.eventHash)
        expect(integrity.eventHash).toBe(computeEventHash(record))
        expect(integrity).toMatchObject({ alg: "sha256", canonicalization: "json-stable-v1" })
      })
      const stored = await records()
      expect(stored).toEqual(JSON.parse(JSON.stringify(written)))
      expect(verifyAuditChain(stored)).toEqual({
        valid: true,
        records: 6,
        headHash: written[5]!.auditIntegrity.eventHash
      })
      // The next transaction reads the last record's integrity.
      let last: AuditIntegrity | null = null
      await stores[0]!.transaction(async ({ readLastIntegrity }) => {
        last = await readLastIntegrity()
      })
      expect(last).toEqual(written[5]!.auditIntegrity)
    })

    it("returns fn's value (the very object)", async () => {
      const { stores, records } = await kind.audits(1, "value")
      const store = stores[0]!
      const value = { answer: 42 }
      expect(await store.transaction(async () => value)).toBe(value)
      const persisted = { persisted: true }
      const result = await store.transaction(async ({ readLastIntegrity, persist }) => {
        await persist(buildNextRecord({ id: "x" }, await readLastIntegrity()))
        return persisted
      })
      expect(result).toBe(persisted)
      expect(await records()).toHaveLength(1)
    })

    it("rejects with the very error fn throws and writes nothing", async () => {
      const { stores, records } = await kind.audits(1, "throws")
      const store = stores[0]!
      const sink = createAuditSink({ store })
      await sink.record({ id: "a" })
      await sink.record({ id: "b" })
      const before = await records()

      const boom = new Error("boom")
      let calls = 0
      const error = await rejection(
        store.transaction(async ({ readLastIntegrity }) => {
          calls++
          const record = buildNextRecord({ id: "never" }, await readLastIntegrity())
          expect(record.auditIntegrity.sequence).toBe(3)
          throw boom
        })
      )
      expect.soft(error).toBe(boom)
      expect(calls).toBe(1)
      // Not an Error at all: still the very value.
      const odd = { code: "ODD" }
      expect.soft(await rejection(store.transaction(async () => Promise.reject(odd)))).toBe(odd)
      class Tagged extends Error {
        readonly _tag = "MyError"
      }
      const tagged = new Tagged("tagged")
      expect
        .soft(
          await rejection(
            store.transaction(async () => {
              throw tagged
            })
          )
        )
        .toBe(tagged)

      expect(await records()).toEqual(before)
      // The chain goes on from where it was.
      const next = await sink.record({ id: "c" })
      expect(next.auditIntegrity.sequence).toBe(3)
      const after = await records()
      expect(after.map((r) => r["id"])).toEqual(["a", "b", "c"])
      expect(verifyAuditChain(after)).toMatchObject({ valid: true, records: 3 })
    })

    it("round-trips records through JSON exactly", async () => {
      const { prefix, stores, records } = await kind.audits(1, "json")
      const sink = createAuditSink({ store: stores[0]! })
      const events: Array<Record<string, unknown>> = [
        {
          type: "request",
          text: 'ünïcødé 한국어 🔑 "quoted" \\ back \n new \u2028 \u0007',
          numbers: [0, -1, 0.1, 1e-7, 1e21, Number.MAX_SAFE_INTEGER, 3.14159],
          nested: { deep: { deeper: [{ a: null }, [], {}, ""] } },
          flags: { yes: true, no: false },
          constructor: "a key named constructor",
          toString: "and toString"
        },
        { type: "empty", "": "empty key", " ": "space key" }
      ]
      const written = []
      for (const event of events) written.push(await sink.record(event))
      const stored = await records()
      expect(stored.map((r) => JSON.stringify(r))).toEqual(written.map((r) => JSON.stringify(r)))
      expect(verifyAuditChain(stored)).toMatchObject({ valid: true, records: 2 })
      if (kind.redis) {
        // The text in Redis is exactly JSON.stringify(record).
        expect(await inspector().lrange(`${prefix}chain`, 0, -1)).toEqual(written.map((r) => JSON.stringify(r)))
      }
    })

    it("shares one chain between two replicas", async () => {
      const { stores, records } = await kind.audits(2, "replicas")
      const [a, b] = [createAuditSink({ store: stores[0]! }), createAuditSink({ store: stores[1]! })]
      for (let i = 0; i < 3; i++) {
        await a.record({ id: `a${i}` })
        await b.record({ id: `b${i}` })
      }
      await Promise.all([
        ...Array.from({ length: 5 }, (_, i) => a.record({ id: `ca${i}` })),
        ...Array.from({ length: 5 }, (_, i) => b.record({ id: `cb${i}` }))
      ])
      const stored = await records()
      expect(verifyAuditChain(stored)).toMatchObject({ valid: true, records: 16 })
      const ids = stored.map((r) => r["id"] as string)
      expect(new Set(ids).size).toBe(16)
      expect(ids.slice(0, 6)).toEqual(["a0", "b0", "a1", "b1", "a2", "b2"])
    })

    it("records the same event from two replicas twice (another writer's identical record is not a re-send)", async () => {
      const { stores, records } = await kind.audits(2, "identical")
      const [a, b] = [createAuditSink({ store: stores[0]! }), createAuditSink({ store: stores[1]! })]
      await b.record({ type: "boot" })
      // Both replicas emit the very same event; b still believes the head is its own record,
      // so it builds exactly the record a just appended: the fence must send it round again.
      const event = { type: "heartbeat", node: "gateway" }
      const fromA = await a.record(event)
      const fromB = await b.record(event)
      expect(fromA.auditIntegrity.sequence).toBe(2)
      expect(fromB.auditIntegrity.sequence).toBe(3)
      const stored = await records()
      expect(stored.map((r) => r["type"])).toEqual(["boot", "heartbeat", "heartbeat"])
      expect(verifyAuditChain(stored)).toMatchObject({ valid: true, records: 3 })
    })

    it("re-runs fn on the new head when another replica appended after fn read the head", async () => {
      const { stores, records } = await kind.audits(2, "rerun")
      await createAuditSink({ store: stores[1]! }).record({ id: "first" })
      const heads: Array<number | null> = []
      let release!: () => void
      const gate = new Promise<void>((resolve) => (release = resolve))
      const slow = stores[0]!.transaction(async ({ readLastIntegrity, persist }) => {
        const previous = await readLastIntegrity()
        heads.push(previous?.sequence ?? null)
        await gate
        const record = buildNextRecord({ id: "slow" }, previous)
        await persist(record)
        return record
      })
      while (heads.length === 0) await sleep(1)
      await createAuditSink({ store: stores[1]! }).record({ id: "fast" })
      release()
      const record = await slow
      expect(heads).toEqual([1, 2])
      expect(record.auditIntegrity.sequence).toBe(3)
      const stored = await records()
      expect(stored.map((r) => r["id"])).toEqual(["first", "fast", "slow"])
      expect(verifyAuditChain(stored)).toMatchObject({ valid: true, records: 3 })
    })
  })

  describe("token store", () => {
    it("round-trips tokenize / reveal / detokenize / purge / purgeExpired / exportMetadata; ready() is { ok: true }", async () => {
      const { prefix, stores, tokens } = await kind.vaults(1, "vault")
      const store = stores[0]!
      expect(await store.ready()).toEqual({ ok: true })
      let clock = Date.parse("2030-01-01T00:00:00Z")
      const vault = createTokenVault({ store, now: () => clock })

      const alice = await vault.tokenize("alice@example.com", { type: "email" })
      expect(alice).toMatchObject({ type: "email", reused: false })
      expect(alice.token).toMatch(/^tok_email_[0-9a-f]{16}$/)
      const again = await vault.tokenize("alice@example.com", { type: "email" })
      expect(again).toEqual({ token: alice.token, type: "email", reused: true })
      const phone = await vault.tokenize("010-1234-5678", { type: "phone", ttlMs: 1_000 })

      expect(await vault.reveal(alice.token)).toEqual({
        token: alice.token,
        type: "email",
        plaintext: "alice@example.com"
      })
      expect(await vault.detokenize([alice.token, phone.token, "tok_email_missing"])).toEqual(
        new Map([
          [alice.token, "alice@example.com"],
          [phone.token, "010-1234-5678"]
        ])
      )
      const all = await vault.exportMetadata()
      expect(all.map((m) => m.token).sort()).toEqual([alice.token, phone.token].sort())
      const emails = await vault.exportMetadata({ type: "email" })
      expect(emails).toEqual([
        {
          token: alice.token,
          type: "email",
          createdAt: new Date(clock).toISOString(),
          expiresAt: new Date(clock + 30 * 24 * 3600 * 1000).toISOString(),
          metadata: { fingerprint: expect.any(String) }
        }
      ])
      if (kind.redis) expect(Object.keys(await tokens()).sort()).toEqual([alice.token, phone.token].sort())

      expect(await vault.purge(alice.token)).toEqual({ token: alice.token, purged: true })
      await expect(vault.reveal(alice.token)).rejects.toThrow("Unknown token")
      expect(await vault.purge(alice.token)).toEqual({ token: alice.token, purged: false })

      clock += 2_000
      await expect(vault.reveal(phone.token)).rejects.toThrow("Token expired")
      expect(await vault.detokenize([phone.token])).toEqual(new Map())
      expect(await vault.purgeExpired()).toEqual({ purged: 1 })
      expect(await vault.purgeExpired()).toEqual({ purged: 0 })
      expect(await vault.exportMetadata()).toEqual([])
      expect(await tokens()).toEqual({})
      if (kind.redis) expect(Number(await versionOf(kind, prefix))).toBeGreaterThanOrEqual(4)
    })

    it("views: get returns the record or undefined, entries() is a real Array", async () => {
      const { stores } = await kind.vaults(1, "views")
      const store = stores[0]!
      const one = tokenRecord("t1")
      const two = tokenRecord("t2", { type: "phone" })
      await store.mutate(async (view) => {
        expect(view.get("t1")).toBeUndefined()
        expect(Array.isArray(view.entries())).toBe(true)
        expect(view.entries()).toEqual([])
        view.set("t1", one)
        view.set("t2", two)
        view.set("t3", tokenRecord("t3"))
        expect(view.get("t1")).toEqual(one)
        expect(view.delete("t3")).toBe(true)
        expect(view.get("t3")).toBeUndefined()
        expect(
          view
            .entries()
            .map(([t]) => t)
            .sort()
        ).toEqual(["t1", "t2"])
      })
      const check = (view: ReadView | MutableView) => {
        expect(view.get("t1")).toEqual(one)
        expect(view.get("t2")).toEqual(two)
        expect(view.get("t3")).toBeUndefined()
        expect(view.get("missing")).toBeUndefined()
        const entries = view.entries()
        expect(Array.isArray(entries)).toBe(true)
        expect(entries).toHaveLength(2)
        expect(entries.filter(([, r]) => r["type"] === "phone").map(([t]) => t)).toEqual(["t2"])
        const seen: Array<string> = []
        for (const [token, record] of entries) {
          seen.push(token)
          expect(record).toEqual(token === "t1" ? one : two)
        }
        expect(seen.sort()).toEqual(["t1", "t2"])
        // A fresh Array each time: what the core does with one never changes the next.
        entries.length = 0
        expect(view.entries()).toHaveLength(2)
      }
      await store.mutate(async (view) => check(view))
      await store.read((view) => check(view))
      // A synchronous fn works as well as an async one.
      expect(await store.read((view) => view.entries().length)).toBe(2)
    })

    it("returns fn's value; a throwing fn rejects with that very error and writes nothing", async () => {
      const { prefix, stores, tokens } = await kind.vaults(1, "mutthrow")
      const store = stores[0]!
      await store.mutate(async (view) => {
        for (const t of ["k1", "k2", "k3"]) view.set(t, tokenRecord(t))
      })
      const value = { value: 1 }
      expect(await store.mutate(async () => value)).toBe(value)
      expect(await store.read(async () => value)).toBe(value)
      const before = await tokens()
      const version = await versionOf(kind, prefix)

      const boom = new Error("half-way")
      const error = await rejection(
        store.mutate(async (view) => {
          view.set("k1", tokenRecord("k1", { type: "changed" }))
          view.delete("k2")
          view.set("k4", tokenRecord("k4"))
          view.delete("k3")
          view.set("k5", tokenRecord("k5"))
          await sleep(1)
          throw boom
        })
      )
      expect.soft(error).toBe(boom)
      const readError = new TypeError("in read")
      expect
        .soft(
          await rejection(
            store.read(() => {
              throw readError
            })
          )
        )
        .toBe(readError)
      expect(await tokens()).toEqual(before)
      expect(await versionOf(kind, prefix)).toBe(version)
      await store.read((view) => {
        expect(
          view
            .entries()
            .map(([t]) => t)
            .sort()
        ).toEqual(["k1", "k2", "k3"])
        expect(view.get("k1")).toEqual(tokenRecord("k1"))
      })
    })

    it("every mutation prunes expired records over the whole vault", async () => {
      const { stores, tokens } = await kind.vaults(2, "prune")
      let clock = Date.parse("2030-01-01T00:00:00Z")
      const seen: Array<number> = []
      const vault = createTokenVault({ store: countingStore(stores[0]!, seen), now: () => clock })
      // Another replica fills the vault; the core's scan must see all of it.
      await stores[1]!.mutate(async (view) => {
        for (let i = 0; i < 40; i++) view.set(`other${i}`, tokenRecord(`other${i}`, { expiresAt: null }))
      })
      const short1 = await vault.tokenize("short-1", { type: "email", ttlMs: 1_000 })
      expect(seen.at(0)).toBe(40)
      const short2 = await vault.tokenize("short-2", { type: "email", ttlMs: 1_000 })
      const long = await vault.tokenize("long", { type: "email", ttlMs: 60_000 })
      expect(Object.keys(await tokens())).toHaveLength(43)

      clock += 5_000
      const fresh = await vault.tokenize("fresh", { type: "email" })
      const left = Object.keys(await tokens())
      expect(left).toHaveLength(42)
      expect(left).not.toContain(short1.token)
      expect(left).not.toContain(short2.token)
      expect(left).toContain(long.token)
      expect(left).toContain(fresh.token)

      clock += 60_000
      expect(await vault.purge("tok_email_missing")).toEqual({ token: "tok_email_missing", purged: false })
      expect(Object.keys(await tokens())).not.toContain(long.token)
      expect(Object.keys(await tokens())).toHaveLength(41)
      // Every mutation scanned everything there was.
      expect(seen.length).toBeGreaterThanOrEqual(4)
      expect(seen.slice(-1)[0]).toBe(42)
    })

    it("persists an in-place edit followed by set", async () => {
      const { prefix, stores } = await kind.vaults(2, "inplace")
      let clock = Date.parse("2030-01-01T00:00:00Z")
      const vault = createTokenVault({ store: stores[0]!, now: () => clock })
      const first = await vault.tokenize("bob@example.com", { type: "email", ttlMs: 1_000 })
      clock += 500
      // The core's re-tokenize: get, edit expiresAt in place, set.
      const again = await vault.tokenize("bob@example.com", { type: "email", ttlMs: 10_000 })
      expect(again).toEqual({ token: first.token, type: "email", reused: true })
      const expected = new Date(clock + 10_000).toISOString()
      for (const store of stores) {
        expect(await store.read((view) => view.get(first.token)?.["expiresAt"])).toBe(expected)
      }
      await stores[0]!.mutate(async (view) => {
        const record = loose(view.get(first.token))
        record.metadata.note = "edited in place"
        record.envelope.ciphertext = "changed"
        view.set(first.token, record)
      })
      for (const store of stores) {
        const record = loose(await store.read((view) => view.get(first.token)))
        expect(record.metadata.note).toBe("edited in place")
        expect(record.envelope.ciphertext).toBe("changed")
        expect(record.expiresAt).toBe(expected)
      }
      if (kind.redis) {
        const json = JSON.parse((await inspector().hget(`${prefix}tokens`, first.token))!) as Loose
        expect(json.metadata.note).toBe("edited in place")
      }
    })

    it("never lets an in-place edit leak: not from a rejected mutation, a read, or after set", async () => {
      const { stores, tokens } = await kind.vaults(2, "leak")
      const store = stores[0]!
      await store.mutate(async (view) => {
        for (const t of ["a", "b", "c"]) view.set(t, tokenRecord(t))
      })
      const before = await tokens()
      const snapshot = await store.read((view) =>
        Object.fromEntries(view.entries().map(([t, r]) => [t, JSON.parse(JSON.stringify(r))]))
      )

      const boom = new Error("after editing")
      expect
        .soft(
          await rejection(
            store.mutate(async (view) => {
              const a = loose(view.get("a"))
              a.expiresAt = "edited"
              a.metadata.fingerprint = "edited"
              view.set("a", a)
              const b = loose(view.get("b"))
              b.type = "edited without set"
              b.envelope.iv = "edited"
              view.delete("c")
              view.set("d", tokenRecord("d"))
              await sleep(1)
              throw boom
            })
          )
        )
        .toBe(boom)

      const all = (view: ReadView) => Object.fromEntries(view.entries().map(([t, r]) => [t, r]))
      for (const s of stores) {
        expect(
          await s.read((view) => ({ a: view.get("a"), b: view.get("b"), c: view.get("c"), d: view.get("d") }))
        ).toEqual({
          ...snapshot,
          d: undefined
        })
        expect(await s.read(all)).toEqual(snapshot)
        await s.mutate(async (view) => {
          expect(view.get("a")).toEqual(snapshot["a"])
          expect(view.get("b")).toEqual(snapshot["b"])
          expect(view.get("c")).toEqual(snapshot["c"])
          expect(view.get("d")).toBeUndefined()
          expect(all(view)).toEqual(snapshot)
        })
      }
      expect(await tokens()).toEqual(before)

      // An edit to a record got from a read stays in that copy.
      await store.read((view) => {
        loose(view.get("a")).type = "edited in a read"
      })
      expect(await store.read((view) => view.get("a"))).toEqual(snapshot["a"])

      // An object handed to set and edited after the mutation committed stays as committed.
      const kept = tokenRecord("k")
      await store.mutate(async (view) => view.set("k", kept))
      kept.type = "edited after commit"
      kept.metadata.fingerprint = "edited after commit"
      for (const s of stores) expect(await s.read((view) => view.get("k"))).toEqual(tokenRecord("k"))
      expect(JSON.parse((await tokens())["k"]!)).toEqual(tokenRecord("k"))
    })

    it("round-trips odd token ids (__proto__, constructor, toString, unicode, empty-like)", async () => {
      const { stores, tokens } = await kind.vaults(2, "oddids")
      const ids = [
        "__proto__",
        "constructor",
        "toString",
        "hasOwnProperty",
        "valueOf",
        "prototype",
        "__defineGetter__",
        "토큰-🔑-ü-\u00e9",
        "",
        " ",
        "null",
        "undefined",
        "0",
        "-1",
        'a\nb\t"c"\\',
        "tok_email_0123456789abcdef"
      ]
      for (const store of stores) {
        await store.read((view) => {
          for (const id of ids) expect(view.get(id), id).toBeUndefined()
          expect(view.entries()).toEqual([])
        })
        await store.mutate(async (view) => {
          for (const id of ids) expect(view.get(id), id).toBeUndefined()
        })
      }
      await stores[0]!.mutate(async (view) => {
        for (const id of ids) view.set(id, tokenRecord(id))
      })
      const check = (view: ReadView | MutableView, present: ReadonlyArray<string>) => {
        for (const id of ids) {
          if (present.includes(id)) expect(view.get(id), id).toEqual(tokenRecord(id))
          else expect(view.get(id), id).toBeUndefined()
        }
        const entries = view.entries()
        expect(entries.map(([t]) => t).sort()).toEqual([...present].sort())
        for (const [t, r] of entries) expect(r).toEqual(tokenRecord(t))
      }
      for (const store of stores) {
        await store.read((view) => check(view, ids))
        await store.mutate(async (view) => check(view, ids))
      }
      expect(Object.keys(await tokens()).sort()).toEqual([...ids].sort())
      const removed = ids.filter((_, i) => i % 2 === 0)
      const kept = ids.filter((_, i) => i % 2 === 1)
      await stores[1]!.mutate(async (view) => {
        for (const id of removed) expect(view.delete(id), id).toBe(true)
      })
      for (const store of stores) {
        await store.read((view) => check(view, kept))
        await store.mutate(async (view) => check(view, kept))
      }
      // The core's vault over these ids: reveal goes through get.
      await stores[0]!.mutate(async (view) => {
        view.set("__proto__", {
          ...tokenRecord("__proto__"),
          envelope: { alg: "test", iv: "x", ciphertext: Buffer.from("secret").toString("base64url") }
        })
      })
      const vault = createTokenVault({ store: stores[1]!, now: () => Date.parse("2030-01-01T00:00:00Z") })
      expect(await vault.reveal("__proto__")).toEqual({ token: "__proto__", type: "email", plaintext: "secret" })
      await expect(vault.reveal("constructor")).resolves.toMatchObject({ token: "constructor" })
      await expect(vault.reveal("toString")).rejects.toThrow("Unknown token")
    })

    it("round-trips records through JSON exactly", async () => {
      const { prefix, stores, tokens } = await kind.vaults(2, "json")
      const record = {
        ...tokenRecord("j"),
        metadata: {
          fingerprint: "fp",
          text: 'ünïcødé 한국어 🔑 "q" \\ \n \u2028 \u0000',
          numbers: [0, -1, 0.1, 1e-7, 1e21, -0, Number.MAX_SAFE_INTEGER],
          nested: { deep: [{ a: null }, [], {}, ""] },
          flags: [true, false]
          // (What JSON would not store as given, such as undefined, a Date or an inherited
          // key, is refused with InvalidRecord: test/integrity.vault.test.ts.)
        },
        own: JSON.parse('{"__proto__":{"own":"an own __proto__ key"},"constructor":1}') as unknown
      }
      const json = JSON.stringify(record)
      const expected = JSON.parse(json) as unknown
      await stores[0]!.mutate(async (view) => view.set("j", record))
      for (const store of stores) {
        const got = await store.read((view) => view.get("j"))
        expect(JSON.stringify(got)).toBe(json)
        expect(got).toStrictEqual(expected)
        const entry = await store.read((view) => view.entries()[0]!)
        expect(entry[0]).toBe("j")
        expect(JSON.stringify(entry[1])).toBe(json)
        await store.mutate(async (view) => {
          expect(JSON.stringify(view.get("j"))).toBe(json)
        })
      }
      expect((await tokens())["j"]).toBe(json)
      if (kind.redis) expect(await inspector().hget(`${prefix}tokens`, "j")).toBe(json)
    })

    it("shares one vault between two replicas", async () => {
      const { stores } = await kind.vaults(2, "replicas")
      const now = () => Date.parse("2030-01-01T00:00:00Z")
      const a = createTokenVault({ store: stores[0]!, now })
      const b = createTokenVault({ store: stores[1]!, now })

      const carol = await a.tokenize("carol@example.com", { type: "email" })
      expect(await b.reveal(carol.token)).toMatchObject({ plaintext: "carol@example.com" })
      expect(await b.tokenize("carol@example.com", { type: "email" })).toEqual({ ...carol, reused: true })
      expect(await b.purge(carol.token)).toEqual({ token: carol.token, purged: true })
      await expect(a.reveal(carol.token)).rejects.toThrow("Unknown token")

      const [fromA, fromB] = await Promise.all([
        Promise.all(Array.from({ length: 8 }, (_, i) => a.tokenize(`a${i}@x`, { type: "email" }))),
        Promise.all(Array.from({ length: 8 }, (_, i) => b.tokenize(`b${i}@x`, { type: "email" })))
      ])
      const expectedTokens = [...fromA, ...fromB].map((t) => t.token).sort()
      expect((await a.exportMetadata()).map((m) => m.token).sort()).toEqual(expectedTokens)
      expect((await b.exportMetadata()).map((m) => m.token).sort()).toEqual(expectedTokens)
      expect(await b.detokenize(fromA.map((t) => t.token))).toEqual(new Map(fromA.map((t, i) => [t.token, `a${i}@x`])))

      // The same value tokenized on both replicas at once dedupes to one token.
      const [x, y] = await Promise.all([
        a.tokenize("same@x", { type: "email" }),
        b.tokenize("same@x", { type: "email" })
      ])
      expect(x.token).toBe(y.token)
      expect([x.reused, y.reused].sort()).toEqual([false, true])
      expect((await a.exportMetadata()).filter((m) => m.token === x.token)).toHaveLength(1)
    })
  })
})
