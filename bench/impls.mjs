// The two implementations under test, opened the same way: ours (../dist/haechi.js over an
// ioredis client) and the reference haechi-store-redis (over a node-redis 5 client), each
// with its own connection, on the same keys.
import { createClient } from "redis"
import { Redis } from "ioredis"
import * as reference from "haechi-store-redis"
import { createMemoryTokenStore } from "haechi-store-redis/memory"
import { bareAuditStore } from "./bare.mjs"

export const AUDIT_PREFIX = "bench:audit:"
export const VAULT_PREFIX = "bench:tv:"
export const LOCK_KEY = "bench:lock"

let oursModule
/** ../dist/haechi.js, loaded once (the bench builds it first). */
export const ours = async () => (oursModule ??= await import(new URL("../dist/haechi.js", import.meta.url).href))

let baseModule
/**
 * "base": another build of ours, for a before/after in one run: BENCH_BASE_DIST names its
 * dist/ folder (absolute, or relative to the repository root).
 */
export const base = async () => {
  const dir = process.env.BENCH_BASE_DIST
  if (!dir) throw new Error("BENCH_BASE_DIST is not set")
  return (baseModule ??= await import(new URL(`${dir.replace(/\/$/, "")}/haechi.js`, new URL("../", import.meta.url)).href))
}

/**
 * Our `withRedisLock`: from ../dist/haechi.js, or from BENCH_LOCK_MODULE (a path relative to
 * the repository root) when set. Undefined when not exported (yet).
 */
export const oursWithRedisLock = async () => {
  const override = process.env.BENCH_LOCK_MODULE
  const mod = override ? await import(new URL(`../${override}`, import.meta.url).href) : await ours()
  return typeof mod.withRedisLock === "function" ? mod.withRedisLock : undefined
}

export const openIoredis = async (port) => {
  const client = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 2, lazyConnect: true })
  await client.connect()
  return client
}

export const openNodeRedis = async (port) => {
  const client = createClient({ url: `redis://127.0.0.1:${port}` })
  client.on("error", () => {})
  await client.connect()
  return client
}

const closeIoredis = async (client) => {
  await client.quit().catch(() => client.disconnect())
}
const closeNodeRedis = async (client) => {
  await (typeof client.close === "function" ? client.close() : client.quit()).catch(() => client.destroy?.())
}

/**
 * Opens `impl` ("ours" | "ref" | "bare" | "floor") on its own client. `lock` (ours only) is passed to
 * createRedisAuditStore as the lock policy option when given; `auditPrefix` moves the chain.
 */
export const open = async (impl, port, { lock, auditPrefix = AUDIT_PREFIX } = {}) => {
  if (impl === "ours" || impl === "base") {
    const mod = impl === "ours" ? await ours() : await base()
    const client = await openIoredis(port)
    return {
      impl,
      client,
      audit: () => mod.createRedisAuditStore({ client, keyPrefix: auditPrefix, ...(lock ? { lock } : {}) }),
      vault: () => mod.createRedisTokenStore({ client, keyPrefix: VAULT_PREFIX }),
      close: () => closeIoredis(client)
    }
  }
  if (impl === "ref") {
    const client = await openNodeRedis(port)
    return {
      impl,
      client,
      audit: () => reference.createRedisAuditStore({ client, keyPrefix: auditPrefix }),
      vault: () => reference.createRedisTokenStore({ client, keyPrefix: VAULT_PREFIX }),
      close: () => closeNodeRedis(client)
    }
  }
  if (impl === "bare") {
    // The audit floor: the same fenced one-round-trip append on bare ioredis (bare.mjs).
    const client = await openIoredis(port)
    return {
      impl,
      client,
      audit: () => bareAuditStore(client, auditPrefix),
      vault: () => {
        throw new Error("the bare floor has no vault")
      },
      close: () => closeIoredis(client)
    }
  }
  if (impl === "floor") {
    // The core over a plain in-process Map (the reference's memory store), filled from the
    // pre-loaded vault: what the core's own work costs with no shared store at all.
    const client = await openIoredis(port)
    const store = createMemoryTokenStore()
    const all = await client.hgetall(`${VAULT_PREFIX}tokens`)
    await store.mutate((view) => {
      for (const [token, json] of Object.entries(all)) view.set(token, JSON.parse(json))
    })
    return {
      impl,
      client,
      audit: () => {
        throw new Error("the floor has no audit store")
      },
      vault: () => store,
      close: () => closeIoredis(client)
    }
  }
  throw new Error(`unknown implementation ${impl}`)
}

/** A lock client and `withRedisLock(client, key, fn, opts)` for `impl`, or undefined if ours has none. */
export const openLock = async (impl, port) => {
  if (impl === "ours") {
    const withRedisLock = await oursWithRedisLock()
    if (!withRedisLock) return undefined
    const client = await openIoredis(port)
    return { client, withRedisLock, close: () => closeIoredis(client) }
  }
  const client = await openNodeRedis(port)
  return { client, withRedisLock: reference.withRedisLock, close: () => closeNodeRedis(client) }
}
