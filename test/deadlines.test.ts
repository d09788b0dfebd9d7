/**
 * Every operation ends within its deadline, against real redis-server processes: a frozen
 * link (a proxy that holds every byte both ways, sockets open, then thaws so the held
 * replies arrive late), replies that never come (the proxy forwards requests and drops
 * replies), a paused Redis (`CLIENT PAUSE`) and a sleeping one (`DEBUG SLEEP`), and a
 * TestClock that never advances. Checked: each call fails within its timeout with
 * `OperationTimeout`, or `CommitOutcomeUnknown` where a commit was in flight; nothing is
 * half-written; the replies that arrive after the timeout do not corrupt the replica's
 * cache (the same store and a fresh one agree with Redis afterwards, the chain verifies).
 *
 * Live clock everywhere except the TestClock test; each test prints one `[summary]` line
 * with the measured times.
 */
import { spawn } from "node:child_process"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { it as effectIt } from "@effect/vitest"
import { Cause, Effect, Exit, Option, Stream } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { CommitOutcomeUnknown, InvalidConfig, LockTimeout, OperationTimeout } from "../src/Errors.js"
import { createRedisAuditStore, createRedisTokenStore, readChain } from "../src/haechi.js"
import { DEFAULT_TIMEOUT_MS } from "../src/internal/deadline.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { fromClient, RedisClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import {
  createAuditSink,
  createTokenVault,
  verifyAuditChain,
  type AuditStore as CoreAuditStore
} from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, tcpProxy, type RedisServer, type TcpProxy } from "./support/redisServer.js"
import { summary } from "./support/replica.js"
import { sharedRedis } from "./support/shared.js"

const opened: Array<Redis> = []
const proxies: Array<TcpProxy> = []
const servers: Array<RedisServer> = []

afterAll(async () => {
  for (const c of opened) c.disconnect()
  await Promise.all(proxies.map((p) => p.stop()))
  await Promise.all(servers.map((s) => s.stop()))
})

const client = (port: number, options: RedisOptions = {}): Redis => {
  const c = new Redis(port, "127.0.0.1", options)
  c.on("error", () => {})
  opened.push(c)
  return c
}

const proxyTo = async (port: number) => {
  const p = await tcpProxy(port)
  proxies.push(p)
  return p
}

/**
 * How long the call `start` makes took to settle, its value and its rejection (undefined
 * if it resolved). The clock starts before the call, so its synchronous stretch counts.
 */
const timed = async (
  start: () => Promise<unknown>
): Promise<{ readonly ms: number; readonly value?: unknown; readonly error: unknown }> => {
  const started = performance.now()
  try {
    const value = await start()
    return { ms: performance.now() - started, value, error: undefined }
  } catch (error) {
    return { ms: performance.now() - started, error }
  }
}

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** Runs an Effect API call on `redis` and times it. */
const timedEffect = <A, E>(effect: Effect.Effect<A, E, RedisClient>, redis: Redis) =>
  timed(() =>
    Effect.runPromiseExit(Effect.provideService(effect, RedisClient, fromClient(redis))).then((exit) =>
      Exit.isSuccess(exit) ? exit.value : Promise.reject(failureOf(exit) ?? Cause.squash(exit.cause))
    )
  )

/** Slack over a deadline for a loaded 2-core machine; far below the seconds a hang would take. */
const SLACK_MS = 600

const expectTimeout = (result: { ms: number; error: unknown }, timeoutMs: number, operation: string) => {
  expect(result.error, operation).toBeInstanceOf(OperationTimeout)
  expect((result.error as OperationTimeout).operation).toBe(operation)
  expect((result.error as OperationTimeout).timeoutMs).toBe(timeoutMs)
  expect(result.ms).toBeGreaterThanOrEqual(timeoutMs - 5)
  expect(result.ms).toBeLessThan(timeoutMs + SLACK_MS)
}

const expectUnknown = (result: { ms: number; error: unknown }, timeoutMs: number, store: "audit" | "vault") => {
  expect(result.error, store).toBeInstanceOf(CommitOutcomeUnknown)
  expect((result.error as CommitOutcomeUnknown).store).toBe(store)
  expect((result.error as CommitOutcomeUnknown).cause).toBeInstanceOf(OperationTimeout)
  expect(result.ms).toBeGreaterThanOrEqual(timeoutMs - 5)
  expect(result.ms).toBeLessThan(timeoutMs + SLACK_MS)
}

