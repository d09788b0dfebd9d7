/**
 * The shared audit chain, as haechi's core uses it: `transaction(build)` hands `build`
 * the last record's integrity and a `persist` that appends with a compare-and-append
 * fenced on the head, so the chain cannot fork whatever the lock does. A conflict
 * re-runs `build` on the new head under a bounded `Schedule`; running out fails closed.
 *
 * Fast path: the store keeps the head it last saw and hands it out without a read; a
 * stale head costs one rejected append whose reply carries the current head. One
 * round trip per append when uncontended.
 *
 * Continuity (checked by the fenced append itself, so still one round trip): a record
 * commits only if the head keys agree with the list (else `ChainBroken`, nothing
 * written, never a new genesis on a non-empty list), it is the head's successor (else
 * `InvalidRecord`, whatever this replica cached), and the chain still holds the latest
 * head this replica saw (else a rewind: counted, logged, then `onRewind` records the gap
 * in the chain or fails with `ChainRewound`). Nothing found inconsistent is overwritten.
 * Before that, a record JSON would not store as it was hashed is `InvalidRecord` naming
 * the path (`jsonProblem`); `verifyRecords: "full"` also recomputes its eventHash.
 *
 * Exactly once: each append call carries a commit id (the script keeps the ids of the
 * last 1,000 appends by sequence). When a reply is lost, a re-sent call is recognised
 * by its id, and a failed call is resolved by looking its id up at its sequence before
 * anything is built again. Two replicas that build identical records still both land.
 */
import * as Context from "effect/Context"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { InvalidConfig } from "./Errors.js"
import { timeoutMsOf } from "./internal/deadline.js"
import { memoryAuditBacking, redisAuditBacking } from "./internal/audit/backing.js"
import { checkAuditOptions, type AuditStoreOptions } from "./internal/audit/options.js"
import type { AuditStoreShape } from "./internal/audit/shape.js"
import { storeOnBacking } from "./internal/audit/chainReads.js"
import { checkWitness, type WitnessError } from "./internal/checkpoint/witness.js"
import { auditKeys, DEFAULT_AUDIT_PREFIX } from "./internal/keys.js"
import type { PlainOptions, StartupError } from "./internal/startupChecks.js"
import { RedisClient } from "./RedisClient.js"
import { optionsFromConfig, setupRedisStore, storeConfig, type StoreConfig } from "./StoreOptions.js"

/** The chain head's type (`Chain.AuditIntegrity`), under the name the facade has always used. */
export type { AuditIntegrity as Integrity } from "./Chain.js"
/** Every Redis key the audit store under `prefix` may write, its lock's included (see the README's "Key layout"); the default prefix. */
export { auditKeyList as keysOf, DEFAULT_AUDIT_PREFIX as DEFAULT_PREFIX } from "./internal/keys.js"
/** The audit store's keys under `prefix` by name (`chain`, `head`, `headHash`, `commits`, `lock`, …; see "Key layout"). */
export { auditKeys as keyLayout, type AuditKeys } from "./internal/keys.js"
export type { AuditStoreShape, AuditTransaction, ChainReadOptions } from "./internal/audit/shape.js"
export type { AuditStoreOptions, OnRewind, VerifyRecords } from "./internal/audit/options.js"
/** What `layerConfig` reads (see `storeConfig`). */
export { storeConfig, type StoreConfig } from "./StoreOptions.js"

export class AuditStore extends Context.Tag("haechi-store-effect/AuditStore")<AuditStore, AuditStoreShape>() {}

/** The store on Redis; `RedisClient` supplies the connection. */
export function make(
  options?: AuditStoreOptions & PlainOptions & { readonly witness?: undefined }
): Effect.Effect<AuditStoreShape, InvalidConfig, RedisClient>
export function make(
  options?: AuditStoreOptions
): Effect.Effect<AuditStoreShape, InvalidConfig | StartupError | WitnessError, RedisClient>
export function make(
  options: AuditStoreOptions = {}
): Effect.Effect<AuditStoreShape, InvalidConfig | StartupError | WitnessError, RedisClient> {
  return Effect.gen(function* () {
    const redis = yield* RedisClient
    const invalid = checkAuditOptions(options)
    if (invalid !== undefined) return yield* Effect.fail(invalid)
    const setup = yield* setupRedisStore(redis, options, DEFAULT_AUDIT_PREFIX, auditKeys)
    if (options.witness !== undefined)
      yield* checkWitness(redis, auditKeys(setup.prefix), options.witness, yield* timeoutMsOf(options.timeout))
    return storeOnBacking(redisAuditBacking(redis, setup.prefix), {
      ...options,
      guard: setup.guard,
      afterCommit: setup.afterCommit
    })
  })
}

/** The audit store on Redis, as a layer. */
export function layer(
  options?: AuditStoreOptions & PlainOptions & { readonly witness?: undefined }
): Layer.Layer<AuditStore, InvalidConfig, RedisClient>
export function layer(
  options?: AuditStoreOptions
): Layer.Layer<AuditStore, InvalidConfig | StartupError | WitnessError, RedisClient>
export function layer(
  options: AuditStoreOptions = {}
): Layer.Layer<AuditStore, InvalidConfig | StartupError | WitnessError, RedisClient> {
  return Layer.effect(AuditStore, make(options))
}

/** An in-memory audit store (one process only): same contract, same atomicity. */
export const layerMemory = (options: Omit<AuditStoreOptions, "guard"> = {}): Layer.Layer<AuditStore> =>
  Layer.sync(AuditStore, () => storeOnBacking(memoryAuditBacking(options.keyPrefix), options))

/**
 * The audit store on Redis with its prefix, lock policy, retry attempts, durability
 * and timeout read from `Config` (default: `storeConfig("HAECHI_AUDIT")`, i.e. the
 * environment's `HAECHI_AUDIT_KEY_PREFIX`, `HAECHI_AUDIT_LOCK`, ...); `options` gives the rest,
 * and what the config sets wins over it.
 */
export const layerConfig = (
  config: Config.Config<StoreConfig> = storeConfig("HAECHI_AUDIT"),
  options: AuditStoreOptions = {}
): Layer.Layer<AuditStore, ConfigError.ConfigError | InvalidConfig | StartupError | WitnessError, RedisClient> =>
  Layer.unwrapEffect(Effect.map(config, (c) => layer({ ...options, ...optionsFromConfig(c) })))

/**
 * The store's semantics over a backing of your own (for example one `memoryAuditBacking`
 * shared by several store instances, as replicas share one Redis). Each call is its own
 * replica, with its own cached head. Throws `InvalidConfig` for an unusable option.
 */
export const fromBacking = storeOnBacking
