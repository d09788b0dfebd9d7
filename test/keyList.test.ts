/**
 * `AuditStore.keysOf(prefix)` / `TokenStore.keysOf(prefix)` name every key the stores
 * write, the lock's fence and waiters included: after appends, mutations, readiness
 * probes and contended locked writes, every key Redis holds for the prefixes is in the
 * lists, and deleting the lists leaves nothing behind.
 */
import { afterAll, expect, it } from "@effect/vitest"
import { Redis } from "ioredis"
import { AuditStore, TokenStore } from "../src/index.js"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const client = new Redis(sharedRedis().url)
afterAll(() => client.quit())

/** Every key whose name contains `id`, by SCAN (bounded). */
const keysNaming = async (id: string): Promise<Array<string>> => {
  const found = new Set<string>()
  let cursor = "0"
  for (let i = 0; i < 10_000; i++) {
    const [next, keys] = await client.scan(cursor, "MATCH", `*${id}*`, "COUNT", 1000)
    for (const key of keys) found.add(key)
    cursor = next
    if (cursor === "0") break
  }
  return [...found].sort()
}

it("the key lists hold every key the stores write, the lock's included, and nothing else", async () => {
  const id = uniquePrefix("keylist").replace(/[:{}]/g, "")
  const auditPrefix = `${id}:audit:`
  const vaultPrefix = `${id}:tv:`
  const audit = createRedisAuditStore({ client, keyPrefix: auditPrefix, lock: "always" })
  const vault = createRedisTokenStore({ client, keyPrefix: vaultPrefix, lock: "always" })
  await Promise.all([audit.ready(), vault.ready()])
  const append = (n: number) =>
    audit.transaction(async ({ readLastIntegrity, persist }) => {
      const previous = await readLastIntegrity()
      const sequence = (previous?.sequence ?? 0) + 1
      await persist({
        n,
        auditIntegrity: { sequence, previousHash: previous?.eventHash ?? null, eventHash: `h${sequence}` }
      })
    })
  // Concurrent locked writes queue on the lock (its waiters key) and bump its fence.
  await Promise.all([1, 2, 3, 4].map((n) => append(n).catch(() => undefined)))
  await Promise.all([1, 2, 3, 4].map((n) => vault.mutate((view) => view.set(`tok_${n}`, { type: "t", n }))))

  const listed = new Set([...AuditStore.keysOf(auditPrefix), ...TokenStore.keysOf(vaultPrefix)])
  const held = await keysNaming(id)
  expect(held.filter((key) => !listed.has(key))).toEqual([])
  for (const key of [
    `${auditPrefix}chain`,
    `${auditPrefix}head`,
    `${auditPrefix}head:hash`,
    `${auditPrefix}commits`,
    `${auditPrefix}commits:floor`,
    `${vaultPrefix}tokens`,
    `${vaultPrefix}version`,
    `${vaultPrefix}log`
  ]) {
    expect(held).toContain(key)
  }
  expect(AuditStore.keysOf(auditPrefix)).toContain(`{${auditPrefix}lock}:fence`)
  expect(TokenStore.keysOf(vaultPrefix)).toContain(`{${vaultPrefix}lock}:waiters`)
  await client.del(...listed)
  expect(await keysNaming(id)).toEqual([])
})

it("a hash-tagged prefix keeps the lock's keys in its slot", () => {
  expect(AuditStore.keysOf("{haechi:audit}:")).toEqual(
    expect.arrayContaining(["{haechi:audit}:chain", "{haechi:audit}:lock:fence", "{haechi:audit}:lock:waiters"])
  )
  expect(AuditStore.DEFAULT_PREFIX).toBe("haechi:audit:")
  expect(TokenStore.DEFAULT_PREFIX).toBe("haechi:tv:")
})
