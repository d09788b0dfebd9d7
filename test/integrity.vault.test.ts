/**
 * The vault stores faithfully or refuses, against real Redis: a record is stored only if
 * JSON gives it back exactly as it was handed to `set` (a plain object, no undefined,
 * Date, boxed value, toJSON, sparse array, lone surrogate...), and a token id only if it
 * is well-formed UTF-16 (what Redis and its scripts hold is then the id itself). Anything
 * else is `InvalidRecord` naming the token, with nothing written and every other replica,
 * cached or fresh, still working. A change-log entry no script can decode (as an older
 * or foreign writer could leave) makes a replica read the vault in full, not fail every
 * replica's reads and writes until a thousand commits push it out.
 */
import { Effect, Layer } from "effect"
import fc from "fast-check"
import type { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { InvalidRecord, ViewChangedAfterMutate } from "../src/Errors.js"
import { createMemoryTokenStore, type HaechiTokenStore } from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { closeAll, connect, inspector, redisVaultReplica, type ReplicaStyle } from "./support/conformanceStores.js"
import { createTokenVault, type TokenStore as CoreTokenStore } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"

afterAll(closeAll)

const record = (token: string, extra: Record<string, unknown> = {}) => ({
  type: "email",
  createdAt: "2030-01-01T00:00:00.000Z",
  expiresAt: null,
  metadata: { fingerprint: token, ...extra },
  envelope: { alg: "test", iv: "iv", ciphertext: Buffer.from(token).toString("base64url") },
  aad: { purpose: "token-vault", token, type: "email", context: {} }
})

/** Every key under `prefix` with its content, to show that nothing was written. */
const dump = async (client: Redis, prefix: string): Promise<Record<string, unknown>> => ({
  version: await client.get(`${prefix}version`),
  tokens: await client.hgetall(`${prefix}tokens`),
  log: await client.lrange(`${prefix}log`, 0, -1)
})

const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => expect.unreachable("resolved, but a refusal was expected"),
    (error: unknown) => error
  )

const expectRefused = (error: unknown, token: string): void => {
  expect(error).toBeInstanceOf(InvalidRecord)
  expect((error as InvalidRecord).store).toBe("vault")
  expect((error as InvalidRecord).token).toBe(token)
  expect((error as InvalidRecord).message).toContain(JSON.stringify(token))
}

/** A writer, a replica whose cache is warm, and a way to make fresh replicas, over one new prefix. */
const fleet = async (style: ReplicaStyle | "memory", name: string) => {
  const prefix = uniquePrefix(name)
  if (style === "memory") {
    const store = createMemoryTokenStore()
    return { prefix, redis: false, writer: store, cached: store, fresh: async () => store }
  }
  const fresh = () => redisVaultReplica(style, connect(), prefix)
  const writer = await fresh()
  const cached = await fresh()
  await writer.mutate((view) => view.set("seed", record("seed")))
  await cached.read((view) => view.entries())
  return { prefix, redis: true, writer, cached, fresh }
}

/** The vault as each replica sees it is what Redis holds, and each can still write. */
const expectOthersWork = async (prefix: string, replicas: ReadonlyArray<HaechiTokenStore>, tag: string) => {
  for (const [i, store] of replicas.entries()) {
    const held = await inspector().hgetall(`${prefix}tokens`)
    const seen = await store.read((view) => Object.fromEntries(view.entries().map(([t, r]) => [t, JSON.stringify(r)])))
    expect(seen).toEqual(held)
    await store.mutate((view) => view.set(`ok-${tag}-${i}`, record(`ok-${tag}-${i}`)))
  }
  const after = await inspector().hgetall(`${prefix}tokens`)
  for (const i of replicas.keys()) expect(after[`ok-${tag}-${i}`]).toBe(JSON.stringify(record(`ok-${tag}-${i}`)))
}

const deep = (levels: number): unknown => {
  let value: unknown = "bottom"
  for (let i = 0; i < levels; i++) value = { down: value }
  return value
}

