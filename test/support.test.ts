/**
 * Tests of the test infrastructure itself (test/support): real redis-server processes,
 * AOF restarts, cluster formation + failover, the fault-injection proxy and key prefixes.
 */
import { Cluster, Redis } from "ioredis"
import { existsSync } from "node:fs"
import * as net from "node:net"
import { afterAll, describe, expect, it } from "vitest"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import {
  keySlot,
  parseInfo,
  redisCommand,
  startCluster,
  startRedis,
  tcpProxy,
  type RedisServer
} from "./support/redisServer.js"
import { sharedCluster, sharedRedis } from "./support/shared.js"

const canBind = (port: number) =>
  new Promise<boolean>((resolve) => {
    const srv = net.createServer()
    srv.once("error", () => resolve(false))
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)))
  })

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A client whose failures are observable: no reconnect, no retry, no resend. */
const strictClient = (port: number) =>
  new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false
  })

describe("startRedis", () => {
  it("answers PING, and stop() kills the process, frees the port and removes the dir", async () => {
    const server = await startRedis()
    expect(server.url).toBe(`redis://127.0.0.1:${server.port}`)
    expect(await redisCommand(server.port, ["PING"])).toBe("PONG")
    expect(await canBind(server.port)).toBe(false)
    const pid = server.pid
    expect(isAlive(pid)).toBe(true)

    await server.stop()
    expect(isAlive(pid)).toBe(false)
    expect(existsSync(server.dir)).toBe(false)
    expect(await canBind(server.port)).toBe(true)
    await expect(redisCommand(server.port, ["PING"])).rejects.toThrow()
  })

  it("starts with no RDB save schedule and AOF only when asked", async () => {
    const plain = await startRedis()
    const aof = await startRedis({ appendonly: true, config: ["maxmemory-policy noeviction"] })
    try {
      expect(parseInfo(await redisCommand(plain.port, ["INFO", "persistence"]))["aof_enabled"]).toBe("0")
      expect(parseInfo(await redisCommand(aof.port, ["INFO", "persistence"]))["aof_enabled"]).toBe("1")
      const client = new Redis(aof.port, "127.0.0.1")
      try {
        expect(await client.config("GET", "save")).toEqual(["save", ""])
        expect(await client.config("GET", "appendfsync")).toEqual(["appendfsync", "always"])
        expect(await client.config("GET", "maxmemory-policy")).toEqual(["maxmemory-policy", "noeviction"])
      } finally {
        client.disconnect()
      }
    } finally {
      await Promise.all([plain.stop(), aof.stop()])
    }
  })

  it("keeps AOF data across kill -9 and restart on the same port and dir", async () => {
    const server = await startRedis({ appendonly: true })
    try {
      const key = `${uniquePrefix("aof")}k`
      expect(await redisCommand(server.port, ["SET", key, "survives"])).toBe("OK")
      const { port, dir } = server
      const oldPid = server.pid

      await server.kill9()
      expect(isAlive(oldPid)).toBe(false)
      await expect(redisCommand(port, ["PING"])).rejects.toThrow()

      await server.restart()
      expect(server.port).toBe(port)
      expect(server.dir).toBe(dir)
      expect(server.pid).not.toBe(oldPid)
      expect(await redisCommand(port, ["GET", key])).toBe("survives")
    } finally {
      await server.stop()
    }
  })

  it("loses data on kill -9 without persistence (so the AOF test above is meaningful)", async () => {
    const server = await startRedis()
    try {
      await redisCommand(server.port, ["SET", "k", "v"])
      await server.kill9()
      await server.restart()
      expect(await redisCommand(server.port, ["GET", "k"])).toBeNull()
    } finally {
      await server.stop()
    }
  })
})

describe("shared servers from globalSetup", () => {
  it("provides a reachable standalone server", async () => {
    const { port, url } = sharedRedis()
    expect(url).toBe(`redis://127.0.0.1:${port}`)
    expect(await redisCommand(port, ["PING"])).toBe("PONG")
  })

  describe("cluster", () => {
    const { startupNodes } = sharedCluster()
    const cluster = new Cluster([...startupNodes], { redisOptions: { maxRetriesPerRequest: 1 } })
    afterAll(() => cluster.quit())

    it("has 3 masters with 1 replica each and covers all 16384 slots on every node", async () => {
      expect(startupNodes).toHaveLength(6)
      for (const { port } of startupNodes) {
        const info = parseInfo(await redisCommand(port, ["CLUSTER", "INFO"]))
        expect(info["cluster_state"]).toBe("ok")
        expect(info["cluster_slots_assigned"]).toBe("16384")
        expect(info["cluster_slots_ok"]).toBe("16384")
        expect(info["cluster_size"]).toBe("3")
        expect(info["cluster_known_nodes"]).toBe("6")
      }
    })

    it("runs hash-tagged multi-key commands and rejects cross-slot ones with CROSSSLOT", async () => {
      const p = uniqueClusterPrefix("crossslot")
      expect(keySlot(`${p}a`)).toBe(keySlot(`${p}b`))
      expect(await cluster.mset(`${p}a`, "1", `${p}b`, "2")).toBe("OK")
      expect(await cluster.mget(`${p}a`, `${p}b`)).toEqual(["1", "2"])

      const q = uniquePrefix("crossslot")
      const a = `${q}a`
      let b = `${q}b`
      for (let i = 0; keySlot(a) === keySlot(b); i++) b = `${q}b${i}`
      await expect(cluster.mset(a, "1", b, "2")).rejects.toThrow(/CROSSSLOT/)
    })
  })
})

