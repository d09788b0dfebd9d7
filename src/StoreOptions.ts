/**
 * The options both stores share, and the one place that turns them into a Redis store's
 * setup: a checked key prefix, the lock policy's guard, and the durable-commit step,
 * with the server-side checks run when the store is made, before anything is written
 * (and the embedded Lua scripts checked first: a broken build is `InvalidConfig`).
 */
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { DurabilityOptions } from "./internal/durability.js"
import type { InvalidConfig, StoreError } from "./Errors.js"
import { timeoutMsOf } from "./internal/deadline.js"
import { checkPrefix } from "./internal/keys.js"
import { checkLockPolicy, guardFor, type LockPolicy } from "./internal/lock/policy.js"
import type { RedisClientShape } from "./RedisClient.js"
import { retryScheduleFor, type RetrySchedule } from "./Retry.js"
import { checkScripts } from "./internal/scripts.js"
import { preflight, type StartupChecksMode, type StartupError } from "./internal/startupChecks.js"
import type { StoreGuard } from "./internal/storeGuard.js"

export interface StoreOptions {
  /** Retry after fence conflicts; default `defaultRetrySchedule` (128 attempts: four immediate, then short jittered backoff). */
  readonly retry?: RetrySchedule
  /**
   * When to take the store's Redis lock: "adaptive" (default: fences first, the lock
   * only for a writer that keeps losing), "always" (haechi-store-redis's behaviour) or
   * "never" (fences only). Correctness never depends on it.
   */
  readonly lock?: LockPolicy
  /** Decides when the operation holds a lock, instead of the lock policy (advanced; overrides `lock`). */
  readonly guard?: StoreGuard
  /** Runs after each commit (after the durability step); its failure fails the operation. */
  readonly afterCommit?: Effect.Effect<void, StoreError>
  /**
   * Redis only: acknowledge a commit only once replicas (`WAIT`) and/or the AOF
   * (`WAITAOF`, Redis >= 7.2) have it, else fail with `DurabilityTimeout` (see
   * Durability.ts). Checked when the store is made: `aof` on an older Redis is `InvalidConfig`.
   */
  readonly durability?: DurabilityOptions
  /**
   * Redis only: check the server's eviction policy and persistence when the store is
   * made (see StartupChecks.ts): "warn" logs problems, "fail" fails with
   * `UnsafeRedisConfig`; default "off".
   */
  readonly startupChecks?: StartupChecksMode
  /**
   * The deadline of each operation (`transaction`, `mutate`, `read`, `head`, `length`,
   * `stats`, each page of `readChain`), on real time, never the Effect Clock: default 10
   * seconds, a finite duration of at least 1 ms (a number is ms). Past it the operation
   * fails with `OperationTimeout`, or `CommitOutcomeUnknown` where a commit may have landed.
   */
  readonly timeout?: Duration.DurationInput
}

/** Prefix, guard and commit step of a Redis store, checked and ready. */
export const setupRedisStore = <K extends { readonly lock: string; readonly readyProbe: string }>(
  redis: RedisClientShape,
  options: StoreOptions & { readonly keyPrefix?: string },
  defaultPrefix: string,
  keysOf: (prefix: string) => K
): Effect.Effect<
  { readonly prefix: string; readonly guard: StoreGuard; readonly afterCommit: Effect.Effect<void, StoreError> | undefined },
  InvalidConfig | StartupError
> =>
  Effect.gen(function* () {
    yield* checkScripts
    const prefix = yield* checkPrefix(
      "keyPrefix",
      options.keyPrefix === undefined ? defaultPrefix : options.keyPrefix,
      keysOf,
      redis.isCluster
    )
    const keys = keysOf(prefix)
    yield* timeoutMsOf(options.timeout)
    const policy = yield* checkLockPolicy(options.lock)
    const pre = yield* preflight(redis, options, { prefix, probeKey: keys.readyProbe })
    if (pre.run !== undefined) yield* pre.run
    const afterCommit =
      pre.afterCommit === undefined || options.afterCommit === undefined
        ? (pre.afterCommit ?? options.afterCommit)
        : Effect.zipRight(pre.afterCommit, options.afterCommit)
    return { prefix, guard: options.guard ?? guardFor(policy, redis, keys.lock), afterCommit }
  })

/** The settings a store's `layerConfig` reads; each unset one keeps the store's default. */
export interface StoreConfig {
  readonly keyPrefix: Option.Option<string>
  readonly lock: Option.Option<LockPolicy>
  /** Attempts in all (the default schedule's delays, bounded at this many). */
  readonly retryAttempts: Option.Option<number>
  readonly durabilityReplicas: Option.Option<number>
  readonly durabilityAof: Option.Option<boolean>
  readonly durabilityTimeout: Option.Option<Duration.Duration>
  readonly timeout: Option.Option<Duration.Duration>
}

/**
 * A store's settings from `Config` under `namespace`: with the environment provider,
 * `<namespace>_KEY_PREFIX`, `_LOCK` ("always" | "never" | "adaptive"), `_RETRY_ATTEMPTS`
 * (an integer >= 1), `_DURABILITY_REPLICAS`, `_DURABILITY_AOF`, `_DURABILITY_TIMEOUT`
 * and `_TIMEOUT` (durations such as "2 seconds"). A value that is set but malformed is a
 * `ConfigError` naming it; the stores check the rest (`InvalidConfig`) as for `layer`.
 */
export const storeConfig = (namespace: string): Config.Config<StoreConfig> =>
  Config.nested(
    Config.all({
      keyPrefix: Config.option(Config.string("KEY_PREFIX")),
      lock: Config.option(Config.literal("always", "never", "adaptive")("LOCK")),
      retryAttempts: Config.option(
        Config.integer("RETRY_ATTEMPTS").pipe(Config.validate({ message: "must be an integer >= 1", validation: (n) => n >= 1 }))
      ),
      durabilityReplicas: Config.option(Config.integer("DURABILITY_REPLICAS")),
      durabilityAof: Config.option(Config.boolean("DURABILITY_AOF")),
      durabilityTimeout: Config.option(Config.duration("DURABILITY_TIMEOUT")),
      timeout: Config.option(Config.duration("TIMEOUT"))
    }),
    namespace
  )

/** The store options a `StoreConfig` stands for (unset settings left out). */
export const optionsFromConfig = (config: StoreConfig): StoreOptions & { readonly keyPrefix?: string } => {
  const durability = {
    ...Option.match(config.durabilityReplicas, { onNone: () => ({}), onSome: (replicas) => ({ replicas }) }),
    ...Option.match(config.durabilityAof, { onNone: () => ({}), onSome: (aof) => ({ aof }) }),
    ...Option.match(config.durabilityTimeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
  }
  return {
    ...Option.match(config.keyPrefix, { onNone: () => ({}), onSome: (keyPrefix) => ({ keyPrefix }) }),
    ...Option.match(config.lock, { onNone: () => ({}), onSome: (lock) => ({ lock }) }),
    ...Option.match(config.retryAttempts, { onNone: () => ({}), onSome: (n) => ({ retry: retryScheduleFor(n) }) }),
    ...(Object.keys(durability).length > 0 ? { durability } : {}),
    ...Option.match(config.timeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
  }
}