/** The vault's records as Redis holds them, sorted by token. */
const vaultInRedis = async (redis: Redis, prefix: string) =>
  Object.entries(await redis.hgetall(`${prefix}tokens`))
    .map(([token, json]) => [token, JSON.parse(json)] as const)
    .sort(([a], [b]) => (a < b ? -1 : 1))

const sortedEntries = (entries: Array<[string, unknown]>) => [...entries].sort(([a], [b]) => (a < b ? -1 : 1))

describe("a frozen link (no bytes either way, sockets open)", () => {
  it("every call fails within its timeout, and the replies that arrive after it corrupt nothing", async () => {
    const shared = sharedRedis()
    const proxy = await proxyTo(shared.port)
    const direct = client(shared.port)
    const proxied = client(proxy.port)
    const prefixes = { audit: uniquePrefix("frozen-audit"), vault: uniquePrefix("frozen-tv") }
    const timeoutMs = 400
    const audit = createRedisAuditStore({ client: proxied, keyPrefix: prefixes.audit, timeout: timeoutMs })
    const tokens = createRedisTokenStore({ client: proxied, keyPrefix: prefixes.vault, timeout: timeoutMs })
    const sink = createAuditSink({ store: audit as unknown as CoreAuditStore })
    const vault = createTokenVault({ store: tokens })
    // Warm: the head and the vault are cached, so the next record and tokenize send their commit at once.
    await sink.record({ type: "warm" })
    const first = await vault.tokenize("alice@example.com", { type: "email" })
    // A replica that has read nothing yet, and one with the default timeout.
    const freshAudit = createRedisAuditStore({ client: proxied, keyPrefix: prefixes.audit, timeout: timeoutMs })
    const defaultAudit = createRedisAuditStore({ client: proxied, keyPrefix: prefixes.audit })
    const auditEffect = AuditStore.make({ keyPrefix: prefixes.audit, timeout: timeoutMs })
    const vaultEffect = TokenStore.make({ keyPrefix: prefixes.vault, timeout: timeoutMs })
    const lock = makeLockHandle(fromClient(proxied))

    proxy.freeze()
    const started = performance.now()
    const [record, tokenize, reveal, fresh, defaulted, head, length, page, stats, read, acquire, ready] =
      await Promise.all([
        timed(() => sink.record({ type: "frozen" })),
        timed(() => vault.tokenize("bob@example.com", { type: "email" })),
        timed(() => vault.reveal(first.token)),
        timed(() => freshAudit.transaction(async ({ readLastIntegrity }) => readLastIntegrity())),
        timed(() => defaultAudit.transaction(async ({ readLastIntegrity }) => readLastIntegrity())),
        timedEffect(
          Effect.flatMap(auditEffect, (s) => s.head),
          proxied
        ),
        timedEffect(
          Effect.flatMap(auditEffect, (s) => s.length),
          proxied
        ),
        timedEffect(
          Effect.flatMap(auditEffect, (s) => Stream.runCollect(s.readChainJson())),
          proxied
        ),
        timedEffect(
          Effect.flatMap(vaultEffect, (s) => s.stats),
          proxied
        ),
        timedEffect(
          Effect.flatMap(vaultEffect, (s) => s.read((view) => Effect.succeed(view.entries()))),
          proxied
        ),
        timedEffect(Effect.scoped(lock.lock.acquire(`${prefixes.audit}job`, { waitTimeout: "300 millis" })), proxied),
        timed(() => audit.ready())
      ])
    const allMs = performance.now() - started

    // A commit was in flight (the append and the vault diff were sent): the outcome is unknown.
    expectUnknown(record, timeoutMs, "audit")
    expectUnknown(tokenize, timeoutMs, "vault")
    // Nothing that commits was sent: a plain timeout naming the operation and the deadline.
    expectTimeout(reveal, timeoutMs, "vault read")
    expectTimeout(fresh, timeoutMs, "audit transaction")
    expectTimeout(head, timeoutMs, "audit head")
    expectTimeout(length, timeoutMs, "audit length")
    expectTimeout(page, timeoutMs, "audit chain page")
    expectTimeout(stats, timeoutMs, "vault stats")
    expectTimeout(read, timeoutMs, "vault read")
    // The default deadline is 10 s at most.
    expect(defaulted.error).toBeInstanceOf(OperationTimeout)
    expect((defaulted.error as OperationTimeout).timeoutMs).toBe(DEFAULT_TIMEOUT_MS)
    expect(DEFAULT_TIMEOUT_MS).toBeLessThanOrEqual(10_000)
    expect(defaulted.ms).toBeLessThan(DEFAULT_TIMEOUT_MS + SLACK_MS)
    // The lock: an unanswered attempt ends the wait (bound: max(waitTimeout, 1 s)), then its release is abandoned within 1 s.
    expect(acquire.error).toBeInstanceOf(LockTimeout)
    expect(acquire.ms).toBeLessThan(2_000 + SLACK_MS)
    expect(ready.value).toEqual({ ok: false, reason: "redis_unreachable" })
    expect(ready.ms).toBeLessThan(2_000 + SLACK_MS)

    // Thaw: the held commands reach Redis (the append and the diff commit now) and their
    // replies arrive after the callers gave up. Nothing was half-written, and the stores
    // that timed out agree with Redis and with a fresh replica.
    proxy.thaw()
    await sink.record({ type: "after" })
    const second = await vault.tokenize("carol@example.com", { type: "email" })
    const records = await readChain(direct, prefixes.audit)
    const verdict = verifyAuditChain(records)
    expect(verdict.valid).toBe(true)
    expect(records.map((r) => r.type)).toEqual(["warm", "frozen", "after"])
    const inRedis = await vaultInRedis(direct, prefixes.vault)
    expect(inRedis.length).toBe(3)
    const mine = sortedEntries(await tokens.read((view) => view.entries()))
    const other = sortedEntries(
      await createRedisTokenStore({ client: direct, keyPrefix: prefixes.vault }).read((view) => view.entries())
    )
    expect(mine).toEqual(inRedis)
    expect(other).toEqual(inRedis)
    expect((await vault.reveal(second.token)).plaintext).toBe("carol@example.com")

    summary("frozen link", {
      timeoutMs,
      recordMs: Math.round(record.ms),
      tokenizeMs: Math.round(tokenize.ms),
      revealMs: Math.round(reveal.ms),
      freshTransactionMs: Math.round(fresh.ms),
      defaultTimeoutMs: Math.round(defaulted.ms),
      headMs: Math.round(head.ms),
      lengthMs: Math.round(length.ms),
      pageMs: Math.round(page.ms),
      statsMs: Math.round(stats.ms),
      effectReadMs: Math.round(read.ms),
      lockAcquireMs: Math.round(acquire.ms),
      readyMs: Math.round(ready.ms),
      allMs: Math.round(allMs),
      records: records.length,
      tokens: inRedis.length
    })
  }, 30_000)
})

