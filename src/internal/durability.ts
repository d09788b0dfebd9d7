/**
 * Opt-in durable commits. Without this option a commit the store acknowledges is in the
 * master's memory (and in its AOF, when `appendfsync always`); a crash under a weaker
 * fsync policy, or a failover to a replica that had not received it yet, can still lose
 * it. With `durability`, a commit is acknowledged only once `replicas` replicas have it
 * (`WAIT`) and/or the master has fsynced it to its AOF (`WAITAOF`, Redis >= 7.2), within
 * `timeout`; otherwise the operation fails closed with `DurabilityTimeout`. The commit
 * itself stays on the master either way: a caller must not assume it is gone.
 *
 * Mechanism: `WAIT` and `WAITAOF` count the writes of the connection they run on, and the
 * commit may have gone out on another one (a lost reply resolved after a reconnect). So
 * each step first writes the store's self-expiring probe key, pipelined with the waits on
 * the same socket: the replication stream is ordered, so the probe reaching a replica (or
 * the AOF) implies the commit did. If the socket changed under the pipeline (a reconnect
 * re-sent only its tail), the step is repeated. On a Redis Cluster the step runs on the
 * connection to the master that owns the store's hash slot.
 *
 * Cost: one round trip per commit that blocks its connection for up to `timeout` while
 * replicas lag, which also delays every other command queued on that connection; give
 * durable stores their own client, or keep `timeout` short.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type { Cluster, Redis } from "ioredis"
import { DurabilityTimeout, InvalidConfig, RedisCommandFailed, type RedisError } from "../Errors.js"
import { hashedPart } from "./keys.js"
import { type RedisClientShape } from "../RedisClient.js"
import { toRedisError } from "./redisReply.js"
import { spanned } from "./observe.js"
import { awaitPromise } from "./deadline.js"

export interface DurabilityOptions {
  /** Acknowledge a commit only once this many replicas have it (`WAIT`); default 0 (no wait). */
  readonly replicas?: number
  /** Acknowledge a commit only once the master's AOF has fsynced it (`WAITAOF 1 0`, Redis >= 7.2). */
  readonly aof?: boolean
  /** How long to wait for the acknowledgements; default 1 second. Must be finite and > 0. */
  readonly timeout?: Duration.DurationInput
}

/** Validated durability options. */
export interface DurabilityPlan {
  readonly replicas: number
  readonly aof: boolean
  readonly timeout: Duration.Duration
}

/** Where a store's durable step runs: its prefix (for errors) and its self-expiring probe key. */
export interface DurabilityTarget {
  readonly prefix: string
  readonly probeKey: string
}

export const DEFAULT_TIMEOUT: Duration.Duration = Duration.seconds(1)
/** How long the probe key lives (it only needs to outlive the pipeline). */
const PROBE_TTL_MS = 2000
/** Beyond `timeout`, how long a step may take in all (round trips, reconnects) before failing closed. */
const GRACE_MS = 1000

/**
 * Validates `options`: `undefined` when nothing is asked for (no replicas, no AOF), else
 * the plan. Fails with `InvalidConfig` for a negative or fractional replica count or a
 * timeout that is not finite and positive. Never touches Redis.
 */
export const plan = (
  options: DurabilityOptions | undefined
): Effect.Effect<DurabilityPlan | undefined, InvalidConfig> =>
  Effect.suspend(() => {
    if (options === undefined) return Effect.succeed(undefined)
    if (typeof options !== "object" || options === null) {
      return Effect.fail(
        new InvalidConfig({ option: "durability", reason: "must be an object { replicas?, aof?, timeout? }" })
      )
    }
    const replicas = options.replicas ?? 0
    if (typeof replicas !== "number" || !Number.isSafeInteger(replicas) || replicas < 0) {
      return Effect.fail(
        new InvalidConfig({
          option: "durability.replicas",
          reason: `must be a whole number >= 0, got ${String(replicas)}`
        })
      )
    }
    const aof = options.aof ?? false
    if (typeof aof !== "boolean") {
      return Effect.fail(
        new InvalidConfig({ option: "durability.aof", reason: `must be a boolean, got ${typeof aof}` })
      )
    }
    const timeout = Duration.decodeUnknown(options.timeout ?? DEFAULT_TIMEOUT)
    if (timeout._tag === "None" || !Duration.isFinite(timeout.value) || Duration.toMillis(timeout.value) < 1) {
      return Effect.fail(
        new InvalidConfig({
          option: "durability.timeout",
          reason: "must be a finite duration of at least 1 ms (WAIT with 0 would block forever)"
        })
      )
    }
    if (replicas === 0 && !aof) return Effect.succeed(undefined)
    return Effect.succeed({ replicas, aof, timeout: timeout.value })
  })

// ---------------------------------------------------------------------------
// WAITAOF detection

