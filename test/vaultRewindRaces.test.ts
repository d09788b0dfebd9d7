/**
 * The vault's cache where a rewind and a lost reply meet other operations: a full read
 * that finds Redis went back keeps what it just read; a read answered while another
 * operation drops the cache reads in full rather than answering from nothing; a change-log
 * entry that is not a list of ids is a reload, not "nothing changed"; a key of the wrong
 * type is named as itself; a commit found committed by its re-send still waits for the
 * durability it was configured with.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FiberRef, HashSet, Logger } from "effect"
import { createRedisAuditStore, createRedisTokenStore } from "../src/haechi.js"
import { vaultKeys } from "../src/internal/keys.js"
import { uniquePrefix } from "./support/keys.js"
import { append, runtimeFor } from "./support/facadePaths.js"
import { laneLinks, vaultOf } from "./support/laneLinks.js"

const { connect, proxied } = laneLinks()
const failure = (p: Promise<unknown>) =>
  p.then(
    () => "resolved",
    (e: unknown) => e
  )
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    return { error: (error as { _tag?: string })?._tag ?? String(error) }
  }
}

describe("a rewind a full read finds", () => {
  for (const path of ["lane", "effect"] as const) {
    it(`${path}: a read after an unproven cache saw Redis go back answers what Redis holds, not an empty vault`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`vault-landing-${path}`)
      const store = createRedisTokenStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        runtime: runtimeFor(path)
      })
      // A vault haechi-store-redis wrote (version bumped, no log): the cache is unproven.
      await client.hset(`${prefix}tokens`, "tok_a", JSON.stringify({ type: "email", v: 1 }))
      await client.set(`${prefix}version`, "5")
      expect(await store.read((view) => view.entries().map(([t]) => t))).toEqual(["tok_a"])
      // A restored older snapshot: a lower version, the token still there.
      await client.set(`${prefix}version`, "3")
      const seen = await store.read((view) => ({ ids: view.entries().map(([t]) => t), a: view.get("tok_a") }))
      expect(seen).toEqual({ ids: ["tok_a"], a: { type: "email", v: 1 } })
    })
  }
})

describe("a read answered while another operation drops the cache", () => {
  it("lane: a read started just before another read drops the cache sees Redis's tokens, not an empty vault", async () => {
    const client = connect()
    const prefix = uniquePrefix("vault-dropped-pin")
    // A logger hook: the moment the first read reports the rewind (just before it drops
    // the cache), a second read starts, as a concurrent request would in that instant.
    let onRewind: (() => void) | undefined
    const hook = Logger.make(({ message }) => {
      if (onRewind !== undefined && String(message).includes("no longer holds")) {
        const f = onRewind
        onRewind = undefined
        f()
      }
    })
    const runtime = Effect.runSync(Effect.locally(Effect.runtime<never>(), FiberRef.currentLoggers, HashSet.make(hook)))
    const store = createRedisTokenStore({ client, keyPrefix: prefix, startupChecks: "off", runtime })
    await store.mutate((view) => {
      view.set("a", { n: 1 })
      view.set("b", { n: 2 })
      view.set("c", { n: 3 })
    })
    expect(await store.read((view) => view.entries().length)).toBe(3)
    // Redis loses one token (a field deleted by hand: the count no longer agrees).
    await client.hdel(`${prefix}tokens`, "a")
    let second: Promise<Array<string>> | undefined
    onRewind = () => {
      second = store.read((view) =>
        view
          .entries()
          .map(([t]) => t)
          .sort()
      )
    }
    const first = await store.read((view) =>
      view
        .entries()
        .map(([t]) => t)
        .sort()
    )
    expect(first).toEqual(["b", "c"])
    expect(second).toBeDefined()
    expect(await second).toEqual(["b", "c"])
  })
})

describe("a change-log entry that is not a list of ids", () => {
  it("a cached replica does not keep a stale record past an entry whose ids are a JSON object", async () => {
    const client = connect()
    const prefix = uniquePrefix("vault-hostile-log")
    const opts = { client, keyPrefix: prefix, startupChecks: "off" } as const
    const a = createRedisTokenStore(opts)
    const b = createRedisTokenStore(opts)
    await a.mutate((view) => view.set("t", { n: 1 }))
    expect(await b.read((view) => view.get("t"))).toEqual({ n: 1 })
    await a.mutate((view) => view.set("t", { n: 2 }))
    // The last entry's ids, rewritten as an object (a foreign or corrupted writer).
    const last = (await client.lindex(`${prefix}log`, -1))!
    const [v, id, secs] = last.split(" ")
    await client.lset(`${prefix}log`, -1, `${v} ${id} ${secs} {"x":"t"}`)
    expect(await b.read((view) => view.get("t"))).toEqual({ n: 2 })
  })
})

describe("a key of the wrong type is named as itself", () => {
  for (const which of ["version", "log"] as const) {
    it(`a fresh replica's read and a warm replica's mutate name the ${which} key`, async () => {
      const c = connect()
      const keyPrefix = uniquePrefix(`vault-wrongkey-${which}`)
      const warm = createRedisTokenStore({ client: c, keyPrefix, startupChecks: "off" })
      await warm.mutate((v) => v.set("t", { n: 1 }))
      const key = vaultKeys(keyPrefix)[which]
      await c.del(key)
      await c.hset(key, "not", "a string or list")
      const fresh = createRedisTokenStore({ client: c, keyPrefix, startupChecks: "off" })
      expect(await failure(fresh.read((v) => v.get("t")))).toMatchObject({ _tag: "CorruptData", key })
      expect(await failure(warm.mutate((v) => v.set("u", { n: 2 })))).toMatchObject({ _tag: "CorruptData", key })
    })
  }
})

describe("durability on a re-sent commit", () => {
  for (const path of ["lane", "effect"] as const) {
    it(`${path}: a vault commit found already committed still waits for its replicas (no replica here: DurabilityTimeout)`, async () => {
      const direct = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`vault-durable-${path}`)
      const store = createRedisTokenStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        runtime: runtimeFor(path),
        durability: { replicas: 1, timeout: "50 millis" }
      })
      // A plain commit: committed on the master, not acknowledged (no replica).
      expect(await settled(store.mutate((view) => view.set("a", { n: 1 })))).toEqual({ error: "DurabilityTimeout" })
      // The same, with its reply lost and the call re-sent by ioredis.
      const outcome = await settled(
        store.mutate((view) => {
          proxy.cutAfterNextRequest()
          view.set("b", { n: 2 })
          return "done"
        })
      )
      expect((await vaultOf(direct, prefix)).b).toEqual({ n: 2 })
      expect(outcome).toEqual({ error: "DurabilityTimeout" })
    })
  }

  it("the audit store, for comparison: a re-sent append found committed waits for its replicas", async () => {
    const { proxy, client } = await proxied()
    const prefix = uniquePrefix(`vault-durable-audit`)
    const store = createRedisAuditStore({
      client,
      keyPrefix: prefix,
      startupChecks: "off",
      durability: { replicas: 1, timeout: "50 millis" }
    })
    expect(await settled(append(store, { n: 1 }))).toEqual({ error: "DurabilityTimeout" })
    const outcome = await settled(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const { buildNextRecord } = await import("../src/Chain.js")
        const head = await readLastIntegrity()
        proxy.cutAfterNextRequest()
        await persist(buildNextRecord({ n: 2 }, head as never))
      })
    )
    expect(outcome).toEqual({ error: "DurabilityTimeout" })
  })
})
