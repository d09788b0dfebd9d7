/**
 * The stores' key lists (src/internal/keys.ts `auditKeyList`, `vaultKeyList`), against a
 * real Redis: every key a store writes under its prefix, with several writers at once
 * under the lock policy "always" (so the lock's fence counter is written too) and
 * readiness probed, is on its list; deleting the list leaves nothing. The demo's cleanup
 * (`haechi-store demo --url`) deletes exactly these lists.
 */
import { Effect } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { auditKeyList, fenceKeyOf, vaultKeyList } from "../src/internal/keys.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

let raw: Redis

beforeAll(() => {
  raw = new Redis(sharedRedis().url)
})

afterAll(async () => {
  await raw.quit()
})

/** Every key whose name contains `prefix` (a lock's keys are `{<prefix>lock}:…`). */
const keysWith = async (prefix: string): Promise<Array<string>> => (await raw.keys(`*${prefix}*`)).sort()

const WRITERS = 4
const ROUNDS = 10

describe("the stores' key lists", () => {
  it("name every key the stores and their locks write, so deleting them leaves nothing", async () => {
    const auditPrefix = uniquePrefix("keylist-audit")
    const vaultPrefix = uniquePrefix("keylist-vault")
    const client = new Redis(sharedRedis().url)
    try {
      await Effect.runPromise(
        Effect.gen(function* () {
          const writers = yield* Effect.forEach(Array.from({ length: WRITERS }), () =>
            Effect.all({
              log: Effect.flatMap(AuditStore.make({ keyPrefix: auditPrefix, lock: "always" }), AuditLog.fromStore),
              vault: TokenStore.make({ keyPrefix: vaultPrefix, lock: "always" })
            })
          )
          yield* Effect.forEach(
            writers,
            ({ log, vault }, w) =>
              Effect.forEach(
                Array.from({ length: ROUNDS }, (_, i) => i),
                (i) =>
                  Effect.zipRight(
                    log.record({ type: "keylist.test", writer: w, i }),
                    vault.mutate((view) => Effect.sync(() => view.set(`tok_${w}_${i}`, { type: "t", i })))
                  )
              ),
            { concurrency: "unbounded", discard: true }
          )
          const audit = yield* AuditStore.make({ keyPrefix: auditPrefix })
          const vault = yield* TokenStore.make({ keyPrefix: vaultPrefix })
          expect(yield* audit.ready).toEqual({ ok: true })
          expect(yield* vault.ready).toEqual({ ok: true })
        }).pipe(Effect.provide(RedisClient.layerFromClient(client)))
      )
      const audit = auditKeyList(auditPrefix)
      const vault = vaultKeyList(vaultPrefix)
      // The locks were taken, so their fence counters exist: the list must name them.
      expect(await raw.exists(fenceKeyOf(`${auditPrefix}lock`), fenceKeyOf(`${vaultPrefix}lock`))).toBe(2)
      const written = [...(await keysWith(auditPrefix)), ...(await keysWith(vaultPrefix))]
      expect(written.length).toBeGreaterThanOrEqual(6)
      for (const key of written) expect([...audit, ...vault]).toContain(key)
      await raw.del(...audit, ...vault)
      expect(await keysWith(auditPrefix)).toEqual([])
      expect(await keysWith(vaultPrefix)).toEqual([])
    } finally {
      await client.quit()
    }
  }, 60_000)

  it("list each store's key set and its lock's keys once, nothing else", () => {
    const prefix = "p:"
    expect([...auditKeyList(prefix)].sort()).toEqual(
      [
        "p:chain",
        "p:head",
        "p:head:hash",
        "p:commits",
        "p:commits:floor",
        "p:lock",
        "p:ready:probe",
        "p:checkpoint",
        "{p:lock}:fence",
        "{p:lock}:waiters"
      ].sort()
    )
    expect([...vaultKeyList("{v}:")].sort()).toEqual(
      [
        "{v}:tokens",
        "{v}:version",
        "{v}:log",
        "{v}:log:mark",
        "{v}:lock",
        "{v}:ready:probe",
        "{v}:lock:fence",
        "{v}:lock:waiters"
      ].sort()
    )
  })
})
