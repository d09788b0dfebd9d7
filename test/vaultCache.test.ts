/**
 * The replica cache of the token store: a read whose view is still in use keeps seeing
 * the version it started on while mutations commit (on every layer), deletes and
 * re-inserts keep entries() exact, and a replica that cached an old version catches up.
 * The facade's fiber-free read: NOSCRIPT recovery, the caller's failure as thrown, private
 * copies, its latency sample and its deadlines.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { describe, expect, it } from "vitest"
import { Cluster, Redis } from "ioredis"
import { createMemoryTokenStore, createRedisTokenStore, type HaechiTokenStore } from "../src/haechi.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { latencyMetric } from "../src/internal/observe.js"
import { vaultKeys } from "../src/internal/keys.js"
import { sharedCluster, sharedRedis } from "./support/shared.js"
import { tcpProxy } from "./support/tcpProxy.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"

const sorted = (entries: Array<[string, unknown]>) => entries.map(([t]) => t).sort()

const layers: Array<
  [
    string,
    () => {
      a: HaechiTokenStore
      b: HaechiTokenStore
      close: () => Promise<void>
    }
  ]
> = [
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
        return {
          before,
          after: sorted(view.entries()),
          t1: view.get("t1"),
          t3: view.get("t3")
        }
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

describe("the facade's read (no fiber on its common path)", () => {
  const client = () => new Redis(sharedRedis().url)

  it("after SCRIPT FLUSH (a restarted server) reads and writes go on, NOSCRIPT answered with the script's text", async () => {
    const [c1, c2, admin] = [client(), client(), client()]
    const keyPrefix = uniquePrefix("noscript")
    try {
      const a = createRedisTokenStore({ client: c1, keyPrefix, lock: "never" })
      const b = createRedisTokenStore({ client: c2, keyPrefix, lock: "never" })
      await a.mutate((v) => v.set("t1", { n: 1 }))
      expect(await b.read((v) => v.get("t1"))).toEqual({ n: 1 })
      await admin.script("FLUSH")
      await a.mutate((v) => v.set("t2", { n: 2 }))
      await admin.script("FLUSH")
      expect(await b.read((v) => [v.get("t1"), v.get("t2")])).toEqual([{ n: 1 }, { n: 2 }])
      await admin.script("FLUSH")
      expect(await a.read((v) => sorted(v.entries()))).toEqual(["t1", "t2"])
    } finally {
      await Promise.all([c1, c2, admin].map((c) => c.quit()))
    }
  })

  it("hands fn's failure back as it was thrown, a private copy from get, and a latency sample per read", async () => {
    const c = client()
    try {
      const store = createRedisTokenStore({
        client: c,
        keyPrefix: uniquePrefix("fastread"),
        lock: "never"
      })
      await store.mutate((v) => v.set("t", { n: 1, nested: { k: "v" } }))
      const samples = () => Effect.runSync(Metric.value(latencyMetric("vault", "read"))).count
      const before = samples()
      const thrown = new Error("caller's own")
      await expect(
        store.read(() => {
          throw thrown
        })
      ).rejects.toBe(thrown)
      await expect(store.read(async () => Promise.reject(thrown))).rejects.toBe(thrown)
      const copy = await store.read((v) => v.get("t") as { n: number; nested: { k: string } })
      copy.n = 2
      copy.nested.k = "changed"
      expect(await store.read((v) => v.get("t"))).toEqual({
        n: 1,
        nested: { k: "v" }
      })
      expect(samples() - before).toBe(4)
    } finally {
      await c.quit()
    }
  })

  it("reads in flight on a frozen link each end at their own deadline (one timer serves them all), then reads go on", async () => {
    const proxy = await tcpProxy(sharedRedis().port)
    const c = new Redis(proxy.url)
    try {
      const timeout = 300
      const keyPrefix = uniquePrefix("frozenreads")
      const store = createRedisTokenStore({
        client: c,
        keyPrefix,
        lock: "never",
        timeout
      })
      await store.mutate((v) => v.set("t", { n: 1 }))
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
      // A replica that has read nothing yet reads in full through the Effect path.
      const fresh = createRedisTokenStore({
        client: c,
        keyPrefix,
        lock: "never",
        timeout
      })
      proxy.freeze()
      const ended: Array<string> = []
      const timedRead = async (name: string, on = store) => {
        const started = performance.now()
        const error = await on
          .read((v) => v.get("t"))
          .then(
            () => undefined,
            (e: unknown) => e
          )
        ended.push(name)
        return { error, ms: performance.now() - started }
      }
      const first = timedRead("first")
      await new Promise((r) => setTimeout(r, 100))
      const second = timedRead("second")
      await new Promise((r) => setTimeout(r, 100))
      const third = timedRead("third")
      const unread = timedRead("fresh", fresh)
      for (const { error, ms } of await Promise.all([first, second, third, unread])) {
        expect(error).toMatchObject({
          _tag: "OperationTimeout",
          operation: "vault read",
          timeoutMs: timeout
        })
        expect(ms).toBeGreaterThanOrEqual(timeout)
        expect(ms).toBeLessThan(timeout + 1500)
      }
      // (One store's reads end in order; the fresh replica is another store, with its own timer.)
      expect(ended.filter((name) => name !== "fresh")).toEqual(["first", "second", "third"])
      proxy.thaw()
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
      expect(await fresh.read((v) => v.get("t"))).toEqual({ n: 1 })
    } finally {
      c.disconnect()
      await proxy.stop()
    }
  })
})

describe("the facade's read under faults and hostile input", () => {
  /** Unhandled rejections raised while `body` runs (and a turn after it). */
  const unhandledDuring = async (body: () => Promise<void>): Promise<Array<unknown>> => {
    const seen: Array<unknown> = []
    const listener = (reason: unknown) => void seen.push(reason)
    process.on("unhandledRejection", listener)
    try {
      await body()
      await new Promise((r) => setTimeout(r, 50))
    } finally {
      process.off("unhandledRejection", listener)
    }
    return seen
  }

  const samples = () => Effect.runSync(Metric.value(latencyMetric("vault", "read"))).count

  /** A client whose vault_changes replies (4 KEYS, 5 ARGV) are replaced by `lie` while it is set. */
  class LyingRedis extends Redis {
    lie: unknown = undefined
    override evalsha(...args: Array<unknown>): never {
      const call = (Redis.prototype.evalsha as (...a: Array<unknown>) => Promise<unknown>).apply(this, args)
      if (this.lie === undefined || args[1] !== 4 || args.length !== 11) return call as never
      const lie = this.lie
      return call.then(() => lie) as never
    }
  }

  it("a change-log reply that is no list, or has an unknown status, fails the read at once with CorruptData, never an unhandled rejection", async () => {
    const c = new LyingRedis(sharedRedis().url)
    try {
      const timeout = 3000
      const store = createRedisTokenStore({
        client: c,
        keyPrefix: uniquePrefix("liereply"),
        lock: "never",
        timeout
      })
      await store.mutate((v) => v.set("t", { n: 1 }))
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
      for (const lie of [null, 7, { version: "1" }, ["1", "bogus", 1, "", 0]]) {
        const before = samples()
        let outcome: unknown
        let ms = 0
        const unhandled = await unhandledDuring(async () => {
          c.lie = lie
          const started = performance.now()
          outcome = await store
            .read((v) => v.get("t"))
            .then(
              () => "resolved",
              (e: unknown) => e
            )
          ms = performance.now() - started
          c.lie = undefined
        })
        expect(unhandled).toEqual([])
        expect(outcome).toMatchObject({ _tag: "CorruptData" })
        expect(ms).toBeLessThan(timeout / 2)
        expect(samples() - before).toBe(1)
      }
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
    } finally {
      await c.quit()
    }
  })

  it("fn's value whose `then` cannot be read fails the read with that error, at once, and the store reads and writes on", async () => {
    for (const [name, make] of [
      [
        "redis",
        () => {
          const c = new Redis(sharedRedis().url)
          const store = createRedisTokenStore({
            client: c,
            keyPrefix: uniquePrefix("thenget"),
            lock: "never",
            timeout: 3000
          })
          return { store, done: async () => void (await c.quit()) }
        }
      ],
      ["memory", () => ({ store: createMemoryTokenStore(), done: async () => {} })]
    ] as const) {
      const { store, done } = make()
      await store.mutate((v) => v.set("t", { n: 1 }))
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
      const thrown = new Error(`then getter (${name})`)
      const hostile = {
        get then(): never {
          throw thrown
        }
      }
      const before = samples()
      let outcome: unknown
      let ms = 0
      const unhandled = await unhandledDuring(async () => {
        const started = performance.now()
        outcome = await store
          .read(() => hostile)
          .then(
            () => "resolved",
            (e: unknown) => e
          )
        ms = performance.now() - started
      })
      expect(unhandled).toEqual([])
      expect(outcome).toBe(thrown)
      expect(ms).toBeLessThan(1500)
      expect(samples() - before).toBe(1)
      await store.mutate((v) => v.set("t", { n: 2 }))
      expect(await store.read((v) => v.get("t"))).toEqual({ n: 2 })
      await done()
    }
  })

  /** A wrong-type log fails reads with CorruptData at the log key, before and after SCRIPT FLUSH; removing it reads again. */
  const wrongTypeLogThroughNoScript = async (
    c: Redis | Cluster,
    keyPrefix: string,
    flush: () => Promise<void>
  ): Promise<void> => {
    const store = createRedisTokenStore({ client: c, keyPrefix, lock: "never", timeout: 3000 })
    await store.mutate((v) => v.set("t", { n: 1 }))
    expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
    const { log } = vaultKeys(keyPrefix)
    await c.del(log)
    await c.set(log, "not a list")
    const before = samples()
    const unhandled = await unhandledDuring(async () => {
      for (const flushFirst of [false, true, true]) {
        if (flushFirst) await flush()
        const started = performance.now()
        const error = await store
          .read((v) => v.get("t"))
          .then(
            () => "resolved",
            (e: unknown) => e
          )
        expect(error).toMatchObject({ _tag: "CorruptData", key: log })
        expect(performance.now() - started).toBeLessThan(1500)
      }
    })
    expect(unhandled).toEqual([])
    expect(samples() - before).toBe(3)
    // (The log gone, the commit the cache saw is no longer proved: a rewind, then a full read.)
    await c.del(log)
    await flush()
    expect(await store.read((v) => v.get("t"))).toEqual({ n: 1 })
    await store.mutate((v) => v.set("t", { n: 2 }))
    await flush()
    expect(await store.read((v) => v.get("t"))).toEqual({ n: 2 })
  }

  it("a log key of the wrong type fails the read with CorruptData at that key, also in the NOSCRIPT answer", async () => {
    const [c, admin] = [new Redis(sharedRedis().url), new Redis(sharedRedis().url)]
    try {
      await wrongTypeLogThroughNoScript(
        c,
        uniquePrefix("wrongnoscript"),
        async () => void (await admin.script("FLUSH"))
      )
    } finally {
      await Promise.all([c.quit(), admin.quit()])
    }
  })

  it("a version, tokens or log key of the wrong type is named as itself by the change log, on the facade's read and the Effect store's", async () => {
    const c = new Redis(sharedRedis().url)
    try {
      for (const which of ["version", "tokens", "log"] as const) {
        const keyPrefix = uniquePrefix(`wrongkey-${which}`)
        const facade = createRedisTokenStore({ client: c, keyPrefix, lock: "never" })
        const store = await Effect.runPromise(
          Effect.provide(TokenStore.make({ keyPrefix, lock: "never" }), layerFromClient(c))
        )
        await facade.mutate((v) => v.set("t", { n: 1 }))
        // Both caches warm: the next read of each is the change log's one round trip.
        expect(await facade.read((v) => v.get("t"))).toEqual({ n: 1 })
        expect(await Effect.runPromise(store.read((v) => Effect.succeed(v.get("t"))))).toEqual({ n: 1 })
        const key = vaultKeys(keyPrefix)[which]
        const saved = await c.dumpBuffer(key)
        await c.del(key)
        await (which === "version" ? c.hset(key, "not", "a string") : c.set(key, "not a hash or list"))
        const viaFacade = await facade
          .read((v) => v.get("t"))
          .then(
            () => "resolved",
            (e: unknown) => e
          )
        expect(viaFacade).toMatchObject({ _tag: "CorruptData", key, detail: "holds the wrong Redis type" })
        const viaEffect = await Effect.runPromise(Effect.flip(store.read((v) => Effect.succeed(v.get("t")))))
        expect(viaEffect).toMatchObject({ _tag: "CorruptData", key, detail: "holds the wrong Redis type" })
        // Put back as it was, both read on.
        await c.del(key)
        await c.restore(key, 0, saved!)
        expect(await facade.read((v) => v.get("t"))).toEqual({ n: 1 })
        expect(await Effect.runPromise(store.read((v) => Effect.succeed(v.get("t"))))).toEqual({ n: 1 })
      }
    } finally {
      await c.quit()
    }
  })

  it("on a Cluster client too: a wrong-type log key through NOSCRIPT, then reads and writes go on", async () => {
    const c = new Cluster([...sharedCluster().startupNodes], { redisOptions: { maxRetriesPerRequest: 5 } })
    try {
      await wrongTypeLogThroughNoScript(c, uniqueClusterPrefix("wrongnoscript"), async () => {
        await Promise.all(c.nodes("master").map((node) => node.script("FLUSH")))
      })
    } finally {
      await c.quit()
    }
  })

  /** A store on `c` holding token "t" as `record`, its cache warm (the next read is the change log's one round trip). */
  const warmStore = async (c: Redis, name: string, timeout: number, record: { n: number }) => {
    const store = createRedisTokenStore({ client: c, keyPrefix: uniquePrefix(name), lock: "never", timeout })
    await store.mutate((v) => v.set("t", record))
    expect(await store.read((v) => v.get("t"))).toEqual(record)
    return store
  }

  it("many reads at once, failing every way, each end once (one latency sample each) and views keep their version", async () => {
    const c = new Redis(sharedRedis().url)
    try {
      const timeout = 400
      const store = await warmStore(c, "manyreads", timeout, { n: 0 })
      const thrown = new Error("fn's own")
      const lateViews: Array<[unknown, unknown]> = []
      const kinds = ["value", "throw", "reject", "never", "late", "thenThrows", "twice"] as const
      type Kind = (typeof kinds)[number]
      const fnOf =
        (kind: Kind) =>
        (v: { get(token: string): unknown }): unknown => {
          const seen = v.get("t")
          switch (kind) {
            case "value":
              return seen
            case "throw":
              throw thrown
            case "reject":
              return Promise.reject(thrown)
            case "never":
              return new Promise(() => {})
            case "late":
              // Resolves after the deadline: the read has already timed out.
              return new Promise((r) =>
                setTimeout(() => {
                  lateViews.push([seen, v.get("t")])
                  r(seen)
                }, timeout + 200)
              )
            case "thenThrows":
              return {
                then() {
                  throw thrown
                }
              }
            case "twice":
              return {
                then(ok: (x: unknown) => void, fail: (e: unknown) => void) {
                  ok(seen)
                  fail(thrown)
                  ok("again")
                }
              }
          }
        }
      const before = samples()
      const rounds = 6
      const outcomes: Array<{ kind: Kind; n: number; outcome: unknown }> = []
      const unhandled = await unhandledDuring(async () => {
        const reads: Array<Promise<void>> = []
        for (let round = 0; round < rounds; round++) {
          for (const kind of kinds) {
            reads.push(
              store.read(fnOf(kind)).then(
                (value) => void outcomes.push({ kind, n: round, outcome: { value } }),
                (error: unknown) => void outcomes.push({ kind, n: round, outcome: { error } })
              )
            )
          }
          await store.mutate((v) => v.set("t", { n: round + 1 }))
        }
        await Promise.all(reads)
      })
      expect(unhandled).toEqual([])
      expect(samples() - before).toBe(rounds * kinds.length)
      expect(outcomes).toHaveLength(rounds * kinds.length)
      for (const { kind, outcome } of outcomes) {
        const o = outcome as { value?: unknown; error?: unknown }
        if (kind === "value" || kind === "twice") expect(o.value).toMatchObject({ n: expect.any(Number) })
        else if (kind === "never" || kind === "late")
          expect(o.error).toMatchObject({ _tag: "OperationTimeout", operation: "vault read", timeoutMs: timeout })
        else expect(o.error).toBe(thrown)
      }
      // A read sees at least what this replica committed before it started.
      const values = outcomes.filter((o) => o.kind === "value")
      for (const { n, outcome } of values) {
        expect((outcome as { value: { n: number } }).value.n).toBeGreaterThanOrEqual(n)
      }
      // The cache still moves forward after the pins the failed and abandoned reads held.
      for (let i = 0; i < 3; i++) {
        await store.mutate((v) => v.set("t", { n: 100 + i }))
        expect(await store.read((v) => v.get("t"))).toEqual({ n: 100 + i })
      }
      // A view that outlives its read still sees its own version, though the cache moved on.
      await new Promise((r) => setTimeout(r, timeout + 300))
      expect(lateViews).toHaveLength(rounds)
      for (const [first, later] of lateViews) expect(later).toEqual(first)
    } finally {
      await c.quit()
    }
  })

  it("fn's thenable function (a thenable that is a function) is awaited within the deadline like any other", async () => {
    const c = new Redis(sharedRedis().url)
    try {
      const timeout = 300
      const store = await warmStore(c, "thenfn", timeout, { n: 1 })
      const settlesNever = Object.assign(() => {}, { then: () => {} })
      const settles = Object.assign(() => {}, { then: (ok: (x: unknown) => void) => ok("its value") })
      expect(await store.read(() => settles)).toBe("its value")
      const before = samples()
      const started = performance.now()
      const hung = new Promise((r) => setTimeout(() => r("still pending"), timeout + 2000))
      const outcome = await Promise.race([
        store
          .read(() => settlesNever)
          .then(
            () => "resolved",
            (e: unknown) => e
          ),
        hung
      ])
      expect(outcome).toMatchObject({ _tag: "OperationTimeout", operation: "vault read", timeoutMs: timeout })
      expect(performance.now() - started).toBeGreaterThanOrEqual(timeout)
      expect(samples() - before).toBe(1)
    } finally {
      await c.quit()
    }
  })
})
