/**
 * Crashes against real redis-server processes: Redis killed (-9) and restarted from its
 * AOF (`appendfsync always`) while replicas append and tokenize; a writer process killed
 * (-9) in the middle of a transaction, holding the lock; and a failover of the cluster
 * master that owns the stores' slot while replicas write. Replicas are driven exactly as
 * haechi's core drives the stores (test/support/haechiCore.ts) and keep a ledger of what
 * was acknowledged; afterwards Redis is read directly and checked against it.
 *
 * Every test uses the live clock (plain async tests) and prints one `[summary]` line.
 */
import { createHash } from "node:crypto"
import { Cluster, Redis, type RedisOptions } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { Scripts, scriptSource } from "../src/internal/scripts.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { keySlot, parseInfo, redisCommand, startRedis, type RedisServer } from "./support/redisServer.js"
import {
  checkAudit,
  checkVault,
  merge,
  replica,
  runLoops,
  sleep,
  spawnCrashingWriter,
  summary,
  type AuditCheck,
  type Ledger,
  type Replica,
  type VaultCheck
} from "./support/replica.js"
import { sharedCluster, sharedRedis } from "./support/shared.js"

const opened: Array<Redis | Cluster> = []
const servers: Array<RedisServer> = []

afterAll(async () => {
  await Promise.all(opened.map((c) => c.quit().catch(() => c.disconnect())))
  await Promise.all(servers.map((s) => s.stop()))
})

const client = (port: number, options: RedisOptions = {}): Redis => {
  const c = new Redis(port, "127.0.0.1", options)
  c.on("error", () => {})
  opened.push(c)
  return c
}

/**
 * How a writer's call may fail during an outage or a failover without anything being
 * wrong: Redis away, a lost reply whose outcome could not be asked, the lock left by a
 * writer whose release was lost (it lapses with its TTL), attempts used up while the
 * cluster moved the slot. Each is fail-closed: the call was not acknowledged.
 */
const NOT_ACKNOWLEDGED = ["RedisUnavailable", "CommitOutcomeUnknown", "LockTimeout", "RetriesExhausted"]

/** A call that failed with CommitOutcomeUnknown may have committed; any other failure must not have. */
const definite = (ledger: Ledger): Ledger => ({
  ...ledger,
  failedEvents: ledger.failedEvents.filter((f) => f.error !== "CommitOutcomeUnknown"),
  failedTokens: ledger.failedTokens.filter((f) => f.error !== "CommitOutcomeUnknown")
})

const failures = (replicas: ReadonlyArray<Replica>) => {
  const all = merge(replicas.map((r) => r.ledger))
  const tags: Record<string, number> = {}
  for (const f of [...all.failedEvents, ...all.failedTokens]) tags[f.error] = (tags[f.error] ?? 0) + 1
  return { all, tags }
}

/** The chain whole and every acknowledged record and token there once; what was found is printed when not. */
const expectNothingLost = (audit: AuditCheck, vault: VaultCheck) => {
  expect(audit, `audit check: ${JSON.stringify(audit)}`).toMatchObject({
    valid: true,
    forks: 0,
    losses: 0,
    duplicates: 0
  })
  expect(vault, `vault evidence: ${JSON.stringify(vault.evidence)}`).toMatchObject({
    losses: 0,
    duplicates: 0,
    inconsistencies: []
  })
}

describe("Redis killed (-9) and restarted from its AOF while replicas write", () => {
  it("every acknowledged record and token survives, none is doubled, the chain verifies", async () => {
    const server = await startRedis({ appendonly: true })
    servers.push(server)
    expect(parseInfo(await redisCommand(server.port, ["INFO", "persistence"]))["aof_enabled"]).toBe("1")
    const prefixes = { audit: uniquePrefix("kill-audit"), vault: uniquePrefix("kill-tv") }
    // Three replicas on their own connections: two with ioredis' defaults (queue and
    // re-send across the outage), one that fails fast while Redis is down.
    const replicas = [
      replica("a", client(server.port), prefixes),
      replica("b", client(server.port), prefixes),
      replica("c", client(server.port, { maxRetriesPerRequest: 0, enableOfflineQueue: false }), prefixes)
    ]
    let done = false
    const loops = runLoops(replicas, () => done)
    let kills = 0
    const ackedAtKill: Array<number> = []
    for (const downMs of [300, 900]) {
      await sleep(400)
      ackedAtKill.push(merge(replicas.map((r) => r.ledger)).ackedEvents.length)
      await server.kill9()
      kills++
      await sleep(downMs)
      await server.restart()
    }
    await sleep(500)
    done = true
    await loops

    const { all, tags } = failures(replicas)
    const inspector = client(server.port)
    const audit = await checkAudit(inspector, prefixes.audit, definite(all))
    const vault = await checkVault(inspector, prefixes.vault, definite(all))
    expect(all.ackedEvents.length).toBeGreaterThan(ackedAtKill[0]!) // writes went on after the restarts
    expectNothingLost(audit, vault)
    // Writers tolerate the outage: anything they report is Redis being away, or unknown.
    for (const tag of Object.keys(tags)) expect(NOT_ACKNOWLEDGED).toContain(tag)
    expect(audit.falseFailures + vault.falseFailures).toBe(0)
    summary("redis kill -9 + restart", {
      kills,
      recordsWritten: all.ackedEvents.length,
      tokensWritten: all.ackedTokens.length,
      failedCalls: all.failedEvents.length + all.failedTokens.length,
      failedBy: JSON.stringify(tags),
      chainLength: audit.records,
      forks: audit.forks,
      losses: audit.losses + vault.losses,
      duplicates: audit.duplicates + vault.duplicates,
      falseFailures: audit.falseFailures + vault.falseFailures
    })
  })
})

