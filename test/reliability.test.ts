/**
 * Exactly once under lost replies, and opt-in durable commits, against real redis-server
 * processes. The lost replies come from a loopback TCP proxy between ioredis and Redis
 * (test/support/tcpProxy.ts): the store's script reaches Redis and runs, and the reply is
 * cut, delayed past the client's timeout, or (for contrast) the request itself is dropped.
 * Stores are driven exactly as haechi's core drives them (test/support/haechiCore.ts).
 *
 * Every test uses the live clock (plain async tests) and prints one `[summary]` line.
 */
import { Cause, Effect, Exit, Metric, Option } from "effect"
import fc from "fast-check"
import { Cluster, Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { supportsWaitAof } from "../src/internal/durability.js"
import { DurabilityTimeout, InvalidConfig } from "../src/Errors.js"
import { createRedisAuditStore, createRedisTokenStore, toHaechiAuditStore, toHaechiTokenStore } from "../src/haechi.js"
import * as Metrics from "../src/Metrics.js"
import { fromClient, layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { createAuditSink, createTokenVault } from "./support/haechiCore.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { parseInfo, startRedis, tcpProxy, type RedisServer, type TcpProxy } from "./support/redisServer.js"
import {
  checkAudit,
  checkVault,
  emptyLedger,
  errorTag,
  merge,
  replica,
  sleep,
  summary,
  type Ledger
} from "./support/replica.js"
import { sharedCluster } from "./support/shared.js"

let server: RedisServer
let proxy: TcpProxy
let raw: Redis
const opened: Array<Redis | Cluster> = []

beforeAll(async () => {
  server = await startRedis()
  proxy = await tcpProxy(server.port)
  raw = new Redis(server.port, "127.0.0.1")
})

afterAll(async () => {
  await Promise.all(opened.map((c) => c.quit().catch(() => c.disconnect())))
  raw?.disconnect()
  await proxy?.stop()
  await server?.stop()
})

/**
 * ioredis clients through the proxy:
 * - "resend": the defaults; after a reconnect ioredis re-sends unanswered commands;
 * - "failFast": an unanswered command fails at once when the connection drops (no
 *   re-send, no retry), so the store must find out itself whether it committed;
 * - "timeout": defaults plus `commandTimeout`, so a late reply fails the command.
 */
type ClientKind = "resend" | "failFast" | "timeout"
const connect = async (kind: ClientKind): Promise<Redis> => {
  const options =
    kind === "failFast"
      ? { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false }
      : kind === "timeout"
        ? { commandTimeout: 250 }
        : {}
  const client = new Redis(proxy.port, "127.0.0.1", options)
  client.on("error", () => {})
  opened.push(client)
  await client.ping()
  return client
}

/** Calls per command on the server since it started (INFO commandstats). */
const commandCalls = async (): Promise<Record<string, number>> => {
  const info = parseInfo(await raw.info("commandstats"))
  const calls: Record<string, number> = {}
  for (const [key, value] of Object.entries(info)) {
    const match = /^cmdstat_(.+)$/.exec(key)
    const n = /calls=(\d+)/.exec(value)
    if (match && n) calls[match[1]!] = Number(n[1])
  }
  return calls
}
const delta = (after: Record<string, number>, before: Record<string, number>, command: string) =>
  (after[command] ?? 0) - (before[command] ?? 0)
/** Script runs (ioredis re-sends a script call as EVAL after a reconnect, else EVALSHA). */
const scriptRuns = (after: Record<string, number>, before: Record<string, number>) =>
  delta(after, before, "evalsha") + delta(after, before, "eval")

/** A direct connection (not through the proxy) whose errors are only logged by the test. */
const direct = (port: number): Redis => {
  const client = new Redis(port, "127.0.0.1")
  client.on("error", () => {})
  opened.push(client)
  return client
}

/** Lost replies the store resolved by asking Redis (its own metric, process-wide). */
const resolvedByLookup = (store: "audit" | "vault"): number =>
  Effect.runSync(Metric.value(Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", store)))).count

const countReconnects = (client: Redis) => {
  let n = 0
  client.on("ready", () => n++)
  return () => n
}

const prefixesFor = (name: string) => ({ audit: uniquePrefix(`${name}-audit`), vault: uniquePrefix(`${name}-tv`) })

/** The typed failure of an exit, if any. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

describe("exactly once when the reply to a committed append is lost", () => {
  for (const kind of ["resend", "failFast"] as const) {
    it(`${kind}: the connection is cut after Redis ran the fenced append; the record is in the chain once and record() resolves`, async () => {
      const client = await connect(kind)
      const readies = countReconnects(client)
      const prefixes = prefixesFor(`cut-${kind}`)
      const r = replica("w", client, prefixes)
      expect(await r.record()).toBe(true) // warms the head: the next transaction's first call is the append
      const before = await commandCalls()
      const lookups = resolvedByLookup("audit")
      proxy.cutAfterNextRequest()
      expect(await r.record()).toBe(true)
      const after = await commandCalls()
      expect(await r.record()).toBe(true)

      expect(readies()).toBeGreaterThanOrEqual(1) // the connection really was cut
      if (kind === "resend") {
        // The append ran, ioredis re-sent it, and the script answered "already committed".
        expect(scriptRuns(after, before)).toBe(2)
        expect(resolvedByLookup("audit")).toBe(lookups)
      } else {
        // The append ran once; the failed call was resolved by looking the record up.
        expect(scriptRuns(after, before)).toBe(1)
        expect(resolvedByLookup("audit")).toBe(lookups + 1)
      }
      const audit = await checkAudit(raw, prefixes.audit, r.ledger)
      expect(audit).toMatchObject({ records: 3, valid: true, forks: 0, losses: 0, duplicates: 0, falseFailures: 0 })
      expect(audit.ids).toEqual(["w-e1", "w-e2", "w-e3"])
      summary(`audit reply cut (${kind})`, {
        written: r.ledger.ackedEvents.length,
        faults: 1,
        forks: audit.forks,
        losses: audit.losses,
        duplicates: audit.duplicates,
        falseFailures: audit.falseFailures
      })
    })

    it(`${kind}: the connection is cut after Redis applied a vault diff; the token is there once and tokenize() resolves`, async () => {
      const client = await connect(kind)
      const prefixes = prefixesFor(`cut-tv-${kind}`)
      const r = replica("w", client, prefixes)
      expect(await r.tokenize()).toBe(true) // loads the cache: the next mutation's first call is the apply
      const before = await commandCalls()
      const lookups = resolvedByLookup("vault")
      proxy.cutAfterNextRequest()
      expect(await r.tokenize()).toBe(true)
      const after = await commandCalls()
      expect(await r.tokenize()).toBe(true)

      // resend: apply + re-sent apply (answered "already committed") + the cache's catch-up read;
      // failFast: apply + the commit-id lookup in the change log (found) + the catch-up read.
      expect(scriptRuns(after, before)).toBe(3)
      expect(resolvedByLookup("vault")).toBe(kind === "resend" ? lookups : lookups + 1)
      const vault = await checkVault(raw, prefixes.vault, r.ledger)
      expect(vault).toMatchObject({
        tokens: 3,
        version: 3,
        losses: 0,
        duplicates: 0,
        falseFailures: 0,
        inconsistencies: []
      })
      for (const { token, value } of r.ledger.ackedTokens) {
        expect((await r.vault.reveal(token)).plaintext).toBe(value)
      }
      summary(`vault reply cut (${kind})`, {
        written: r.ledger.ackedTokens.length,
        faults: 1,
        losses: vault.losses,
        duplicates: vault.duplicates,
        falseFailures: vault.falseFailures
      })
    })
  }

  it("timeout: the reply comes after the client's commandTimeout; the store resolves the outcome by lookup (audit and vault)", async () => {
    const client = await connect("timeout")
    const prefixes = prefixesFor("late")
    const r = replica("w", client, prefixes)
    expect(await r.record()).toBe(true)
    expect(await r.tokenize()).toBe(true)
    let faults = 0
    for (const [store, op] of [
      ["audit", r.record],
      ["vault", r.tokenize]
    ] as const) {
      const lookups = resolvedByLookup(store)
      proxy.delayReplies(900)
      const pending = op()
      await sleep(350) // the command has run and timed out on the client
      proxy.delayReplies(0)
      expect(await pending).toBe(true)
      faults++
      // The timed-out write was resolved by asking Redis, not by writing again.
      expect(resolvedByLookup(store)).toBe(lookups + 1)
    }
    const audit = await checkAudit(raw, prefixes.audit, r.ledger)
    const vault = await checkVault(raw, prefixes.vault, r.ledger)
    expect(audit).toMatchObject({ records: 2, valid: true, forks: 0, losses: 0, duplicates: 0, falseFailures: 0 })
    expect(vault).toMatchObject({
      tokens: 2,
      version: 2,
      losses: 0,
      duplicates: 0,
      falseFailures: 0,
      inconsistencies: []
    })
    summary("late reply past commandTimeout", {
      written: r.ledger.ackedEvents.length + r.ledger.ackedTokens.length,
      faults,
      forks: audit.forks,
      losses: audit.losses + vault.losses,
      duplicates: audit.duplicates + vault.duplicates
    })
  })

  it("contrast: a request dropped before Redis saw it is not committed by the lookup, then committed once by the retry", async () => {
    const client = await connect("failFast")
    const prefixes = prefixesFor("dropped")
    const r = replica("w", client, prefixes)
    expect(await r.record()).toBe(true)
    expect(await r.tokenize()).toBe(true)
    for (const op of [r.record, r.tokenize]) {
      proxy.dropAll()
      const pending = op()
      await sleep(150)
      proxy.resume() // destroys the connection that lost bytes: the call fails, unexecuted
      expect(await pending).toBe(true)
    }
    const audit = await checkAudit(raw, prefixes.audit, r.ledger)
    const vault = await checkVault(raw, prefixes.vault, r.ledger)
    expect(audit).toMatchObject({ records: 2, valid: true, forks: 0, losses: 0, duplicates: 0 })
    expect(vault).toMatchObject({ tokens: 2, version: 2, losses: 0, duplicates: 0, inconsistencies: [] })
    summary("request dropped before Redis", {
      written: 4,
      faults: 2,
      forks: audit.forks,
      losses: audit.losses + vault.losses,
      duplicates: audit.duplicates + vault.duplicates
    })
  })

  it("property: whichever call the fault hits (head read, append, vault load, apply, catch-up read), nothing is doubled or lost and no commit is reported failed", async () => {
    const totals = {
      runs: 0,
      written: 0,
      failedReads: 0,
      faults: 0,
      forks: 0,
      losses: 0,
      duplicates: 0,
      falseFailures: 0
    }
    const clients = { resend: await connect("resend"), failFast: await connect("failFast") }
    type Op = "record" | "tokenize" | "reveal" | "coldRecord" | "coldTokenize"
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<"resend" | "failFast">("resend", "failFast"),
        fc.constantFrom<"cut" | "drop">("cut", "drop"),
        fc.array(fc.constantFrom<Op>("record", "tokenize", "reveal", "coldRecord", "coldTokenize"), {
          minLength: 2,
          maxLength: 5
        }),
        fc.nat(),
        async (kind, fault, ops, at) => {
          const client = clients[kind]
          const prefixes = prefixesFor("prop")
          const ledger: Ledger = emptyLedger()
          let warm = replica("w0", client, prefixes, {}, ledger)
          const faultAt = at % ops.length
          let replicas = 0
          for (let i = 0; i < ops.length; i++) {
            const op = ops[i]!
            // A cold replica's first call is a read (GET head / vault load), a warm one's the write.
            const r = op.startsWith("cold") ? replica(`w${++replicas}`, client, prefixes, {}, ledger) : warm
            if (op.startsWith("cold")) warm = r
            if (i === faultAt) {
              totals.faults++
              if (fault === "cut") proxy.cutAfterNextRequest()
              else proxy.dropAll()
            }
            const heal = i === faultAt && fault === "drop" ? sleep(120).then(() => proxy.resume()) : Promise.resolve()
            if (op === "record" || op === "coldRecord") await r.record()
            else if (op === "tokenize" || op === "coldTokenize") await r.tokenize()
            else {
              const known = ledger.ackedTokens[0]
              if (known !== undefined) {
                const got = await r.vault.reveal(known.token).then(
                  (x) => x.plaintext,
                  (e: unknown) => errorTag(e)
                )
                if (got !== "RedisUnavailable") expect(got).toBe(known.value)
              } else await r.record()
            }
            await heal
            proxy.resume()
          }
          const failures = [...ledger.failedEvents, ...ledger.failedTokens]
          // Only the fail-fast client may fail a call, and only one whose fault hit a read.
          if (kind === "resend") expect(failures).toEqual([])
          for (const f of failures) expect(f.error).toBe("RedisUnavailable")
          const audit = await checkAudit(raw, prefixes.audit, ledger)
          const vault = await checkVault(raw, prefixes.vault, ledger)
          expect(audit).toMatchObject({ valid: true, forks: 0, losses: 0, duplicates: 0, falseFailures: 0 })
          expect(vault).toMatchObject({ losses: 0, duplicates: 0, falseFailures: 0, inconsistencies: [] })
          totals.runs++
          totals.written += ledger.ackedEvents.length + ledger.ackedTokens.length
          totals.failedReads += failures.length
          totals.forks += audit.forks
          totals.losses += audit.losses + vault.losses
          totals.duplicates += audit.duplicates + vault.duplicates
          totals.falseFailures += audit.falseFailures + vault.falseFailures
        }
      ),
      { numRuns: 16 }
    )
    summary("reply-loss property", totals)
  })
})

// ---------------------------------------------------------------------------
// durable commits

type Store = "audit" | "vault"

/**
 * A replica `w` of `store` that wrote once, then a write whose reply is lost and whose
 * link is cut (no reconnect gets through until the proxy forwards again): `pending` is
 * that write, `committed` whether its first send landed meanwhile.
 */
const cutAfterCommit = async (store: Store, name: string) => {
  const client = await connect("resend")
  const prefixes = prefixesFor(`${name}-${store}`)
  const prefix = prefixes[store]
  const r = replica("w", client, prefixes)
  const write = () => (store === "audit" ? r.record() : r.tokenize())
  expect(await write()).toBe(true) // warm: the next operation's first call is its fenced write
  const landed = async () =>
    store === "audit" ? (await raw.llen(`${prefix}chain`)) === 2 : (await raw.get(`${prefix}version`)) === "2"
  proxy.cutAfterNextRequest()
  proxy.setMode("refuse")
  const pending = write()
  for (let i = 0; i < 200 && !(await landed()); i++) await sleep(5)
  return { r, prefixes, prefix, pending, committed: await landed() }
}

/** What Redis holds, read directly: the audit's duplicates and the vault's evidence name a second write. */
const foundIn = (store: Store, prefix: string, ledger: Ledger) =>
  store === "audit"
    ? checkAudit(raw, prefix, ledger).then(({ records, duplicates, losses, valid }) => ({
        records,
        duplicates,
        losses,
        valid
      }))
    : checkVault(raw, prefix, ledger).then(({ tokens, version, losses, evidence }) => ({
        tokens,
        version,
        losses,
        evidence
      }))

/** `foundIn` for `n` writes, each once. */
const writtenOnce = (store: Store, n: number) =>
  store === "audit"
    ? { records: n, duplicates: 0, losses: 0, valid: true }
    : { tokens: n, version: n, losses: 0, evidence: { lost: [], twice: [], reused: [] } }

// Catches: the fenced script asking whether to yield to the lock before it looked for its
// own commit, so a call re-sent after its first send committed answered LockHeld when
// another writer took the lock meanwhile, and the store ran the caller's fn again: the
// record appended twice, the token coming back reused (seen after a Redis kill -9).
describe("a call re-sent after its first send committed meets another writer's lock", () => {
  for (const store of ["audit", "vault"] as const) {
    it(`${store}: committed once, the writer's call resolves once, the other writer's lock left alone`, async () => {
      const { r, prefix, pending, committed } = await cutAfterCommit(store, "cut-locked")
      // Another writer takes the lock before the call is re-sent (it lapses on its own).
      await raw.set(`${prefix}lock`, "another-writer", "PX", 1500)
      proxy.setMode("forward")
      const acknowledged = await pending
      const lock = await raw.get(`${prefix}lock`)
      await raw.del(`${prefix}lock`)
      expect({ committed, acknowledged, lock, found: await foundIn(store, prefix, r.ledger) }).toEqual({
        committed: true,
        acknowledged: true,
        lock: "another-writer",
        found: writtenOnce(store, 2)
      })
    })
  }
})

// Catches: the script proving a re-send by the ids of the last 1,000 commits only, so a
// call ioredis re-sent after 1,200 commits by another writer (a quarter of a second at
// full speed) answered Conflict, and the store ran the caller's fn again: the event
// appended twice, the token minted twice.
describe("a call re-sent after its first send committed and 1,200 commits by another writer", () => {
  for (const store of ["audit", "vault"] as const) {
    it(`${store}: committed once, the writer's call resolves once`, async () => {
      const { r, prefixes, prefix, pending, committed } = await cutAfterCommit(store, "cut-busy")
      const other = replica("o", direct(server.port), prefixes)
      let others = 0
      for (let i = 0; i < 1200; i++) if (await (store === "audit" ? other.record() : other.tokenize())) others++
      proxy.setMode("forward")
      const acknowledged = await pending
      const found = await foundIn(store, prefix, merge([r.ledger, other.ledger]))
      expect({ committed, others, acknowledged, found }).toEqual({
        committed: true,
        others: 1200,
        acknowledged: true,
        found: writtenOnce(store, 1202)
      })
    })
  }
})

describe("opt-in durable commits (WAIT / WAITAOF)", () => {
  let primary: RedisServer
  let secondary: RedisServer
  let onPrimary: Redis
  let onReplica: Redis

  beforeAll(async () => {
    primary = await startRedis()
    secondary = await startRedis()
    onPrimary = direct(primary.port)
    onReplica = direct(secondary.port)
    await onPrimary.config("SET", "repl-diskless-sync-delay", "0")
    await onReplica.replicaof("127.0.0.1", primary.port)
    const deadline = Date.now() + 10_000
    while (parseInfo(await onReplica.info("replication"))["master_link_status"] !== "up") {
      if (Date.now() > deadline) throw new Error("replica link did not come up")
      await sleep(25)
    }
  })

  afterAll(async () => {
    await secondary?.stop()
    await primary?.stop()
  })

  it("replicas: 1 — each acknowledged record and token is already on the replica (facade and Effect API)", async () => {
    // A generous bound (WAIT answers as soon as the replica acknowledges): the machine is busy.
    const durability = { replicas: 1, timeout: "3 seconds" } as const
    const client = direct(primary.port)
    const prefixes = prefixesFor("durable")
    const facade = replica("f", client, prefixes, { durability })
    const layer = layerFromClient(client)
    const effectAudit = await Effect.runPromise(
      Effect.provide(AuditStore.make({ keyPrefix: prefixes.audit, durability }), layer)
    )
    const effectVault = await Effect.runPromise(
      Effect.provide(TokenStore.make({ keyPrefix: prefixes.vault, durability }), layer)
    )
    const sink = createAuditSink({ store: toHaechiAuditStore(effectAudit) })
    const vault = createTokenVault({ store: toHaechiTokenStore(effectVault) })
    let written = 0
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) {
        expect(await facade.record()).toBe(true)
        expect(await facade.tokenize()).toBe(true)
      } else {
        await sink.record({ type: "fault-test", id: `e-${i}` })
        await vault.tokenize(`e-${i}`, { type: "email" })
      }
      written += 2
      // Read on the replica right after the acknowledgement: WAIT made sure it is there.
      expect(await onReplica.llen(`${prefixes.audit}chain`)).toBe(i + 1)
      expect(await onReplica.get(`${prefixes.vault}version`)).toBe(String(i + 1))
    }
    const audit = await checkAudit(onReplica, prefixes.audit, facade.ledger)
    expect(audit).toMatchObject({ records: 6, valid: true, losses: 0, duplicates: 0 })
    summary("durable WAIT with a live replica", {
      written,
      durabilityTimeouts: 0,
      losses: audit.losses,
      duplicates: audit.duplicates
    })
  })

  it("aof: true is InvalidConfig before anything is written on Redis < 7.2 (detected), and durable on >= 7.2", async () => {
    const client = direct(primary.port)
    const hasWaitAof = await Effect.runPromise(supportsWaitAof(fromClient(client)))
    const version = parseInfo(await client.info("server"))["redis_version"]
    const prefixes = prefixesFor("aof")
    const exit = await Effect.runPromiseExit(
      Effect.provide(AuditStore.make({ keyPrefix: prefixes.audit, durability: { aof: true } }), layerFromClient(client))
    )
    const store = createRedisTokenStore({ client, keyPrefix: prefixes.vault, durability: { aof: true } })
    const vault = createTokenVault({ store })
    if (!hasWaitAof) {
      const error = failureOf(exit)
      expect(error).toBeInstanceOf(InvalidConfig)
      expect((error as InvalidConfig).option).toBe("durability.aof")
      expect((error as InvalidConfig).message).toContain(`Redis ${version}`)
      expect((error as InvalidConfig).message).toContain("7.2")
      await expect(store.checked()).rejects.toBeInstanceOf(InvalidConfig)
      await expect(vault.tokenize("x", { type: "email" })).rejects.toBeInstanceOf(InvalidConfig)
      expect(await client.exists(`${prefixes.vault}tokens`, `${prefixes.vault}version`)).toBe(0)
    } else {
      // A server with WAITAOF: needs appendonly on to acknowledge a local fsync.
      expect(Exit.isSuccess(exit)).toBe(true)
    }
    // Bad values fail at creation, synchronously in the facade.
    expect(() => createRedisAuditStore({ client, durability: { replicas: -1 } })).toThrow(InvalidConfig)
    expect(() => createRedisAuditStore({ client, durability: { replicas: 1, timeout: 0 } })).toThrow(InvalidConfig)
    expect(() => createRedisAuditStore({ client, durability: { replicas: 1.5 } })).toThrow(InvalidConfig)
    summary("durability aof detection", { redisVersion: String(version), waitaof: String(hasWaitAof), written: 0 })
  })

  it("replica gone: record() and tokenize() fail closed with DurabilityTimeout within the timeout; the commit stays on the master", async () => {
    const client = direct(primary.port)
    const prefixes = prefixesFor("durable-gone")
    const timeoutMs = 300
    const r = replica("g", client, prefixes, { durability: { replicas: 1, timeout: `${timeoutMs} millis` } })
    const warm = replica("h", client, prefixes, { durability: { replicas: 1, timeout: "3 seconds" } }, r.ledger)
    expect(await warm.record()).toBe(true) // acknowledged by the live replica
    await secondary.stop()
    const elapsed: Array<number> = []
    for (const op of [r.record, r.tokenize, r.record]) {
      const started = performance.now()
      expect(await op()).toBe(false)
      elapsed.push(performance.now() - started)
    }
    const failures = [...r.ledger.failedEvents, ...r.ledger.failedTokens]
    expect(failures.map((f) => f.error)).toEqual(["DurabilityTimeout", "DurabilityTimeout", "DurabilityTimeout"])
    for (const ms of elapsed) {
      expect(ms).toBeGreaterThanOrEqual(timeoutMs - 20)
      expect(ms).toBeLessThan(timeoutMs + 1000)
    }
    // Failing closed does not undo the commit: it is on the master, in order.
    const audit = await checkAudit(onPrimary, prefixes.audit, r.ledger)
    expect(audit).toMatchObject({ records: 3, valid: true, forks: 0, losses: 0, duplicates: 0 })
    const error = await createRedisAuditStore({
      client,
      keyPrefix: prefixes.audit,
      durability: { replicas: 1, timeout: `${timeoutMs} millis` }
    })
      .transaction(async ({ persist, readLastIntegrity }) => {
        const { buildNextRecord } = await import("../src/Chain.js")
        await persist(buildNextRecord({ type: "fault-test", id: "direct" }, await readLastIntegrity()))
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(DurabilityTimeout)
    expect((error as DurabilityTimeout).wanted).toBe("1 replica")
    expect((error as DurabilityTimeout).acknowledged).toBe("0 replicas")
    summary("durable WAIT with the replica gone", {
      written: r.ledger.ackedEvents.length,
      durabilityTimeouts: failures.length + 1,
      maxElapsedMs: Math.round(Math.max(...elapsed)),
      timeoutMs
    })
  })

  it("on the cluster: WAIT runs on the master that owns the stores' slot (replicas: 1 acknowledged, 2 times out)", async () => {
    const shared = sharedCluster()
    const client = new Cluster(shared.startupNodes.map((n) => ({ host: n.host, port: n.port })))
    opened.push(client)
    const tag = uniqueClusterPrefix("durable")
    const prefixes = { audit: `${tag}audit:`, vault: `${tag}tv:` }
    const one = replica("c", client, prefixes, { durability: { replicas: 1, timeout: "1 second" } })
    for (let i = 0; i < 3; i++) {
      expect(await one.record()).toBe(true)
      expect(await one.tokenize()).toBe(true)
    }
    const two = replica("d", client, prefixes, { durability: { replicas: 2, timeout: "200 millis" } })
    expect(await two.record()).toBe(false)
    expect(two.ledger.failedEvents[0]?.error).toBe("DurabilityTimeout")
    const audit = await checkAudit(client, prefixes.audit, one.ledger)
    expect(audit).toMatchObject({ records: 4, valid: true, losses: 0, duplicates: 0 })
    summary("durable WAIT on the cluster", {
      written: 6,
      durabilityTimeouts: 1,
      losses: audit.losses,
      duplicates: audit.duplicates
    })
  })
})
