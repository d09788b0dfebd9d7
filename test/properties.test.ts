/**
 * Properties of the fences under real concurrency on real Redis, with NO lock (every
 * replica is made with `lock: "never"`):
 * N replicas (each its own ioredis connection and its own store instance, Effect layer or
 * Promise facade) race with random start times and random delays inside `fn`. Whatever
 * the interleaving, the audit chain verifies with every event exactly once (no fork, no
 * lost and no doubled record) and the vault loses no update. Also: two writers that both
 * believe they hold the lock, replicas whose cache is far behind, and a mixed fleet where
 * a haechi-store-redis writer (its own Lua, which bumps `version` without our change log)
 * commits between ours.
 *
 * Retries: every conflict means another writer committed, and no run commits more than
 * 63 times in all, so the default schedule (64 attempts) can never run out here.
 */
import { Effect, Metric } from "effect"
import fc from "fast-check"
import type { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { buildNextRecord, type AuditIntegrity } from "../src/Chain.js"
import type { HaechiTokenStore, MutableView } from "../src/haechi.js"
import * as Metrics from "../src/Metrics.js"
import {
  closeAll,
  connect,
  redisAuditReplica,
  redisVaultReplica,
  sleep,
  type AuditStoreUnderTest,
  type ReplicaStyle
} from "./support/conformanceStores.js"
import { createAuditSink, createTokenVault, verifyAuditChain, type TokenStore } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"

afterAll(closeAll)

// ---------------------------------------------------------------------------
// haechi-store-redis's writers, from /tmp/ref/package/{audit,token-vault}.mjs (1.5.x):
// their Lua text verbatim, driven the way that package drives it (no lock here).
// ---------------------------------------------------------------------------

const REF_APPEND_SCRIPT =
  "local cur = redis.call('GET', KEYS[1]); " +
  "if (cur == false and ARGV[1] == '') or cur == ARGV[1] then " +
  "redis.call('RPUSH', KEYS[2], ARGV[2]); " +
  "redis.call('SET', KEYS[3], ARGV[3]); " +
  "redis.call('SET', KEYS[1], ARGV[4]); " +
  "return 1 else return 0 end"

const REF_APPLY_SCRIPT =
  "local cur = redis.call('GET', KEYS[1]); " +
  "if (cur == false and ARGV[1] == '') or cur == ARGV[1] then " +
  "local sets = cjson.decode(ARGV[2]); " +
  "for _,p in ipairs(sets) do redis.call('HSET', KEYS[2], p[1], p[2]) end; " +
  "local dels = cjson.decode(ARGV[3]); " +
  "for _,f in ipairs(dels) do redis.call('HDEL', KEYS[2], f) end; " +
  "local nv = 1; if cur ~= false then nv = tonumber(cur) + 1 end; " +
  "redis.call('SET', KEYS[1], tostring(nv)); " +
  "return 1 else return 0 end"

/** The reference's audit transaction around the core's record building. */
const refRecord = async (client: Redis, prefix: string, event: object, delay = 0) => {
  for (let attempt = 0; attempt < 64; attempt++) {
    const head = await client.get(`${prefix}head`)
    const previous = head ? (JSON.parse(head) as AuditIntegrity) : null
    if (delay > 0) await sleep(delay)
    const record = buildNextRecord(event, previous)
    const committed = await client.eval(
      REF_APPEND_SCRIPT,
      3,
      `${prefix}head:hash`,
      `${prefix}chain`,
      `${prefix}head`,
      record.auditIntegrity.previousHash ?? "",
      JSON.stringify(record),
      JSON.stringify(record.auditIntegrity),
      record.auditIntegrity.eventHash
    )
    if (Number(committed) === 1) return record
  }
  throw new Error("reference audit append gave up")
}

/** The reference's token mutate: HGETALL snapshot, a plain-object view, one fenced eval. */
const refMutate = async <A>(
  client: Redis,
  prefix: string,
  fn: (view: {
    get(t: string): any
    set(t: string, r: unknown): void
    delete(t: string): void
    entries(): Array<[string, any]>
  }) => Promise<A>
): Promise<A> => {
  for (let attempt = 0; attempt < 64; attempt++) {
    const expected = await client.get(`${prefix}version`)
    const all = await client.hgetall(`${prefix}tokens`)
    const tokens: Record<string, unknown> = {}
    for (const [t, json] of Object.entries(all)) tokens[t] = JSON.parse(json)
    const dirty = new Set<string>()
    const deleted = new Set<string>()
    const result = await fn({
      get: (t) => tokens[t],
      set: (t, r) => {
        tokens[t] = r
        dirty.add(t)
        deleted.delete(t)
      },
      delete: (t) => {
        delete tokens[t]
        deleted.add(t)
        dirty.delete(t)
      },
      entries: () => Object.entries(tokens)
    })
    const committed = await client.eval(
      REF_APPLY_SCRIPT,
      2,
      `${prefix}version`,
      `${prefix}tokens`,
      expected ?? "",
      JSON.stringify([...dirty].map((t) => [t, JSON.stringify(tokens[t])])),
      JSON.stringify([...deleted])
    )
    if (Number(committed) === 1) return result
  }
  throw new Error("reference token mutate gave up")
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Connections opened by one property run, quit at its end. */
const session = () => {
  const clients: Array<Redis> = []
  return {
    client: () => {
      const c = connect()
      clients.push(c)
      return c
    },
    close: () => Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())))
  }
}

