/**
 * The Promise facade's fast lane (internal/facade/auditTransaction): an uncontended
 * transaction on a runtime that traces nothing runs its first attempt with no fiber,
 * and goes on in the store's own transaction when that attempt loses. Against real
 * Redis, these show that the lane is taken, and that every outcome means what it means
 * on the Effect path: the same builds, conflict and retry counts, errors and chain as
 * the same facade made to take the Effect path (a runtime with a tracer installed).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, Runtime, Schedule } from "effect"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, createRedisTokenStore, type Integrity } from "../src/haechi.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { appendStoreOnBacking } from "../src/internal/audit/store.js"
import { callerTransactions } from "../src/internal/facade/auditTransaction.js"
import { guardFor, type LockPolicy } from "../src/internal/lock/policy.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import { fromClient } from "../src/RedisClient.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { append, chainOf, latencySamples, losingRaces, tracedRuntime } from "./support/facadePaths.js"
import { sharedConnections } from "./support/shared.js"

const connect = sharedConnections()

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const tags = { store: "audit", operation: "transaction" } as const
const counters = () => {
  const metrics = {
    conflicts: withTags(Metrics.keys.fenceConflicts, tags),
    retries: withTags(Metrics.keys.retries, tags),
    exhausted: withTags(Metrics.keys.retriesExhausted, tags)
  }
  const before = {
    conflicts: count(metrics.conflicts),
    retries: count(metrics.retries),
    exhausted: count(metrics.exhausted)
  }
  return () => ({
    conflicts: count(metrics.conflicts) - before.conflicts,
    retries: count(metrics.retries) - before.retries,
    exhausted: count(metrics.exhausted) - before.exhausted
  })
}
const rejectionOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error
  )

describe("the facade's fast lane", () => {
  it("an uncontended transaction never enters the store's Effect transaction; one latency sample each; the chain verifies", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-taken")
    const redis = fromClient(client)
    for (const policy of ["never", "adaptive"] as const) {
      const { lane, store } = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
        guard: guardFor(policy, redis, `${prefix}lock`)
      })
      expect(lane).toBeDefined()
      let entered = 0
      const transaction = callerTransactions(
        {
          transaction: (build) => {
            entered += 1
            return store.transaction(build)
          }
        },
        lane
      )
      const samples = latencySamples()
      for (let i = 0; i < 20; i++) {
        await transaction(async ({ readLastIntegrity, persist }) => {
          await persist(buildNextRecord({ policy, i }, (await readLastIntegrity()) as Integrity | null))
        })
      }
      expect(entered).toBe(0)
      expect(latencySamples() - samples).toBe(20)
    }
    const chain = await chainOf(client, prefix)
    expect(chain).toHaveLength(40)
    expect(verifyAuditChain(chain).valid).toBe(true)
  })

  it('"always" has no lane, nor does a durable store; a traced runtime takes the Effect path and records its span', async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-none")
    const redis = fromClient(client)
    const always = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
      guard: guardFor("always", redis, `${prefix}lock`)
    })
    expect(always.lane).toBeUndefined()
    const durable = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
      afterCommit: Effect.void.pipe(Effect.asVoid)
    })
    expect(durable.lane).toBeUndefined()
    const { runtime, spans } = tracedRuntime()
    const traced = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", runtime })
    await append(traced, { traced: true })
    expect(spans.filter((s) => s.name === "haechi.audit.transaction")).toHaveLength(1)
  })

  for (const policy of ["never", "adaptive", "always"] as const satisfies ReadonlyArray<LockPolicy>) {
    for (const [recurs, losses] of [
      [0, 3],
      [2, 1],
      [2, 5]
    ] as const) {
      it(`lock "${policy}", recurs(${recurs}), ${losses} lost races: the lane and the Effect path agree on builds, counts, error and chain`, async () => {
        const outcomes = []
        for (const path of ["lane", "effect"] as const) {
          const client = connect()
          const prefix = uniquePrefix(`lane-${policy}-${path}`)
          const runtime = path === "lane" ? Runtime.defaultRuntime : tracedRuntime().runtime
          const options = { client, keyPrefix: prefix, startupChecks: "off", lock: policy, runtime } as const
          const store = createRedisAuditStore({ ...options, retry: Schedule.recurs(recurs) })
          const rival = createRedisAuditStore({ ...options, lock: "never" })
          await append(store, { warm: true })
          const counted = counters()
          const race = losingRaces(store, rival, losses)
          const error = await rejectionOf(race.done)
          const builds = race.builds()
          const chain = await chainOf(client, prefix)
          expect(verifyAuditChain(chain).valid).toBe(true)
          outcomes.push({
            builds,
            counts: counted(),
            error: error === undefined ? undefined : { ...(error as object), _tag: (error as { _tag?: string })._tag },
            chain: chain.map(({ ours, rival, warm }) => ({ ours, rival, warm }))
          })
        }
        const [lane, effect] = outcomes
        const attempts = Math.min(losses, recurs) + 1
        expect(lane!.builds).toBe(attempts)
        expect(lane!.counts).toEqual({
          conflicts: Math.min(losses, attempts),
          retries: attempts - 1,
          exhausted: losses > recurs ? 1 : 0
        })
        if (losses > recurs) expect(lane!.error).toMatchObject({ _tag: "RetriesExhausted", attempts })
        else expect(lane!.error).toBeUndefined()
        expect({ ...lane, error: { ...lane!.error, prefix: undefined } }).toEqual({
          ...effect,
          error: { ...effect!.error, prefix: undefined }
        })
      })
    }
  }

  it("a record refused, a second persist, a throwing fn: the same errors as the Effect path, nothing half-written", async () => {
    const client = connect()
    const results = []
    for (const path of ["lane", "effect"] as const) {
      const prefix = uniquePrefix(`lane-errors-${path}`)
      const runtime = path === "lane" ? Runtime.defaultRuntime : tracedRuntime().runtime
      const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", runtime })
      await append(store, { warm: true })
      const refused = await rejectionOf(store.transaction(({ persist }) => persist({ not: "a record" })))
      const twice = await rejectionOf(
        store.transaction(async ({ readLastIntegrity, persist }) => {
          const record = buildNextRecord({ twice: true }, (await readLastIntegrity()) as Integrity | null)
          await persist(record)
          await persist(record)
        })
      )
      const thrown = new Error("the caller's own")
      const own = await rejectionOf(
        store.transaction(() => {
          throw thrown
        })
      )
      expect(own).toBe(thrown)
      const chain = await chainOf(client, prefix)
      expect(verifyAuditChain(chain).valid).toBe(true)
      results.push({
        refused: (refused as { _tag?: string })._tag,
        reason: (refused as { reason?: string }).reason,
        twice: (twice as { _tag?: string; first?: string })._tag,
        first: (twice as { first?: string }).first,
        chain: chain.length
      })
    }
    expect(results[0]).toEqual({
      refused: "InvalidRecord",
      reason: expect.stringContaining("auditIntegrity"),
      twice: "PersistCalledTwice",
      first: "committed",
      chain: 2
    })
    expect(results[1]).toEqual(results[0])
  })

  it("a caller's fn that does not settle holds no operation past its deadline (lane, Effect path, vault mutate and read)", async () => {
    const client = connect()
    const { runtime } = tracedRuntime()
    const results = []
    for (const path of ["lane", "effect"] as const) {
      const prefix = uniquePrefix(`lane-stuck-${path}`)
      const options = {
        client,
        startupChecks: "off",
        timeout: 100,
        runtime: path === "lane" ? undefined : runtime
      } as const
      const store = createRedisAuditStore({ ...options, keyPrefix: `${prefix}audit:` })
      const tokens = createRedisTokenStore({ ...options, keyPrefix: `${prefix}tv:` })
      await append(store, { warm: true })
      let released = false
      const stuck = new Promise<void>((resolve) => setTimeout(resolve, 1500)).then(() => void (released = true))
      const outcomes = await Promise.all([
        rejectionOf(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            const head = (await readLastIntegrity()) as Integrity | null
            await stuck
            await persist(buildNextRecord({ late: true }, head))
          })
        ),
        rejectionOf(tokens.mutate(() => stuck)),
        rejectionOf(tokens.read(() => stuck))
      ])
      // All three failed at the deadline, before the caller's fn got going again.
      expect(released).toBe(false)
      results.push(outcomes.map((e) => ({ ...(e as object), _tag: (e as { _tag?: string })._tag })))
      await stuck
      await new Promise((resolve) => setTimeout(resolve, 50))
      // The late persist sent nothing.
      expect((await chainOf(client, `${prefix}audit:`)).some((r) => r.late !== undefined)).toBe(false)
    }
    expect(results[0]).toEqual([
      { _tag: "OperationTimeout", operation: "audit transaction", timeoutMs: 100 },
      { _tag: "OperationTimeout", operation: "vault mutate", timeoutMs: 100 },
      { _tag: "OperationTimeout", operation: "vault read", timeoutMs: 100 }
    ])
    expect(results[1]).toEqual(results[0])
  })

  it("a persist after the deadline sends nothing: the transaction fails with OperationTimeout at the deadline's end", async () => {
    const client = connect()
    const prefix = uniquePrefix("lane-late")
    const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", timeout: 100 })
    await append(store, { warm: true })
    const late = await rejectionOf(
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const head = (await readLastIntegrity()) as Integrity | null
        await new Promise((resolve) => setTimeout(resolve, 250))
        await persist(buildNextRecord({ late: true }, head))
      })
    )
    expect(late).toMatchObject({ _tag: "OperationTimeout", operation: "audit transaction", timeoutMs: 100 })
    const chain = await chainOf(client, prefix)
    expect(chain.map((r) => Object.keys(r).includes("late"))).toEqual([false])
    // The store goes on: the next append builds on the head it knows.
    await append(store, { after: true })
    expect(verifyAuditChain(await chainOf(client, prefix)).valid).toBe(true)
  })

  it.each(["lane", "effect"] as const)(
    "after SCRIPT FLUSH (a restarted server) appends go on, NOSCRIPT answered with the script's text (%s)",
    async (path) => {
      const client = connect()
      const admin = connect()
      const prefix = uniquePrefix(`noscript-${path}`)
      const runtime = path === "lane" ? undefined : tracedRuntime().runtime
      const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", runtime })
      await append(store, { n: 1 })
      await admin.script("FLUSH")
      await append(store, { n: 2 })
      await admin.script("FLUSH")
      await append(store, { n: 3 })
      const chain = await chainOf(client, prefix)
      expect(chain.map((r) => r.n)).toEqual([1, 2, 3])
      expect(verifyAuditChain(chain).valid).toBe(true)
    }
  )
})