describe("replies that never come (requests reach Redis, replies are dropped)", () => {
  it("a commit whose reply is lost fails with CommitOutcomeUnknown in time; it landed once, and the next call builds on it", async () => {
    const shared = sharedRedis()
    const proxy = await proxyTo(shared.port)
    const direct = client(shared.port)
    const proxied = client(proxy.port)
    const prefixes = { audit: uniquePrefix("noreply-audit"), vault: uniquePrefix("noreply-tv") }
    const timeoutMs = 400
    const audit = createRedisAuditStore({ client: proxied, keyPrefix: prefixes.audit, timeout: timeoutMs })
    const tokens = createRedisTokenStore({ client: proxied, keyPrefix: prefixes.vault, timeout: timeoutMs })
    const sink = createAuditSink({ store: audit as unknown as CoreAuditStore })
    const vault = createTokenVault({ store: tokens })
    await sink.record({ type: "warm" })
    await vault.tokenize("alice@example.com", { type: "email" })

    proxy.setMode("dropReplies")
    const [record, tokenize, read] = await Promise.all([
      timed(() => sink.record({ type: "lost-reply" })),
      timed(() => vault.tokenize("bob@example.com", { type: "email" })),
      timed(() => tokens.read((view) => view.entries().length))
    ])
    expectUnknown(record, timeoutMs, "audit")
    expectUnknown(tokenize, timeoutMs, "vault")
    expectTimeout(read, timeoutMs, "vault read")
    // Redis ran them: the record and the token are there, once.
    expect((await readChain(direct, prefixes.audit)).map((r) => r.type)).toEqual(["warm", "lost-reply"])
    expect((await vaultInRedis(direct, prefixes.vault)).length).toBe(2)

    // The link comes back (the connection that lost replies is closed; ioredis reconnects).
    proxy.setMode("forward")
    await sink.record({ type: "next" })
    await vault.tokenize("carol@example.com", { type: "email" })
    const records = await readChain(direct, prefixes.audit)
    expect(verifyAuditChain(records).valid).toBe(true)
    expect(records.map((r) => r.type)).toEqual(["warm", "lost-reply", "next"])
    const inRedis = await vaultInRedis(direct, prefixes.vault)
    expect(inRedis.length).toBe(3)
    expect(sortedEntries(await tokens.read((view) => view.entries()))).toEqual(inRedis)
    summary("dropped replies", {
      timeoutMs,
      recordMs: Math.round(record.ms),
      tokenizeMs: Math.round(tokenize.ms),
      readMs: Math.round(read.ms),
      records: records.length,
      tokens: inRedis.length
    })
  }, 30_000)
})

