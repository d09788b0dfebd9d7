/**
 * The README's "Testing your app" examples, as a consumer writes them (imports by package
 * name): the in-memory layers under `it.effect` (TestClock) and the Redis layers under
 * `it.live`, on the shared server with a unique prefix.
 */
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { AuditLog, AuditStore, RedisClient } from "haechi-store-effect"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

it.effect("records on the in-memory store (under TestClock)", () =>
  Effect.gen(function* () {
    const log = yield* AuditLog.AuditLog
    const record = yield* log.record({ type: "test" })
    expect(record.auditIntegrity.sequence).toBe(1)
  }).pipe(Effect.provide(AuditLog.layer.pipe(Layer.provide(AuditStore.layerMemory()))))
)

it.live("records on Redis (live clock)", () =>
  Effect.gen(function* () {
    const log = yield* AuditLog.AuditLog
    yield* log.record({ type: "test" })
    expect(yield* Effect.flatMap(AuditStore.AuditStore, (store) => store.length)).toBe(1)
  }).pipe(
    Effect.provide(
      AuditLog.layer.pipe(
        Layer.provideMerge(AuditStore.layer({ keyPrefix: uniquePrefix("readme-testing") })),
        Layer.provide(RedisClient.layer(sharedRedis().url))
      )
    )
  )
)
