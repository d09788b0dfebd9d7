/**
 * The replica cache of the token store: a read whose view is still in use keeps seeing
 * the version it started on while mutations commit (on every layer), deletes and
 * re-inserts keep entries() exact, and a replica that cached an old version catches up.
 */
import { describe, expect, it } from "vitest"
import { Redis } from "ioredis"
import { createMemoryTokenStore, createRedisTokenStore, type HaechiTokenStore } from "../src/haechi.js"
import { sharedRedis } from "./support/shared.js"
import { uniquePrefix } from "./support/keys.js"

const sorted = (entries: Array<[string, unknown]>) => entries.map(([t]) => t).sort()

const layers: Array<[string, () => { a: HaechiTokenStore; b: HaechiTokenStore; close: () => Promise<void> }]> = [
  [
    "memory",
    () => {
      const store = createMemoryTokenStore()
      return { a: store, b: store, close: async () => {} }
    }
  ],
  [
    "redis",
    () => {
      const { url } = sharedRedis()
      const c1 = new Redis(url)
      const c2 = new Redis(url)
      const keyPrefix = uniquePrefix("cache")
      return {
        a: createRedisTokenStore({ client: c1, keyPrefix, lock: "never" }),
        b: createRedisTokenStore({ client: c2, keyPrefix, lock: "never" }),
        close: async () => {
          await c1.quit()
          await c2.quit()
        }
      }
    }
  ]
]

describe.each(layers)("token store cache (%s)", (_name, make) => {
  it("a read view in use keeps its version while the same replica commits", async () => {
    const { a, close } = make()
    try {
      await a.mutate((v) => {
        v.set("t1", { n: 1 })
        v.set("t2", { n: 2 })
      })
      let release!: () => void
      const gate = new Promise<void>((resolve) => (release = resolve))
      const reading = a.read(async (view) => {
        const before = sorted(view.entries())
        await gate
        return { before, after: sorted(view.entries()), t1: view.get("t1"), t3: view.get("t3") }
      })
      await new Promise((r) => setTimeout(r, 20))
      await a.mutate((v) => {
        v.delete("t1")
        v.set("t3", { n: 3 })
      })
      release()
      const seen = await reading
      expect(seen.before).toEqual(["t1", "t2"])
      expect(seen.after).toEqual(["t1", "t2"])
      expect(seen.t1).toEqual({ n: 1 })
      expect(seen.t3).toBeUndefined()
      expect(await a.read((v) => sorted(v.entries()))).toEqual(["t2", "t3"])
    } finally {
      await close()
    }
  })

  it("deletes and re-inserts keep entries() exact, and a stale replica catches up", async () => {
    const { a, b, close } = make()
    try {
      await b.read((v) => v.entries()) // b caches the empty vault
      const live = new Map<string, number>()
      for (let round = 0; round < 30; round++) {
        await a.mutate((v) => {
          const token = `t${round % 7}`
          if (live.has(token) && round % 3 === 0) {
            v.delete(token)
            live.delete(token)
          } else {
            v.set(token, { round })
            live.set(token, round)
          }
        })
      }
      const expected = [...live.keys()].sort()
      expect(await a.read((v) => sorted(v.entries()))).toEqual(expected)
      expect(await b.read((v) => sorted(v.entries()))).toEqual(expected)
      expect(await b.read((v) => Object.fromEntries(v.entries()))).toEqual(
        Object.fromEntries([...live].map(([t, round]) => [t, { round }]))
      )
    } finally {
      await close()
    }
  })
})
