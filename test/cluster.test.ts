/**
 * The stores on the shared 3-master Redis Cluster (ioredis `Cluster`): with a hash-tagged
 * prefix every key of a store lives in one slot, so the facade and the Effect stores work
 * there, also with replicas racing; a prefix that would scatter a store's keys over slots
 * (the default one among them) is refused when the store is made, with an `InvalidConfig`
 * that names the fix, never with a CROSSSLOT at the first write.
 */
import { Effect, Layer } from "effect"
import { Cluster, Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { InvalidConfig } from "../src/Errors.js"
import {
  createRedisAuditStore,
  createRedisTokenStore,
  readChain,
  toHaechiAuditStore,
  toHaechiTokenStore,
  type HaechiTokenStore,
  type LockPolicy
} from "../src/haechi.js"
import { auditKeys, vaultKeys } from "../src/internal/keys.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { asCore, type AuditStoreUnderTest } from "./support/conformanceStores.js"
import { createAuditSink, createTokenVault, verifyAuditChain } from "./support/haechiCore.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { keySlot } from "./support/redisServer.js"
import { sharedCluster, sharedRedis } from "./support/shared.js"

const clients: Array<Cluster | Redis> = []
afterAll(() => Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect()))))

const cluster = (): Cluster => {
  const c = new Cluster([...sharedCluster().startupNodes], { redisOptions: { maxRetriesPerRequest: 5 } })
  clients.push(c)
  return c
}

type Style = "facade" | "layer"
const styles: ReadonlyArray<Style> = ["facade", "layer"]

const auditOn = async (
  client: Cluster,
  prefix: string,
  style: Style,
  lock?: LockPolicy
): Promise<AuditStoreUnderTest> => {
  const options = { keyPrefix: prefix, ...(lock ? { lock } : {}) }
  if (style === "facade") return asCore(createRedisAuditStore({ client, ...options }))
  const store = await Effect.runPromise(
    Effect.provide(
      AuditStore.AuditStore,
      AuditStore.layer(options).pipe(Layer.provide(RedisClient.layerFromClient(client)))
    )
  )
  return asCore(toHaechiAuditStore(store))
}

const vaultOn = async (client: Cluster, prefix: string, style: Style, lock?: LockPolicy): Promise<HaechiTokenStore> => {
  const options = { keyPrefix: prefix, ...(lock ? { lock } : {}) }
  if (style === "facade") return createRedisTokenStore({ client, ...options })
  const store = await Effect.runPromise(
    Effect.provide(
      TokenStore.TokenStore,
      TokenStore.layer(options).pipe(Layer.provide(RedisClient.layerFromClient(client)))
    )
  )
  return toHaechiTokenStore(store)
}

const slotsOf = (keys: object) =>
  new Set(
    Object.entries(keys)
      .filter(([name]) => name !== "prefix")
      .map(([, key]) => keySlot(String(key)))
  )

