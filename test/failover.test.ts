/**
 * Real failovers to a lagging replica, through Redis Sentinel (a primary, a replica, three
 * sentinels, ioredis's Sentinel client) and through a Redis Cluster (a dedicated 3-master
 * cluster, so the shared one is left alone), each with and without
 * `durability: { replicas: 1 }`. While a fleet of store replicas (facade and Effect API,
 * driven as haechi's core drives them) appends and tokenizes, the Redis replica is frozen
 * and its replication link cut, the primary is killed (-9) and the replica promoted. An
 * idle store replica waits until Redis has climbed past what it saw (the ABA case).
 * Sentinel also runs once with the fail-closed rewind policy (`onRewind: "fail"`).
 * See test/support/failover.ts for what is counted and how.
 *
 * What must hold in every scenario: no fork, no stale reveal, no silent rewind (a store
 * replica whose last seen head was lost is told so, by an error or a recorded gap, and
 * none answers from a vault cache that Redis no longer backs). Acknowledged records and
 * tokens may be lost without durability (the figures are printed); with
 * `durability: { replicas: 1 }` none may be.
 *
 * Every test uses the live clock and prints one `[summary]` line.
 */
import { existsSync } from "node:fs"
import { Cluster, Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { FAILOVER_ERRORS, runFailover, type FailoverFigures, type FailoverTarget } from "./support/failover.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import {
  keySlot,
  parseInfo,
  redisCommand,
  startCluster,
  startSentinelSet,
  type RedisClusterHandle,
  type RedisServer
} from "./support/redisServer.js"
import { summary } from "./support/replica.js"

/** WAIT for one replica; a short timeout keeps the writes during the lag (never acknowledged) quick. */
const DURABLE = { replicas: 1, timeout: "500 millis" } as const
/** Generous: every wait inside a scenario is bounded on its own, and a scenario takes 4-10 s. */
const SCENARIO_TIMEOUT_MS = 90_000

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const print = (scenario: string, f: FailoverFigures) =>
  summary(scenario, {
    recordsAcked: f.recordsAcked,
    tokensAcked: f.tokensAcked,
    recordsAckedBeforeKill: f.recordsAckedBeforeKill,
    tokensAckedBeforeKill: f.tokensAckedBeforeKill,
    recordsLost: f.recordsLost,
    tokensLost: f.tokensLost,
    chainAtKill: f.chainAtKill,
    chainKept: f.chainKept,
    versionAtKill: f.versionAtKill,
    versionKept: f.versionKept,
    forks: f.forks,
    staleReveals: f.staleReveals,
    silentRewinds: f.silentAuditRewinds + f.silentVaultRewinds,
    silentAuditRewinds: f.silentAuditRewinds,
    silentVaultRewinds: f.silentVaultRewinds,
    ...(f.silentAuditDetails.length === 0 ? {} : { silentAuditDetails: JSON.stringify(f.silentAuditDetails) }),
    rewoundReplicas: f.rewoundMembers,
    toldByError: f.rewindErrors,
    toldByRecordedGap: f.rewindsRecorded,
    chainRewindsCounted: f.chainRewindsCounted,
    vaultRewindsCounted: f.vaultRewindsCounted,
    lagMs: f.lagMs,
    failoverMs: f.failoverMs,
    failedBy: JSON.stringify(f.failedBy)
  })