/** Fences only: these properties must hold with no lock at all. */
const noLock = { lock: "never" } as const

const styleOf = (i: number): ReplicaStyle => (i % 2 === 0 ? "layer" : "facade")

/** The store with a delay inside `fn` between readLastIntegrity and persist; counts attempts. */
const delayedAudit = (
  store: AuditStoreUnderTest,
  delay: () => number,
  attempts: { n: number }
): AuditStoreUnderTest => ({
  transaction: (fn) =>
    store.transaction(({ readLastIntegrity, persist }) => {
      attempts.n++
      return fn({
        readLastIntegrity: async () => {
          const head = await readLastIntegrity()
          const ms = delay()
          if (ms > 0) await sleep(ms)
          return head
        },
        persist
      })
    }),
  ready: store.ready
})

/** The store with a delay inside `fn` after it ran, before its diff is persisted. */
const delayedVault = (store: HaechiTokenStore, delay: () => number): TokenStore => ({
  mutate: (fn) =>
    store.mutate(async (view) => {
      const result = await fn(view)
      const ms = delay()
      if (ms > 0) await sleep(ms)
      return result
    }),
  read: (fn) => store.read(fn)
})

const cycle = (values: ReadonlyArray<number>) => {
  let i = 0
  return () => values[i++ % values.length] ?? 0
}

/** get, edit, set: the core's in-place pattern on a shared counter record. */
const increment = (view: MutableView | { get(t: string): any; set(t: string, r: any): void }) => {
  const counter = (view.get("counter") as { n: number; by: Array<string> } | undefined) ?? { n: 0, by: [] }
  counter.n += 1
  return counter
}

const tokenRecord = (token: string) => ({
  type: "email",
  createdAt: "2030-01-01T00:00:00.000Z",
  expiresAt: null,
  metadata: { fingerprint: token },
  envelope: { alg: "test", iv: "iv", ciphertext: Buffer.from(token).toString("base64url") },
  aad: { purpose: "token-vault", token, type: "email", context: {} }
})

const reloads = (prefix: string) =>
  Effect.runSync(Metric.value(Metrics.vaultReloads.pipe(Metric.tagged("prefix", prefix)))).count
/** An honest reference write may cause a reload, never a counted rewind. */
const rewinds = (prefix: string) =>
  Effect.runSync(Metric.value(Metrics.vaultRewinds.pipe(Metric.tagged("prefix", prefix)))).count

const readChain = async (client: Redis, prefix: string) =>
  (await client.lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as Record<string, unknown>)

/** Every id once, each writer's ids in its own order. */
const expectEachOnceInOrder = (ids: ReadonlyArray<string>, perWriter: ReadonlyArray<ReadonlyArray<string>>) => {
  expect(new Set(ids).size).toBe(ids.length)
  expect([...ids].sort()).toEqual(perWriter.flat().sort())
  for (const mine of perWriter) expect(ids.filter((id) => mine.includes(id))).toEqual(mine)
}

const delays = fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 6 })

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