describe.each(styles)("a hash-tagged prefix on the cluster (%s)", (style) => {
  it("appends a chain that verifies, and reads it back", async () => {
    const prefix = uniqueClusterPrefix("cluster-audit")
    expect(slotsOf(auditKeys(prefix)).size).toBe(1)
    const client = cluster()
    const store = await auditOn(client, prefix, style)
    expect(await store.ready()).toEqual({ ok: true })
    const sink = createAuditSink({ store })
    const written = []
    for (let i = 0; i < 8; i++) written.push(await sink.record({ type: "event", id: `e${i}` }))
    const records = await readChain(client, prefix)
    expect(records).toEqual(JSON.parse(JSON.stringify(written)))
    expect(verifyAuditChain(records)).toEqual({
      valid: true,
      records: 8,
      headHash: written[7]!.auditIntegrity.eventHash
    })
    expect(await client.llen(`${prefix}chain`)).toBe(8)
  })

  it("round-trips the vault: tokenize, reveal, detokenize, purge, purgeExpired, exportMetadata", async () => {
    const prefix = uniqueClusterPrefix("cluster-vault")
    expect(slotsOf(vaultKeys(prefix)).size).toBe(1)
    const client = cluster()
    const store = await vaultOn(client, prefix, style)
    expect(await store.ready()).toEqual({ ok: true })
    let clock = Date.parse("2030-01-01T00:00:00Z")
    const vault = createTokenVault({ store, now: () => clock })
    const a = await vault.tokenize("a@example.com", { type: "email" })
    const b = await vault.tokenize("b@example.com", { type: "email", ttlMs: 1_000 })
    expect(await vault.tokenize("a@example.com", { type: "email" })).toEqual({ ...a, reused: true })
    expect(await vault.reveal(a.token)).toMatchObject({ plaintext: "a@example.com" })
    expect(await vault.detokenize([a.token, b.token])).toEqual(
      new Map([
        [a.token, "a@example.com"],
        [b.token, "b@example.com"]
      ])
    )
    expect((await vault.exportMetadata()).map((m) => m.token).sort()).toEqual([a.token, b.token].sort())
    clock += 5_000
    expect(await vault.purgeExpired()).toEqual({ purged: 1 })
    expect(await vault.purge(a.token)).toEqual({ token: a.token, purged: true })
    expect(await vault.exportMetadata()).toEqual([])
    expect(await client.hlen(`${prefix}tokens`)).toBe(0)
    expect(Number(await client.get(`${prefix}version`))).toBeGreaterThanOrEqual(4)
  })
})

describe("two replicas racing on the cluster", () => {
  it.each([["never"], ["adaptive"]] as const)("share one chain without a fork (lock: %s)", async (lock) => {
    const prefix = uniqueClusterPrefix("cluster-race-audit")
    const [x, y] = [cluster(), cluster()]
    const sinks = [
      createAuditSink({ store: await auditOn(x, prefix, "facade", lock) }),
      createAuditSink({ store: await auditOn(y, prefix, "layer", lock) })
    ]
    await Promise.all(
      sinks.flatMap((sink, w) => Array.from({ length: 10 }, (_, i) => sink.record({ id: `w${w}-${i}` })))
    )
    const records = await readChain(x, prefix)
    expect(verifyAuditChain(records)).toMatchObject({ valid: true, records: 20 })
    const ids = records.map((r) => r["id"] as string)
    expect(new Set(ids).size).toBe(20)
    for (const w of [0, 1]) {
      expect(ids.filter((id) => id.startsWith(`w${w}-`))).toEqual(Array.from({ length: 10 }, (_, i) => `w${w}-${i}`))
    }
  })

  it.each([["never"], ["adaptive"]] as const)("share one vault without a lost update (lock: %s)", async (lock) => {
    const prefix = uniqueClusterPrefix("cluster-race-vault")
    const stores = [await vaultOn(cluster(), prefix, "facade", lock), await vaultOn(cluster(), prefix, "layer", lock)]
    const increments = 12
    await Promise.all(
      stores.flatMap((store, w) =>
        Array.from({ length: increments }, (_, i) =>
          store.mutate(async (view) => {
            const counter = (view.get("counter") as { n: number } | undefined) ?? { n: 0 }
            counter.n += 1
            await new Promise((resolve) => setTimeout(resolve, i % 3))
            view.set("counter", counter)
            view.set(`w${w}-${i}`, { type: "email", n: i })
          })
        )
      )
    )
    for (const store of stores) {
      expect(await store.read((view) => view.get("counter"))).toEqual({ n: 2 * increments })
      expect(await store.read((view) => view.entries().length)).toBe(2 * increments + 1)
    }
  })
})

