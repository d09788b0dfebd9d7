/**
 * A real Redis Sentinel set on loopback for tests: one primary, one replica and (by
 * default) three sentinels, each a Debian `redis-server` process started by
 * ./redisProcess.ts (sentinels in `--sentinel` mode), with fast failover settings.
 * Clients connect as applications do, through ioredis's Sentinel client:
 * `new Redis({ sentinels: set.sentinelAddresses, name: set.name })`.
 *
 * Guarantees:
 * - startSentinelSet() resolves only when the replica's link is up and caught up with the
 *   primary, and every sentinel names the primary as master, knows the replica and knows
 *   every other sentinel (so a quorum and a leader election are possible at once);
 * - waitForMaster(port) resolves only when a majority of the sentinels name `port` as the
 *   master and that server itself reports `role:master`; it rejects after its timeout;
 * - stop() stops the sentinels first (so none of them reconfigures a server being
 *   stopped), then the servers; every process has exited and every dir is removed when
 *   it resolves. Nothing outlives the test process (see ./redisProcess.ts).
 */
import { parseInfo, redisCommand, startRedis, type RedisServer } from "./redisProcess.js"

export interface SentinelSetOptions {
  /** The master group name; default "haechi". */
  readonly name?: string
  /** How many sentinels (default 3); the quorum is a majority of them. */
  readonly sentinels?: number
  /** `down-after-milliseconds`: how long the primary must be silent to be down; default 800. */
  readonly downAfterMs?: number
  /** `failover-timeout` (also the retry delay after a failed election is twice it); default 3000. */
  readonly failoverTimeoutMs?: number
  /** Extra redis.conf lines for the primary and the replica. */
  readonly serverConfig?: ReadonlyArray<string>
  /** How long forming the set may take; default 20 000 ms. */
  readonly timeoutMs?: number
}

export interface SentinelSet {
  readonly name: string
  readonly primary: RedisServer
  readonly replica: RedisServer
  readonly sentinels: ReadonlyArray<RedisServer>
  /** For `new Redis({ sentinels, name })`. */
  readonly sentinelAddresses: ReadonlyArray<{ readonly host: string; readonly port: number }>
  /** The master's port as each sentinel reports it now (undefined: no answer). */
  masterPorts(): Promise<ReadonlyArray<number | undefined>>
  /** Resolves once a majority of sentinels name `port` as master and it reports role:master. */
  waitForMaster(port: number, timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** `master0:name=haechi,status=ok,address=127.0.0.1:6379,slaves=1,sentinels=3` as a record. */
const sentinelView = async (port: number, name: string): Promise<Record<string, string> | undefined> => {
  const info = parseInfo(await redisCommand(port, ["INFO", "sentinel"], { timeoutMs: 1000 }).catch(() => null))
  for (const [key, value] of Object.entries(info)) {
    if (!/^master\d+$/.test(key)) continue
    const fields = Object.fromEntries(value.split(",").map((kv) => kv.split("=") as [string, string]))
    if (fields["name"] === name) return fields
  }
  return undefined
}

const portOf = (address: string | undefined): number | undefined => {
  const port = Number(address?.split(":").pop())
  return Number.isInteger(port) && port > 0 ? port : undefined
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<string | true>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let why = "not checked"
  for (;;) {
    const result = await check().catch((e: Error) => e.message)
    if (result === true) return
    why = result
    if (Date.now() > deadline) throw new Error(`${what} not reached after ${timeoutMs} ms: ${why}`)
    await sleep(50)
  }
}

/** Start a primary, a replica of it and `sentinels` sentinels monitoring them. */
export async function startSentinelSet(opts: SentinelSetOptions = {}): Promise<SentinelSet> {
  const name = opts.name ?? "haechi"
  const count = opts.sentinels ?? 3
  const quorum = Math.floor(count / 2) + 1
  const timeoutMs = opts.timeoutMs ?? 20_000
  // No 5 s wait before the replica's first (diskless) sync.
  const serverConfig = ["repl-diskless-sync-delay 0", ...(opts.serverConfig ?? [])]
  const started: Array<RedisServer> = []
  const sentinels: Array<RedisServer> = []
  const stop = async () => {
    await Promise.allSettled(sentinels.map((s) => s.stop()))
    await Promise.allSettled(started.map((s) => s.stop()))
  }
  try {
    const [primary, replica] = await Promise.all([
      startRedis({ config: serverConfig }),
      startRedis({ config: serverConfig })
    ])
    started.push(primary, replica)
    await redisCommand(replica.port, ["REPLICAOF", "127.0.0.1", primary.port])
    await waitFor("replica in sync", timeoutMs, async () => {
      const repl = parseInfo(await redisCommand(replica.port, ["INFO", "replication"]))
      if (repl["master_link_status"] !== "up") return `replica link ${repl["master_link_status"]}`
      const onPrimary = parseInfo(await redisCommand(primary.port, ["INFO", "replication"]))
      return onPrimary["master_repl_offset"] === repl["slave_repl_offset"] ? true : "replica offset behind"
    })
    const config = [
      `sentinel monitor ${name} 127.0.0.1 ${primary.port} ${quorum}`,
      `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 800}`,
      `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 3000}`,
      `sentinel parallel-syncs ${name} 1`
    ]
    const results = await Promise.allSettled(
      Array.from({ length: count }, () => startRedis({ sentinel: true, config }))
    )
    for (const r of results) if (r.status === "fulfilled") sentinels.push(r.value)
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected")
    if (failed) throw failed.reason
    // Sentinels find the replica from the primary's INFO and each other through hello
    // messages on the primary (every 2 s): wait until every one knows the whole set.
    await waitFor("sentinels agreed", timeoutMs, async () => {
      for (const s of sentinels) {
        const view = await sentinelView(s.port, name)
        if (view === undefined) return `sentinel ${s.port} has no master ${name}`
        if (view["status"] !== "ok") return `sentinel ${s.port} sees ${name} ${view["status"]}`
        if (portOf(view["address"]) !== primary.port) return `sentinel ${s.port} names ${view["address"]}`
        if (view["slaves"] !== "1") return `sentinel ${s.port} knows ${view["slaves"]} replicas`
        if (view["sentinels"] !== String(count)) return `sentinel ${s.port} knows ${view["sentinels"]} sentinels`
      }
      return true
    })
    const masterPorts = () =>
      Promise.all(sentinels.map(async (s) => portOf((await sentinelView(s.port, name))?.["address"])))
    return {
      name,
      primary,
      replica,
      sentinels,
      sentinelAddresses: sentinels.map((s) => ({ host: s.host, port: s.port })),
      masterPorts,
      waitForMaster: (port, waitMs = timeoutMs) =>
        waitFor(`sentinels naming ${port} as master`, waitMs, async () => {
          const named = (await masterPorts()).filter((p) => p === port).length
          if (named < quorum) return `${named} of ${count} sentinels name ${port}`
          const role = parseInfo(await redisCommand(port, ["INFO", "replication"]))["role"]
          return role === "master" ? true : `${port} reports role ${role}`
        }),
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}