const expectContinuity = (f: FailoverFigures, durable: boolean) => {
  // The scenario really rewound Redis under the fleet, the idle replica included.
  expect(f.chainKept).toBeGreaterThanOrEqual(0)
  expect(f.versionKept).toBeGreaterThanOrEqual(0)
  expect(f.chainAtKill).toBeGreaterThan(f.chainKept)
  expect(f.versionAtKill).toBeGreaterThan(f.versionKept)
  expect(f.idleCommittedInLag.records).toBeGreaterThanOrEqual(1)
  expect(f.idleCommittedInLag.tokens).toBeGreaterThanOrEqual(1)
  expect(f.idleRewound).toBe(true)
  expect(f.undecided).toBe(0)
  // What must never happen.
  expect({
    forks: f.forks,
    chainValid: f.chainValid,
    oracleValid: f.oracleValid,
    headConsistent: f.headConsistent
  }).toEqual({
    forks: 0,
    chainValid: true,
    oracleValid: true,
    headConsistent: true
  })
  expect(f.staleReveals).toBe(0)
  expect(f.staleExports).toBe(0)
  expect(f.silentAuditRewinds).toBe(0)
  expect(f.silentVaultRewinds).toBe(0)
  expect(f.rewindErrors + f.rewindsRecorded).toBe(f.rewoundMembers)
  // ... and counted: every rewound replica's chain, and at least the idle replica's vault.
  expect(f.chainRewindsCounted).toBeGreaterThanOrEqual(f.rewoundMembers)
  expect(f.vaultRewindsCounted).toBeGreaterThanOrEqual(1)
  expect(f.vaultInconsistencies).toEqual([])
  // Writers fail closed around the failover, and the fleet writes on afterwards.
  for (const tag of Object.keys(f.failedBy)) expect(FAILOVER_ERRORS).toContain(tag)
  expect(f.newcomerAcked).toBeGreaterThan(0)
  if (durable) {
    expect({ recordsLost: f.recordsLost, tokensLost: f.tokensLost }).toEqual({ recordsLost: 0, tokensLost: 0 })
    // The lag was felt: commits made while the replica lagged were not acknowledged.
    expect(f.failedBy["DurabilityTimeout"] ?? 0).toBeGreaterThan(0)
  }
}

// ---------------------------------------------------------------------------
// Sentinel

describe("Redis Sentinel: failover to a lagging replica while replicas append and tokenize", () => {
  const scenarios = [
    { durable: false, onRewind: undefined, title: "without durability: losses counted" },
    { durable: true, onRewind: undefined, title: "with durability { replicas: 1 }: no acknowledged loss" },
    {
      durable: false,
      onRewind: "fail",
      title: 'onRewind: "fail": every rewound replica is refused with a typed error, no gap recorded'
    }
  ] as const
  for (const { durable, onRewind, title } of scenarios) {
    it(
      `${title}; no fork, no stale reveal, no silent rewind`,
      async () => {
        const set = await startSentinelSet({ downAfterMs: 800, failoverTimeoutMs: 3000 })
        const processes: Array<RedisServer> = [set.primary, set.replica, ...set.sentinels]
        const pids = processes.map((p) => p.pid)
        try {
          const target: FailoverTarget = {
            primary: set.primary,
            replica: set.replica,
            connect: () =>
              new Redis({
                sentinels: [...set.sentinelAddresses],
                name: set.name,
                retryStrategy: () => 100,
                sentinelRetryStrategy: () => 100
              }),
            waitPromoted: (ms) => set.waitForMaster(set.replica.port, ms)
          }
          const figures = await runFailover(target, {
            prefixes: { audit: uniquePrefix("sentinel-audit"), vault: uniquePrefix("sentinel-tv") },
            durability: durable ? DURABLE : undefined,
            audit: onRewind === undefined ? undefined : { onRewind }
          })
          print(
            `sentinel failover, ${durable ? "durable" : "not durable"}${onRewind ? `, onRewind ${onRewind}` : ""}`,
            figures
          )
          expect((await set.masterPorts()).filter((p) => p === set.replica.port).length).toBeGreaterThanOrEqual(2)
          expectContinuity(figures, durable)
          if (onRewind === "fail") {
            expect({ toldByError: figures.rewindErrors, recorded: figures.rewindsRecorded }).toEqual({
              toldByError: figures.rewoundMembers,
              recorded: 0
            })
          }
        } finally {
          await set.stop()
        }
        // Nothing of the set is left running or on disk.
        for (const pid of pids) expect(isAlive(pid)).toBe(false)
        for (const p of processes) expect(existsSync(p.dir)).toBe(false)
      },
      SCENARIO_TIMEOUT_MS
    )
  }
})

// ---------------------------------------------------------------------------
// Cluster

interface NodeLine {
  readonly id: string
  readonly port: number
  readonly flags: ReadonlyArray<string>
  readonly masterId: string
  readonly slots: ReadonlyArray<string>
}