describe("audit chain under racing replicas, no lock", () => {
  it("always verifies: no fork, no lost and no doubled record", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ events: fc.integer({ min: 1, max: 5 }), start: fc.integer({ min: 0, max: 5 }), delays }), {
          minLength: 2,
          maxLength: 8
        }),
        async (writers) => {
          const prefix = uniquePrefix("prop-audit")
          const s = session()
          try {
            const attempts = { n: 0 }
            const sinks = await Promise.all(
              writers.map(async (w, i) =>
                createAuditSink({
                  store: delayedAudit(
                    await redisAuditReplica(styleOf(i), s.client(), prefix, noLock),
                    cycle(w.delays),
                    attempts
                  )
                })
              )
            )
            const perWriter = writers.map((w, i) => Array.from({ length: w.events }, (_, k) => `w${i}-e${k}`))
            const written = await Promise.all(
              writers.map(async (w, i) => {
                await sleep(w.start)
                // The core queues its own records; fire them all at once as the gateway would.
                return Promise.all(perWriter[i]!.map((id) => sinks[i]!.record({ type: "event", id })))
              })
            )
            const records = await readChain(s.client(), prefix)
            const total = writers.reduce((n, w) => n + w.events, 0)
            expect(verifyAuditChain(records)).toMatchObject({ valid: true, records: total })
            expect(written.flat()).toHaveLength(total)
            expectEachOnceInOrder(
              records.map((r) => r["id"] as string),
              perWriter
            )
            // What each record() resolved with is what the chain holds at its sequence.
            for (const record of written.flat()) {
              expect(records[record.auditIntegrity.sequence - 1]).toEqual(JSON.parse(JSON.stringify(record)))
            }
            expect(attempts.n).toBeGreaterThanOrEqual(total)
          } finally {
            await s.close()
          }
        }
      ),
      { numRuns: 12 }
    )
  })
})

describe("token vault under racing replicas, no lock", () => {
  it("never loses an update: own tokens, tokenize and a shared counter via get / edit / set", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            ops: fc.array(fc.constantFrom("add", "inc", "tokenize"), { minLength: 1, maxLength: 5 }),
            start: fc.integer({ min: 0, max: 5 }),
            delays,
            // The core queues its own mutations; a second driver on the same replica does not.
            concurrent: fc.boolean()
          }),
          { minLength: 2, maxLength: 8 }
        ),
        async (writers) => {
          const prefix = uniquePrefix("prop-vault")
          const s = session()
          try {
            const stores = await Promise.all(
              writers.map(async (w, i) =>
                delayedVault(await redisVaultReplica(styleOf(i), s.client(), prefix, noLock), cycle(w.delays))
              )
            )
            const now = () => Date.parse("2030-01-01T00:00:00Z")
            const results = await Promise.all(
              writers.map(async (w, i) => {
                await sleep(w.start)
                const store = stores[i]!
                const vault = createTokenVault({ store, now })
                const run = (op: string, k: number) =>
                  op === "add"
                    ? store.mutate(async (view) => view.set(`w${i}-t${k}`, tokenRecord(`w${i}-t${k}`)))
                    : op === "inc"
                      ? store.mutate(async (view) => view.set("counter", increment(view)))
                      : vault.tokenize(`w${i}-v${k}@example.com`, { type: "email" })
                if (w.concurrent) return Promise.all(w.ops.map(run))
                const out = []
                for (const [k, op] of w.ops.entries()) out.push(await run(op, k))
                return out
              })
            )
            const inspect = s.client()
            const increments = writers.reduce((n, w) => n + w.ops.filter((op) => op === "inc").length, 0)
            const adds = writers.flatMap((w, i) => w.ops.flatMap((op, k) => (op === "add" ? [`w${i}-t${k}`] : [])))
            const tokenized = results
              .flat()
              .filter((r): r is { token: string; type: string; reused: boolean } => typeof r === "object" && r !== null)
            const all = await inspect.hgetall(`${prefix}tokens`)
            const counter = all["counter"] === undefined ? 0 : (JSON.parse(all["counter"]) as { n: number }).n
            expect(counter).toBe(increments)
            for (const t of adds) expect(JSON.parse(all[t]!)).toEqual(tokenRecord(t))
            expect(tokenized.every((t) => !t.reused)).toBe(true)
            for (const t of tokenized) expect(all[t.token]).toBeDefined()
            expect(Object.keys(all)).toHaveLength(adds.length + tokenized.length + (increments > 0 ? 1 : 0))
            // Exactly one version step per committed mutation: none lost, none applied twice.
            const ops = writers.reduce((n, w) => n + w.ops.length, 0)
            expect(await inspect.get(`${prefix}version`)).toBe(String(ops))
            expect(rewinds(prefix)).toBe(0)
            // A fresh replica sees exactly the same vault.
            const fresh = await redisVaultReplica("layer", s.client(), prefix, noLock)
            expect(await fresh.read((view) => view.entries().length)).toBe(Object.keys(all).length)
            // And each tokenized value reveals through any racing replica.
            const reader = createTokenVault({ store: stores[0]!, now })
            for (const t of tokenized) await expect(reader.reveal(t.token)).resolves.toMatchObject({ token: t.token })
          } finally {
            await s.close()
          }
        }
      ),
      { numRuns: 12 }
    )
  })
})

