/**
 * The facade's fast lane under faults, against real Redis: deadlines that pass at every
 * step of a lane attempt and of its continuation, lost replies, frozen links, callers
 * that misuse `persist`, rival replicas, a held lock, a rewound chain. Each scenario is
 * run on the lane and on the Effect path (the same facade on a runtime with a tracer
 * installed) and the two must agree: the same outcome, error, builds, counts and chain.
 */
import { describe, expect, it } from "@effect/vitest"
import { afterAll } from "vitest"
import { Effect, Metric, Runtime } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type HaechiAuditStore, type Integrity } from "../src/haechi.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { recordingTracer } from "./support/recordingTracer.js"
import { tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

const clients: Array<Redis> = []
const proxies: Array<TcpProxy> = []
const connect = (port = sharedRedis().port, options: RedisOptions = {}) => {
  const client = new Redis(port, "127.0.0.1", options)
  client.on("error", () => {})
  clients.push(client)
  return client
}
const proxied = async (options: RedisOptions = {}) => {
  const proxy = await tcpProxy(sharedRedis().port)
  proxies.push(proxy)
  const client = connect(proxy.port, options)
  await client.ping()
  return { proxy, client }
}
afterAll(async () => {
  for (const c of clients) c.disconnect()
  await Promise.all(proxies.map((p) => p.stop()))
})

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const tags = { store: "audit", operation: "transaction" } as const
const metrics = {
  conflicts: withTags(Metrics.keys.fenceConflicts, tags),
  retries: withTags(Metrics.keys.retries, tags),
  exhausted: withTags(Metrics.keys.retriesExhausted, tags),
  resolved: Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "audit"))
}
const latencySamples = () => Effect.runSync(Metric.value(withTags(Metrics.keys.operationLatency, tags))).count
/** The counters' and the latency histogram's growth since `counters()` was called. */
const counters = () => {
  const read = () => ({
    conflicts: count(metrics.conflicts),
    retries: count(metrics.retries),
    exhausted: count(metrics.exhausted),
    resolved: count(metrics.resolved),
    samples: latencySamples()
  })
  const before = read()
  return () => {
    const now = read()
    return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - before[k as keyof typeof before]]))
  }
}

type Path = "lane" | "effect"
const PATHS: ReadonlyArray<Path> = ["lane", "effect"]

/** A runtime whose tracer records spans: the facade then takes the Effect path. */
const runtimeFor = (path: Path): Runtime.Runtime<never> => {
  if (path === "lane") return Runtime.defaultRuntime
  const { tracer } = recordingTracer()
  return Effect.runSync(Effect.withTracer(Effect.runtime<never>(), tracer))
}

const append = (store: HaechiAuditStore, event: object) =>
  store.transaction(async ({ readLastIntegrity, persist }) => {
    const record = buildNextRecord(event, (await readLastIntegrity()) as Integrity | null)
    await persist(record)
    return record
  })

const chainOf = async (client: Redis, prefix: string) =>
  (await client.lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as Record<string, unknown>)

/** The chain's events (the records' own fields, without their integrity). */
const eventsOf = async (client: Redis, prefix: string) => {
  const chain = await chainOf(client, prefix)
  expect(verifyAuditChain(chain).valid).toBe(true)
  return chain.map(({ auditIntegrity: _, ...event }) => event)
}

/** How a promise settled: its value, or the error's tag and the fields that say what it was. */
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; operation?: string; attempts?: number; cause?: { _tag?: string } }
    return {
      error: e?._tag ?? String(error),
      ...(e?.operation === undefined ? {} : { operation: e.operation }),
      ...(e?.attempts === undefined ? {} : { attempts: e.attempts }),
      ...(e?.cause?._tag === undefined ? {} : { cause: e.cause._tag })
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Runs `scenario` on both paths and expects the same result from each; returns the lane's. */
const samePaths = async <A>(scenario: (path: Path, runtime: Runtime.Runtime<never>) => Promise<A>): Promise<A> => {
  const results: Array<A> = []
  for (const path of PATHS) results.push(await scenario(path, runtimeFor(path)))
  expect(results[0]).toEqual(results[1])
  return results[0]!
}

describe("the lane's deadline", () => {
  for (const lock of ["never", "adaptive"] as const) {
    it(`lock "${lock}": a FenceConflict the lane's attempt meets, rethrown after the deadline, is counted and ends as on the Effect path`, async () => {
      const lane = await samePaths(async (path, runtime) => {
        const client = connect()
        const prefix = uniquePrefix(`lane-late-conflict-${lock}-${path}`)
        const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
        const store = createRedisAuditStore({ ...options, lock, timeout: 1000 })
        const rival = createRedisAuditStore({ ...options, lock: "never" })
        await append(store, { warm: true })
        const counted = counters()
        let builds = 0
        const persisted: Array<string> = []
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            builds += 1
            const head = (await readLastIntegrity()) as Integrity | null
            if (builds === 1) await append(rival, { rival: true })
            try {
              await persist(buildNextRecord({ ours: builds }, head))
              persisted.push("committed")
            } catch (error) {
              persisted.push((error as { _tag?: string })._tag ?? "error")
              if (builds === 1) await sleep(1300)
              throw error
            }
          })
        )
        return { outcome, builds, persisted, counts: counted(), events: await eventsOf(client, prefix) }
      })
      expect(lane.persisted[0]).toBe("FenceConflict")
      expect(lane.outcome).toEqual({ error: "OperationTimeout", operation: "audit transaction" })
      expect(lane.counts).toMatchObject({ conflicts: 1, samples: 2 })
    })
  }
})

