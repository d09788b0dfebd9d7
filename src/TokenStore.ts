/**
 * The shared token vault, as haechi's core uses it: `mutate(f)` hands `f` a synchronous
 * mutable view; the diff `f` made commits with a compare-and-apply fenced on the vault's
 * version, so no update is lost whatever the lock does. A conflict re-runs `f` over fresh
 * state under a bounded `Schedule`; running out fails closed. If `f` fails, nothing it
 * did persists. `read(f)` gives a view of the current vault without a lock.
 *
 * Each replica keeps the vault cached at a known version and brings it up to date with
 * the diffs committed since (one round trip: the change log names the tokens, the script
 * returns their current values), reloading in pages only when the log cannot prove it
 * is complete. Cached records are frozen and views hand out private copies from `get`,
 * so an in-place edit by `f` never reaches the cache unless it commits.
 *
 * A cache is used only while Redis proves it still continues the history the cache saw
 * (the commit id logged at its version, and the token count), in the same script call:
 * a rewound Redis (a failover to a lagging replica, FLUSHALL, eviction, a restored
 * snapshot, a key deleted by hand) drops the cache, is counted and logged, and the
 * vault is read again in full, so no read or mutate is ever answered from state Redis
 * no longer holds. Only records that JSON stores exactly as given are written.
 */
import * as Context from "effect/Context"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { InvalidConfig } from "./Errors.js"
import { DEFAULT_VAULT_PREFIX, vaultKeys } from "./internal/keys.js"
import type { PlainOptions, StartupError } from "./internal/startupChecks.js"
import { memoryVaultBacking, redisVaultBacking, type VaultBacking } from "./internal/vault/backing.js"
import type { TokenStoreOptions, TokenStoreShape } from "./internal/vault/contract.js"
import { makeVaultStore } from "./internal/vault/store.js"
import { RedisClient } from "./RedisClient.js"
import { optionsFromConfig, setupRedisStore, storeConfig, type StoreConfig } from "./StoreOptions.js"

export type {
  MutableView,
  ReadView,
  TokenRecord,
  TokenStoreOptions,
  TokenStoreShape,
  VaultStats
} from "./internal/vault/contract.js"
export type { Version } from "./internal/vault/backing.js"

/** Every Redis key the token store under `prefix` may write, its lock's included (see the README's "Key layout"); the default prefix. */
export { vaultKeyList as keysOf, DEFAULT_VAULT_PREFIX as DEFAULT_PREFIX } from "./internal/keys.js"
/** The token vault's keys under `prefix` by name (`tokens`, `version`, `log`, `lock`, …; see "Key layout"). */
export { vaultKeys as keyLayout, type VaultKeys } from "./internal/keys.js"

export class TokenStore extends Context.Tag("haechi-store-effect/TokenStore")<TokenStore, TokenStoreShape>() {}

/** The vault on Redis; `RedisClient` supplies the connection. */
export function make(
  options?: TokenStoreOptions & PlainOptions
): Effect.Effect<TokenStoreShape, InvalidConfig, RedisClient>
export function make(
  options?: TokenStoreOptions
): Effect.Effect<TokenStoreShape, InvalidConfig | StartupError, RedisClient>
export function make(
  options: TokenStoreOptions = {}
): Effect.Effect<TokenStoreShape, InvalidConfig | StartupError, RedisClient> {
  return Effect.gen(function* () {
    const redis = yield* RedisClient
    const setup = yield* setupRedisStore(redis, options, DEFAULT_VAULT_PREFIX, vaultKeys)
    return makeVaultStore(redisVaultBacking(redis, setup.prefix), {
      ...options,
      guard: setup.guard,
      afterCommit: setup.afterCommit
    })
  })
}

/**
 * A token store over a backing of your own: for example one `memoryVaultBacking` that
 * several stores share, as replicas share one Redis (each store is one replica, with
 * its own cache). `make` and `layerMemory` are this over the Redis and memory backings.
 */
export const fromBacking = (backing: VaultBacking, options: TokenStoreOptions = {}): TokenStoreShape =>
  makeVaultStore(backing, options)

/** The token store on Redis, as a layer. */
export function layer(options?: TokenStoreOptions & PlainOptions): Layer.Layer<TokenStore, InvalidConfig, RedisClient>
export function layer(options?: TokenStoreOptions): Layer.Layer<TokenStore, InvalidConfig | StartupError, RedisClient>
export function layer(
  options: TokenStoreOptions = {}
): Layer.Layer<TokenStore, InvalidConfig | StartupError, RedisClient> {
  return Layer.effect(TokenStore, make(options))
}

/** An in-memory token store (one process only): same contract, same atomicity. */
export const layerMemory = (options: Omit<TokenStoreOptions, "guard"> = {}): Layer.Layer<TokenStore> =>
  Layer.sync(TokenStore, () => makeVaultStore(memoryVaultBacking(options.keyPrefix), options))

/** What `layerConfig` reads (see `storeConfig`). */
export { storeConfig, type StoreConfig } from "./StoreOptions.js"

/**
 * The token store on Redis with its prefix, lock policy, retry attempts, durability
 * and timeout read from `Config` (default: `storeConfig("HAECHI_VAULT")`, i.e. the
 * environment's `HAECHI_VAULT_KEY_PREFIX`, `HAECHI_VAULT_LOCK`, ...); `options` gives the rest,
 * and what the config sets wins over it.
 */
export const layerConfig = (
  config: Config.Config<StoreConfig> = storeConfig("HAECHI_VAULT"),
  options: TokenStoreOptions = {}
): Layer.Layer<TokenStore, ConfigError.ConfigError | InvalidConfig | StartupError, RedisClient> =>
  Layer.unwrapEffect(Effect.map(config, (c) => layer({ ...options, ...optionsFromConfig(c) })))