describe("two writers that both believe they hold the lock (a lapsed TTL)", () => {
  /** Both fns read before either writes: the first attempt of each waits for the other. */
  const barrier = (parties: number) => {
    let arrived = 0
    let open!: () => void
    const opened = new Promise<void>((resolve) => (open = resolve))
    return () => {
      arrived++
      if (arrived === parties) open()
      return opened
    }
  }

  it.each(["layer", "facade"] as const)("cannot fork the chain (%s)", async (style) => {
    const prefix = uniquePrefix("lapsed-audit")
    const s = session()
    try {
      const stores = await Promise.all([0, 1].map(() => redisAuditReplica(style, s.client(), prefix, noLock)))
      await createAuditSink({ store: stores[0]! }).record({ id: "before" })
      const arrive = barrier(2)
      const heads: Array<number | undefined> = []
      const write = (store: AuditStoreUnderTest, id: string) => {
        let first = true
        return store.transaction(async ({ readLastIntegrity, persist }) => {
          const previous = await readLastIntegrity()
          heads.push(previous?.sequence)
          if (first) {
            first = false
            await arrive()
          }
          const record = buildNextRecord({ id }, previous)
          await persist(record)
          return record
        })
      }
      const [a, b] = await Promise.all([write(stores[0]!, "a"), write(stores[1]!, "b")])
      // Both built on sequence 1; one was fenced off and rebuilt on the other's record.
      expect(heads.slice(0, 2)).toEqual([1, 1])
      expect(heads).toHaveLength(3)
      expect([a.auditIntegrity.sequence, b.auditIntegrity.sequence].sort()).toEqual([2, 3])
      const records = await readChain(s.client(), prefix)
      expect(verifyAuditChain(records)).toMatchObject({ valid: true, records: 3 })
      expect(records.map((r) => r["id"]).sort()).toEqual(["a", "b", "before"])
    } finally {
      await s.close()
    }
  })

  it.each(["layer", "facade"] as const)("cannot lose a vault update (%s)", async (style) => {
    const prefix = uniquePrefix("lapsed-vault")
    const s = session()
    try {
      const stores = await Promise.all([0, 1].map(() => redisVaultReplica(style, s.client(), prefix, noLock)))
      const arrive = barrier(2)
      const seen: Array<number> = []
      const bump = (store: HaechiTokenStore, mine: string) => {
        let first = true
        return store.mutate(async (view) => {
          const counter = increment(view)
          seen.push(counter.n)
          view.set(mine, tokenRecord(mine))
          if (first) {
            first = false
            await arrive()
          }
          view.set("counter", counter)
        })
      }
      await Promise.all([bump(stores[0]!, "a"), bump(stores[1]!, "b")])
      expect(seen).toEqual([1, 1, 2])
      const all = await s.client().hgetall(`${prefix}tokens`)
      expect(JSON.parse(all["counter"]!)).toMatchObject({ n: 2 })
      expect(Object.keys(all).sort()).toEqual(["a", "b", "counter"])
      expect(await s.client().get(`${prefix}version`)).toBe("2")
    } finally {
      await s.close()
    }
  })
})

