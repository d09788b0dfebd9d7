/**
 * Start-up checks: the Redis settings the stores' guarantees rest on. The fences keep the
 * chain and the vault consistent whatever Redis does, but they cannot bring back a key
 * Redis evicted or a write it never persisted: an eviction policy other than
 * `noeviction` may drop the audit chain or the vault under memory pressure, and a Redis
 * with neither AOF nor RDB loses every acknowledged record when it restarts. The checks
 * read `maxmemory-policy`, `appendonly` and `save` and warn (`Effect.logWarning`) or fail
 * (`UnsafeRedisConfig`) when either holds. A setting that cannot be read (`CONFIG`
 * disabled, renamed or not permitted, as on most managed Redis) is reported as unknown
 * and only ever warned about: it is not evidence of a problem.
 *
 * The stores' setup (StoreOptions.ts) runs them, with durability's server checks, when
 * a store is made (the Promise facade: before its first operation).
 */
import * as Effect from "effect/Effect"
import type { Cluster } from "ioredis"
import { InvalidConfig, type OperationTimeout, type RedisError, UnsafeRedisConfig } from "../Errors.js"
import { fromClient, type RedisClientShape, type RedisConnection } from "../RedisClient.js"
import { spanned } from "./observe.js"

/** What the stores do with the start-up checks: log problems, fail on them, or skip the checks. */
export type StartupChecksMode = "warn" | "fail" | "off"

export interface ConfigReport {
  /** Settings that can lose acknowledged records (empty for a safe configuration). */
  readonly problems: ReadonlyArray<string>
  /** Settings that could not be read, so could not be checked. */
  readonly unknown: ReadonlyArray<string>
}

type Setting = "maxmemory-policy" | "appendonly" | "save"
const SETTINGS: ReadonlyArray<Setting> = ["maxmemory-policy", "appendonly", "save"]

/** One setting on one node: its value, or undefined when Redis refused to tell. */
const readSetting = (node: RedisClientShape, name: Setting): Effect.Effect<string | undefined, RedisError> =>
  node
    .run(`CONFIG GET ${name}`, (c) => c.config("GET", name) as Promise<Array<string>>)
    .pipe(
      Effect.map((reply) => {
        for (let i = 0; i + 1 < reply.length; i += 2) if (reply[i] === name) return reply[i + 1]
        return undefined
      }),
      // An error reply (unknown command, NOPERM): the setting is unknown, not unsafe.
      Effect.catchTag("RedisCommandFailed", () => Effect.succeed(undefined))
    )

/** The problems of one node's settings. */
const judge = (values: Record<Setting, string | undefined>): ConfigReport => {
  const problems: Array<string> = []
  const unknown: Array<string> = SETTINGS.filter((name) => values[name] === undefined)
  const policy = values["maxmemory-policy"]
  if (policy !== undefined && policy !== "noeviction") {
    problems.push(
      `maxmemory-policy is ${policy}: under memory pressure Redis may evict the audit chain or the vault; set noeviction`
    )
  }
  const aof = values.appendonly
  const save = values.save
  if (aof === "no" && save !== undefined && save.trim() === "") {
    problems.push(
      'no persistence (appendonly no, save ""): a restart loses every acknowledged record; ' +
        "set appendonly yes (appendfsync always to lose nothing on a crash) or RDB snapshots"
    )
  }
  return { problems, unknown }
}

/** The nodes to check: the client itself, or every master of a cluster. */
const nodesOf = (redis: RedisClientShape): Effect.Effect<ReadonlyArray<RedisClientShape>, RedisError> => {
  if (!redis.isCluster) return Effect.succeed([redis])
  const cluster = redis.client as Cluster
  const masters = () => cluster.nodes("master").map((node) => fromClient(node))
  return Effect.suspend(() =>
    cluster.status === "ready"
      ? Effect.succeed(masters())
      : // Until it is ready the client lists its seed nodes; a command waits for the slot map.
        Effect.flatMap(
          redis.run("PING", (c) => c.ping()),
          () => Effect.sync(masters)
        )
  )
}

