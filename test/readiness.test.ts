/**
 * Readiness that never hangs, and the start-up checks, against real redis-server
 * processes: a server that is killed, a partition (a blackholing proxy), a read-only ACL
 * user, a read-only replica; servers whose eviction policy or persistence is unsafe, and
 * one whose CONFIG command is renamed away.
 *
 * Every test uses the live clock (plain async tests) and prints one `[summary]` line.
 */
import { Cause, Effect, Exit, Layer, Logger, Option, type Runtime } from "effect"
import { Cluster, Redis, type RedisOptions } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { UnsafeRedisConfig } from "../src/Errors.js"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import type { Readiness } from "../src/internal/readiness.js"
import { layerFromClient } from "../src/RedisClient.js"
import { checkRedisConfig } from "../src/internal/startupChecks.js"
import * as TokenStore from "../src/TokenStore.js"
import { createAuditSink, createTokenVault, type AuditStore as CoreAuditStore } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { parseInfo, startRedis, tcpProxy, type RedisServer, type TcpProxy } from "./support/redisServer.js"
import { sleep, summary } from "./support/replica.js"
import { sharedCluster } from "./support/shared.js"

const opened: Array<Redis | Cluster> = []
const servers: Array<RedisServer> = []

const client = (port: number, options: RedisOptions = {}): Redis => {
  const c = new Redis(port, "127.0.0.1", options)
  c.on("error", () => {})
  opened.push(c)
  return c
}

const server = async (options?: Parameters<typeof startRedis>[0]) => {
  const s = await startRedis(options)
  servers.push(s)
  return s
}

afterAll(async () => {
  for (const c of opened) c.disconnect()
  await Promise.all(servers.map((s) => s.stop()))
})

/** The typed failure of an exit, if any. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

// ---------------------------------------------------------------------------
// readiness

interface Probe {
  readonly api: "facade" | "effect"
  readonly store: "audit" | "vault"
  readonly result: Readiness
  readonly ms: number
}

/**
 * `ready()` of both stores through both APIs on one client, all at once, each timed.
 * The Effect stores are made on the client with `make` (as `layer` does).
 */
const readyAll = async (redis: Redis, prefix = uniquePrefix("ready")): Promise<ReadonlyArray<Probe>> => {
  const layer = layerFromClient(redis)
  const audit = await Effect.runPromise(Effect.provide(AuditStore.make({ keyPrefix: `${prefix}a:` }), layer))
  const vault = await Effect.runPromise(Effect.provide(TokenStore.make({ keyPrefix: `${prefix}v:` }), layer))
  const facadeAudit = createRedisAuditStore({ client: redis, keyPrefix: `${prefix}a:` })
  const facadeVault = createRedisTokenStore({ client: redis, keyPrefix: `${prefix}v:` })
  const timed = async (api: Probe["api"], store: Probe["store"], run: () => Promise<Readiness>): Promise<Probe> => {
    const started = performance.now()
    const result = await run()
    return { api, store, result, ms: performance.now() - started }
  }
  return Promise.all([
    timed("effect", "audit", () => Effect.runPromise(audit.ready)),
    timed("effect", "vault", () => Effect.runPromise(vault.ready)),
    timed("facade", "audit", () => facadeAudit.ready()),
    timed("facade", "vault", () => facadeVault.ready())
  ])
}

/** Every probe gave `expected` within 2 s, and its answer names nothing but the enum. */
const expectAll = (probes: ReadonlyArray<Probe>, expected: Readiness, port: number) => {
  for (const p of probes) {
    expect({ api: p.api, store: p.store, result: p.result }).toEqual({ api: p.api, store: p.store, result: expected })
    expect(p.ms).toBeLessThan(2000)
    const text = JSON.stringify(p.result)
    expect(text).not.toContain(String(port))
    expect(text).not.toContain("redis://")
    expect(text).not.toContain("t:")
    expect(Object.keys(p.result).sort()).toEqual(p.result.ok ? ["ok"] : ["ok", "reason"])
  }
  return Math.max(...probes.map((p) => p.ms))
}

const unreachable: Readiness = { ok: false, reason: "redis_unreachable" }
const notWritable: Readiness = { ok: false, reason: "redis_not_writable" }