describe("replicas with a stale cache", () => {
  it("an audit replica that cached a head many commits ago still appends on the true head", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom<ReplicaStyle>("layer", "facade"),
        async (others, style) => {
          const prefix = uniquePrefix("stale-audit")
          const s = session()
          try {
            const attempts = { n: 0 }
            const stale = createAuditSink({
              store: delayedAudit(await redisAuditReplica(style, s.client(), prefix, noLock), () => 0, attempts)
            })
            const busy = createAuditSink({ store: await redisAuditReplica("layer", s.client(), prefix, noLock) })
            await stale.record({ id: "stale-1" })
            for (let i = 0; i < others; i++) await busy.record({ id: `busy-${i}` })
            const record = await stale.record({ id: "stale-2" })
            expect(record.auditIntegrity.sequence).toBe(others + 2)
            const records = await readChain(s.client(), prefix)
            expect(verifyAuditChain(records)).toMatchObject({ valid: true, records: others + 2 })
            // One rejected append on the stale head, one on the true head.
            expect(attempts.n).toBe(3)
          } finally {
            await s.close()
          }
        }
      ),
      { numRuns: 8 }
    )
  })

  it("a vault replica that cached a version many commits ago sees every one of them", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 60 }),
        fc.constantFrom<ReplicaStyle>("layer", "facade"),
        fc.boolean(),
        async (others, style, readFirst) => {
          const prefix = uniquePrefix("stale-vault")
          const s = session()
          try {
            const stale = await redisVaultReplica(style, s.client(), prefix, noLock)
            const busy = await redisVaultReplica("layer", s.client(), prefix, noLock)
            await stale.mutate(async (view) => view.set("counter", increment(view)))
            for (let i = 0; i < others; i++) {
              await busy.mutate(async (view) => {
                view.set("counter", increment(view))
                view.set(`busy-${i}`, tokenRecord(`busy-${i}`))
                if (i > 0 && i % 3 === 0) view.delete(`busy-${i - 1}`)
              })
            }
            const expected = await busy.read((view) =>
              view
                .entries()
                .map(([t]) => t)
                .sort()
            )
            if (readFirst)
              expect(
                await stale.read((view) =>
                  view
                    .entries()
                    .map(([t]) => t)
                    .sort()
                )
              ).toEqual(expected)
            // fn may first run on the stale snapshot (its diff is then fenced off and fn
            // re-runs); the run that commits must have seen every commit.
            let last: Array<string> = []
            await stale.mutate(async (view) => {
              last = view
                .entries()
                .map(([t]) => t)
                .sort()
              view.set("counter", increment(view))
            })
            expect(last).toEqual(expected)
            const counter = JSON.parse((await s.client().hget(`${prefix}tokens`, "counter"))!) as { n: number }
            expect(counter.n).toBe(others + 2)
          } finally {
            await s.close()
          }
        }
      ),
      { numRuns: 8 }
    )
  })

  it("a vault replica further behind than the change log replays reloads and loses nothing", async () => {
    const prefix = uniquePrefix("stale-log")
    const s = session()
    try {
      const stale = await redisVaultReplica("facade", s.client(), prefix, noLock)
      const busy = await redisVaultReplica("layer", s.client(), prefix, noLock)
      await stale.mutate(async (view) => view.set("counter", increment(view)))
      const commits = 1_050
      for (let i = 0; i < commits; i++) await busy.mutate(async (view) => view.set("counter", increment(view)))
      // The log keeps them all (younger than COMMIT_IDS_KEPT_SECONDS), but replays at most LOG_BOUND.
      expect(await s.client().llen(`${prefix}log`)).toBe(commits + 1)
      const before = reloads(prefix)
      await stale.mutate(async (view) => view.set("counter", increment(view)))
      expect(reloads(prefix)).toBeGreaterThan(before)
      expect(JSON.parse((await s.client().hget(`${prefix}tokens`, "counter"))!)).toMatchObject({ n: commits + 2 })
    } finally {
      await s.close()
    }
  }, 60_000)
})