/** What JSON would not give back as it was given: each must be refused at commit. */
const unfaithful: ReadonlyArray<readonly [string, () => unknown]> = [
  ["a Date", () => new Date("2030-01-01T00:00:00Z")],
  ["a boxed string", () => new String("boxed")],
  ["a boxed number", () => new Number(7)],
  ["an object whose toJSON returns a string", () => ({ ...record("t"), toJSON: () => "not an object" })],
  ["an object whose toJSON returns an object", () => ({ ...record("t"), toJSON: () => ({ swapped: true }) })],
  ["a Map", () => new Map([["a", 1]])],
  [
    "a class instance",
    () =>
      new (class Envelope {
        a = 1
      })()
  ],
  ["an object with an inherited key", () => Object.assign(Object.create({ inherited: 1 }), record("t"))],
  ["a record with a nested Date", () => record("t", { at: new Date(0) })],
  ["a record with an undefined value", () => record("t", { gone: undefined })],
  ["a record with a sparse array", () => record("t", { holes: [1, , 3] })],
  ["a record with NaN", () => record("t", { n: Number.NaN })],
  ["a record with a lone surrogate in a string", () => record("t", { text: "a\uD800b" })],
  ["a record with a lone surrogate in a key", () => record("t", { ["k\uDC00"]: 1 })],
  ["a record nested 200 levels deep", () => record("t", { deep: deep(200) })],
  ["a record with a symbol key", () => ({ ...record("t"), [Symbol("s")]: 1 })]
]

describe.each<ReplicaStyle | "memory">(["facade", "layer", "memory"])(
  "the vault stores faithfully or refuses (%s)",
  (style) => {
    it.each(unfaithful)(
      "set of %s is InvalidRecord at commit, nothing written, the other replicas unaffected",
      async (_, make) => {
        const f = await fleet(style, "unfaithful")
        const before = f.redis ? await dump(inspector(), f.prefix) : undefined
        const error = await rejection(
          f.writer.mutate((view) => {
            view.set("fine-first", record("fine-first"))
            view.set("the-bad-one", make() as never)
          })
        )
        expectRefused(error, "the-bad-one")
        if (f.redis) {
          expect(await dump(inspector(), f.prefix)).toEqual(before)
          await expectOthersWork(f.prefix, [f.writer, f.cached, await f.fresh()], "after")
        } else {
          expect(await f.writer.read((view) => view.get("fine-first"))).toBeUndefined()
        }
      }
    )

    it("a token id with a lone surrogate is InvalidRecord naming it; nothing written", async () => {
      const f = await fleet(style, "lone-id")
      const before = f.redis ? await dump(inspector(), f.prefix) : undefined
      for (const id of ["tok_\uD800_1", "tok_\uDC00_2", "tail\uD83D"]) {
        expectRefused(await rejection(f.writer.mutate((view) => view.set(id, record("x")))), id)
        // Deleting such an id is a no-op (nothing can hold it), as purging an unknown token is.
        expect(await f.writer.mutate((view) => view.delete(id))).toBe(false)
      }
      if (f.redis) {
        expect(await dump(inspector(), f.prefix)).toEqual(before)
        await expectOthersWork(f.prefix, [f.writer, f.cached, await f.fresh()], "lone")
      }
    })

    it("faithful oddities are stored and read back identically on a cached and a fresh replica; beside a Date, refused", async () => {
      const f = await fleet(style, "faithful")
      const big = "é".repeat(1 << 20)
      const odd: Record<string, unknown> = {
        ...record("odd"),
        own: JSON.parse('{"__proto__":{"own":"an own __proto__ key"},"constructor":1}') as unknown,
        deep: deep(100),
        text: '🔑 한국어 \u0000 \u2028 \uFFFF "q" \\'
      }
      const ids = ["__proto__", "constructor", "", "\u0000nul", "tok_🔑_1", "\uFFFF"]
      // The same oddities in one mutation with a Date in one record: the whole diff is refused.
      const before = f.redis ? await dump(inspector(), f.prefix) : undefined
      const refused = await rejection(
        f.writer.mutate((view) => {
          for (const id of ids) view.set(id, odd)
          view.set("dated", { ...odd, at: new Date(0) })
        })
      )
      expectRefused(refused, "dated")
      if (f.redis) expect(await dump(inspector(), f.prefix)).toEqual(before)
      expect(await f.writer.read((view) => view.get("__proto__"))).toBeUndefined()
      await f.writer.mutate((view) => {
        for (const id of ids) view.set(id, odd)
        view.set("big", { ...odd, big })
      })
      for (const store of [f.writer, f.cached, await f.fresh()]) {
        const got = await store.read((view) => ids.map((id) => view.get(id)))
        for (const value of got) expect(value).toStrictEqual(JSON.parse(JSON.stringify(odd)))
        expect(await store.read((view) => view.get("big")?.["big"])).toBe(big)
      }
      if (f.redis) expect(await inspector().hget(`${f.prefix}tokens`, "__proto__")).toBe(JSON.stringify(odd))
    })

    it("through haechi's core: a token type with a lone surrogate is refused, the vault keeps working for everyone", async () => {
      const f = await fleet(style, "core-type")
      const writer = createTokenVault({ store: f.writer as unknown as CoreTokenStore })
      const before = f.redis ? await dump(inspector(), f.prefix) : undefined
      const error = await rejection(writer.tokenize("secret@x", { type: "em\uD800ail" }))
      expect(error).toBeInstanceOf(InvalidRecord)
      expect((error as InvalidRecord).token).toMatch(/^tok_em\uD800ail_/)
      if (f.redis) expect(await dump(inspector(), f.prefix)).toEqual(before)
      // An odd but well-formed type is stored, and reveals on every replica.
      const { token } = await writer.tokenize("other@x", { type: "메일🔑" })
      for (const store of [f.writer, f.cached, await f.fresh()]) {
        expect(await createTokenVault({ store: store as unknown as CoreTokenStore }).reveal(token)).toMatchObject({
          plaintext: "other@x"
        })
      }
    })
  }
)

