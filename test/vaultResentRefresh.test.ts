/**
 * A vault commit found committed by its re-send still waits for durability when the cache
 * refresh after it fails (the commit landed: the mutate resolves or fails on durability,
 * never on the refresh); a key of the wrong type is named as itself under any prefix.
 */
import { describe, expect, it } from "vitest"
import type { Redis } from "ioredis"
import { createRedisTokenStore } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { runtimeFor } from "./support/facadePaths.js"
import { laneLinks, until } from "./support/laneLinks.js"

const { connect, proxied } = laneLinks()
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    return { error: (error as { _tag?: string })?._tag ?? String(error) }
  }
}

describe("a commit found committed by its re-send", () => {
  for (const path of ["lane", "effect"] as const) {
    it(`${path}: still waits for durability when the cache refresh after it fails`, async () => {
      const direct: Redis = connect()
      const { proxy, client } = await proxied({ retryStrategy: () => 400 })
      const prefix = uniquePrefix(`rvw-vault-durable-${path}`)
      const store = createRedisTokenStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        runtime: runtimeFor(path),
        durability: { replicas: 1, timeout: "50 millis" }
      })
      expect(await settled(store.mutate((view) => view.set("a", { n: 1 })))).toEqual({ error: "DurabilityTimeout" })
      const outcome = settled(
        store.mutate((view) => {
          proxy.cutAfterNextRequest()
          view.set("b", { n: 2 })
          return "done"
        })
      )
      // The first send committed (its reply lost); before ioredis re-sends it, another
      // writer commits a record this replica cannot decode.
      await until(
        () => direct.hget(`${prefix}tokens`, "b"),
        (v) => v !== null,
        2000
      )
      const [secs] = await direct.time()
      await direct
        .multi()
        .hset(`${prefix}tokens`, "x", "{not json")
        .incr(`${prefix}version`)
        .rpush(`${prefix}log`, `3 foreign-commit ${secs} ["x"]`)
        .exec()
      expect(await outcome).toEqual({ error: "DurabilityTimeout" })
    })
  }
})

describe("a key of the wrong type named as itself, under any prefix", () => {
  it("a fresh replica's read names the version key when the prefix holds a space", async () => {
    const c: Redis = connect()
    const keyPrefix = `${uniquePrefix("ck2-vault-space")}my vault:`
    const key = `${keyPrefix}version`
    await c.hset(key, "not", "a string")
    const fresh = createRedisTokenStore({ client: c, keyPrefix, startupChecks: "off" })
    const error = await fresh
      .read((v) => v.get("t"))
      .then(
        () => undefined,
        (e: unknown) => e
      )
    expect(error).toMatchObject({ _tag: "CorruptData", key })
  })
})