describe("a mixed fleet: haechi-store-redis writers between ours", () => {
  it("ours notices a version bumped without our change log and loses nothing", async () => {
    const prefix = uniquePrefix("mixed-vault")
    const s = session()
    try {
      const refClient = s.client()
      const a = await redisVaultReplica("layer", s.client(), prefix, noLock)
      const b = await redisVaultReplica("facade", s.client(), prefix, noLock)
      await a.mutate(async (view) => view.set("counter", increment(view)))
      await b.read((view) => view.entries())
      // The reference writer: version 1 -> 2, no log entry.
      await refMutate(refClient, prefix, async (view) => {
        view.set("counter", increment(view))
        view.set("ref-token", tokenRecord("ref-token"))
      })
      expect(await s.client().get(`${prefix}version`)).toBe("2")
      expect(await s.client().llen(`${prefix}log`)).toBe(1)
      // One of ours commits version 3 with a log entry: the log now reads 1, 3.
      await b.mutate(async (view) => view.set("counter", increment(view)))
      expect(await s.client().llen(`${prefix}log`)).toBe(2)
      // The other, cached at version 1, must not trust the log across the gap.
      const before = reloads(prefix)
      expect(await a.read((view) => view.get("ref-token"))).toEqual(tokenRecord("ref-token"))
      expect(reloads(prefix)).toBeGreaterThan(before)
      await a.mutate(async (view) => view.set("counter", increment(view)))
      expect(JSON.parse((await s.client().hget(`${prefix}tokens`, "counter"))!)).toMatchObject({ n: 4 })

      // And the reference writer reads what ours wrote.
      await refMutate(refClient, prefix, async (view) => view.set("counter", increment(view)))
      await b.mutate(async (view) => view.set("counter", increment(view)))
      expect(await a.read((view) => view.get("counter"))).toMatchObject({ n: 6 })
      expect(rewinds(prefix)).toBe(0)
    } finally {
      await s.close()
    }
  })

  it("random interleavings of ours and the reference's writers keep the chain and the vault whole", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .array(
            fc.record({
              kind: fc.constantFrom<"layer" | "facade" | "ref">("layer", "facade", "ref"),
              ops: fc.integer({ min: 1, max: 4 }),
              start: fc.integer({ min: 0, max: 4 }),
              delays
            }),
            { minLength: 3, maxLength: 6 }
          )
          .filter((ws) => ws.some((w) => w.kind === "ref") && ws.filter((w) => w.kind !== "ref").length >= 2),
        async (writers) => {
          const auditPrefix = uniquePrefix("mixed-audit")
          const vaultPrefix = uniquePrefix("mixed-vault")
          const s = session()
          try {
            const perWriter = writers.map((w, i) => Array.from({ length: w.ops }, (_, k) => `w${i}-${w.kind}-${k}`))
            await Promise.all(
              writers.map(async (w, i) => {
                const client = s.client()
                const delay = cycle(w.delays)
                const ids = perWriter[i]!
                if (w.kind === "ref") {
                  await sleep(w.start)
                  for (const id of ids) {
                    await refRecord(client, auditPrefix, { id }, delay())
                    await refMutate(client, vaultPrefix, async (view) => {
                      const counter = increment(view)
                      await sleep(delay())
                      view.set("counter", counter)
                      view.set(id, tokenRecord(id))
                    })
                  }
                  return
                }
                const sink = createAuditSink({
                  store: delayedAudit(await redisAuditReplica(w.kind, client, auditPrefix, noLock), delay, { n: 0 })
                })
                const vault = delayedVault(await redisVaultReplica(w.kind, client, vaultPrefix, noLock), delay)
                // Warm the cache first, so it is stale by the time the reference commits.
                await vault.read((view) => view.entries())
                await sleep(w.start)
                for (const id of ids) {
                  await sink.record({ id })
                  await vault.mutate(async (view) => {
                    view.set("counter", increment(view))
                    view.set(id, tokenRecord(id))
                  })
                }
              })
            )
            const inspect = s.client()
            const total = writers.reduce((n, w) => n + w.ops, 0)
            const records = await readChain(inspect, auditPrefix)
            expect(verifyAuditChain(records)).toMatchObject({ valid: true, records: total })
            expectEachOnceInOrder(
              records.map((r) => r["id"] as string),
              perWriter
            )
            const all = await inspect.hgetall(`${vaultPrefix}tokens`)
            expect(JSON.parse(all["counter"]!)).toMatchObject({ n: total })
            expect(Object.keys(all).sort()).toEqual([...perWriter.flat(), "counter"].sort())
            expect(await inspect.get(`${vaultPrefix}version`)).toBe(String(total))
            expect(rewinds(vaultPrefix)).toBe(0)
          } finally {
            await s.close()
          }
        }
      ),
      { numRuns: 10 }
    )
  })
})
