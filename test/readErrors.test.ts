/**
 * The stores' reads are typed with only the errors they can raise (`ReadError`: Redis,
 * corrupt data, the deadline), never a write's (`RetriesExhausted`, `LockLost`,
 * `CommitOutcomeUnknown`, ...), so a caller's `catchTags` on a read names only what can
 * happen. The type assertions are checked by the typecheck; the runtime ones against real
 * Redis show each read failing with one of those errors.
 */
import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../src/AuditStore.js"
import type { CorruptData, OperationTimeout, ReadError, RedisError } from "../src/Errors.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

type ErrorOf<T> = T extends Effect.Effect<any, infer E, any> ? E : never

describe("read operations' error types", () => {
  it("head, length, headKeys, stats and read are typed ReadError (plus the caller's own for read)", () => {
    expectTypeOf<ReadError>().toEqualTypeOf<RedisError | CorruptData | OperationTimeout>()
    expectTypeOf<ErrorOf<AuditStore.AuditStoreShape["head"]>>().toEqualTypeOf<ReadError>()
    expectTypeOf<ErrorOf<AuditStore.AuditStoreShape["length"]>>().toEqualTypeOf<ReadError>()
    expectTypeOf<ErrorOf<AuditStore.AuditStoreShape["headKeys"]>>().toEqualTypeOf<ReadError>()
    expectTypeOf<ErrorOf<TokenStore.TokenStoreShape["stats"]>>().toEqualTypeOf<ReadError>()
    const _read = (vault: TokenStore.TokenStoreShape) => vault.read(() => Effect.fail("mine" as const))
    expectTypeOf<ErrorOf<ReturnType<typeof _read>>>().toEqualTypeOf<"mine" | ReadError>()
    // Each tag of ReadError, and none of a write's.
    const tags: Array<ReadError["_tag"]> = ["RedisUnavailable", "RedisCommandFailed", "CorruptData", "OperationTimeout"]
    expect(tags.length).toBe(4)
  })

  it.live(
    "against Redis: a head or vault that is not what the store wrote fails the read with CorruptData naming the key",
    () =>
      Effect.gen(function* () {
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(sharedRedis().url)),
          (c) => Effect.promise(() => c.quit())
        )
        const auditPrefix = uniquePrefix("read-errors-audit")
        const vaultPrefix = uniquePrefix("read-errors-vault")
        yield* Effect.promise(() =>
          Promise.all([client.set(`${auditPrefix}head`, "not json"), client.set(`${vaultPrefix}tokens`, "not a hash")])
        )
        const redis = layerFromClient(client)
        const audit = yield* AuditStore.make({ keyPrefix: auditPrefix }).pipe(Effect.provide(redis))
        const vault = yield* TokenStore.make({ keyPrefix: vaultPrefix }).pipe(Effect.provide(redis))
        const headError = yield* Effect.flip(audit.head)
        expect(headError).toMatchObject({ _tag: "CorruptData", key: `${auditPrefix}head` })
        const readError = yield* Effect.flip(vault.read(() => Effect.void))
        expect(readError).toMatchObject({ _tag: "CorruptData" })
        // A caller can handle every read error by its tag and nothing else.
        const handling = audit.head.pipe(
          Effect.catchTags({
            CorruptData: () => Effect.succeed("corrupt"),
            RedisUnavailable: () => Effect.succeed("down"),
            RedisCommandFailed: () => Effect.succeed("refused"),
            OperationTimeout: () => Effect.succeed("slow")
          })
        )
        expectTypeOf<ErrorOf<typeof handling>>().toEqualTypeOf<never>()
        expect(yield* handling).toBe("corrupt")
      }).pipe(Effect.scoped)
  )
})