describe("a paused or sleeping Redis", () => {
  it("CLIENT PAUSE ALL and DEBUG SLEEP hold no call past its timeout", async () => {
    const server = await startRedis({ config: ["enable-debug-command yes"] })
    servers.push(server)
    const admin = client(server.port)
    const redis = client(server.port)
    const prefixes = { audit: uniquePrefix("pause-audit"), vault: uniquePrefix("pause-tv") }
    const timeoutMs = 400
    const sink = createAuditSink({
      store: createRedisAuditStore({
        client: redis,
        keyPrefix: prefixes.audit,
        timeout: timeoutMs
      }) as unknown as CoreAuditStore
    })
    const tokens = createRedisTokenStore({ client: redis, keyPrefix: prefixes.vault, timeout: timeoutMs })
    const vault = createTokenVault({ store: tokens })
    await sink.record({ type: "warm" })
    const first = await vault.tokenize("alice@example.com", { type: "email" })

    const round = async () =>
      Promise.all([
        timed(() => sink.record({ type: "held" })),
        timed(() => vault.tokenize("bob@example.com", { type: "email" })),
        timed(() => vault.reveal(first.token))
      ])

    await admin.client("PAUSE", 1500, "ALL")
    const paused = await round()
    await new Promise((r) => setTimeout(r, 1600))
    // DEBUG SLEEP blocks the server (this connection's reply comes when it wakes).
    const sleeping = admin.debug("SLEEP", 1.5)
    await new Promise((r) => setTimeout(r, 50))
    const slept = await round()
    await sleeping
    for (const [record, tokenize, reveal] of [paused, slept]) {
      expectUnknown(record!, timeoutMs, "audit")
      expectUnknown(tokenize!, timeoutMs, "vault")
      expectTimeout(reveal!, timeoutMs, "vault read")
    }
    // Afterwards: one chain, each held commit landed at most once, every replica agrees.
    await sink.record({ type: "after" })
    const records = await readChain(admin, prefixes.audit)
    expect(verifyAuditChain(records).valid).toBe(true)
    expect(records[0]?.type).toBe("warm")
    expect(records.at(-1)?.type).toBe("after")
    const inRedis = await vaultInRedis(admin, prefixes.vault)
    expect(sortedEntries(await tokens.read((view) => view.entries()))).toEqual(inRedis)
    summary("paused and sleeping", {
      timeoutMs,
      pausedRecordMs: Math.round(paused[0].ms),
      pausedTokenizeMs: Math.round(paused[1].ms),
      pausedRevealMs: Math.round(paused[2].ms),
      sleepRecordMs: Math.round(slept[0].ms),
      sleepTokenizeMs: Math.round(slept[1].ms),
      sleepRevealMs: Math.round(slept[2].ms),
      records: records.length,
      tokens: inRedis.length
    })
  }, 30_000)
})

