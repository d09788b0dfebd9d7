/**
 * The vault's continuity guarantee, against real Redis: whatever happens to Redis (a key
 * deleted by hand, FLUSHALL, an older snapshot restored, as a failover to a lagging
 * replica looks, then other writers climbing past the cached version, eviction under
 * allkeys-lru), every replica, cached or fresh, answers as a full read of what Redis holds
 * NOW: never a stale reveal, never "Unknown token" for a token Redis holds, never a
 * reveal of a token Redis no longer holds, and its own writes never resurrect what Redis
 * lost. A cache Redis no longer backs is counted in haechi_store_vault_rewinds_total.
 * Driven through haechi's core (test/support/haechiCore.ts), on the facade and on the
 * Effect layers, and with an Effect program directly. Dedicated servers (FLUSHALL and
 * CONFIG SET must not touch the shared one).
 */
import { it as effectIt } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Metrics from "../src/Metrics.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { redisVaultReplica, type ReplicaStyle } from "./support/conformanceStores.js"
import { createTokenVault, type TokenStore as CoreTokenStore, type TokenVault } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, type RedisServer } from "./support/redisServer.js"

let server: RedisServer
const clients: Array<Redis> = []
const connect = (url = server.url): Redis => {
  const client = new Redis(url)
  clients.push(client)
  return client
}
/** Quits the connections to `url` (before its server stops, so none reconnects). */
const disconnect = (url: string) =>
  Promise.all(
    clients
      .filter((c) => `redis://127.0.0.1:${c.options.port}` === url)
      .map((c) => c.quit().catch(() => c.disconnect()))
  )

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())))
  await server?.stop()
})

const rewinds = (prefix: string): number =>
  Effect.runSync(Metric.value(Metrics.vaultRewinds.pipe(Metric.tagged("prefix", prefix)))).count

const VAULT_KEYS = ["version", "tokens", "log"] as const
// A snapshot holds every key, the log's mark too: a restore or failover rewinds them together.
const SNAPSHOT_KEYS = [...VAULT_KEYS, "log:mark"] as const

/** A vault under test: its prefix, an inspector connection and every token ever acknowledged with its value. */
interface Fleet {
  readonly prefix: string
  readonly raw: Redis
  readonly acked: Map<string, string>
  /** A new replica (its own connection and store instance) driven by haechi's core. */
  readonly replica: () => Promise<TokenVault>
  readonly tokenize: (vault: TokenVault, value: string) => Promise<string>
}

const fleet = (style: ReplicaStyle, name: string, url = server.url): Fleet => {
  const prefix = uniquePrefix(name)
  const raw = connect(url)
  const acked = new Map<string, string>()
  return {
    prefix,
    raw,
    acked,
    replica: async () =>
      createTokenVault({ store: (await redisVaultReplica(style, connect(url), prefix)) as unknown as CoreTokenStore }),
    tokenize: async (vault, value) => {
      const { token } = await vault.tokenize(value, { type: "email" })
      acked.set(token, value)
      return token
    }
  }
}

/**
 * `vault` answers exactly as Redis holds the vault now: every token Redis holds reveals
 * its value, every acknowledged token Redis no longer holds is "Unknown token", and
 * exportMetadata lists what Redis holds.
 */
const expectAnswersFromRedis = async (f: Fleet, vault: TokenVault): Promise<void> => {
  const held = await f.raw.hgetall(`${f.prefix}tokens`)
  for (const [token, value] of f.acked) {
    if (Object.hasOwn(held, token)) {
      expect(await vault.reveal(token), `reveal ${token}`).toMatchObject({ plaintext: value })
    } else {
      await expect(vault.reveal(token), `reveal ${token} (not in Redis)`).rejects.toThrow("Unknown token")
    }
  }
  expect((await vault.exportMetadata()).map((e) => e.token).sort()).toEqual(Object.keys(held).sort())
}

const dumpVault = async (f: Fleet): Promise<Map<string, Buffer | null>> => {
  const dump = new Map<string, Buffer | null>()
  for (const key of SNAPSHOT_KEYS) dump.set(key, await f.raw.dumpBuffer(`${f.prefix}${key}`))
  return dump
}

const restoreVault = async (f: Fleet, dump: Map<string, Buffer | null>): Promise<void> => {
  for (const [key, value] of dump) {
    if (value === null) await f.raw.del(`${f.prefix}${key}`)
    else await f.raw.restore(`${f.prefix}${key}`, 0, value, "REPLACE")
  }
}

