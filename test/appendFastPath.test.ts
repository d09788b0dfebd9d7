/**
 * The audit append's fast path (one MGET, `commits` refused by its own HSET, commit ids
 * trimmed in batches), against real Redis: a refusal of that HSET for another reason than
 * the key's type is reported as Redis said it, and the batched trim keeps the commit ids
 * bounded when another writer appends some of the sequences.
 */
import { describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { COMMITS_KEPT } from "../src/internal/keys.js"
import { append } from "./support/facadePaths.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis } from "./support/redisServer.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

const rejectionOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error as { _tag?: string; reply?: string; key?: string }
  )

/** A writer in the reference layout: the record, then the head keys; no commit ids. */
const referenceAppend = async (client: Redis, prefix: string, event: object) => {
  const json = await client.get(`${prefix}head`)
  const record = buildNextRecord(event, json === null ? null : (JSON.parse(json) as Integrity))
  const integrity = record.auditIntegrity as Integrity
  await client
    .multi()
    .rpush(`${prefix}chain`, JSON.stringify(record))
    .set(`${prefix}head`, JSON.stringify(integrity))
    .set(`${prefix}head:hash`, integrity.eventHash)
    .exec()
}

describe("the audit append's fast path", () => {
  it("on a read-only replica the append fails with Redis's READONLY refusal, not as a commits key of the wrong type", async () => {
    const primary = await startRedis()
    const replica = await startRedis()
    const client = new Redis(replica.port, "127.0.0.1", { maxRetriesPerRequest: 1 })
    client.on("error", () => {})
    try {
      await client.replicaof("127.0.0.1", String(primary.port))
      const store = createRedisAuditStore({ client, keyPrefix: "ro:", startupChecks: "off", timeout: 2000 })
      const error = await rejectionOf(append(store, { on: "replica" }))
      expect(error?._tag).toBe("RedisCommandFailed")
      expect(error?.reply).toMatch(/^READONLY/)
      expect(await client.keys("ro:*")).toEqual([])
    } finally {
      client.disconnect()
      await replica.stop()
      await primary.stop()
    }
  })

  it("with a reference writer appending every other record, the commit ids kept stay within the last COMMITS_KEPT + 63", async () => {
    const client = connect()
    const prefix = uniquePrefix("trim-mixed")
    const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off" })
    const total = COMMITS_KEPT + 200
    for (let i = 1; i <= total; i++) {
      if (i % 2 === 0) await referenceAppend(client, prefix, { i })
      else await append(store, { i })
    }
    expect(await client.llen(`${prefix}chain`)).toBe(total)
    const kept = Object.keys(await client.hgetall(`${prefix}commits`)).map(Number)
    expect(kept.length).toBeGreaterThan(0)
    expect(Math.min(...kept)).toBeGreaterThan(total - COMMITS_KEPT - 64)
  })
})