describe("a writer killed (-9) mid-transaction, holding the lock", () => {
  it("the other replicas carry on after at most the lock's TTL; nothing half-written", async () => {
    const { port } = sharedRedis()
    const prefixes = { audit: uniquePrefix("crash-audit"), vault: uniquePrefix("crash-tv") }
    const ttlMs = 1500
    // Survivors take the lock on every attempt, as haechi-store-redis does.
    const survivors = [
      replica("s1", client(port), prefixes, { lock: "always" }),
      replica("s2", client(port), prefixes, { lock: "always" })
    ]
    for (const r of survivors) {
      expect(await r.record()).toBe(true)
      expect(await r.tokenize()).toBe(true)
    }
    const raw = client(port)
    const versionBefore = await raw.get(`${prefixes.vault}version`)
    const lengthBefore = await raw.llen(`${prefixes.audit}chain`)

    // Both crashing writers hold their store's lock, have read the head / the vault and
    // sent half of their script call when they are killed.
    const crashed = await Promise.all([
      spawnCrashingWriter({ store: "audit", port, prefix: prefixes.audit, ttlMs }),
      spawnCrashingWriter({ store: "vault", port, prefix: prefixes.vault, ttlMs })
    ])
    await Promise.all(crashed.map((w) => w.kill9()))
    const killedAt = Date.now()
    const lockedAt = Math.min(...crashed.map((w) => w.lockedAt))
    expect(await raw.exists(`${prefixes.audit}lock`, `${prefixes.vault}lock`)).toBe(2) // still held by the dead

    const waits = await Promise.all(
      survivors.flatMap((r) => [
        (async () => {
          expect(await r.record()).toBe(true)
          return Date.now() - killedAt
        })(),
        (async () => {
          expect(await r.tokenize()).toBe(true)
          return Date.now() - killedAt
        })()
      ])
    )
    const firstAfterLock = Math.min(...waits) + (killedAt - lockedAt)
    // They waited for the dead writer's lock to lapse, and no longer than its TTL (+ slack).
    expect(Math.max(...waits)).toBeLessThan(ttlMs + 1500)
    expect(firstAfterLock).toBeGreaterThanOrEqual(ttlMs - 100)
    for (const r of survivors) {
      for (let i = 0; i < 3; i++) {
        expect(await r.record()).toBe(true)
        expect(await r.tokenize()).toBe(true)
      }
    }
    const all = merge(survivors.map((r) => r.ledger))
    const audit = await checkAudit(raw, prefixes.audit, all)
    const vault = await checkVault(raw, prefixes.vault, all)
    expect(audit, `audit check: ${JSON.stringify(audit)}`).toMatchObject({
      valid: true,
      forks: 0,
      losses: 0,
      duplicates: 0,
      falseFailures: 0
    })
    expect(vault, `vault evidence: ${JSON.stringify(vault.evidence)}`).toMatchObject({
      losses: 0,
      duplicates: 0,
      falseFailures: 0,
      inconsistencies: []
    })
    // Nothing of the dead writers reached Redis: not their record, not their token.
    const [auditCrash, vaultCrash] = crashed
    expect(audit.ids).not.toContain(auditCrash!.payload)
    expect(audit.records).toBe(lengthBefore + all.ackedEvents.length - 2)
    const tokens = await raw.hgetall(`${prefixes.vault}tokens`)
    expect(
      Object.values(tokens).some((json) => json.includes(Buffer.from(vaultCrash!.payload).toString("base64url")))
    ).toBe(false)
    expect(Number(await raw.get(`${prefixes.vault}version`))).toBe(Number(versionBefore) + all.ackedTokens.length - 2)
    summary("writer kill -9 mid-transaction", {
      crashedWriters: crashed.length,
      lockTtlMs: ttlMs,
      resumedAfterMs: Math.max(...waits),
      recordsWritten: all.ackedEvents.length,
      tokensWritten: all.ackedTokens.length,
      halfWritten: 0,
      forks: audit.forks,
      losses: audit.losses + vault.losses,
      duplicates: audit.duplicates + vault.duplicates
    })
  })
})

