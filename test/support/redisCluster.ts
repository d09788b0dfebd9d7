/**
 * A real Redis Cluster on loopback for tests.
 *
 * Guarantees:
 * - startCluster() resolves only when every node reports cluster_state:ok with all
 *   16384 slots assigned and ok, every node knows every other node, all nodes agree on
 *   the same topology (who is master of which slots), and every replica's replication
 *   link is up;
 * - clusterFailover() promotes a replica of the slot's master with a coordinated
 *   `CLUSTER FAILOVER` (no acknowledged write is lost) and resolves only when the
 *   cluster is back in that same stable, agreed state with the replica as the owner;
 * - stop() stops every node (see ./redisProcess.ts for process-lifetime guarantees).
 *
 * clusterFailover() needs only the node ports, so tests running in a vitest worker can
 * fail over the shared cluster started by globalSetup (see ./shared.ts).
 */
import { execFile } from "node:child_process"
import { createRequire } from "node:module"
import { promisify } from "node:util"
import { parseInfo, redisCommand, startRedis, type RedisServer } from "./redisProcess.js"

// cluster-key-slot (an ioredis dependency) ships no types; require() keeps us free of
// an ambient module declaration that could clash with one elsewhere in the project.
const calculateSlot = createRequire(import.meta.url)("cluster-key-slot") as (key: string) => number

/** The cluster hash slot (0..16383) of a key, honouring {hash tags}. */
export const keySlot = (key: string): number => calculateSlot(key)

export interface ClusterNodeAddress {
  readonly host: string
  readonly port: number
}

export interface ClusterOptions {
  /** Number of masters (>= 3, redis-cli's minimum). Default 3. */
  readonly masters?: number
  /** Replicas per master. Default 0. */
  readonly replicasPerMaster?: 0 | 1
  /** cluster-node-timeout in ms. Default 2000. */
  readonly nodeTimeoutMs?: number
  /** How long forming the cluster may take. Default 60 000 ms. */
  readonly timeoutMs?: number
}