describe.each<ReplicaStyle>(["facade", "layer"])("a change-log entry no script can decode (%s)", (style) => {
  it.each([
    ["a lone surrogate escape", '["\\ud800"]'],
    ["not JSON", "[oops"],
    ["not an array of ids", '{"a":1}'],
    ["a number among the ids", "[1]"]
  ])("(%s) makes a cached replica read the vault in full; every replica keeps reading and writing", async (_, ids) => {
    const f = await fleet(style, "poisoned-log")
    await f.writer.mutate((view) => view.set("before", record("before")))
    // A foreign or older writer's commit: version 3, one token, and a log entry naming it badly.
    const raw = inspector()
    await raw.hset(`${f.prefix}tokens`, "foreign", JSON.stringify(record("foreign")))
    await raw.set(`${f.prefix}version`, "3")
    await raw.rpush(`${f.prefix}log`, `3 foreign-commit ${ids}`)
    expect(await f.cached.read((view) => view.get("foreign"))).toEqual(record("foreign"))
    expect(await f.cached.read((view) => view.get("before"))).toEqual(record("before"))
    await expectOthersWork(f.prefix, [f.cached, f.writer, await f.fresh()], "poisoned")
    // The entry is left as it was (never repaired by overwriting).
    expect(await raw.lrange(`${f.prefix}log`, 0, -1)).toContain(`3 foreign-commit ${ids}`)
  })
})