describe("Redis Cluster: failover of the master that owns the stores' slot while replicas write", () => {
  it("writes go on, scripts reload on the promoted replica (NOSCRIPT), nothing forks, every acknowledged record is there once", async () => {
    const shared = sharedCluster()
    const nodes = shared.startupNodes.map((n) => ({ host: n.host, port: n.port }))
    const tag = uniqueClusterPrefix("failover")
    // Both stores under one hash tag: one slot, one master to fail over.
    const prefixes = { audit: `${tag}audit:`, vault: `${tag}tv:` }
    const slot = keySlot(`${prefixes.audit}chain`)
    expect(keySlot(`${prefixes.vault}tokens`)).toBe(slot)
    const clusterClient = () => {
      const c = new Cluster(nodes)
      c.on("error", () => {})
      opened.push(c)
      return c
    }
    const replicas = [replica("x", clusterClient(), prefixes), replica("y", clusterClient(), prefixes)]
    for (const r of replicas) expect(await r.record()).toBe(true)

    // Who owns the slot now, and which replica will be promoted.
    const inspector = clusterClient()
    await inspector.ping()
    const sha = createHash("sha1").update(scriptSource(Scripts.auditAppend)).digest("hex")
    // CLUSTER NODES (CLUSTER SLOTS leaves out replicas it has not heard an offset from yet).
    const owner = async () => {
      const lines = String(await inspector.cluster("NODES"))
        .trim()
        .split("\n")
        .map((l) => l.split(" "))
      const port = (address: string) => Number(address.split("@")[0]!.split(":")[1])
      const master = lines.find(
        ([, , flags, , , , , , ...slots]) =>
          flags!.includes("master") &&
          slots.some((range) => {
            const [from, to = from] = range.split("-").map(Number)
            return from! <= slot && slot <= to!
          })
      )!
      const replicas = lines.filter(([, , flags, masterId]) => flags!.includes("slave") && masterId === master[0])
      return { master: port(master[1]!), replicas: replicas.map((r) => port(r[1]!)) }
    }
    const before = await owner()
    expect(before.replicas).toHaveLength(1)
    const promoted = before.replicas[0]!
    const scriptOnReplicaBefore = await client(promoted).script("EXISTS", sha)
    let done = false
    const loops = runLoops(replicas, () => done)
    await sleep(300)
    const ackedBeforeFailover = merge(replicas.map((r) => r.ledger)).ackedEvents.length
    const failoverStarted = Date.now()
    await shared.failover(slot)
    const failoverMs = Date.now() - failoverStarted
    await sleep(600)
    done = true
    await loops
    const after = await owner()

    const { all, tags } = failures(replicas)
    const audit = await checkAudit(inspector, prefixes.audit, definite(all))
    const vault = await checkVault(inspector, prefixes.vault, definite(all))
    expect(audit.falseFailures + vault.falseFailures).toBe(0)
    expect(after.master).not.toBe(before.master)
    expect(all.ackedEvents.length).toBeGreaterThan(ackedBeforeFailover) // writes went on on the new master
    expectNothingLost(audit, vault)
    for (const tag of Object.keys(tags)) expect(NOT_ACKNOWLEDGED).toContain(tag)
    // The promoted replica had no scripts (EVALSHA is not replicated); it has them now.
    const scriptOnNewMasterAfter = await inspector
      .nodes("master")
      .find((n) => n.options.port === after.master)!
      .script("EXISTS", sha)
    expect(scriptOnReplicaBefore).toEqual([0])
    expect(scriptOnNewMasterAfter).toEqual([1])
    summary("cluster failover of the stores' master", {
      failovers: 1,
      failoverMs,
      recordsWritten: all.ackedEvents.length,
      tokensWritten: all.ackedTokens.length,
      failedCalls: all.failedEvents.length + all.failedTokens.length,
      failedBy: JSON.stringify(tags),
      scriptsReloaded: 1,
      forks: audit.forks,
      losses: audit.losses + vault.losses,
      duplicates: audit.duplicates + vault.duplicates,
      falseFailures: audit.falseFailures + vault.falseFailures
    })
  })
})