describe("a prefix that would scatter a store's keys over the cluster is refused at creation", () => {
  const scattering = ["app:audit:", "{}:audit:", "{unterminated:", "}{:x:", "tag}:"]

  it("the default prefixes: InvalidConfig naming the fix, from the facade, make and the layer", async () => {
    const client = cluster()
    // The refusal is meaningful: the default prefixes' keys hash to several slots.
    expect(slotsOf(auditKeys("haechi:audit:")).size).toBeGreaterThan(1)
    expect(slotsOf(vaultKeys("haechi:tv:")).size).toBeGreaterThan(1)
    for (const [create, tagged] of [
      [createRedisAuditStore, "{haechi:audit}:"],
      [createRedisTokenStore, "{haechi:tv}:"]
    ] as const) {
      let thrown: unknown
      try {
        create({ client })
      } catch (error) {
        thrown = error
      }
      expect(thrown).toBeInstanceOf(InvalidConfig)
      expect(thrown).toMatchObject({ _tag: "InvalidConfig", option: "keyPrefix" })
      const message = (thrown as InvalidConfig).message
      expect(message).toMatch(/hash tag/)
      expect(message).toContain(tagged)
      expect(message).not.toMatch(/^CROSSSLOT/)
    }
    const provided = RedisClient.layerFromClient(client)
    const errors = [
      await Effect.runPromise(Effect.flip(Effect.provide(AuditStore.make(), provided))),
      await Effect.runPromise(Effect.flip(Effect.provide(TokenStore.make(), provided))),
      await Effect.runPromise(
        Effect.flip(Effect.scoped(Layer.build(AuditStore.layer().pipe(Layer.provide(provided)))))
      ),
      await Effect.runPromise(Effect.flip(Effect.scoped(Layer.build(TokenStore.layer().pipe(Layer.provide(provided))))))
    ]
    for (const error of errors) {
      expect(error).toBeInstanceOf(InvalidConfig)
      expect((error as InvalidConfig).message).toMatch(/hash tag/)
    }
    await expect(Promise.resolve().then(() => readChain(client))).rejects.toBeInstanceOf(InvalidConfig)
  })

  it.each(scattering)("%s is refused, and nothing is written under it", async (prefix) => {
    const client = cluster()
    expect(slotsOf(auditKeys(prefix)).size).toBeGreaterThan(1)
    for (const create of [createRedisAuditStore, createRedisTokenStore]) {
      expect(() => create({ client, keyPrefix: prefix })).toThrow(InvalidConfig)
      expect(() => create({ client, keyPrefix: prefix })).toThrow(/hash tag/)
    }
    const provided = RedisClient.layerFromClient(client)
    expect(
      await Effect.runPromise(Effect.flip(Effect.provide(AuditStore.make({ keyPrefix: prefix }), provided)))
    ).toBeInstanceOf(InvalidConfig)
    expect(
      await Effect.runPromise(Effect.flip(Effect.provide(TokenStore.make({ keyPrefix: prefix }), provided)))
    ).toBeInstanceOf(InvalidConfig)
    const keys = [...Object.values(auditKeys(prefix)), ...Object.values(vaultKeys(prefix))].filter((k) => k !== prefix)
    for (const key of keys) expect(await client.exists(key), key).toBe(0)
  })

  it("a hash tag anywhere in the prefix is accepted", async () => {
    const client = cluster()
    const prefix = `app:${uniqueClusterPrefix("middle")}x:`
    expect(slotsOf(auditKeys(prefix)).size).toBe(1)
    const sink = createAuditSink({ store: asCore(createRedisAuditStore({ client, keyPrefix: prefix })) })
    await sink.record({ id: "one" })
    await sink.record({ id: "two" })
    expect(verifyAuditChain(await readChain(client, prefix))).toMatchObject({ valid: true, records: 2 })
  })

  it("on a standalone server the default prefixes stay usable", () => {
    const client = new Redis(sharedRedis().url, { lazyConnect: true })
    try {
      expect(() => createRedisAuditStore({ client })).not.toThrow()
      expect(() => createRedisTokenStore({ client, keyPrefix: uniquePrefix("standalone") })).not.toThrow()
    } finally {
      client.disconnect()
    }
  })
})
