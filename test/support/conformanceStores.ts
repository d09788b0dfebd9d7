/**
 * The four ways of making stores that the conformance, properties and bad-input suites
 * run through the same contract: the in-memory Effect layers, the Redis Effect layers
 * (over `RedisClient.layerFromClient`), the Promise facade on Redis and the Promise facade
 * in memory. Each kind hands out haechi's Promise contract (Effect stores are wrapped with
 * `toHaechiAuditStore` / `toHaechiTokenStore`), so tests drive every kind the same way.
 *
 * Guarantees:
 * - `audits(n)` / `vaults(n)` return n replicas over ONE fresh, unique key prefix: on
 *   Redis each replica has its own ioredis connection and its own store instance; in
 *   memory (one process by definition) the replicas are the same store instance.
 * - `records()` / `tokens()` read what the store holds independently of the replicas
 *   (LRANGE / HGETALL on a separate inspector connection for Redis).
 * - `closeAll()` quits every connection opened here.
 */
import { Chunk, Effect, Layer, Stream } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../../src/AuditStore.js"
import * as RedisClient from "../../src/RedisClient.js"
import * as TokenStore from "../../src/TokenStore.js"
import {
  createMemoryAuditStore,
  createMemoryTokenStore,
  createRedisAuditStore,
  createRedisTokenStore,
  toHaechiAuditStore,
  toHaechiTokenStore,
  type HaechiAuditStore,
  type LockPolicy,
  type HaechiTokenStore
} from "../../src/haechi.js"
import type { AuditStore as CoreAuditStore } from "./haechiCore.js"
import { uniquePrefix } from "./keys.js"
import { sharedRedis } from "./shared.js"

/**
 * The facade as haechi's core sees it: the core's head type is `Chain.AuditIntegrity`,
 * the one the facade hands out, so the facade fits the core's contract as it is.
 */
export type AuditStoreUnderTest = CoreAuditStore & { ready(): ReturnType<HaechiAuditStore["ready"]> }
export const asCore = (store: HaechiAuditStore): AuditStoreUnderTest => store

export interface AuditFleet {
  readonly prefix: string
  readonly stores: ReadonlyArray<AuditStoreUnderTest>
  /** The chain as stored, parsed, in order. */
  readonly records: () => Promise<Array<Record<string, unknown>>>
}

export interface VaultFleet {
  readonly prefix: string
  readonly stores: ReadonlyArray<HaechiTokenStore>
  /** Every stored token with its record JSON text (Redis) or JSON of the record (memory). */
  readonly tokens: () => Promise<Record<string, string>>
}

export interface StoreKind {
  readonly name: string
  readonly redis: boolean
  readonly audits: (n: number, name?: string) => Promise<AuditFleet>
  readonly vaults: (n: number, name?: string) => Promise<VaultFleet>
}

const clients = new Set<Redis>()

/** A new ioredis connection to the shared server, closed by `closeAll`. */
export const connect = (): Redis => {
  const client = new Redis(sharedRedis().url, { lazyConnect: false })
  clients.add(client)
  return client
}

export const closeAll = async (): Promise<void> => {
  const all = [...clients]
  clients.clear()
  await Promise.all(all.map((c) => c.quit().catch(() => c.disconnect())))
}

let inspectorClient: Redis | undefined
/** One shared connection for looking at keys from outside the stores. */
export const inspector = (): Redis => {
  if (inspectorClient === undefined || inspectorClient.status === "end") {
    inspectorClient = connect()
  }
  return inspectorClient
}

const redisRecords = (prefix: string) => async () =>
  (await inspector().lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as Record<string, unknown>)
const redisTokens = (prefix: string) => () => inspector().hgetall(`${prefix}tokens`)

/** Reads every token of a store through its own `read` (for the memory kinds). */
const tokensVia = (store: HaechiTokenStore) => () =>
  store.read((view) => Object.fromEntries(view.entries().map(([t, r]) => [t, JSON.stringify(r)])))

const times = <A>(n: number, f: (i: number) => A): Array<A> => Array.from({ length: n }, (_, i) => f(i))