/** The server's `[major, minor, patch]` from `INFO server`'s `redis_version` (not a vault version). */
export const parseServerVersion = (info: string): readonly [number, number, number] | undefined => {
  const match = /^redis_version:(\d+)\.(\d+)\.(\d+)/m.exec(info)
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : undefined
}

const versions = new WeakMap<object, string>()

/** The server's version ("7.0.15"), asked once per client (`INFO server`). */
export const redisVersion = (redis: RedisClientShape): Effect.Effect<string, RedisError> =>
  Effect.suspend(() => {
    const known = versions.get(redis.client)
    if (known !== undefined) return Effect.succeed(known)
    return redis
      .run("INFO server", (c) => c.info("server"))
      .pipe(
        Effect.flatMap((info) => {
          const v = parseServerVersion(info)
          if (v === undefined) {
            return Effect.fail(
              new RedisCommandFailed({
                operation: "INFO server",
                reply: "no redis_version in INFO server",
                cause: undefined
              })
            )
          }
          const version = v.join(".")
          versions.set(redis.client, version)
          return Effect.succeed(version)
        })
      )
  })

/** Whether the server has `WAITAOF` (Redis >= 7.2). */
export const supportsWaitAof = (redis: RedisClientShape): Effect.Effect<boolean, RedisError> =>
  Effect.map(redisVersion(redis), (version) => {
    const [major = 0, minor = 0] = version.split(".").map(Number)
    return major > 7 || (major === 7 && minor >= 2)
  })

/**
 * What `plan` needs from the server: `aof: true` needs `WAITAOF` (Redis >= 7.2, the
 * version asked once per client) and `appendonly yes`. Fails with `InvalidConfig` (naming
 * the server's version) when either is missing.
 */
export const prepare = (
  redis: RedisClientShape,
  durability: DurabilityPlan
): Effect.Effect<void, InvalidConfig | RedisError> =>
  durability.aof
    ? Effect.flatMap(redisVersion(redis), (version) =>
        Effect.flatMap(supportsWaitAof(redis), (ok) =>
          ok
            ? // WAITAOF with numlocal 1 is an error reply while appendonly is off.
              Effect.flatMap(
                redis.run("INFO persistence", (c) => c.info("persistence")),
                (info) =>
                  /^aof_enabled:1/m.test(info)
                    ? Effect.void
                    : Effect.fail(
                        new InvalidConfig({
                          option: "durability.aof",
                          reason:
                            "the server has appendonly off, so there is no AOF fsync to wait for; set appendonly yes"
                        })
                      )
              )
            : Effect.fail(
                new InvalidConfig({
                  option: "durability.aof",
                  reason:
                    `needs WAITAOF, which Redis ${version} does not have (it came in Redis 7.2); ` +
                    "upgrade Redis, or use appendfsync always on the server and drop durability.aof"
                })
              )
        )
      )
    : Effect.void

// ---------------------------------------------------------------------------
// the step