describe("property: hostile records and ids are stored faithfully or refused, and nobody else is affected", () => {
  type Case = { readonly id: string; readonly value: unknown; readonly faithful: boolean; readonly label: string }

  const hostileValue: fc.Arbitrary<{ value: () => unknown; label: string }> = fc.constantFrom(
    ...unfaithful.map(([label, make]) => ({ label, value: make }))
  )
  const okId = fc.oneof(
    fc.constantFrom("__proto__", "constructor", "toString", "", "tok_🔑", "\u0000", "\uFFFF"),
    fc.fullUnicodeString({ maxLength: 12 })
  )
  const anyId = fc.string16bits({ maxLength: 8 })
  const faithfulValue = fc
    .dictionary(fc.fullUnicodeString({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 })
    .map((object) => JSON.parse(JSON.stringify(object)) as Record<string, unknown>)
  const hostileCase: fc.Arbitrary<Case> = fc.oneof(
    fc
      .record({ id: okId, value: faithfulValue })
      .map(({ id, value }) => ({ id, value, faithful: true, label: "faithful" })),
    fc.record({ id: okId, value: faithfulValue, big: fc.constant(null) }).map(({ id, value }) => ({
      id,
      value: { ...value, big: "x".repeat(1 << 20) },
      faithful: true,
      label: "1 MB string"
    })),
    fc.record({ id: okId, hostile: hostileValue }).map(({ id, hostile }) => ({
      id,
      value: hostile.value(),
      faithful: false,
      label: hostile.label
    })),
    fc.record({ id: anyId, value: faithfulValue }).map(({ id, value }) => ({
      id,
      value,
      // Only a lone surrogate makes an id unfaithful: UTF-8 (what Redis holds) has no such thing.
      faithful: Buffer.from(id, "utf8").toString("utf8") === id,
      label: "any UTF-16 id"
    }))
  )

  it("each is stored and reads back identically on a cached and a fresh replica, or is InvalidRecord with nothing written", async () => {
    let stored = 0
    let refused = 0
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<ReplicaStyle>("facade", "layer"), hostileCase, async (style, c) => {
        const f = await fleet(style, "prop-hostile")
        const before = await dump(inspector(), f.prefix)
        const outcome = await f.writer
          .mutate((view) => view.set(c.id, c.value as never))
          .then(
            () => "stored" as const,
            (error: unknown) => error
          )
        if (c.faithful) {
          expect(outcome, c.label).toBe("stored")
          stored++
          const expected = JSON.parse(JSON.stringify(c.value)) as unknown
          expect(expected).toStrictEqual(c.value)
          for (const store of [f.writer, f.cached, await f.fresh()]) {
            expect(await store.read((view) => view.get(c.id))).toStrictEqual(expected)
          }
        } else {
          expectRefused(outcome, c.id)
          refused++
          expect(await dump(inspector(), f.prefix)).toEqual(before)
        }
        await expectOthersWork(f.prefix, [f.cached, await f.fresh()], "p")
      }),
      { numRuns: 40 }
    )
    expect(stored).toBeGreaterThan(0)
    expect(refused).toBeGreaterThan(0)
  }, 120_000)
})

it("the Effect API refuses a Date the same way (InvalidRecord in the error channel, nothing written)", async () => {
  const prefix = uniquePrefix("effect-date")
  const store = await Effect.runPromise(
    Effect.provide(
      TokenStore.TokenStore,
      TokenStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layerFromClient(connect())))
    )
  )
  const error = await Effect.runPromise(
    Effect.flip(store.mutate((view) => Effect.sync(() => view.set("d", new Date() as never))))
  )
  expect(error).toBeInstanceOf(InvalidRecord)
  expect(error).toMatchObject({ _tag: "InvalidRecord", token: "d" })
  expect(await inspector().exists(`${prefix}tokens`, `${prefix}version`, `${prefix}log`)).toBe(0)
})

describe("a view changed after its Effect mutate ended", () => {
  it.each(["redis", "memory"] as const)(
    "set and delete throw ViewChangedAfterMutate naming the prefix and token; nothing is written (%s)",
    async (backing) => {
      const prefix = uniquePrefix("view-late-effect")
      const layer: Layer.Layer<TokenStore.TokenStore, unknown> =
        backing === "redis"
          ? TokenStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layerFromClient(connect())))
          : TokenStore.layerMemory({ keyPrefix: prefix })
      const program = Effect.gen(function* () {
        const store = yield* TokenStore.TokenStore
        let kept: TokenStore.MutableView | undefined
        yield* store.mutate((view) =>
          Effect.sync(() => {
            kept = view
            view.set("a", { v: 1 })
          })
        )
        const late = [Effect.try(() => kept!.set("late", { v: 2 })), Effect.try(() => kept!.delete("a"))]
        const refused = yield* Effect.all(late.map((e) => Effect.flip(e)))
        const seen = yield* store.read((view) => Effect.succeed(Object.fromEntries(view.entries())))
        return { refused, seen }
      })
      const { refused, seen } = await Effect.runPromise(Effect.provide(program, layer))
      expect(refused.map((e) => (e as { error: unknown }).error)).toEqual([
        new ViewChangedAfterMutate({ prefix, token: "late" }),
        new ViewChangedAfterMutate({ prefix, token: "a" })
      ])
      expect(seen).toEqual({ a: { v: 1 } })
    }
  )
})
