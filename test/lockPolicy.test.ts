/**
 * The stores' lock policies against real Redis: "never" ignores the lock, "always" and
 * "adaptive" wait for a holder (a haechi-store-redis replica holds it with SET NX PX),
 * an adaptive lock-free attempt yields to a lock holder instead of racing it, and every
 * policy keeps the chain whole and the vault exact when replicas race.
 */
import { describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { createRedisAuditStore, createRedisTokenStore, type LockPolicy } from "../src/haechi.js"
import { createAuditSink, createTokenVault, verifyAuditChain } from "./support/haechiCore.js"
import { sharedRedis } from "./support/shared.js"
import { uniquePrefix } from "./support/keys.js"

const connect = () => new Redis(sharedRedis().url)

const appendOne = (store: ReturnType<typeof createRedisAuditStore>, n: number) =>
  createAuditSink({ store: store as never }).record({ n })

describe("store lock policies", () => {
  for (const [policy, waits] of [
    ["never", false],
    ["always", true],
    ["adaptive", true]
  ] as const) {
    it(`"${policy}" ${waits ? "waits for" : "ignores"} a foreign lock holder`, async () => {
      const client = connect()
      const keyPrefix = uniquePrefix(`policy-${policy}`)
      try {
        const store = createRedisAuditStore({ client, keyPrefix, lock: policy })
        await appendOne(store, 0) // warm: the head is cached, scripts loaded
        await client.set(`${keyPrefix}lock`, "held-by-a-reference-replica", "PX", 300)
        const started = performance.now()
        await appendOne(store, 1)
        const waited = performance.now() - started
        if (waits) expect(waited).toBeGreaterThan(200)
        else expect(waited).toBeLessThan(200)
        expect(await client.llen(`${keyPrefix}chain`)).toBe(2)
      } finally {
        await client.quit()
      }
    })
  }

  it("an adaptive vault attempt yields to a lock holder too, and writes nothing while it is held", async () => {
    const client = connect()
    const keyPrefix = uniquePrefix("policy-vault")
    try {
      const store = createRedisTokenStore({ client, keyPrefix, lock: "adaptive" })
      await store.mutate((v) => v.set("warm", { type: "t" }))
      await client.set(`${keyPrefix}lock`, "held", "PX", 300)
      const pending = store.mutate((v) => v.set("late", { type: "t" }))
      await new Promise((r) => setTimeout(r, 150))
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(0)
      await pending
      expect(await client.hexists(`${keyPrefix}tokens`, "late")).toBe(1)
    } finally {
      await client.quit()
    }
  })

  for (const policy of ["never", "always", "adaptive"] as Array<LockPolicy>) {
    it(`"${policy}": 4 racing replicas keep one valid chain and lose no token`, async () => {
      const clients = Array.from({ length: 4 }, connect)
      const auditPrefix = uniquePrefix(`race-audit-${policy}`)
      const vaultPrefix = uniquePrefix(`race-vault-${policy}`)
      try {
        const replicas = clients.map((client) => ({
          sink: createAuditSink({ store: createRedisAuditStore({ client, keyPrefix: auditPrefix, lock: policy }) as never }),
          vault: createTokenVault({ store: createRedisTokenStore({ client, keyPrefix: vaultPrefix, lock: policy }) as never })
        }))
        const perReplica = 25
        const tokens = await Promise.all(
          replicas.map(async ({ sink, vault }, r) => {
            const mine: Array<string> = []
            for (let i = 0; i < perReplica; i++) {
              await sink.record({ replica: r, i })
              mine.push((await vault.tokenize(`value-${r}-${i}`, { type: "email" })).token)
            }
            return mine
          })
        )
        const chain = (await clients[0]!.lrange(`${auditPrefix}chain`, 0, -1)).map((line) => JSON.parse(line))
        expect(verifyAuditChain(chain).valid).toBe(true)
        expect(chain).toHaveLength(4 * perReplica)
        const events = new Set(chain.map((r: { replica: number; i: number }) => `${r.replica}/${r.i}`))
        expect(events.size).toBe(4 * perReplica)
        expect(await clients[0]!.hlen(`${vaultPrefix}tokens`)).toBe(4 * perReplica)
        const all = tokens.flat()
        expect(new Set(all).size).toBe(4 * perReplica)
      } finally {
        await Promise.all(clients.map((c) => c.quit()))
      }
    })
  }
})
