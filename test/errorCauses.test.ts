/**
 * Errors name the real cause, against real redis-server processes: a Redis Cluster slot
 * caught half-way through a migration (some of a store's keys moved, the others not) makes
 * every multi-key script answer ASK then TRYAGAIN until the Cluster client gives up; that
 * is `RedisCommandFailed` naming the reply (the command did not run), never "redis
 * unavailable", and nothing is written. And `ready()` during `CLIENT PAUSE WRITE` (a Redis
 * that answers reads and holds writes) says `redis_not_writable`, not `redis_unreachable`.
 *
 * Live clock; each test prints one `[summary]` line.
 */
import { Cluster, Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { RedisCommandFailed } from "../src/Errors.js"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import { redirectionReply, toRedisError } from "../src/internal/redisReply.js"
import { createAuditSink, type AuditStore as CoreAuditStore } from "./support/haechiCore.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { keySlot, startCluster, startRedis, type RedisClusterHandle, type RedisServer } from "./support/redisServer.js"
import { summary } from "./support/replica.js"

const opened: Array<Redis | Cluster> = []
const servers: Array<RedisServer> = []
const clusters: Array<RedisClusterHandle> = []

afterAll(async () => {
  for (const c of opened) c.disconnect()
  await Promise.all(servers.map((s) => s.stop()))
  await Promise.all(clusters.map((c) => c.stop()))
})

const node = (port: number): Redis => {
  const c = new Redis(port, "127.0.0.1")
  c.on("error", () => {})
  opened.push(c)
  return c
}

describe("a Cluster slot half-way through a migration", () => {
  it("TRYAGAIN/ASK storms fail with RedisCommandFailed naming the reply, and nothing is written", async () => {
    const cluster = await startCluster({ masters: 3 })
    clusters.push(cluster)
    const client = new Cluster([...cluster.startupNodes], {
      // Give up quickly: the default (16 redirections, 100 ms apart) only takes longer.
      maxRedirections: 6,
      retryDelayOnTryAgain: 20
    })
    client.on("error", () => {})
    opened.push(client)
    const prefix = uniqueClusterPrefix("migrating")
    const sink = createAuditSink({
      store: createRedisAuditStore({ client, keyPrefix: prefix }) as unknown as CoreAuditStore
    })
    await sink.record({ type: "before" })

    // Move the chain list (only) of the store's slot to another master.
    const slot = keySlot(`${prefix}chain`)
    const ownerPort = Number((client.slots[slot]?.[0] ?? "").split(":")[1])
    const masters = await Promise.all(
      cluster.nodes.map(async (n) => ({ port: n.port, role: String((await node(n.port).role())[0]) }))
    )
    const targetPort = masters.find((m) => m.role === "master" && m.port !== ownerPort)!.port
    const source = node(ownerPort)
    const target = node(targetPort)
    const sourceId = String(await source.cluster("MYID"))
    const targetId = String(await target.cluster("MYID"))
    await target.cluster("SETSLOT", slot, "IMPORTING", sourceId)
    await source.cluster("SETSLOT", slot, "MIGRATING", targetId)
    await source.migrate("127.0.0.1", targetPort, `${prefix}chain`, 0, 5_000)

    const started = performance.now()
    const error = await sink.record({ type: "during" }).then(
      () => undefined,
      (e: unknown) => e
    )
    const ms = performance.now() - started

    expect(error).toBeInstanceOf(RedisCommandFailed)
    // The last reply of the storm: TRYAGAIN from the importing node, ASK from the migrating
    // one, or MOVED from a random node the client retried TRYAGAIN on.
    expect((error as RedisCommandFailed).reply).toMatch(
      /^(TRYAGAIN|ASK|MOVED) .* \(the cluster client gave up redirecting\)$/
    )
    expect((error as RedisCommandFailed).message).not.toMatch(/unavailable/)

    // Finish the migration (the other keys follow) and look: nothing was written.
    const rest = (await source.cluster("GETKEYSINSLOT", slot, 100)) as Array<string>
    if (rest.length > 0) await source.migrate("127.0.0.1", targetPort, "", 0, 5_000, "KEYS", ...rest)
    for (const m of masters.filter((m) => m.role === "master"))
      await node(m.port).cluster("SETSLOT", slot, "NODE", targetId)
    expect(await target.llen(`${prefix}chain`)).toBe(1)
    expect(JSON.parse((await target.get(`${prefix}head`)) ?? "{}").sequence).toBe(1)
    // And the store carries on once the slot is stable.
    await sink.record({ type: "after" })
    expect(await target.llen(`${prefix}chain`)).toBe(2)
    summary("slot migration", {
      slot,
      reply: (error as RedisCommandFailed).reply.split(" ")[0] ?? "",
      failedAfterMs: Math.round(ms)
    })
  }, 120_000)

  it("the Cluster client's give-up message is classified by its last reply", () => {
    const giveUp = (last: string) => new Error(`Too many Cluster redirections. Last error: ReplyError: ${last}`)
    for (const reply of [
      "TRYAGAIN Multiple keys request during rehashing of slot",
      "ASK 3999 127.0.0.1:7001",
      "MOVED 3999 127.0.0.1:7002",
      "CLUSTERDOWN The cluster is down"
    ]) {
      expect(redirectionReply(giveUp(reply))).toBe(reply)
      const typed = toRedisError("haechi_audit_append", giveUp(reply))
      expect(typed).toBeInstanceOf(RedisCommandFailed)
      expect((typed as RedisCommandFailed).reply.startsWith(reply)).toBe(true)
    }
    // A lost connection is still "no answer".
    const lost = toRedisError("x", new Error("Too many Cluster redirections. Last error: Error: Connection is closed."))
    expect(lost._tag).toBe("RedisUnavailable")
    expect(toRedisError("x", new Error("Connection is closed."))._tag).toBe("RedisUnavailable")
  })
})

describe("ready() during CLIENT PAUSE WRITE", () => {
  it("says redis_not_writable (reads answer, writes are held), then ok once the pause ends", async () => {
    const server = await startRedis()
    servers.push(server)
    const admin = node(server.port)
    const audit = createRedisAuditStore({ client: node(server.port), keyPrefix: uniquePrefix("paused-audit") })
    const vault = createRedisTokenStore({ client: node(server.port), keyPrefix: uniquePrefix("paused-tv") })
    expect(await audit.ready()).toEqual({ ok: true })
    await admin.client("PAUSE", 3_000, "WRITE")
    const started = performance.now()
    const [a, v] = await Promise.all([audit.ready(), vault.ready()])
    const ms = performance.now() - started
    expect(a).toEqual({ ok: false, reason: "redis_not_writable" })
    expect(v).toEqual({ ok: false, reason: "redis_not_writable" })
    expect(ms).toBeLessThan(2_500)
    await admin.client("UNPAUSE")
    expect(await audit.ready()).toEqual({ ok: true })
    summary("client pause write", {
      readyMs: Math.round(ms),
      audit: a.ok ? "ok" : a.reason,
      vault: v.ok ? "ok" : v.reason
    })
  })
})
