/**
 * The stores' `layerConfig` against real Redis: prefix, lock policy, retry attempts,
 * durability and timeout come from `Config` (here a provider shaped like the
 * environment: HAECHI_AUDIT_KEY_PREFIX, ...), each one visibly in force; a malformed
 * value is a ConfigError naming it, before anything touches Redis.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const withClient = Effect.acquireRelease(
  Effect.sync(() => new Redis(sharedRedis().url)),
  (client) => Effect.promise(() => client.quit())
)
const env = (entries: Record<string, string>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(entries)), { pathDelim: "_" }))

const append = (s: AuditStore.AuditStoreShape, event: object) =>
  s.transaction((tx) =>
    Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord(event, head as never)))
  )

describe("layerConfig", () => {
  it.live("AuditStore: KEY_PREFIX, LOCK=never and RETRY_ATTEMPTS=1 from Config are in force", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const keyPrefix = uniquePrefix("config-audit")
      const Store = AuditStore.layerConfig().pipe(
        Layer.provide(
          Layer.merge(
            layerFromClient(client),
            env({ HAECHI_AUDIT_KEY_PREFIX: keyPrefix, HAECHI_AUDIT_LOCK: "never", HAECHI_AUDIT_RETRY_ATTEMPTS: "1" })
          )
        )
      )
      const rival = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(layerFromClient(client)))
      yield* Effect.gen(function* () {
        const store = yield* AuditStore.AuditStore
        expect(store.prefix).toBe(keyPrefix)
        yield* append(store, { n: 0 })
        // "never": a foreign holder of the lock is not waited for.
        yield* Effect.promise(() => client.set(`${keyPrefix}lock`, "reference-replica", "PX", 2000))
        const started = performance.now()
        yield* append(store, { n: 1 })
        expect(performance.now() - started).toBeLessThan(500)
        // One attempt in all: a lost race is RetriesExhausted after one build.
        let builds = 0
        const exit = yield* Effect.exit(
          store.transaction((tx) =>
            Effect.gen(function* () {
              builds += 1
              const head = yield* tx.readLastIntegrity
              yield* append(rival, { rival: builds })
              return yield* tx.persist(buildNextRecord({ ours: builds }, head as never))
            })
          )
        )
        expect(builds).toBe(1)
        expect(exit).toMatchObject({ _tag: "Failure", cause: { error: { _tag: "RetriesExhausted", attempts: 1 } } })
      }).pipe(Effect.provide(Store))
    }).pipe(Effect.scoped)
  )

  it.live(
    "TokenStore: DURABILITY_REPLICAS and DURABILITY_TIMEOUT from Config: a standalone Redis without replicas refuses the commit",
    () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const keyPrefix = uniquePrefix("config-vault")
        const Store = TokenStore.layerConfig().pipe(
          Layer.provide(
            Layer.merge(
              layerFromClient(client),
              env({
                HAECHI_VAULT_KEY_PREFIX: keyPrefix,
                HAECHI_VAULT_DURABILITY_REPLICAS: "1",
                HAECHI_VAULT_DURABILITY_TIMEOUT: "50 millis"
              })
            )
          )
        )
        const exit = yield* Effect.exit(
          Effect.flatMap(TokenStore.TokenStore, (vault) =>
            vault.mutate((v) => Effect.sync(() => v.set("t", { type: "t" })))
          ).pipe(Effect.provide(Store))
        )
        expect(exit).toMatchObject({ _tag: "Failure", cause: { error: { _tag: "DurabilityTimeout" } } })
      }).pipe(Effect.scoped)
  )

  it.live("a custom namespace, options beside the config, and the defaults when nothing is set", () =>
    Effect.gen(function* () {
      const client = yield* withClient
      const keyPrefix = uniquePrefix("config-ns")
      const prefixOf = (layer: Layer.Layer<AuditStore.AuditStore, unknown>) =>
        Effect.map(AuditStore.AuditStore, (s) => s.prefix).pipe(Effect.provide(layer))
      const custom = AuditStore.layerConfig(AuditStore.storeConfig("GATEWAY_AUDIT"), { keyPrefix: "ignored:" }).pipe(
        Layer.provide(Layer.merge(layerFromClient(client), env({ GATEWAY_AUDIT_KEY_PREFIX: keyPrefix })))
      )
      expect(yield* prefixOf(custom)).toBe(keyPrefix)
      const defaults = AuditStore.layerConfig().pipe(Layer.provide(Layer.merge(layerFromClient(client), env({}))))
      expect(yield* prefixOf(defaults)).toBe("haechi:audit:")
    }).pipe(Effect.scoped)
  )

  for (const [name, value] of [
    ["LOCK", "sometimes"],
    ["RETRY_ATTEMPTS", "0"],
    ["RETRY_ATTEMPTS", "many"],
    ["DURABILITY_TIMEOUT", "soon"]
  ] as const) {
    it.live(`a malformed HAECHI_AUDIT_${name} (${value}) is a ConfigError naming it`, () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const exit = yield* Effect.exit(
          Effect.provide(
            AuditStore.AuditStore,
            AuditStore.layerConfig().pipe(
              Layer.provide(Layer.merge(layerFromClient(client), env({ [`HAECHI_AUDIT_${name}`]: value })))
            )
          )
        )
        expect(Exit.isFailure(exit)).toBe(true)
        expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain(name)
      }).pipe(Effect.scoped)
    )
  }
})