const merge = (reports: ReadonlyArray<ConfigReport>): ConfigReport => {
  const count = (pick: (r: ConfigReport) => ReadonlyArray<string>) => {
    const seen = new Map<string, number>()
    for (const report of reports) for (const item of pick(report)) seen.set(item, (seen.get(item) ?? 0) + 1)
    return [...seen].map(([item, n]) =>
      reports.length > 1 && n < reports.length ? `${item} (on ${n} of ${reports.length} masters)` : item
    )
  }
  return { problems: count((r) => r.problems), unknown: count((r) => r.unknown) }
}

/**
 * Reads `maxmemory-policy`, `appendonly` and `save` (on every master of a cluster) and
 * returns what is unsafe and what could not be read. Problems are logged with
 * `Effect.logWarning`; with `onProblem: "fail"` they fail the check with
 * `UnsafeRedisConfig` instead. Unknown settings are always only warned about. Fails with
 * `RedisUnavailable` when Redis cannot be reached.
 */
export const checkRedisConfig = (
  redis: RedisClientShape | RedisConnection,
  options: { readonly onProblem: "warn" | "fail" } = { onProblem: "warn" }
): Effect.Effect<ConfigReport, UnsafeRedisConfig | RedisError> => {
  const shape: RedisClientShape = "run" in redis ? redis : fromClient(redis)
  return Effect.gen(function* () {
    const nodes = yield* nodesOf(shape)
    const reports = yield* Effect.forEach(
      nodes,
      (node) =>
        Effect.map(
          Effect.all(
            SETTINGS.map((name) => readSetting(node, name)),
            { concurrency: "unbounded" }
          ),
          ([policy, appendonly, save]) => judge({ "maxmemory-policy": policy, appendonly, save })
        ),
      { concurrency: "unbounded" }
    )
    const report = merge(reports)
    if (report.unknown.length > 0) {
      yield* Effect.logWarning(
        `haechi-store-effect: could not read ${report.unknown.join(", ")} (CONFIG disabled or not permitted); ` +
          "check by hand that maxmemory-policy is noeviction and that AOF or RDB persistence is on"
      )
    }
    if (report.problems.length > 0) {
      if (options.onProblem === "fail") return yield* Effect.fail(new UnsafeRedisConfig({ problems: report.problems }))
      yield* Effect.logWarning(`haechi-store-effect: unsafe Redis configuration: ${report.problems.join("; ")}`)
    }
    return report
  }).pipe(spanned("haechi.startup_checks"))
}

/**
 * The start-up checks as the stores run them: nothing for "off" (the default); for
 * "warn", problems are logged and an unreachable Redis is only logged too (the store's
 * own operations will report it); for "fail", problems fail with `UnsafeRedisConfig` and
 * an unreachable Redis fails with `RedisUnavailable` (fail closed: nothing was checked).
 */
export const runStartupChecks = (
  redis: RedisClientShape,
  mode: StartupChecksMode | undefined
): Effect.Effect<void, UnsafeRedisConfig | RedisError> => {
  switch (mode ?? "off") {
    case "off":
      return Effect.void
    case "fail":
      return Effect.asVoid(checkRedisConfig(redis, { onProblem: "fail" }))
    default:
      return checkRedisConfig(redis, { onProblem: "warn" }).pipe(
        Effect.asVoid,
        Effect.catchTag("RedisUnavailable", () =>
          Effect.logWarning("haechi-store-effect: could not run the start-up checks (Redis unreachable)")
        ),
        Effect.catchTag("UnsafeRedisConfig", () => Effect.void)
      )
  }
}

/** The `startupChecks` option, checked: "off" when unset. */
export const checkStartupChecksMode = (mode: unknown): Effect.Effect<StartupChecksMode, InvalidConfig> =>
  mode === undefined || mode === "off" || mode === "warn" || mode === "fail"
    ? Effect.succeed(mode ?? "off")
    : Effect.fail(
        new InvalidConfig({ option: "startupChecks", reason: `must be "warn", "fail" or "off", got ${String(mode)}` })
      )

/** How making a store can fail beyond `InvalidConfig` when it checks the server. */
export type StartupError = UnsafeRedisConfig | RedisError | OperationTimeout

/**
 * Store options that need nothing from the server at creation (no `durability`, no
 * failing start-up checks): making such a store fails with `InvalidConfig` only.
 */
export interface PlainOptions {
  readonly durability?: undefined
  readonly startupChecks?: "warn" | "off" | undefined
}