/** Polls `readyAll` until every probe is ok (Redis came back); the time it took. */
const untilReady = async (redis: Redis, withinMs: number): Promise<number> => {
  const started = Date.now()
  for (;;) {
    const probes = await readyAll(redis)
    if (probes.every((p) => p.result.ok)) return Date.now() - started
    if (Date.now() - started > withinMs)
      throw new Error(`not ready again after ${withinMs} ms: ${JSON.stringify(probes)}`)
    await sleep(100)
  }
}

describe("ready() never hangs, and says why (both stores, facade and Effect API)", () => {
  let primary: RedisServer
  let proxy: TcpProxy

  beforeAll(async () => {
    primary = await server()
    proxy = await tcpProxy(primary.port)
  })
  afterAll(async () => {
    await proxy?.stop()
  })

  it("a writable Redis: { ok: true }", async () => {
    const probes = await readyAll(client(primary.port))
    const maxMs = expectAll(probes, { ok: true }, primary.port)
    summary("ready: up", { probes: probes.length, maxMs: Math.round(maxMs) })
  })

  it("Redis killed (-9), then restarted: redis_unreachable within 2 s while down (connected, fresh and fail-fast clients), ok again after", async () => {
    const victim = await server()
    const connected = client(victim.port)
    const failFast = client(victim.port, { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    await Promise.all([connected.ping(), new Promise((resolve) => failFast.once("ready", resolve))])
    await victim.kill9()
    const fresh = client(victim.port, { lazyConnect: true })
    const probes = (await Promise.all([readyAll(connected), readyAll(failFast), readyAll(fresh)])).flat()
    const maxMs = expectAll(probes, unreachable, victim.port)
    await victim.restart()
    const recoveredMs = await untilReady(connected, 5000)
    summary("ready: redis killed", { faults: 1, probes: probes.length, maxMs: Math.round(maxMs), recoveredMs })
  })

  it("a partition (every byte dropped by the proxy): redis_unreachable within 2 s, ok again once it heals", async () => {
    const redis = client(proxy.port)
    await redis.ping()
    proxy.dropAll()
    try {
      const probes = await readyAll(redis)
      const maxMs = expectAll(probes, unreachable, proxy.port)
      proxy.resume()
      const recoveredMs = await untilReady(redis, 5000)
      summary("ready: partition", { faults: 1, probes: probes.length, maxMs: Math.round(maxMs), recoveredMs })
    } finally {
      proxy.resume()
    }
  })

  it("a user whose ACL allows reads and scripts but no writes: redis_not_writable", async () => {
    const admin = client(primary.port)
    await admin.call(
      "ACL",
      "SETUSER",
      "ro",
      "reset",
      "on",
      ">pw",
      "~*",
      "&*",
      "+@read",
      "+ping",
      "+info",
      "+evalsha",
      "+eval",
      "+client",
      "+hello"
    )
    const ro = client(primary.port, { username: "ro", password: "pw" })
    expect(await ro.ping()).toBe("PONG") // it does reach Redis
    await expect(ro.set("x", "1")).rejects.toThrow(/NOPERM/)
    const probes = await readyAll(ro)
    const maxMs = expectAll(probes, notWritable, primary.port)
    summary("ready: read-only ACL user", { probes: probes.length, maxMs: Math.round(maxMs) })
  })

  it("a read-only replica: redis_not_writable", async () => {
    const secondary = await server()
    const onReplica = client(secondary.port)
    await client(primary.port).config("SET", "repl-diskless-sync-delay", "0")
    await onReplica.replicaof("127.0.0.1", primary.port)
    const deadline = Date.now() + 10_000
    while (parseInfo(await onReplica.info("replication"))["master_link_status"] !== "up") {
      if (Date.now() > deadline) throw new Error("replica link did not come up")
      await sleep(25)
    }
    expect(await onReplica.config("GET", "replica-read-only")).toEqual(["replica-read-only", "yes"])
    const probes = await readyAll(onReplica)
    const maxMs = expectAll(probes, notWritable, secondary.port)
    summary("ready: read-only replica", { probes: probes.length, maxMs: Math.round(maxMs) })
  })
})

// ---------------------------------------------------------------------------
// start-up checks

/** An Effect logger that keeps warnings; as a layer and as a runtime for the facade. */
const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    lines.push(`${logLevel.label} ${text}`)
  })
  const layer = Logger.replace(Logger.defaultLogger, logger)
  const runtime = Effect.runSync(Effect.provide(Effect.runtime<never>(), layer)) as Runtime.Runtime<never>
  return { lines, layer, runtime, warnings: () => lines.filter((l) => l.startsWith("WARN")) }
}