/** Builds an Effect store from its layer (the layer's construction runs once, here). */
export const buildAudit = <E>(layer: Layer.Layer<AuditStore.AuditStore, E>) =>
  Effect.runPromise(Effect.provide(AuditStore.AuditStore, layer))
export const buildVault = <E>(layer: Layer.Layer<TokenStore.TokenStore, E>) =>
  Effect.runPromise(Effect.provide(TokenStore.TokenStore, layer))

export const memoryLayers: StoreKind = {
  name: "Effect layers, in memory",
  redis: false,
  audits: async (n, name = "audit") => {
    const prefix = uniquePrefix(name)
    const store = await buildAudit(AuditStore.layerMemory({ keyPrefix: prefix }))
    return {
      prefix,
      stores: times(n, () => asCore(toHaechiAuditStore(store))),
      records: () =>
        Effect.runPromise(Effect.map(Stream.runCollect(store.readChain()), Chunk.toArray)) as Promise<
          Array<Record<string, unknown>>
        >
    }
  },
  vaults: async (n, name = "vault") => {
    const prefix = uniquePrefix(name)
    const store = await buildVault(TokenStore.layerMemory({ keyPrefix: prefix }))
    const stores = times(n, () => toHaechiTokenStore(store))
    return { prefix, stores, tokens: tokensVia(stores[0]!) }
  }
}

/** How a Redis replica is made: the Effect layers, or the Promise facade. */
export type ReplicaStyle = "layer" | "facade"

/** Options a replica is made with; `lock` defaults to the stores' own default policy. */
export interface ReplicaOptions {
  readonly lock?: LockPolicy
}

/** One audit replica over `client` (its own store instance), keys under `prefix`. */
export const redisAuditReplica = async (
  style: ReplicaStyle,
  client: Redis,
  prefix: string,
  options: ReplicaOptions = {}
): Promise<AuditStoreUnderTest> =>
  style === "layer"
    ? asCore(
        toHaechiAuditStore(
          await buildAudit(
            AuditStore.layer({ keyPrefix: prefix, ...options }).pipe(Layer.provide(RedisClient.layerFromClient(client)))
          )
        )
      )
    : asCore(createRedisAuditStore({ client, keyPrefix: prefix, ...options }))

/** One vault replica over `client` (its own store instance), keys under `prefix`. */
export const redisVaultReplica = async (
  style: ReplicaStyle,
  client: Redis,
  prefix: string,
  options: ReplicaOptions = {}
): Promise<HaechiTokenStore> =>
  style === "layer"
    ? toHaechiTokenStore(
        await buildVault(
          TokenStore.layer({ keyPrefix: prefix, ...options }).pipe(Layer.provide(RedisClient.layerFromClient(client)))
        )
      )
    : createRedisTokenStore({ client, keyPrefix: prefix, ...options })

const redisKind = (name: string, style: ReplicaStyle): StoreKind => ({
  name,
  redis: true,
  audits: async (n, label = "audit") => {
    const prefix = uniquePrefix(label)
    const stores = await Promise.all(times(n, () => redisAuditReplica(style, connect(), prefix)))
    return { prefix, stores, records: redisRecords(prefix) }
  },
  vaults: async (n, label = "vault") => {
    const prefix = uniquePrefix(label)
    const stores = await Promise.all(times(n, () => redisVaultReplica(style, connect(), prefix)))
    return { prefix, stores, tokens: redisTokens(prefix) }
  }
})

export const redisLayers: StoreKind = redisKind("Effect layers, on Redis", "layer")
export const redisFacade: StoreKind = redisKind("Promise facade, on Redis", "facade")

export const memoryFacade: StoreKind = {
  name: "Promise facade, in memory",
  redis: false,
  audits: async (n) => {
    const store = createMemoryAuditStore()
    return { prefix: "memory:audit:", stores: times(n, () => asCore(store)), records: () => store._records() }
  },
  vaults: async (n) => {
    const store = createMemoryTokenStore()
    return { prefix: "memory:tv:", stores: times(n, () => store), tokens: tokensVia(store) }
  }
}

export const allKinds: ReadonlyArray<StoreKind> = [memoryLayers, redisLayers, redisFacade, memoryFacade]

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