describe("the lane's persist on a faulty link", () => {
  // "failFast": the unanswered append fails when the connection drops (the store looks it
  // up by commit id); "resend": ioredis re-sends it and the script answers "already committed".
  for (const kind of ["failFast", "resend"] as const) {
    it(`${kind}: a lost reply (the connection cut after the append ran) is resolved: committed once, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied(
          kind === "failFast" ? { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false } : {}
        )
        const prefix = uniquePrefix(`lane-lost-reply-${kind}-${path}`)
        const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", runtime, lock: "never" })
        await append(store, { warm: true })
        const counted = counters()
        let builds = 0
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            builds += 1
            const head = (await readLastIntegrity()) as Integrity | null
            proxy.cutAfterNextRequest()
            await persist(buildNextRecord({ ours: builds }, head))
            return "done"
          })
        )
        // The store goes on: its next record builds on the one whose reply was lost.
        await append(store, { next: true })
        return { outcome, builds, counts: counted(), events: await eventsOf(direct, prefix) }
      })
      expect(lane.outcome).toEqual({ value: "done" })
      expect(lane.counts).toMatchObject({ resolved: kind === "failFast" ? 1 : 0, conflicts: 0, retries: 0, samples: 2 })
      expect(lane.events).toEqual([{ warm: true }, { ours: 1 }, { next: true }])
    })
  }

  for (const passRequest of [true, false]) {
    it(`a link frozen while the lane's append is in flight (${passRequest ? "it ran" : "it is held"}): CommitOutcomeUnknown at the deadline, the record lands once, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`lane-frozen-persist-${passRequest}-${path}`)
        const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
        const store = createRedisAuditStore({ ...options, timeout: 400 })
        await append(store, { warm: true })
        const counted = counters()
        const frozen = proxy.freezeWhen("evalsha", { passRequest })
        let persistFailed: unknown
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            const head = (await readLastIntegrity()) as Integrity | null
            try {
              await persist(buildNextRecord({ ours: true }, head))
            } catch (error) {
              persistFailed = (error as { _tag?: string })._tag
              throw error
            }
          })
        )
        await frozen
        proxy.thaw()
        await client.ping() // the held request (if any) has run by now: same connection, in order
        const counts = counted()
        await append(store, { next: true })
        return { outcome, persistFailed, counts, events: await eventsOf(direct, prefix) }
      })
      expect(lane.outcome).toEqual({ error: "CommitOutcomeUnknown", cause: "OperationTimeout" })
      expect(lane.counts).toMatchObject({ conflicts: 0, retries: 0, samples: 1 })
      expect(lane.events).toEqual([{ warm: true }, { ours: true }, { next: true }])
    })
  }

  it("a link frozen while a cold head is read: OperationTimeout, nothing written, as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`lane-frozen-read-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime, timeout: 400 } as const
      await append(createRedisAuditStore(options), { warm: true })
      const cold = createRedisAuditStore(options) // another replica: no head cached
      const counted = counters()
      proxy.freeze()
      let persisted = false
      const outcome = await settled(
        cold.transaction(async ({ readLastIntegrity, persist }) => {
          const head = (await readLastIntegrity()) as Integrity | null
          persisted = true
          await persist(buildNextRecord({ ours: true }, head))
        })
      )
      const counts = counted()
      proxy.thaw()
      await append(cold, { next: true })
      return { outcome, persisted, counts, events: await eventsOf(direct, prefix) }
    })
    expect(lane.outcome).toEqual({ error: "OperationTimeout", operation: "audit transaction" })
    expect(lane.persisted).toBe(false)
    expect(lane.counts).toMatchObject({ conflicts: 0, samples: 1 })
    expect(lane.events).toEqual([{ warm: true }, { next: true }])
  })

  for (const lock of ["never", "adaptive"] as const) {
    it(`lock "${lock}": the deadline passes in the continuation (the lane's attempt lost, the retry's append frozen): CommitOutcomeUnknown, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`lane-frozen-retry-${lock}-${path}`)
        const store = createRedisAuditStore({
          client,
          keyPrefix: prefix,
          startupChecks: "off",
          runtime,
          lock,
          timeout: 600
        })
        const rival = createRedisAuditStore({ client: direct, keyPrefix: prefix, startupChecks: "off", lock: "never" })
        await append(store, { warm: true })
        const counted = counters()
        let builds = 0
        let frozen: Promise<void> | undefined
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            builds += 1
            const head = (await readLastIntegrity()) as Integrity | null
            if (builds === 1) await append(rival, { rival: true })
            else frozen ??= proxy.freezeWhen("evalsha", { passRequest: true })
            await persist(buildNextRecord({ ours: builds }, head))
          })
        )
        await frozen
        proxy.thaw()
        await client.ping()
        const counts = counted()
        return { outcome, builds, counts, events: await eventsOf(direct, prefix) }
      })
      expect(lane.builds).toBe(2)
      expect(lane.outcome).toEqual({ error: "CommitOutcomeUnknown", cause: "OperationTimeout" })
      expect(lane.counts).toMatchObject({ conflicts: 1, retries: 1, samples: 2 })
      expect(lane.events).toEqual([{ warm: true }, { rival: true }, { ours: 2 }])
    })
  }
})
