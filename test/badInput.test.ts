/**
 * Bad input and bad data, against real Redis: what the stores refuse, with which typed
 * error, and that nothing was written when they did. Records that break the contract are
 * refused before any write; data in Redis that is not what a store writes is reported as
 * `CorruptData` naming the key (and element) and is never overwritten; unusable options
 * fail with `InvalidConfig`; Promise rejections are the tagged error instances themselves.
 */
import { Chunk, Effect, Exit, Layer, Runtime, Schedule, Stream } from "effect"
import type { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import { CorruptData, InvalidConfig, InvalidRecord, RetriesExhausted } from "../src/Errors.js"
import {
  createRedisAuditStore,
  createRedisTokenStore,
  readChain,
  toHaechiAuditStore,
  toHaechiTokenStore
} from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import {
  allKinds,
  asCore,
  closeAll,
  connect,
  inspector,
  redisAuditReplica,
  redisVaultReplica,
  type ReplicaStyle,
  type StoreKind
} from "./support/conformanceStores.js"
import { createAuditSink } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"

afterAll(closeAll)

const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`)
    },
    (error: unknown) => error
  )

/** A Promise rejection that is the tagged error itself (class and _tag), never a FiberFailure. */
const expectTagged = <E extends { readonly _tag: string }>(
  error: unknown,
  type: abstract new (...args: any) => E,
  fields: Partial<Record<keyof E, unknown>> = {}
): E => {
  expect(Runtime.isFiberFailure(error)).toBe(false)
  expect(error).toBeInstanceOf(type)
  expect(error).toBeInstanceOf(Error)
  expect((error as E)._tag).toBe(type.name)
  expect(error).toMatchObject(fields)
  return error as E
}

const tokenRecord = (token: string) => ({
  type: "email",
  createdAt: "2030-01-01T00:00:00.000Z",
  expiresAt: null,
  metadata: { fingerprint: token },
  envelope: { alg: "test", iv: "iv", ciphertext: "Y3Q" },
  aad: { purpose: "token-vault", token, type: "email", context: {} }
})

/** Everything a store's keys hold, by Redis type, for before/after comparisons. */
const dump = async (client: Redis, prefix: string) => {
  const keys = (await client.keys(`${prefix.replace(/[[\]*?\\]/g, "\\$&")}*`))
    .filter((k) => !k.endsWith("ready:probe"))
    .sort()
  const out: Record<string, unknown> = {}
  for (const key of keys) {
    const type = await client.type(key)
    out[key] =
      type === "string"
        ? await client.get(key)
        : type === "list"
          ? await client.lrange(key, 0, -1)
          : type === "hash"
            ? await client.hgetall(key)
            : type
  }
  return out
}

const auditEffect = (client: Redis, prefix: string) =>
  Effect.runPromise(AuditStore.make({ keyPrefix: prefix }).pipe(Effect.provide(RedisClient.layerFromClient(client))))
const vaultEffect = (client: Redis, prefix: string, options: TokenStore.TokenStoreOptions = {}) =>
  Effect.runPromise(
    TokenStore.make({ keyPrefix: prefix, ...options }).pipe(Effect.provide(RedisClient.layerFromClient(client)))
  )

const styles: ReadonlyArray<ReplicaStyle> = ["layer", "facade"]

// ---------------------------------------------------------------------------
// Records that break the contract
// ---------------------------------------------------------------------------

describe.each(allKinds)("records refused before anything is written ($name)", (kind: StoreKind) => {
  const badRecords: ReadonlyArray<
    [string, (previous: ReturnType<typeof buildNextRecord>["auditIntegrity"] | null) => unknown]
  > = [
    ["without auditIntegrity", () => ({ type: "event", id: "x" })],
    [
      "without eventHash",
      (previous) => {
        const record = buildNextRecord({ id: "x" }, previous) as { auditIntegrity: Partial<{ eventHash: string }> }
        delete record.auditIntegrity.eventHash
        return record
      }
    ],
    ["with a BigInt", (previous) => ({ ...buildNextRecord({ id: "x" }, previous), big: 10n })],
    [
      "with a cycle",
      (previous) => {
        const record = buildNextRecord({ id: "x" }, previous) as Record<string, unknown>
        record["self"] = { back: record }
        return record
      }
    ],
    ["that is not an object", () => "a string"],
    ["that is an array", () => [1, 2]],
    ["that is null", () => null]
  ]

  it.each(badRecords)("audit: a record %s is refused with InvalidRecord", async (_, make) => {
    const { prefix, stores, records } = await kind.audits(1, "badrec")
    const store = stores[0]!
    await createAuditSink({ store }).record({ id: "first" })
    await createAuditSink({ store }).record({ id: "second" })
    const before = await records()
    const keysBefore = kind.redis ? await dump(inspector(), prefix) : undefined

    let calls = 0
    const error = await rejection(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        calls++
        await persist(make(await readLastIntegrity()) as never)
      })
    )
    expectTagged(error, InvalidRecord, { store: "audit" })
    expect(calls).toBe(1)
    expect(await records()).toEqual(before)
    if (kind.redis) {
      expect(await inspector().llen(`${prefix}chain`)).toBe(2)
      expect(await dump(inspector(), prefix)).toEqual(keysBefore)
    }
    // Nothing was cached from it either: the chain goes on.
    const third = await createAuditSink({ store }).record({ id: "third" })
    expect(third.auditIntegrity.sequence).toBe(3)
  })

  const badValues: ReadonlyArray<[string, () => unknown]> = [
    ["a string", () => "not an object"],
    ["a number", () => 42],
    ["null", () => null],
    ["undefined", () => undefined],
    ["an array", () => [tokenRecord("x")]],
    ["an object with a BigInt", () => ({ ...tokenRecord("x"), big: 1n })],
    [
      "an object with a cycle",
      () => {
        const record: Record<string, unknown> = { ...tokenRecord("x") }
        record["metadata"] = { back: record }
        return record
      }
    ]
  ]

  it.each(badValues)("vault: set of %s fails the mutation with InvalidRecord naming the token", async (_, make) => {
    const { prefix, stores, tokens } = await kind.vaults(1, "badset")
    const store = stores[0]!
    await store.mutate(async (view) => {
      for (const t of ["keep-1", "keep-2", "gone"]) view.set(t, tokenRecord(t))
    })
    const before = await tokens()
    const keysBefore = kind.redis ? await dump(inspector(), prefix) : undefined

    const error = await rejection(
      store.mutate(async (view) => {
        view.set("new-good", tokenRecord("new-good"))
        view.delete("gone")
        const kept = view.get("keep-1")!
        kept["type"] = "changed"
        view.set("keep-1", kept)
        view.set("the-bad-one", make() as never)
        view.set("after", tokenRecord("after"))
      })
    )
    expectTagged(error, InvalidRecord, { store: "vault", token: "the-bad-one" })
    expect((error as InvalidRecord).message).toContain("the-bad-one")
    expect(await tokens()).toEqual(before)
    if (kind.redis) expect(await dump(inspector(), prefix)).toEqual(keysBefore)
    await store.read((view) => {
      expect(view.get("new-good")).toBeUndefined()
      expect(view.get("gone")).toEqual(tokenRecord("gone"))
      expect(view.get("keep-1")).toEqual(tokenRecord("keep-1"))
    })
  })

  it("vault: a mutation that throws half-way leaves nothing", async () => {
    const { prefix, stores, tokens } = await kind.vaults(2, "halfway")
    await stores[0]!.mutate(async (view) => {
      for (const t of ["a", "b", "c"]) view.set(t, tokenRecord(t))
    })
    const before = await tokens()
    const keysBefore = kind.redis ? await dump(inspector(), prefix) : undefined
    const boom = new RangeError("half-way")
    const error = await rejection(
      stores[0]!.mutate(async (view) => {
        view.set("d", tokenRecord("d"))
        view.delete("a")
        view.set("b", { ...tokenRecord("b"), type: "changed" })
        await new Promise((resolve) => setTimeout(resolve, 2))
        view.delete("c")
        view.set("e", tokenRecord("e"))
        throw boom
      })
    )
    expect(error).toBeInstanceOf(RangeError)
    expect((error as Error).message).toBe("half-way")
    expect(await tokens()).toEqual(before)
    if (kind.redis) expect(await dump(inspector(), prefix)).toEqual(keysBefore)
    for (const store of stores) {
      expect(
        await store.read((view) =>
          view
            .entries()
            .map(([t]) => t)
            .sort()
        )
      ).toEqual(["a", "b", "c"])
    }
  })
})

// ---------------------------------------------------------------------------
// Corrupt data in Redis
// ---------------------------------------------------------------------------

describe.each(styles)("corrupt data in Redis is reported, never overwritten (%s)", (style) => {
  const freshAudit = async (prefix: string) => redisAuditReplica(style, connect(), prefix)
  const freshVault = async (prefix: string) => redisVaultReplica(style, connect(), prefix)

  it.each([
    ["not JSON", "{not json"],
    ["JSON but not an auditIntegrity", JSON.stringify({ sequence: "one" })]
  ])("audit: a head that is %s gives CorruptData naming the head key", async (_, garbage) => {
    const prefix = uniquePrefix("badhead")
    const seed = await freshAudit(prefix)
    await createAuditSink({ store: seed }).record({ id: "one" })
    await inspector().set(`${prefix}head`, garbage)
    const before = await dump(inspector(), prefix)

    const store = await freshAudit(prefix)
    const error = await rejection(createAuditSink({ store }).record({ id: "two" }))
    expectTagged(error, CorruptData, { key: `${prefix}head` })
    // A writer that skips the read and is fenced off reads the head from the conflict reply.
    const blind = await rejection(
      store.transaction(async ({ persist }) => persist(buildNextRecord({ id: "blind" }, null)))
    )
    expectTagged(blind, CorruptData, { key: `${prefix}head` })
    expect(await dump(inspector(), prefix)).toEqual(before)
  })

  it("audit: a chain element that is not JSON gives CorruptData naming the key and the index", async () => {
    const prefix = uniquePrefix("badchain")
    const sink = createAuditSink({ store: await freshAudit(prefix) })
    for (const id of ["a", "b", "c", "d"]) await sink.record({ id })
    await inspector().lset(`${prefix}chain`, 2, "{broken")
    const before = await dump(inspector(), prefix)

    const effect = await auditEffect(connect(), prefix)
    for (const pageSize of [1, 3, 1000]) {
      const exit = await Effect.runPromiseExit(Stream.runCollect(effect.readChain({ pageSize })))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? exit.cause : undefined
      expect(JSON.stringify(error)).toContain("CorruptData")
      const failure = await Effect.runPromise(Effect.flip(Stream.runCollect(effect.readChain({ pageSize }))))
      expect(failure).toMatchObject({ _tag: "CorruptData", key: `${prefix}chain`, element: 2 })
    }
    // Read from index 1: the index is still the list index.
    expect(
      await Effect.runPromise(Effect.flip(Stream.runCollect(effect.readChain({ from: 1, pageSize: 1 }))))
    ).toMatchObject({
      key: `${prefix}chain`,
      element: 2
    })
    // The elements before it are read.
    const firstTwo = await Effect.runPromise(
      Stream.runCollect(effect.readChain({ pageSize: 1 }).pipe(Stream.take(2))).pipe(Effect.map(Chunk.toArray))
    )
    expect(firstTwo.map((r) => r["id"])).toEqual(["a", "b"])
    // The facade's readChain rejects with the tagged instance.
    expectTagged(await rejection(readChain(connect(), prefix)), CorruptData, { key: `${prefix}chain`, element: 2 })
    // Appending still works on the intact head, and the broken element is left as it is.
    await sink.record({ id: "e" })
    const after = await inspector().lrange(`${prefix}chain`, 0, -1)
    expect(after[2]).toBe("{broken")
    expect(after).toHaveLength(5)
    expect(before[`${prefix}chain`]).toEqual(after.slice(0, 4))
  })

  it.each([
    ["not JSON", "{oops"],
    ["JSON but not an object", "42"]
  ])("vault: a record that is %s gives CorruptData naming the key and the token", async (_, garbage) => {
    const prefix = uniquePrefix("badfield")
    const seed = await freshVault(prefix)
    await seed.mutate(async (view) => {
      view.set("good", tokenRecord("good"))
      view.set("bad", tokenRecord("bad"))
    })
    // A replica whose cache is warm before the damage.
    const warm = await freshVault(prefix)
    await warm.read((view) => view.entries())
    await inspector().hset(`${prefix}tokens`, "bad", garbage)
    const before = await dump(inspector(), prefix)

    const fresh = await freshVault(prefix)
    expectTagged(await rejection(fresh.read((view) => view.get("good"))), CorruptData, {
      key: `${prefix}tokens`,
      element: "bad"
    })
    expectTagged(await rejection(fresh.mutate(async (view) => view.set("new", tokenRecord("new")))), CorruptData, {
      key: `${prefix}tokens`,
      element: "bad"
    })
    expect(await dump(inspector(), prefix)).toEqual(before)

    // The damage arrives through the change log (a commit that names the token).
    await inspector().set(`${prefix}version`, "2")
    await inspector().rpush(`${prefix}log`, `2 forged ${JSON.stringify(["bad"])}`)
    const logged = await dump(inspector(), prefix)
    expectTagged(await rejection(warm.read((view) => view.get("good"))), CorruptData, {
      key: `${prefix}tokens`,
      element: "bad"
    })
    expectTagged(await rejection(warm.mutate(async (view) => view.set("new", tokenRecord("new")))), CorruptData, {
      key: `${prefix}tokens`,
      element: "bad"
    })
    expect(await dump(inspector(), prefix)).toEqual(logged)
  })

  it("vault: a version that is not a number gives CorruptData naming the version key", async () => {
    const prefix = uniquePrefix("badversion")
    const seed = await freshVault(prefix)
    await seed.mutate(async (view) => view.set("t", tokenRecord("t")))
    const warm = await freshVault(prefix)
    await warm.read((view) => view.entries())
    await inspector().set(`${prefix}version`, "seven")
    const before = await dump(inspector(), prefix)

    for (const store of [await freshVault(prefix), warm]) {
      expectTagged(await rejection(store.read((view) => view.get("t"))), CorruptData, { key: `${prefix}version` })
      expectTagged(await rejection(store.mutate(async (view) => view.set("u", tokenRecord("u")))), CorruptData, {
        key: `${prefix}version`
      })
    }
    expect(await dump(inspector(), prefix)).toEqual(before)
  })

  it.each([
    ["tokens", "a string", (c: Redis, k: string) => c.set(k, "not a hash")],
    ["tokens", "a list", (c: Redis, k: string) => c.rpush(k, "x")],
    ["version", "a hash", (c: Redis, k: string) => c.hset(k, "f", "1")],
    ["log", "a string", (c: Redis, k: string) => c.set(k, "not a list")],
    ["log", "a hash", (c: Redis, k: string) => c.hset(k, "f", "1")]
  ] as const)("vault: %s holding %s gives CorruptData and nothing is written on top", async (name, _, damage) => {
    const prefix = uniquePrefix(`wrongtype-${name}`)
    const seed = await freshVault(prefix)
    if (name !== "tokens") await seed.mutate(async (view) => view.set("t", tokenRecord("t")))
    await inspector().del(`${prefix}${name}`)
    await damage(inspector(), `${prefix}${name}`)
    const before = await dump(inspector(), prefix)

    const store = await freshVault(prefix)
    const errors = [
      await rejection(store.mutate(async (view) => view.set("u", tokenRecord("u")))),
      await rejection(seed.mutate(async (view) => view.set("v", tokenRecord("v"))))
    ]
    for (const error of errors) {
      const corrupt = expectTagged(error, CorruptData)
      expect(corrupt.key.startsWith(prefix)).toBe(true)
    }
    expect(await dump(inspector(), prefix)).toEqual(before)
  })

  it("vault: reads of a wrong-typed tokens key give CorruptData naming it", async () => {
    const prefix = uniquePrefix("wrongtype-read")
    await inspector().set(`${prefix}tokens`, "not a hash")
    const store = await freshVault(prefix)
    expectTagged(await rejection(store.read((view) => view.entries())), CorruptData, { key: `${prefix}tokens` })
    expect(await dump(inspector(), prefix)).toEqual({ [`${prefix}tokens`]: "not a hash" })
  })

  it.each([
    ["chain", "a string", (c: Redis, k: string) => c.set(k, "not a list")],
    ["head", "a hash", (c: Redis, k: string) => c.hset(k, "f", "1")],
    ["head:hash", "a list", (c: Redis, k: string) => c.rpush(k, "x")]
  ] as const)("audit: %s holding %s gives CorruptData and nothing is written on top", async (name, _, damage) => {
    const prefix = uniquePrefix(`wrongtype-${name}`)
    await damage(inspector(), `${prefix}${name}`)
    const before = await dump(inspector(), prefix)
    const store = await freshAudit(prefix)
    const error = await rejection(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const previous = name === "head" ? await readLastIntegrity() : null
        await persist(buildNextRecord({ id: "x" }, previous))
      })
    )
    const corrupt = expectTagged(error, CorruptData)
    expect(corrupt.key.startsWith(prefix)).toBe(true)
    expect(await dump(inspector(), prefix)).toEqual(before)
  })
})

// ---------------------------------------------------------------------------
// Options and clients
// ---------------------------------------------------------------------------

describe("unusable options", () => {
  const notStrings: ReadonlyArray<unknown> = [42, null, {}, ["haechi:"], Symbol("p")]

  it.each(notStrings.map((p) => [String(typeof p === "symbol" ? "symbol" : JSON.stringify(p)), p]))(
    "a keyPrefix of %s is InvalidConfig (Effect make, layer and facade)",
    async (_, keyPrefix) => {
      const client = connect()
      const provided = RedisClient.layerFromClient(client)
      const errors = [
        await Effect.runPromise(
          Effect.flip(Effect.provide(AuditStore.make({ keyPrefix: keyPrefix as string }), provided))
        ),
        await Effect.runPromise(
          Effect.flip(Effect.provide(TokenStore.make({ keyPrefix: keyPrefix as string }), provided))
        )
      ]
      for (const error of errors) {
        expect(error).toBeInstanceOf(InvalidConfig)
        expect(error).toMatchObject({ _tag: "InvalidConfig", option: "keyPrefix" })
      }
      const layerError = await Effect.runPromise(
        Effect.flip(
          Layer.build(AuditStore.layer({ keyPrefix: keyPrefix as string }).pipe(Layer.provide(provided))).pipe(
            Effect.scoped
          )
        )
      )
      expect(layerError).toBeInstanceOf(InvalidConfig)
      const vaultLayerError = await Effect.runPromise(
        Effect.flip(
          Layer.build(TokenStore.layer({ keyPrefix: keyPrefix as string }).pipe(Layer.provide(provided))).pipe(
            Effect.scoped
          )
        )
      )
      expect(vaultLayerError).toBeInstanceOf(InvalidConfig)
      for (const create of [createRedisAuditStore, createRedisTokenStore]) {
        let thrown: unknown
        try {
          create({ client, keyPrefix: keyPrefix as string })
        } catch (error) {
          thrown = error
        }
        expectTagged(thrown, InvalidConfig)
      }
    }
  )

  const notIoredis: ReadonlyArray<[string, unknown]> = [
    ["undefined", undefined],
    ["null", null],
    ["a URL string", "redis://127.0.0.1:6379"],
    ["an empty object", {}],
    [
      "a node-redis v4 client",
      {
        get: async () => null,
        set: async () => "OK",
        rPush: async () => 1,
        lRange: async () => [],
        eval: async () => 1,
        hGet: async () => null,
        hSet: async () => 1,
        hDel: async () => 1,
        hGetAll: async () => ({}),
        ping: async () => "PONG"
      }
    ]
  ]

  it.each(notIoredis)("the facade factories refuse %s as the client with InvalidConfig", async (_, client) => {
    for (const create of [createRedisAuditStore, createRedisTokenStore]) {
      let thrown: unknown
      try {
        create({ client: client as Redis })
      } catch (error) {
        thrown = error
      }
      const error = expectTagged(thrown, InvalidConfig)
      expect(error.message).toMatch(/ioredis/)
    }
    expectTagged(await rejection(Promise.resolve().then(() => readChain(client as Redis))), InvalidConfig)
  })

  it("readChain rejects (as haechi-store-redis's async readChain does) instead of throwing", async () => {
    let result: unknown
    expect(() => {
      result = readChain({} as Redis)
    }).not.toThrow()
    expectTagged(await rejection(result as Promise<unknown>), InvalidConfig)
  })

  it("a factory called with no options at all refuses with InvalidConfig", () => {
    for (const create of [createRedisAuditStore, createRedisTokenStore]) {
      expect(() => (create as (o?: unknown) => unknown)()).toThrow(InvalidConfig)
    }
  })
})

describe("Promise rejections are the tagged errors themselves", () => {
  it("RetriesExhausted, when every attempt is fenced off, fails closed with nothing of the loser written", async () => {
    const prefix = uniquePrefix("exhausted")
    const client = connect()
    const other = createRedisTokenStore({ client: connect(), keyPrefix: prefix, lock: "never" })
    const loser = createRedisTokenStore({ client, keyPrefix: prefix, retry: Schedule.recurs(2), lock: "never" })
    let attempts = 0
    const error = await rejection(
      loser.mutate(async (view) => {
        attempts++
        view.set("loser", tokenRecord("loser"))
        // Another replica commits while this fn runs: its diff is always fenced off.
        await other.mutate(async (v) => v.set(`winner-${attempts}`, tokenRecord("w")))
      })
    )
    expectTagged(error, RetriesExhausted, { store: "vault", attempts: 3 })
    expect(attempts).toBe(3)
    expect(await inspector().hexists(`${prefix}tokens`, "loser")).toBe(0)
    expect(await inspector().get(`${prefix}version`)).toBe("3")

    const auditPrefix = uniquePrefix("exhausted-audit")
    const otherAudit = asCore(createRedisAuditStore({ client: connect(), keyPrefix: auditPrefix, lock: "never" }))
    const loserAudit = asCore(
      createRedisAuditStore({ client, keyPrefix: auditPrefix, retry: Schedule.recurs(1), lock: "never" })
    )
    const sink = createAuditSink({ store: otherAudit })
    const auditError = await rejection(
      loserAudit.transaction(async ({ readLastIntegrity, persist }) => {
        const previous = await readLastIntegrity()
        await sink.record({ id: "winner" })
        await persist(buildNextRecord({ id: "loser" }, previous))
      })
    )
    expectTagged(auditError, RetriesExhausted, { store: "audit", attempts: 2 })
    const chain = await inspector().lrange(`${auditPrefix}chain`, 0, -1)
    expect(chain).toHaveLength(2)
    expect(chain.some((json) => json.includes("loser"))).toBe(false)
  })

  it("errors from Effect stores wrapped with toHaechi* keep class and _tag", async () => {
    const prefix = uniquePrefix("wrapped")
    await inspector().set(`${prefix}version`, "x")
    const vault = toHaechiTokenStore(await vaultEffect(connect(), prefix))
    expectTagged(await rejection(vault.read((view) => view.entries())), CorruptData, { key: `${prefix}version` })
    const audit = toHaechiAuditStore(await auditEffect(connect(), prefix))
    expectTagged(
      await rejection(audit.transaction(async ({ persist }) => persist({ no: "integrity" }))),
      InvalidRecord,
      { store: "audit" }
    )
  })
})
