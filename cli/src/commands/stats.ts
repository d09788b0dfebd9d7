/**
 * `stats`: chain length and head, vault size and version, the change log's span, and
 * whether each store's lock is held (its value, the holder's token, is never shown).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { AuditStore, RateLimiter, RedisClient, timeoutAfter, TokenStore } from "haechi-store-effect"
import { prefixOption, timeoutOption, urlOption } from "../shared/options.js"
import { withRedis } from "../shared/target.js"

export interface Stats {
  readonly audit: {
    readonly prefix: string
    readonly length: number
    readonly headSequence: number | null
    readonly headHash: string | null
    readonly lock: LockStatus
  }
  readonly vault: {
    readonly prefix: string
    readonly size: number
    readonly version: number
    readonly changeLog: {
      readonly length: number
      readonly fromVersion: number | null
      readonly toVersion: number | null
    }
    readonly lock: LockStatus
  }
}

/** Whether a lock key is set and its TTL. */
export interface LockStatus {
  readonly state: "held" | "free"
  /** Remaining TTL in ms; null when free or set without a TTL. */
  readonly ttlMs: number | null
}

const lockStatus = (redis: RedisClient.RedisClientShape, key: string, timeout: number) =>
  Effect.map(timeoutAfter("PTTL lock", timeout)(redis.run("PTTL lock", (c) => c.pttl(key))), (ttl): LockStatus =>
    ttl === -2 ? { state: "free", ttlMs: null } : { state: "held", ttlMs: ttl >= 0 ? ttl : null }
  )

const logVersion = (entry: string | null): number | null => {
  const match = entry === null ? null : /^(\d+) /.exec(entry)
  return match === null ? null : Number(match[1])
}

/** Every read bounded by `timeout` ms: the stores' own reads by their option, the raw ones here. */
const readStats = (auditPrefix: string, vaultPrefix: string, timeout: number) =>
  Effect.gen(function* () {
    const redis = yield* RedisClient.RedisClient
    const audit = yield* AuditStore.make({ keyPrefix: auditPrefix, timeout })
    const vault = yield* TokenStore.make({ keyPrefix: vaultPrefix, timeout })
    const head = yield* audit.head
    const length = yield* audit.length
    const v = yield* vault.stats
    const vk = TokenStore.keyLayout(vaultPrefix)
    const [first, last] = yield* timeoutAfter(
      "LINDEX log",
      timeout
    )(redis.run("LINDEX log", (c) => Promise.all([c.lindex(vk.log, 0), c.lindex(vk.log, -1)])))
    return {
      audit: {
        prefix: auditPrefix,
        length,
        headSequence: head?.sequence ?? null,
        headHash: head?.eventHash ?? null,
        lock: yield* lockStatus(redis, AuditStore.keyLayout(auditPrefix).lock, timeout)
      },
      vault: {
        prefix: vaultPrefix,
        size: v.size,
        version: v.version === "" ? 0 : Number(v.version),
        changeLog: { length: v.logLength, fromVersion: logVersion(first), toVersion: logVersion(last) },
        lock: yield* lockStatus(redis, vk.lock, timeout)
      }
    } satisfies Stats
  }).pipe(Effect.withSpan("haechi.cli.stats"))

const describeLock = (lock: LockStatus) =>
  lock.state === "free" ? "free" : lock.ttlMs === null ? "held (no TTL)" : `held (ttl ${lock.ttlMs} ms)`

/** The two lines `stats` prints without `--json`. */
export const describeStats = (stats: Stats): ReadonlyArray<string> => {
  const a = stats.audit
  const v = stats.vault
  const head = a.headSequence === null ? "no head (empty chain)" : `head ${a.headSequence} ${a.headHash}`
  const disagree = (a.headSequence ?? 0) !== a.length ? " (list and head disagree: run verify)" : ""
  const span = v.changeLog.fromVersion === null ? "" : ` (versions ${v.changeLog.fromVersion}-${v.changeLog.toVersion})`
  return [
    `audit chain (${a.prefix}): ${a.length} records, ${head}${disagree}; lock ${describeLock(a.lock)}`,
    `token vault (${v.prefix}): ${v.size} tokens, version ${v.version}, change log ${v.changeLog.length} entries${span}; ` +
      `lock ${describeLock(v.lock)}`
  ]
}

// --ratelimit-key: one rate limit key's count (RateLimiter.inspect), when asked
const rateLimitOptions = {
  rateLimitKey: Options.text("ratelimit-key").pipe(
    Options.withPseudoName("KEY"),
    Options.withDescription('also show this rate limit key\'s count (an identity id, or "anonymous")'),
    Options.optional
  ),
  rateLimitPrefix: Options.text("ratelimit-prefix").pipe(
    Options.withPseudoName("PREFIX"),
    Options.withDescription(`key prefix of the rate limiter (default "${RateLimiter.DEFAULT_PREFIX}")`),
    Options.withDefault(RateLimiter.DEFAULT_PREFIX)
  ),
  rateLimitWindow: Options.integer("ratelimit-window").pipe(
    Options.withPseudoName("MS"),
    Options.withDescription("the rate limit window in milliseconds (default 60000, haechi's per minute)"),
    Options.withDefault(60_000)
  )
}

const readRateLimit = (o: { rateLimitKey: Option.Option<string>; rateLimitPrefix: string; rateLimitWindow: number }) =>
  Effect.transposeMapOption(o.rateLimitKey, (key) =>
    RateLimiter.inspect(key, { keyPrefix: o.rateLimitPrefix, window: o.rateLimitWindow })
  )

const describeRateLimit = (r: RateLimiter.RateLimitStats) =>
  `rate limit (${r.prefix}${r.key}): ${r.count} requests in the last ${r.windowMs} ms` +
  (r.count === 0 ? "" : `; the whole limit is back in ${r.resetAfterMs} ms`)

export const statsCommand = Command.make(
  "stats",
  {
    url: urlOption,
    auditPrefix: prefixOption("audit-prefix", AuditStore.DEFAULT_PREFIX, "audit store"),
    vaultPrefix: prefixOption("vault-prefix", TokenStore.DEFAULT_PREFIX, "token vault"),
    json: Options.boolean("json").pipe(Options.withDescription("print one JSON object")),
    timeout: timeoutOption,
    ...rateLimitOptions
  },
  ({ url, auditPrefix, vaultPrefix, json, timeout, ...rl }) =>
    Effect.gen(function* () {
      const [stats, rateLimit] = yield* withRedis(url, () =>
        Effect.all([readStats(auditPrefix, vaultPrefix, timeout), readRateLimit(rl)])
      )
      if (json)
        return yield* Console.log(
          JSON.stringify(Option.isSome(rateLimit) ? { ...stats, ratelimit: rateLimit.value } : stats)
        )
      if (Option.isSome(rateLimit)) yield* Console.log(describeRateLimit(rateLimit.value))
      for (const line of describeStats(stats)) yield* Console.log(line)
    })
).pipe(Command.withDescription("chain length and head, vault size and version, change log, locks"))