describe.each<ReplicaStyle>(["facade", "layer"])("vault continuity (%s)", (style) => {
  describe.each(VAULT_KEYS)("the %s key deleted by hand", (key) => {
    it("cached and fresh replicas answer from what Redis holds, count the rewind, and keep writing", async () => {
      const f = fleet(style, `del-${key}`)
      const writer = await f.replica()
      const cached = await f.replica()
      for (const value of ["a@x", "b@x", "c@x"]) await f.tokenize(writer, value)
      await expectAnswersFromRedis(f, cached) // warms the cache at version 3
      const before = rewinds(f.prefix)

      await f.raw.del(`${f.prefix}${key}`)

      await expectAnswersFromRedis(f, cached)
      expect(rewinds(f.prefix)).toBeGreaterThan(before)
      await expectAnswersFromRedis(f, await f.replica())
      // Writes go on from what Redis holds, from the cached replica and the writer (whose cache is as stale).
      await f.tokenize(cached, "d@x")
      await f.tokenize(writer, "e@x")
      for (const vault of [cached, writer, await f.replica()]) await expectAnswersFromRedis(f, vault)
      // Nothing Redis lost came back.
      const held = await f.raw.hgetall(`${f.prefix}tokens`)
      if (key === "tokens") expect(Object.keys(held)).toHaveLength(2)
      else expect(Object.keys(held)).toHaveLength(5)
    })
  })

  it("FLUSHALL: every acknowledged token is gone for every replica, and tokenize starts again", async () => {
    const f = fleet(style, "flushall")
    const writer = await f.replica()
    const cached = await f.replica()
    for (const value of ["a@x", "b@x"]) await f.tokenize(writer, value)
    await expectAnswersFromRedis(f, cached)
    const before = rewinds(f.prefix)

    await f.raw.flushall()

    await expectAnswersFromRedis(f, cached)
    expect(rewinds(f.prefix)).toBeGreaterThan(before)
    // The writer's own cache is as stale: re-tokenizing a lost value makes a new token, not the lost one.
    const lost = [...f.acked].find(([, value]) => value === "a@x")![0]
    const again = await f.tokenize(writer, "a@x")
    expect(again).not.toBe(lost)
    expect(await f.raw.hexists(`${f.prefix}tokens`, lost)).toBe(0)
    for (const vault of [cached, writer, await f.replica()]) await expectAnswersFromRedis(f, vault)
  })

  describe.each([
    ["climbed past the cached version", 3],
    ["climbed back to exactly the cached version (ABA)", 2]
  ] as const)("an older snapshot restored (a lagging failover), then other writers %s", (_, climb) => {
    it("the cached replica reads the new history: no stale reveal, no Unknown token for new ones", async () => {
      const f = fleet(style, "restore-read")
      const writer = await f.replica()
      const cached = await f.replica()
      for (const value of ["a1@x", "a2@x"]) await f.tokenize(writer, value)
      const older = await dumpVault(f) // version 2
      for (const value of ["b1@x", "b2@x"]) await f.tokenize(writer, value)
      await expectAnswersFromRedis(f, cached) // cached at version 4, holding b1 and b2
      const before = rewinds(f.prefix)

      await restoreVault(f, older)
      const other = await f.replica()
      for (let i = 0; i < climb; i++) await f.tokenize(other, `d${i}@x`)
      expect(Number(await f.raw.get(`${f.prefix}version`))).toBe(2 + climb)

      await expectAnswersFromRedis(f, cached)
      expect(rewinds(f.prefix)).toBeGreaterThan(before)
      await expectAnswersFromRedis(f, await f.replica())
    })

    it("the cached replica's own first write is fenced: a lost token is not brought back", async () => {
      const f = fleet(style, "restore-write")
      const writer = await f.replica()
      const cached = await f.replica()
      await f.tokenize(writer, "a1@x")
      await f.tokenize(writer, "a2@x")
      const older = await dumpVault(f)
      const lost = await f.tokenize(writer, "b1@x")
      await f.tokenize(writer, "b2@x")
      await expectAnswersFromRedis(f, cached)

      await restoreVault(f, older)
      const other = await f.replica()
      for (let i = 0; i < climb; i++) await f.tokenize(other, `d${i}@x`)

      // haechi's core reuses a live token for the same value: a stale cache would set `lost` again.
      const token = await f.tokenize(cached, "b1@x")
      expect(token).not.toBe(lost)
      expect(await f.raw.hexists(`${f.prefix}tokens`, lost)).toBe(0)
      for (const vault of [cached, writer, other, await f.replica()]) await expectAnswersFromRedis(f, vault)
    })
  })
})