export interface RedisClusterHandle {
  /** All nodes, in `redis-cli --cluster create` order (masters first, before any failover). */
  readonly nodes: ReadonlyArray<RedisServer>
  /** Seed list for `new Cluster(startupNodes)`. */
  readonly startupNodes: ReadonlyArray<ClusterNodeAddress>
  /** Promote a replica of the master owning `slotOrKey` (a slot number or a key). */
  failover(slotOrKey: number | string): Promise<void>
  stop(): Promise<void>
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

interface NodeLine {
  readonly id: string
  readonly port: number
  readonly master: boolean
  readonly masterId: string
  readonly flags: ReadonlyArray<string>
  readonly slots: ReadonlyArray<string>
}

function parseNodes(text: unknown): Array<NodeLine> {
  return String(text ?? "")
    .trim()
    .split("\n")
    .filter((l) => l.length > 0)
    .map((line) => {
      const [id = "", addr = "", flags = "", masterId = "", , , , , ...slots] = line.trim().split(" ")
      const flagList = flags.split(",")
      return {
        id,
        port: Number(addr.split("@")[0]?.split(":")[1]),
        master: flagList.includes("master"),
        masterId,
        flags: flagList,
        slots
      }
    })
}

const ownsSlot = (node: NodeLine, slot: number) =>
  node.slots.some((range) => {
    const [from, to = from] = range.split("-").map(Number)
    return from !== undefined && to !== undefined && slot >= from && slot <= to
  })

const unhealthy = (n: NodeLine) => n.flags.some((f) => ["fail", "fail?", "handshake", "noaddr"].includes(f))

/**
 * One consistent view of the cluster, or a reason why it is not stable yet.
 * Stable = every node: state ok, 16384 slots ok, knows all nodes, none failing,
 * same master/slot/replica layout as every other node; every replica's link is up.
 */
async function stableTopology(ports: ReadonlyArray<number>): Promise<Array<NodeLine> | string> {
  let reference: string | undefined
  let topology: Array<NodeLine> = []
  for (const port of ports) {
    const info = parseInfo(await redisCommand(port, ["CLUSTER", "INFO"]))
    if (info["cluster_state"] !== "ok") return `${port}: cluster_state ${info["cluster_state"]}`
    if (info["cluster_slots_ok"] !== "16384") return `${port}: slots_ok ${info["cluster_slots_ok"]}`
    if (info["cluster_known_nodes"] !== String(ports.length))
      return `${port}: knows ${info["cluster_known_nodes"]} nodes`
    const nodes = parseNodes(await redisCommand(port, ["CLUSTER", "NODES"]))
    if (nodes.some(unhealthy)) return `${port}: sees a failing/handshaking node`
    const layout = nodes
      .map((n) => `${n.id} ${n.master ? "master" : `replica-of ${n.masterId}`} ${n.slots.join(",")}`)
      .sort()
      .join("\n")
    if (reference !== undefined && layout !== reference) return `${port}: topology not yet agreed`
    reference = layout
    topology = nodes
    const myself = nodes.find((n) => n.flags.includes("myself"))
    if (myself && !myself.master) {
      const repl = parseInfo(await redisCommand(port, ["INFO", "replication"]))
      if (repl["master_link_status"] !== "up") return `${port}: replica link ${repl["master_link_status"]}`
    }
  }
  return topology
}

async function waitStable(ports: ReadonlyArray<number>, timeoutMs: number, until?: (t: Array<NodeLine>) => boolean) {
  const deadline = Date.now() + timeoutMs
  let why = "not checked"
  for (;;) {
    const result = await stableTopology(ports).catch((e: Error) => e.message)
    if (typeof result !== "string") {
      if (!until || until(result)) return result
      why = "condition not met yet"
    } else {
      why = result
    }
    if (Date.now() > deadline) throw new Error(`cluster not stable after ${timeoutMs} ms: ${why}`)
    await sleep(50)
  }
}

/**
 * Manual failover of the master owning `slotOrKey` (slot number, or a key whose slot is
 * computed with hash tags). Throws if that master has no healthy replica.
 */
export async function clusterFailover(
  ports: ReadonlyArray<number>,
  slotOrKey: number | string,
  timeoutMs = 30_000
): Promise<void> {
  const slot = typeof slotOrKey === "number" ? slotOrKey : keySlot(slotOrKey)
  const topology = await waitStable(ports, timeoutMs)
  const master = topology.find((n) => n.master && ownsSlot(n, slot))
  if (!master) throw new Error(`no master owns slot ${slot}`)
  const replica = topology.find((n) => !n.master && n.masterId === master.id)
  if (!replica) throw new Error(`master ${master.port} (slot ${slot}) has no replica to fail over to`)
  await redisCommand(replica.port, ["CLUSTER", "FAILOVER"])
  await waitStable(ports, timeoutMs, (t) => t.some((n) => n.id === replica.id && n.master && ownsSlot(n, slot)))
  const role = parseInfo(await redisCommand(replica.port, ["INFO", "replication"]))["role"]
  if (role !== "master") throw new Error(`replica ${replica.port} reports role ${role} after failover`)
}

/** Start `masters * (1 + replicasPerMaster)` cluster nodes and form a cluster. */
export async function startCluster(opts: ClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = opts.masters ?? 3
  const replicas = opts.replicasPerMaster ?? 0
  const timeoutMs = opts.timeoutMs ?? 60_000
  // No 5 s wait before the initial (diskless) sync of replicas.
  const config = [`cluster-node-timeout ${opts.nodeTimeoutMs ?? 2000}`, `repl-diskless-sync-delay 0`]
  const started = await Promise.allSettled(
    Array.from({ length: masters * (1 + replicas) }, () => startRedis({ cluster: true, config }))
  )
  const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []))
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()))
  }
  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected")
    if (failed) throw failed.reason
    const ports = nodes.map((n) => n.port)
    await promisify(execFile)(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...ports.map((p) => `127.0.0.1:${p}`),
        "--cluster-replicas",
        String(replicas),
        "--cluster-yes"
      ],
      { timeout: timeoutMs }
    )
    await waitStable(ports, timeoutMs)
    return {
      nodes,
      startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
      failover: (slotOrKey) => clusterFailover(ports, slotOrKey, timeoutMs),
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}