describe("start-up checks: eviction policy and persistence", () => {
  let target: RedisServer
  let redis: Redis

  beforeAll(async () => {
    target = await server() // a test server: save "" and appendonly no, i.e. no persistence
    redis = client(target.port)
  })

  const check = (onProblem: "warn" | "fail", r: Redis | Cluster = redis) => {
    const logs = captureLogs()
    return Effect.runPromiseExit(Effect.provide(checkRedisConfig(r, { onProblem }), logs.layer)).then((exit) => ({
      exit,
      logs
    }))
  }

  it('no persistence (appendonly no, save ""): warned about, or UnsafeRedisConfig', async () => {
    await redis.config("SET", "maxmemory-policy", "noeviction")
    const warned = await check("warn")
    expect(Exit.isSuccess(warned.exit)).toBe(true)
    const report = Exit.isSuccess(warned.exit) ? warned.exit.value : undefined
    expect(report?.problems).toHaveLength(1)
    expect(report?.problems[0]).toMatch(/^no persistence/)
    expect(report?.unknown).toEqual([])
    expect(warned.logs.warnings()).toHaveLength(1)
    expect(warned.logs.warnings()[0]).toContain("no persistence")
    const failed = await check("fail")
    const error = failureOf(failed.exit)
    expect(error).toBeInstanceOf(UnsafeRedisConfig)
    expect((error as UnsafeRedisConfig).problems).toEqual(report?.problems)
    summary("startup: no persistence", {
      problems: report?.problems.length ?? -1,
      warnings: warned.logs.warnings().length
    })
  })

  it("an evicting maxmemory-policy (allkeys-lru, volatile-lru): warned about, or UnsafeRedisConfig", async () => {
    await redis.config("SET", "appendonly", "yes")
    let problems = 0
    for (const policy of ["allkeys-lru", "volatile-lru"]) {
      await redis.config("SET", "maxmemory-policy", policy)
      const warned = await check("warn")
      const report = Exit.isSuccess(warned.exit) ? warned.exit.value : undefined
      expect(report?.problems).toEqual([expect.stringMatching(new RegExp(`^maxmemory-policy is ${policy}`))])
      expect(warned.logs.warnings().join("\n")).toContain(policy)
      const error = failureOf((await check("fail")).exit)
      expect(error).toBeInstanceOf(UnsafeRedisConfig)
      problems += report?.problems.length ?? 0
    }
    summary("startup: eviction", { problems })
  })

  it("a safe configuration (noeviction with AOF; noeviction with RDB only): no problem, no warning, fail mode passes", async () => {
    await redis.config("SET", "maxmemory-policy", "noeviction")
    const aof = await check("fail")
    expect(Exit.isSuccess(aof.exit) && aof.exit.value).toEqual({ problems: [], unknown: [] })
    expect(aof.logs.warnings()).toEqual([])
    await redis.config("SET", "appendonly", "no")
    await redis.config("SET", "save", "3600 1")
    const rdb = await check("fail")
    expect(Exit.isSuccess(rdb.exit) && rdb.exit.value).toEqual({ problems: [], unknown: [] })
    expect(rdb.logs.warnings()).toEqual([])
    await redis.config("SET", "save", "")
    summary("startup: clean", { problems: 0, warnings: 0 })
  })

  it("CONFIG renamed away: every setting unknown, warned about, and never a failure", async () => {
    const locked = await server({ config: ['rename-command CONFIG ""'] })
    const r = client(locked.port)
    await expect(r.config("GET", "save")).rejects.toThrow(/unknown command/i)
    for (const mode of ["warn", "fail"] as const) {
      const { exit, logs } = await check(mode, r)
      expect(Exit.isSuccess(exit) && exit.value).toEqual({
        problems: [],
        unknown: ["maxmemory-policy", "appendonly", "save"]
      })
      expect(logs.warnings()).toHaveLength(1)
      expect(logs.warnings()[0]).toContain("could not read maxmemory-policy, appendonly, save")
    }
    summary("startup: CONFIG disabled", { unknown: 3, failures: 0 })
  })

  it("layer({ startupChecks }): 'fail' fails the layer on an unsafe Redis, 'warn' builds and logs, both stores", async () => {
    // The target now has no persistence again (save "", appendonly no).
    const prefix = uniquePrefix("layer")
    const logs = captureLogs()
    const build = <I, E>(l: Layer.Layer<I, E>) =>
      Effect.runPromiseExit(Effect.provide(Effect.scoped(Layer.build(l)), logs.layer))
    const base = layerFromClient(redis)
    const failing: Array<Exit.Exit<unknown, unknown>> = await Promise.all([
      build(Layer.provide(AuditStore.layer({ keyPrefix: `${prefix}a:`, startupChecks: "fail" }), base)),
      build(Layer.provide(TokenStore.layer({ keyPrefix: `${prefix}v:`, startupChecks: "fail" }), base))
    ])
    for (const exit of failing) expect(failureOf(exit)).toBeInstanceOf(UnsafeRedisConfig)
    const warning: Array<Exit.Exit<unknown, unknown>> = await Promise.all([
      build(Layer.provide(AuditStore.layer({ keyPrefix: `${prefix}a:`, startupChecks: "warn" }), base)),
      build(Layer.provide(TokenStore.layer({ keyPrefix: `${prefix}v:`, startupChecks: "warn" }), base))
    ])
    for (const exit of warning) expect(Exit.isSuccess(exit)).toBe(true)
    expect(logs.warnings().filter((l) => l.includes("no persistence"))).toHaveLength(2)
    summary("startup: layer", { failedLayers: failing.length, warnedLayers: warning.length })
  })

  it("facade { startupChecks }: 'fail' rejects checked() and every call with nothing written until the config is fixed; 'warn' logs once and works", async () => {
    const prefix = uniquePrefix("facade")
    const logs = captureLogs()
    const vaultStore = createRedisTokenStore({
      client: redis,
      keyPrefix: `${prefix}v:`,
      startupChecks: "fail",
      runtime: logs.runtime
    })
    const auditStore = createRedisAuditStore({
      client: redis,
      keyPrefix: `${prefix}a:`,
      startupChecks: "fail",
      runtime: logs.runtime
    })
    const vault = createTokenVault({ store: vaultStore })
    const sink = createAuditSink({ store: auditStore as unknown as CoreAuditStore })
    await expect(vaultStore.checked()).rejects.toBeInstanceOf(UnsafeRedisConfig)
    await expect(vault.tokenize("a@example.com", { type: "email" })).rejects.toBeInstanceOf(UnsafeRedisConfig)
    await expect(sink.record({ type: "t" })).rejects.toBeInstanceOf(UnsafeRedisConfig)
    expect(await auditStore.ready()).toEqual({ ok: true }) // readiness is not gated
    expect(await redis.exists(`${prefix}v:tokens`, `${prefix}v:version`, `${prefix}a:chain`)).toBe(0)
    // Fixed at runtime: the next call checks again and goes through.
    await redis.config("SET", "appendonly", "yes")
    await vaultStore.checked()
    expect((await vault.tokenize("a@example.com", { type: "email" })).reused).toBe(false)
    await sink.record({ type: "t" })
    expect(await redis.llen(`${prefix}a:chain`)).toBe(1)
    await redis.config("SET", "appendonly", "no")
    // Once passed, never checked again (no CONFIG round trips on the hot path).
    await sink.record({ type: "t" })

    const warnLogs = captureLogs()
    const warned = createRedisAuditStore({
      client: redis,
      keyPrefix: `${prefix}w:`,
      startupChecks: "warn",
      runtime: warnLogs.runtime
    })
    const warnedSink = createAuditSink({ store: warned as unknown as CoreAuditStore })
    await Promise.all([warnedSink.record({ type: "t" }), warnedSink.record({ type: "t" }), warned.checked()])
    expect(warnLogs.warnings().filter((l) => l.includes("no persistence"))).toHaveLength(1)
    expect(await redis.llen(`${prefix}w:chain`)).toBe(2)
    summary("startup: facade", { rejectedCalls: 3, writtenBeforeFix: 0, warnings: warnLogs.warnings().length })
  })

  it("on the cluster: every master is checked", async () => {
    const shared = sharedCluster()
    const cluster = new Cluster(shared.startupNodes.map((n) => ({ host: n.host, port: n.port })))
    opened.push(cluster)
    const { exit } = await check("warn", cluster)
    const report = Exit.isSuccess(exit) ? exit.value : undefined
    // The test cluster persists nothing, on all of its masters alike.
    expect(report?.problems).toEqual([expect.stringMatching(/^no persistence \(appendonly no, save ""\): /)])
    expect(report?.problems[0]).not.toContain("masters)")
    expect(cluster.nodes("master")).toHaveLength(shared.masters)
    summary("startup: cluster", { masters: shared.masters, problems: report?.problems.length ?? -1 })
  })
})