effectIt.live(
  "the Effect API: a read after a restored snapshot and a climb past the cached version is Redis's vault",
  () =>
    Effect.gen(function* () {
      const prefix = uniquePrefix("restore-effect")
      const raw = connect()
      const make = Effect.provide(
        TokenStore.TokenStore,
        TokenStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layerFromClient(connect())))
      )
      const writer = yield* make
      const cached = yield* make
      const set = (store: TokenStore.TokenStoreShape, token: string) =>
        store.mutate((view) => Effect.sync(() => view.set(token, { type: "t", n: token })))
      yield* set(writer, "a")
      const older = yield* Effect.promise(() =>
        raw.dumpBuffer(`${prefix}tokens`).then(async (tokens) => ({
          tokens,
          version: await raw.dumpBuffer(`${prefix}version`),
          log: await raw.dumpBuffer(`${prefix}log`)
        }))
      )
      yield* set(writer, "b")
      expect(
        yield* cached.read((view) =>
          Effect.sync(() =>
            view
              .entries()
              .map(([t]) => t)
              .sort()
          )
        )
      ).toEqual(["a", "b"])
      yield* Effect.promise(async () => {
        for (const [key, value] of Object.entries(older)) await raw.restore(`${prefix}${key}`, 0, value!, "REPLACE")
      })
      const other = yield* make
      yield* set(other, "c")
      yield* set(other, "d")
      expect(
        yield* cached.read((view) =>
          Effect.sync(() =>
            view
              .entries()
              .map(([t]) => t)
              .sort()
          )
        )
      ).toEqual(["a", "c", "d"])
      expect(yield* cached.read((view) => Effect.sync(() => view.get("b")))).toBeUndefined()
      // Its own write commits on the new history.
      yield* set(cached, "e")
      expect(Object.keys(yield* Effect.promise(() => raw.hgetall(`${prefix}tokens`))).sort()).toEqual([
        "a",
        "c",
        "d",
        "e"
      ])
    })
)

describe("eviction under allkeys-lru (a tiny maxmemory)", () => {
  let evicting: RedisServer
  beforeAll(async () => {
    evicting = await startRedis({ config: ["maxmemory 4mb", "maxmemory-policy allkeys-lru", "maxmemory-samples 10"] })
  })
  afterAll(async () => {
    if (evicting === undefined) return
    await disconnect(evicting.url)
    await evicting.stop()
  })

  it.each<ReplicaStyle>(["facade", "layer"])(
    "(%s) once vault keys are evicted, every replica answers from what is left, and the cache is counted as rewound",
    async (style) => {
      const f = fleet(style, "evict", evicting.url)
      const writer = await f.replica()
      const cached = await f.replica()
      for (let i = 0; i < 20; i++) await f.tokenize(writer, `v${i}@x`)
      await expectAnswersFromRedis(f, cached)
      const before = rewinds(f.prefix)

      // Fill memory with other keys until Redis evicts at least one of the vault's.
      const filler = "x".repeat(16_384)
      const vaultKeys = VAULT_KEYS.map((k) => `${f.prefix}${k}`)
      const fillers: Array<string> = []
      let present: number = VAULT_KEYS.length
      for (let i = 0; i < 4000 && present === VAULT_KEYS.length; i++) {
        fillers.push(`filler:${style}:${i}`)
        await f.raw.set(fillers[i]!, filler)
        if (i % 20 === 19) present = await f.raw.exists(...vaultKeys)
      }
      expect(present).toBeLessThan(VAULT_KEYS.length)
      // Let memory fall back (the fillers only), so nothing more is evicted while the replicas are checked.
      for (let i = 0; i < fillers.length; i += 500) await f.raw.unlink(...fillers.slice(i, i + 500))
      const left = await f.raw.exists(...vaultKeys)
      expect(left).toBe(present)
      await expectAnswersFromRedis(f, cached)
      expect(rewinds(f.prefix)).toBeGreaterThan(before)
      for (const vault of [writer, await f.replica()]) await expectAnswersFromRedis(f, vault)
    }
  )
})

describe("property: writers interleaved with a rewind at any point", () => {
  type Step =
    | { readonly kind: "tokenize"; readonly replica: number; readonly value: number }
    | { readonly kind: "purge"; readonly replica: number; readonly pick: number }
    | { readonly kind: "snapshot" }
    | { readonly kind: "rewind" }
    | { readonly kind: "check"; readonly replica: number }

  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({ kind: fc.constant("tokenize" as const), replica: fc.nat(2), value: fc.nat(5) })
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("purge" as const), replica: fc.nat(2), pick: fc.nat(50) }) },
    { weight: 1, arbitrary: fc.constant({ kind: "snapshot" as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: "rewind" as const }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("check" as const), replica: fc.nat(2) }) }
  )

  it("no replica ever answers from a cache Redis no longer backs", async () => {
    let runs = 0
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<ReplicaStyle>("facade", "layer"),
        fc.array(step, { minLength: 4, maxLength: 24 }),
        async (style, steps) => {
          runs++
          const f = fleet(style, "prop-rewind")
          const replicas = [await f.replica(), await f.replica(), await f.replica()]
          let older: Map<string, Buffer | null> = await dumpVault(f)
          for (const s of steps) {
            switch (s.kind) {
              case "tokenize":
                await f.tokenize(replicas[s.replica]!, `value-${s.value}`)
                break
              case "purge": {
                const tokens = [...f.acked.keys()]
                if (tokens.length > 0) await replicas[s.replica]!.purge(tokens[s.pick % tokens.length]!)
                break
              }
              case "snapshot":
                older = await dumpVault(f)
                break
              case "rewind":
                await restoreVault(f, older)
                break
              case "check":
                await expectAnswersFromRedis(f, replicas[s.replica]!)
            }
          }
          for (const vault of [...replicas, await f.replica()]) await expectAnswersFromRedis(f, vault)
        }
      ),
      { numRuns: 25 }
    )
    expect(runs).toBe(25)
  }, 120_000)
})