describe("startCluster (private)", () => {
  it("fails over the master owning a key to its replica without losing the key", async () => {
    const handle = await startCluster({ masters: 3, replicasPerMaster: 1 })
    const cluster = new Cluster([...handle.startupNodes])
    try {
      const key = `${uniqueClusterPrefix("failover")}k`
      await cluster.set(key, "before")
      const owner = async () => {
        for (const { port } of handle.startupNodes) {
          const role = parseInfo(await redisCommand(port, ["INFO", "replication"]))["role"]
          const owns = await redisCommand(port, ["CLUSTER", "COUNTKEYSINSLOT", keySlot(key)])
          if (role === "master" && owns === 1) return port
        }
        return undefined
      }
      const before = await owner()
      expect(before).toBeDefined()

      await handle.failover(key)

      const after = await owner()
      expect(after).toBeDefined()
      expect(after).not.toBe(before)
      expect(parseInfo(await redisCommand(before!, ["INFO", "replication"]))["role"]).toBe("slave")
      expect(await cluster.get(key)).toBe("before") // follows MOVED to the new master
      for (const { port } of handle.startupNodes) {
        expect(parseInfo(await redisCommand(port, ["CLUSTER", "INFO"]))["cluster_state"]).toBe("ok")
      }
    } finally {
      cluster.disconnect()
      await handle.stop()
    }
    for (const node of handle.nodes) expect(isAlive(node.pid)).toBe(false)
  })
})

describe("tcpProxy", () => {
  let server: RedisServer
  const withServer = async <A>(f: (server: RedisServer) => Promise<A>) => {
    server ??= await startRedis()
    return f(server)
  }
  afterAll(() => server?.stop())

  it("cutAfterNextRequest: the server executes INCR but the client only sees an error", async () => {
    await withServer(async ({ port }) => {
      const proxy = await tcpProxy(port)
      const client = strictClient(proxy.port)
      try {
        await client.connect()
        const key = `${uniquePrefix("cut")}n`
        expect(await client.incr(key)).toBe(1)

        proxy.cutAfterNextRequest()
        await expect(client.incr(key)).rejects.toThrow()

        expect(await redisCommand(port, ["GET", key])).toBe("2") // executed exactly once
        expect(proxy.connectionCount()).toBe(0)
      } finally {
        client.disconnect()
        await proxy.stop()
      }
    })
  })

  it("stall holds traffic in order and delivers it on resume", async () => {
    await withServer(async ({ port }) => {
      const proxy = await tcpProxy(port)
      const client = strictClient(proxy.port)
      try {
        await client.connect()
        const key = `${uniquePrefix("stall")}n`
        proxy.setMode("stall")
        const pending = client.incr(key)
        await new Promise((r) => setTimeout(r, 100))
        expect(await redisCommand(port, ["GET", key])).toBeNull() // not delivered yet
        proxy.resume()
        expect(await pending).toBe(1)
      } finally {
        client.disconnect()
        await proxy.stop()
      }
    })
  })

  it("dropAll discards traffic and kills the affected connection on resume", async () => {
    await withServer(async ({ port }) => {
      const proxy = await tcpProxy(port)
      const client = strictClient(proxy.port)
      try {
        await client.connect()
        const key = `${uniquePrefix("drop")}n`
        proxy.dropAll()
        const pending = client.incr(key)
        await new Promise((r) => setTimeout(r, 100))
        proxy.resume()
        await expect(pending).rejects.toThrow()
        expect(await redisCommand(port, ["GET", key])).toBeNull() // never reached Redis
      } finally {
        client.disconnect()
        await proxy.stop()
      }
    })
  })

  it("delayReplies delays replies; refuse resets new connections; closeAllConnections drops clients", async () => {
    await withServer(async ({ port }) => {
      const proxy = await tcpProxy(port)
      try {
        proxy.delayReplies(150)
        const t0 = Date.now()
        expect(await redisCommand(proxy.port, ["PING"])).toBe("PONG")
        expect(Date.now() - t0).toBeGreaterThanOrEqual(140)
        proxy.delayReplies(0)

        proxy.setMode("refuse")
        await expect(redisCommand(proxy.port, ["PING"])).rejects.toThrow()
        proxy.setMode("forward")
        expect(await redisCommand(proxy.port, ["PING"])).toBe("PONG")

        const client = strictClient(proxy.port)
        await client.connect()
        const closed = new Promise((r) => client.once("close", r))
        proxy.closeAllConnections()
        await closed
        expect(client.status).not.toBe("ready")
        client.disconnect()
      } finally {
        await proxy.stop()
      }
    })
  })
})

describe("keys", () => {
  it("returns fresh prefixes; cluster prefixes keep all keys in one slot", () => {
    const a = uniquePrefix("same")
    const b = uniquePrefix("same")
    expect(a).not.toBe(b)
    expect(a).toMatch(/^t:same:[0-9a-f]{12}:$/)
    const c = uniqueClusterPrefix("x {y}")
    expect(c).toMatch(/^\{t:x_y_:[0-9a-f]{12}\}:$/)
    expect(new Set(["a", "b", "zzz", "1"].map((s) => keySlot(c + s))).size).toBe(1)
  })
})