describe("the deadline is real time", () => {
  effectIt.effect("under a TestClock that never advances, a frozen operation still ends at its deadline", () =>
    Effect.gen(function* () {
      const proxy = yield* Effect.promise(() => proxyTo(sharedRedis().port))
      const proxied = client(proxy.port)
      const store = yield* Effect.provideService(
        AuditStore.make({ keyPrefix: uniquePrefix("testclock-audit"), timeout: 300 }),
        RedisClient,
        fromClient(proxied)
      )
      yield* store.length
      proxy.freeze()
      const started = performance.now()
      const exit = yield* Effect.exit(store.head)
      const ms = performance.now() - started
      proxy.thaw()
      expect(failureOf(exit)).toBeInstanceOf(OperationTimeout)
      expect(ms).toBeLessThan(300 + SLACK_MS)
      summary("testclock deadline", { timeoutMs: 300, headMs: Math.round(ms) })
    })
  )
})

describe("the timeout option", () => {
  it("is refused unless it is a finite duration of at least 1 ms", async () => {
    const redis = client(sharedRedis().port)
    for (const timeout of [0, -1, Number.POSITIVE_INFINITY, "soon", "infinity"] as Array<never>) {
      expect(() => createRedisAuditStore({ client: redis, timeout })).toThrow(InvalidConfig)
      expect(() => createRedisTokenStore({ client: redis, timeout })).toThrow(InvalidConfig)
      const exit = await Effect.runPromiseExit(
        Effect.provideService(AuditStore.make({ timeout }), RedisClient, fromClient(redis))
      )
      expect(failureOf(exit)).toBeInstanceOf(InvalidConfig)
      expect((failureOf(exit) as InvalidConfig).option).toBe("timeout")
    }
    // A Duration and a number of ms are both fine.
    expect(() => createRedisAuditStore({ client: redis, timeout: "2 seconds" })).not.toThrow()
    expect(() => createRedisTokenStore({ client: redis, timeout: 250 })).not.toThrow()
  })
})

// ---------------------------------------------------------------------------
// the CLI

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const bin = join(root, "cli", "dist", "bin.js")

const cli = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stderr: string; ms: number; endedAt: number }>((done, fail) => {
    const { REDIS_URL: _drop, ...env } = process.env
    const started = performance.now()
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env, stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stderr, ms: performance.now() - started, endedAt: performance.now() })
    })
  })

describe("the CLI's reads", () => {
  it("verify, export and stats fail with one line within --timeout when the link freezes mid-read", async () => {
    const shared = sharedRedis()
    const direct = client(shared.port)
    const prefix = uniquePrefix("cli-frozen")
    const sink = createAuditSink({
      store: createRedisAuditStore({ client: direct, keyPrefix: prefix }) as unknown as CoreAuditStore
    })
    for (let i = 0; i < 3; i++) await sink.record({ type: "e", i })
    const runs: Record<string, number> = {}
    for (const [name, command, freezeOn] of [
      ["verify", ["verify", "--prefix", prefix], "LRANGE"],
      [
        "export",
        ["export", "--prefix", prefix, "--out", join(tmpdir(), `frozen-export-${process.pid}.jsonl`)],
        "LRANGE"
      ],
      ["stats", ["stats", "--audit-prefix", prefix], "PTTL"]
    ] as const) {
      const proxy = await proxyTo(shared.port)
      let frozeAt: number | undefined
      void proxy.freezeWhen(freezeOn).then(() => (frozeAt = performance.now()))
      const run = await cli([...command, "--url", proxy.url, "--timeout", "500"])
      proxy.thaw()
      expect(frozeAt, name).toBeDefined()
      // From the freeze: the read's 500 ms, then closing the connection (QUIT unanswered: 1 s at most).
      const afterFreeze = run.endedAt - frozeAt!
      expect(afterFreeze).toBeLessThan(500 + 1000 + SLACK_MS)
      expect(run.code, name).toBe(3)
      expect(run.stderr.trim().split("\n")).toHaveLength(1)
      expect(run.stderr).toMatch(
        /no answer from Redis at redis:\/\/127\.0\.0\.1:\d+\/?: .+ did not finish within 500 ms/
      )
      runs[`${name}Ms`] = Math.round(run.ms)
      runs[`${name}AfterFreezeMs`] = Math.round(afterFreeze)
    }
    summary("cli frozen", { timeoutMs: 500, ...runs })
  }, 60_000)
})
