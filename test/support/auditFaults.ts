/**
 * Helpers for the audit continuity and integrity suites: replicas made with the audit
 * checks' options (facade or Effect layer, each over its own connection), the store's
 * keys as a comparable dump, and the faults Redis can inflict on them (a snapshot of the
 * keys taken and restored with DUMP/RESTORE, as a failover to a lagging replica would).
 */
import { Effect, Layer, Metric } from "effect"
import type { Redis } from "ioredis"
import { expect } from "vitest"
import * as AuditStore from "../../src/AuditStore.js"
import { createRedisAuditStore, toHaechiAuditStore } from "../../src/haechi.js"
import * as Metrics from "../../src/Metrics.js"
import * as RedisClient from "../../src/RedisClient.js"
import { asCore, buildAudit, type AuditStoreUnderTest, type ReplicaStyle } from "./conformanceStores.js"

export const styles: ReadonlyArray<ReplicaStyle> = ["layer", "facade"]

/** The audit store's own keys (what a fault may remove or rewind). */
export const storeKeys = (prefix: string) => ["chain", "head", "head:hash", "commits"].map((k) => `${prefix}${k}`)

export interface AuditReplicaOptions {
  readonly onRewind?: AuditStore.OnRewind
  readonly verifyRecords?: AuditStore.VerifyRecords
}

/** One audit replica over `client` (its own store instance), with `lock: "never"` unless said. */
export const auditReplica = async (
  style: ReplicaStyle,
  client: Redis,
  prefix: string,
  options: AuditReplicaOptions & { readonly lock?: "never" | "adaptive" | "always" } = {}
): Promise<AuditStoreUnderTest> => {
  const all = { keyPrefix: prefix, lock: "never" as const, ...options }
  return style === "layer"
    ? asCore(
        toHaechiAuditStore(
          await buildAudit(AuditStore.layer(all).pipe(Layer.provide(RedisClient.layerFromClient(client))))
        )
      )
    : asCore(createRedisAuditStore({ client, ...all }))
}

/** Every store key with its content (strings, lists, hashes), for "nothing was written". */
export const dumpKeys = async (client: Redis, prefix: string): Promise<Record<string, unknown>> => {
  const out: Record<string, unknown> = {}
  for (const key of storeKeys(prefix)) {
    const type = await client.type(key)
    if (type === "string") out[key] = await client.get(key)
    else if (type === "list") out[key] = await client.lrange(key, 0, -1)
    else if (type === "hash") out[key] = await client.hgetall(key)
    else if (type !== "none") out[key] = type
  }
  return out
}

/** The store's keys as DUMP blobs (null: absent) and the list's texts, taken in one MULTI. */
export interface Snapshot {
  readonly blobs: ReadonlyArray<readonly [string, Buffer | null]>
  readonly chain: ReadonlyArray<string>
}

export const takeSnapshot = async (client: Redis, prefix: string): Promise<Snapshot> => {
  const keys = storeKeys(prefix)
  const multi = client.multi()
  for (const key of keys) multi.dumpBuffer(key)
  multi.lrange(`${prefix}chain`, 0, -1)
  const replies = (await multi.exec()) ?? []
  return {
    blobs: keys.map((key, i) => [key, (replies[i]?.[1] as Buffer | null) ?? null] as const),
    chain: (replies[keys.length]?.[1] as Array<string>) ?? []
  }
}

/** Puts the keys back as they were in `snapshot`, in one MULTI (absent keys deleted). */
export const restoreSnapshot = async (client: Redis, snapshot: Snapshot): Promise<void> => {
  const multi = client.multi()
  for (const [key, blob] of snapshot.blobs) {
    multi.del(key)
    if (blob !== null) multi.restore(key, 0, blob)
  }
  await multi.exec()
}

export const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`)
    },
    (error: unknown) => error
  )

/** `error` is a `_tag` error (not wrapped in a FiberFailure) with these fields. */
export const expectTag = (error: unknown, tag: string, fields: Record<string, unknown> = {}) => {
  expect(error).toBeInstanceOf(Error)
  expect(error).toMatchObject({ _tag: tag, ...fields })
  return error as Record<string, unknown>
}

/** `haechi_store_chain_rewinds_total` for `prefix`. */
export const rewindCount = (prefix: string): number =>
  Effect.runSync(Metric.value(Metrics.chainRewinds.pipe(Metric.tagged("prefix", prefix)))).count

export const chainOf = async (client: Redis, prefix: string) =>
  (await client.lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as Record<string, any>)
