/**
 * The options both stores share, and the one place that turns them into a Redis store's
 * setup, for the layers and the Promise facade alike: a checked key prefix, the lock
 * policy's guard, the durable-commit step, and the server-side checks (start-up checks,
 * durability's needs) that run before anything is written (the embedded Lua scripts are
 * checked first: a broken build is `InvalidConfig`).
 */
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Durability from "./internal/durability.js"
import type { DurabilityOptions } from "./internal/durability.js"
import type { InvalidConfig, StoreError } from "./Errors.js"
import { timeoutAfter, timeoutMsOf } from "./internal/deadline.js"
import { checkPrefix } from "./internal/keys.js"
import { checkLockPolicy, guardFor, type LockPolicy } from "./internal/lock/policy.js"
import type { RedisClientShape } from "./RedisClient.js"
import { retryScheduleFor, type RetrySchedule } from "./Retry.js"
import { checkScripts } from "./internal/scripts.js"
import {
  checkStartupChecksMode,
  runStartupChecks,
  type StartupChecksMode,
  type StartupError
} from "./internal/startupChecks.js"
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
   * internal/durability.ts). Checked when the store is made (the Promise facade: before
   * its first call): `aof` on an older Redis is `InvalidConfig`.
   */
  readonly durability?: DurabilityOptions
  /**
   * Redis only: check the server's eviction policy and persistence when the store is
   * made, or before the Promise facade's first call (see internal/startupChecks.ts):
   * "warn" logs problems, "fail" fails with `UnsafeRedisConfig`; default "off".
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

/** A Redis store's setup: what its options stand for, checked without touching Redis. */
export interface RedisStoreSetup {
  readonly prefix: string
  readonly guard: StoreGuard
  /** The durable-commit step, then the caller's `afterCommit` (undefined: neither). */
  readonly afterCommit: Effect.Effect<void, StoreError> | undefined
  /**
   * What the server must still be asked before the first write: the start-up checks and
   * what `durability` needs (`WAITAOF` support), bounded by the store's `timeout`.
   * Undefined when nothing is asked.
   */
  readonly serverChecks: Effect.Effect<void, InvalidConfig | StartupError> | undefined
}

/**
 * Plans a Redis store from its options without touching Redis: the embedded scripts, the
 * key prefix, the timeout, the lock policy, `durability` and `startupChecks` are checked
 * (a bad one fails with `InvalidConfig` at once). The layers run `serverChecks` when the
 * store is made (`setupRedisStore`); the Promise facade, whose factories are synchronous,
 * runs them before its first operation.
 */
export const planRedisStore = <K extends { readonly lock: string; readonly readyProbe: string }>(
  redis: RedisClientShape,
  options: StoreOptions & { readonly keyPrefix?: string },
  defaultPrefix: string,
  keysOf: (prefix: string) => K
): Effect.Effect<RedisStoreSetup, InvalidConfig> =>
  Effect.gen(function* () {
    yield* checkScripts
    const prefix = yield* checkPrefix(
      "keyPrefix",
      options.keyPrefix === undefined ? defaultPrefix : options.keyPrefix,
      keysOf,
      redis.isCluster
    )
    const keys = keysOf(prefix)
    const timeoutMs = yield* timeoutMsOf(options.timeout)
    const policy = yield* checkLockPolicy(options.lock)
    const durability = yield* Durability.plan(options.durability)
    const mode = yield* checkStartupChecksMode(options.startupChecks)
    const durableStep =
      durability === undefined ? undefined : Durability.step(redis, durability, { prefix, probeKey: keys.readyProbe })
    const checks: Array<Effect.Effect<void, InvalidConfig | StartupError>> = []
    if (mode !== "off") checks.push(runStartupChecks(redis, mode))
    if (durability?.aof) checks.push(Durability.prepare(redis, durability))
    return {
      prefix,
      guard: options.guard ?? guardFor(policy, redis, keys.lock),
      afterCommit:
        durableStep === undefined || options.afterCommit === undefined
          ? (durableStep ?? options.afterCommit)
          : Effect.zipRight(durableStep, options.afterCommit),
      // Bounded like every operation: a frozen or paused Redis cannot hold the store's making or first call.
      serverChecks:
        checks.length === 0
          ? undefined
          : Effect.all(checks, { discard: true }).pipe(timeoutAfter("startup checks", timeoutMs))
    }
  })

/** Prefix, guard and commit step of a Redis store, checked and ready: `planRedisStore`, then its server checks. */
export const setupRedisStore = <K extends { readonly lock: string; readonly readyProbe: string }>(
  redis: RedisClientShape,
  options: StoreOptions & { readonly keyPrefix?: string },
  defaultPrefix: string,
  keysOf: (prefix: string) => K
): Effect.Effect<RedisStoreSetup, InvalidConfig | StartupError> =>
  Effect.tap(planRedisStore(redis, options, defaultPrefix, keysOf), (setup) => setup.serverChecks ?? Effect.void)

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
        Config.integer("RETRY_ATTEMPTS").pipe(
          Config.validate({ message: "must be an integer >= 1", validation: (n) => n >= 1 })
        )
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