const clusterNodes = async (port: number): Promise<Array<NodeLine>> =>
  String(await redisCommand(port, ["CLUSTER", "NODES"]))
    .trim()
    .split("\n")
    .map((line) => {
      const [id = "", address = "", flags = "", masterId = "", , , , , ...slots] = line.trim().split(" ")
      return { id, port: Number(address.split("@")[0]!.split(":")[1]), flags: flags.split(","), masterId, slots }
    })

const owns = (node: NodeLine, slot: number) =>
  node.slots.some((range) => {
    const [from, to = from] = range.split("-").map(Number)
    return from !== undefined && to !== undefined && slot >= from && slot <= to
  })

const healthy = (n: NodeLine) => !n.flags.some((f) => f === "fail" || f === "fail?")

describe("Redis Cluster: failover of the stores' master to a lagging replica while replicas append and tokenize", () => {
  let cluster: RedisClusterHandle
  beforeAll(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 1000 })
  }, 90_000)
  afterAll(async () => {
    await cluster?.stop()
  })

  /** A master that still has a healthy replica (an earlier scenario killed another), and a prefix in its slots. */
  const pick = async (name: string) => {
    const alive = cluster.nodes.filter((n) => isAlive(n.pid))
    const nodes = await clusterNodes(alive[0]!.port)
    const master = nodes.find(
      (n) =>
        n.flags.includes("master") &&
        healthy(n) &&
        n.slots.length > 0 &&
        nodes.some((r) => r.masterId === n.id && healthy(r))
    )
    if (master === undefined) throw new Error("no master with a healthy replica left")
    const replica = nodes.find((r) => r.masterId === master.id && healthy(r))!
    for (let i = 0; i < 10_000; i++) {
      const tag = uniqueClusterPrefix(name)
      const slot = keySlot(`${tag}audit:chain`)
      if (!owns(master, slot)) continue
      const server = (port: number) => cluster.nodes.find((n) => n.port === port)!
      return { tag, slot, primary: server(master.port), replica: server(replica.port), alive }
    }
    throw new Error("no prefix found in the master's slots")
  }

  for (const durable of [false, true]) {
    const title = durable
      ? "with durability { replicas: 1 }: no acknowledged loss"
      : "without durability: losses counted"
    it(
      `${title}; no fork, no stale reveal, no silent rewind`,
      async () => {
        const { alive, primary, replica, slot, tag } = await pick(durable ? "cl-durable" : "cl-plain")
        const startupNodes = alive.filter((n) => n !== primary).map((n) => ({ host: n.host, port: n.port }))
        const target: FailoverTarget = {
          primary,
          replica,
          connect: () =>
            new Cluster(startupNodes, {
              clusterRetryStrategy: () => 100,
              retryDelayOnClusterDown: 100,
              retryDelayOnFailover: 100
            }),
          waitPromoted: async (ms) => {
            const deadline = Date.now() + ms
            for (;;) {
              const ok = await (async () => {
                const info = parseInfo(await redisCommand(replica.port, ["CLUSTER", "INFO"]))
                const me = (await clusterNodes(replica.port)).find((n) => n.flags.includes("myself"))
                return (
                  info["cluster_state"] === "ok" && me !== undefined && me.flags.includes("master") && owns(me, slot)
                )
              })().catch(() => false)
              if (ok) return
              if (Date.now() > deadline) throw new Error(`replica ${replica.port} not promoted within ${ms} ms`)
              await new Promise((r) => setTimeout(r, 50))
            }
          }
        }
        const figures = await runFailover(target, {
          prefixes: { audit: `${tag}audit:`, vault: `${tag}tv:` },
          durability: durable ? DURABLE : undefined
        })
        print(`cluster failover, ${durable ? "durable" : "not durable"}`, figures)
        expect(isAlive(primary.pid)).toBe(false)
        expect(parseInfo(await redisCommand(replica.port, ["INFO", "replication"]))["role"]).toBe("master")
        expectContinuity(figures, durable)
      },
      SCENARIO_TIMEOUT_MS
    )
  }
})