/** Redis Cluster's key slot (CRC16/XMODEM of the hashed part, mod 16384). */
const slotOf = (key: string): number => {
  let crc = 0
  for (const byte of Buffer.from(hashedPart(key), "utf8")) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

/** A retryable hiccup inside a step: the connection changed, or the cluster moved the slot. */
class Retry {
  readonly _tag = "Retry"
}

/** The connection to run the step on: the client itself, or the master owning `key`'s slot. */
const nodeFor = (redis: RedisClientShape, key: string): Effect.Effect<Redis, RedisError | Retry> => {
  if (!redis.isCluster) return Effect.succeed(redis.client as Redis)
  const cluster = redis.client as Cluster
  return Effect.suspend(() => {
    const owner = cluster.slots[slotOf(key)]?.[0]
    const node =
      owner === undefined
        ? undefined
        : cluster.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner)
    if (node !== undefined) return Effect.succeed(node)
    // Not connected yet, or the slot map is stale: a keyed read connects and refreshes it.
    return Effect.zipRight(
      redis.run("EXISTS probe", (c) => c.exists(key)),
      Effect.fail(new Retry())
    )
  })
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`

/** What the plan asks for, as `DurabilityTimeout.wanted` says it ("1 replica + local AOF fsync"). */
const wantedOf = (durability: DurabilityPlan): string =>
  [
    ...(durability.replicas > 0 ? [plural(durability.replicas, "replica")] : []),
    ...(durability.aof ? ["local AOF fsync"] : [])
  ].join(" + ")

/** The pipeline's replies, one `[error, value]` per command: the probe's SET, then the waits. */
type Replies = ReadonlyArray<[Error | null, unknown]>

/** A slot that moved or a cluster in transition: refresh the slot map and try again. */
const CLUSTER_REDIRECT = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b/

/**
 * What the replies say: nothing when every acknowledgement came, else `DurabilityTimeout`
 * naming what did; a refused command is `RedisCommandFailed` (a redirection, `Retry`).
 */
const readReplies = (
  redis: RedisClientShape,
  durability: DurabilityPlan,
  replies: Replies,
  timeout: (acknowledged: string) => DurabilityTimeout
): Effect.Effect<void, DurabilityTimeout | RedisError | Retry> => {
  for (const [error] of replies) {
    if (error === null) continue
    if (CLUSTER_REDIRECT.test(error.message)) {
      return Effect.zipRight(
        Effect.sync(() => redis.isCluster && (redis.client as Cluster).refreshSlotsCache()),
        Effect.fail(new Retry())
      )
    }
    return Effect.fail(toRedisError("WAIT", error))
  }
  const got: Array<string> = []
  let short = false
  let at = 1
  if (durability.replicas > 0) {
    const n = Number(replies[at++]?.[1] ?? 0)
    got.push(plural(n, "replica"))
    short ||= n < durability.replicas
  }
  if (durability.aof) {
    const [local = 0] = (replies[at++]?.[1] ?? []) as Array<number>
    got.push(local >= 1 ? "local AOF fsync" : "no local AOF fsync")
    short ||= local < 1
  }
  return short ? Effect.fail(timeout(got.join(" + "))) : Effect.void
}

/**
 * One try of the step on `node`: the probe's SET pipelined with the waits (`ms` each) on
 * one socket. `Retry` when the socket changed under the pipeline: a reconnect re-sends only
 * its unanswered tail, on a new connection whose WAIT would not cover the probe.
 */
const stepOn = (
  redis: RedisClientShape,
  node: Redis,
  durability: DurabilityPlan,
  target: DurabilityTarget,
  ms: number,
  timeout: (acknowledged: string) => DurabilityTimeout
): Effect.Effect<void, DurabilityTimeout | RedisError | Retry> =>
  Effect.suspend(() => {
    const socket = node.stream
    const pipeline = node.pipeline().set(target.probeKey, "1", "PX", PROBE_TTL_MS)
    if (durability.replicas > 0) pipeline.wait(durability.replicas, ms)
    if (durability.aof) pipeline.call("WAITAOF", 1, 0, ms)
    return awaitPromise({ try: () => pipeline.exec(), catch: (error) => toRedisError("WAIT", error) }).pipe(
      Effect.flatMap((results) =>
        node.stream !== socket ? Effect.fail(new Retry()) : readReplies(redis, durability, results ?? [], timeout)
      )
    )
  })

/**
 * The durable step after a commit: fails with `DurabilityTimeout` when fewer replicas
 * (or no local AOF fsync) acknowledged within the plan's timeout, or when no answer came
 * in time; with `RedisCommandFailed` when Redis refuses the commands (an ACL without
 * WAIT, WAIT on a replica). Safe to repeat.
 */
export const step = (
  redis: RedisClientShape,
  durability: DurabilityPlan,
  target: DurabilityTarget
): Effect.Effect<void, DurabilityTimeout | RedisCommandFailed> => {
  const ms = Math.max(1, Math.ceil(Duration.toMillis(durability.timeout)))
  const wanted = wantedOf(durability)
  const timeout = (acknowledged: string) => new DurabilityTimeout({ prefix: target.prefix, wanted, acknowledged })
  return Effect.flatMap(nodeFor(redis, target.probeKey), (node) =>
    stepOn(redis, node, durability, target, ms, timeout)
  ).pipe(
    Effect.retry({
      schedule: Schedule.spaced("50 millis"),
      while: (e) => e._tag === "Retry" || e._tag === "RedisUnavailable"
    }),
    Effect.timeoutFail({
      duration: Duration.millis(ms + GRACE_MS),
      onTimeout: () => timeout("unknown (no answer in time)")
    }),
    Effect.catchTags({
      Retry: () => Effect.fail(timeout("unknown")),
      RedisUnavailable: () => Effect.fail(timeout("unknown (connection lost)"))
    }),
    spanned("haechi.durability", { "haechi.prefix": target.prefix, "haechi.wanted": wanted })
  )
}

/**
 * Validates `options` and checks what they need from the server (see `prepare`); the
 * durable step to run after each commit, or `undefined` when nothing is asked for.
 */
export const make = (
  redis: RedisClientShape,
  options: DurabilityOptions | undefined,
  target: DurabilityTarget
): Effect.Effect<Effect.Effect<void, DurabilityTimeout | RedisCommandFailed> | undefined, InvalidConfig | RedisError> =>
  Effect.flatMap(plan(options), (durability) =>
    durability === undefined
      ? Effect.succeed(undefined)
      : Effect.as(prepare(redis, durability), step(redis, durability, target))
  )
