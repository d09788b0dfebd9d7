/**
 * Observability against real Redis: every store operation gets a span with its outcome
 * and attempt count, and the metrics count conflicts, retries, latency and lock waits
 * with the tags the README documents.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Metric, MetricState, Option, Schedule } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import * as Metrics from "../src/Metrics.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import * as AuditLog from "../src/AuditLog.js"
import { lockOf } from "../src/internal/lock/policy.js"
import { fromClient } from "../src/RedisClient.js"
import { verifyStore } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { recordingTracer } from "./support/recordingTracer.js"
import { sharedRedis } from "./support/shared.js"
import { withTags } from "../src/internal/metricTags.js"

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const histogramCount = (metric: Metric.Metric<any, number, { readonly count: number }>) =>
  Effect.runSync(Metric.value(metric)).count

describe("observability", () => {
  it.live(
    "an audit transaction that lost one race: one span (outcome, attempts), conflict, retry and latency counted",
    () =>
      Effect.gen(function* () {
        const client = new Redis(sharedRedis().url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        const keyPrefix = uniquePrefix("observe-audit")
        const redis = layerFromClient(client)
        const store = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
        const rival = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
        const tags = { store: "audit", operation: "transaction" }
        const conflicts = withTags(Metrics.keys.fenceConflicts, tags)
        const retries = withTags(Metrics.keys.retries, tags)
        const latency = withTags(Metrics.keys.operationLatency, tags)
        const before = { conflicts: count(conflicts), retries: count(retries), latency: histogramCount(latency) }

        const append = (s: AuditStore.AuditStoreShape, event: object) =>
          s.transaction((tx) =>
            Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord(event, head as never)))
          )
        yield* append(store, { n: 0 }) // our head is cached from here on
        yield* append(rival, { n: 1 }) // ...and now stale
        const { spans, tracer } = recordingTracer()
        yield* append(store, { n: 2 }).pipe(Effect.withTracer(tracer))

        const span = spans.find((s) => s.name === "haechi.audit.transaction")
        expect(span).toBeDefined()
        expect(span!.attributes.get("haechi.outcome")).toBe("ok")
        expect(span!.attributes.get("haechi.attempts")).toBe(2)
        expect(span!.attributes.get("haechi.prefix")).toBe(keyPrefix)
        expect(span!.ended && Exit.isSuccess(span!.ended)).toBe(true)
        expect(count(conflicts) - before.conflicts).toBe(1)
        expect(count(retries) - before.retries).toBe(1)
        expect(histogramCount(latency) - before.latency).toBe(3)
      }).pipe(Effect.scoped)
  )

  it.live("a failed vault mutation ends its span with the failure's tag; a lock wait is measured", () =>
    Effect.gen(function* () {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const keyPrefix = uniquePrefix("observe-vault")
      const store = yield* TokenStore.make({ keyPrefix, lock: "always" }).pipe(Effect.provide(layerFromClient(client)))
      const waits = () => tagged("haechi_store_lock_wait_ms", { key: `${keyPrefix}lock` })
      const waitsBefore = waits()
      const { spans, tracer } = recordingTracer()
      const exit = yield* Effect.exit(
        store.mutate((view) => Effect.sync(() => view.set("tok", { bad: 1n } as never))).pipe(Effect.withTracer(tracer))
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const span = spans.find((s) => s.name === "haechi.vault.mutate")
      expect(span?.attributes.get("haechi.outcome")).toBe("InvalidRecord")
      // The lock's span: a child of the store operation's, with the fence and the wait, ended.
      const lockSpan = spans.find((s) => s.name === "haechi.lock.acquire")
      expect(lockSpan?.parent).toBe(String(spans.indexOf(span!) + 1))
      expect(lockSpan?.attributes.get("haechi.lock.key")).toBe(`${keyPrefix}lock`)
      expect(lockSpan?.attributes.get("haechi.lock.fence")).toBeGreaterThan(0)
      expect(lockSpan?.attributes.get("haechi.lock.waited_ms")).toBeGreaterThanOrEqual(0)
      expect(lockSpan?.ended && Exit.isSuccess(lockSpan.ended)).toBe(true)
      expect(waits() - waitsBefore).toBeGreaterThanOrEqual(1)
      expect(Option.isNone(Option.fromNullable(yield* Effect.promise(() => client.get(`${keyPrefix}lock`))))).toBe(true)
    }).pipe(Effect.scoped)
  )

  // ---------------------------------------------------------------------------
  // One test per claim of the README's Observability section.
  // ---------------------------------------------------------------------------

  it.live(
    "README: every store operation runs in a span haechi.<store>.<operation> with haechi.prefix and haechi.outcome; writes also haechi.attempts",
    () =>
      Effect.gen(function* () {
        const client = new Redis(sharedRedis().url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        const redis = layerFromClient(client)
        const auditPrefix = uniquePrefix("observe-ops-audit")
        const vaultPrefix = uniquePrefix("observe-ops-vault")
        const { spans, tracer } = recordingTracer()
        yield* Effect.gen(function* () {
          const audit = yield* AuditStore.make({ keyPrefix: auditPrefix })
          const vault = yield* TokenStore.make({ keyPrefix: vaultPrefix })
          yield* audit.transaction((tx) =>
            Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord({ n: 1 }, head as never)))
          )
          yield* audit.head
          yield* audit.length
          yield* vault.mutate((v) => Effect.sync(() => v.set("t", { type: "t" })))
          yield* vault.read((v) => Effect.sync(() => v.get("t")))
          yield* vault.stats
        }).pipe(Effect.provide(redis), Effect.withTracer(tracer))
        const ops = [
          ["haechi.audit.transaction", auditPrefix, true],
          ["haechi.audit.head", auditPrefix, false],
          ["haechi.audit.length", auditPrefix, false],
          ["haechi.vault.mutate", vaultPrefix, true],
          ["haechi.vault.read", vaultPrefix, false],
          ["haechi.vault.stats", vaultPrefix, false],
          ["haechi.vault.reload", vaultPrefix, false]
        ] as const
        for (const [name, prefix, writes] of ops) {
          const span = spans.find((s) => s.name === name)
          expect(span, name).toBeDefined()
          expect(span!.attributes.get("haechi.prefix"), name).toBe(prefix)
          expect(span!.attributes.get("haechi.outcome"), name).toBe("ok")
          if (writes) expect(span!.attributes.get("haechi.attempts"), name).toBe(1)
          expect(span!.ended && Exit.isSuccess(span!.ended), name).toBe(true)
        }
      }).pipe(Effect.scoped)
  )

  it.live(
    "README: the spans of locks, readiness, start-up checks, AuditLog and verification carry haechi.outcome too",
    () =>
      Effect.gen(function* () {
        const client = new Redis(sharedRedis().url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        const keyPrefix = uniquePrefix("observe-other")
        const { spans, tracer } = recordingTracer()
        const Audit = AuditLog.layer.pipe(
          Layer.provideMerge(AuditStore.layer({ keyPrefix, startupChecks: "warn" })),
          Layer.provide(layerFromClient(client))
        )
        yield* Effect.gen(function* () {
          const log = yield* AuditLog.AuditLog
          yield* log.record({ type: "admin.login" })
          const store = yield* AuditStore.AuditStore
          yield* store.ready
          yield* verifyStore()
        }).pipe(Effect.provide(Audit), Effect.withTracer(tracer))
        const lock = lockOf(fromClient(client))
        yield* Effect.exit(lock.withLock(`${keyPrefix}job`, Effect.fail("boom" as const))).pipe(
          Effect.withTracer(tracer)
        )
        for (const name of [
          "haechi.startup_checks",
          "haechi.auditlog.record",
          "haechi.ready",
          "haechi.audit.verify",
          "haechi.lock.acquire"
        ]) {
          const span = spans.find((s) => s.name === name)
          expect(span, name).toBeDefined()
          expect(span!.attributes.get("haechi.outcome"), name).toBe("ok")
        }
      }).pipe(Effect.scoped)
  )

  it.live(
    "README: a span whose operation failed ends with the error's tag as haechi.outcome (the vault reload and the lock included)",
    () =>
      Effect.gen(function* () {
        const client = new Redis(sharedRedis().url)
        yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
        const keyPrefix = uniquePrefix("observe-fail")
        yield* Effect.promise(() => client.set(`${keyPrefix}tokens`, "not a hash"))
        const { spans, tracer } = recordingTracer()
        const vault = yield* TokenStore.make({ keyPrefix }).pipe(Effect.provide(layerFromClient(client)))
        const exit = yield* Effect.exit(vault.read((v) => Effect.sync(() => v.get("t")))).pipe(
          Effect.withTracer(tracer)
        )
        expect(Exit.isFailure(exit)).toBe(true)
        const reload = spans.find((s) => s.name === "haechi.vault.reload")
        const read = spans.find((s) => s.name === "haechi.vault.read")
        expect(reload?.attributes.get("haechi.outcome")).toBe(read?.attributes.get("haechi.outcome"))
        expect(read?.attributes.get("haechi.outcome")).toMatch(/^[A-Z]\w+$/)
        expect(read?.attributes.get("haechi.outcome")).not.toBe("ok")
        // A lock held elsewhere: the acquire span ends with LockTimeout.
        yield* Effect.promise(() => client.set(`${keyPrefix}job`, "someone-else", "PX", 5000))
        const lock = lockOf(fromClient(client))
        const timedOut = yield* Effect.exit(
          lock.withLock(`${keyPrefix}job`, Effect.void, { waitTimeout: "50 millis" })
        ).pipe(Effect.withTracer(tracer))
        expect(Exit.isFailure(timedOut)).toBe(true)
        expect(spans.find((s) => s.name === "haechi.lock.acquire")?.attributes.get("haechi.outcome")).toBe(
          "LockTimeout"
        )
      }).pipe(Effect.scoped)
  )

  it.live("README: haechi_store_operation_latency_ms is tagged store and operation for every store operation", () =>
    Effect.gen(function* () {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const redis = layerFromClient(client)
      const before = (store: string, operation: string) =>
        tagged("haechi_store_operation_latency_ms", { store, operation })
      const pairs = [
        ["audit", "transaction"],
        ["audit", "head"],
        ["audit", "length"],
        ["vault", "mutate"],
        ["vault", "read"],
        ["vault", "stats"]
      ] as const
      const counts = pairs.map(([st, op]) => before(st, op))
      yield* Effect.gen(function* () {
        const audit = yield* AuditStore.make({ keyPrefix: uniquePrefix("observe-lat-a") })
        const vault = yield* TokenStore.make({ keyPrefix: uniquePrefix("observe-lat-v") })
        yield* audit.transaction((tx) =>
          Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord({ n: 1 }, head as never)))
        )
        yield* audit.head
        yield* audit.length
        yield* vault.mutate((v) => Effect.sync(() => v.set("t", { type: "t" })))
        yield* vault.read((v) => Effect.sync(() => v.get("t")))
        yield* vault.stats
      }).pipe(Effect.provide(redis))
      pairs.forEach(([st, op], i) => expect(before(st, op) - counts[i]!, `${st}/${op}`).toBe(1))
    }).pipe(Effect.scoped)
  )

  it.live("README: haechi_store_lock_wait_ms and haechi_store_locks_lost_total are tagged by the lock's key", () =>
    Effect.gen(function* () {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const key = `${uniquePrefix("observe-lockkey")}job`
      const lock = lockOf(fromClient(client))
      const waits = tagged("haechi_store_lock_wait_ms", { key })
      const lost = tagged("haechi_store_locks_lost_total", { key })
      // Held, then taken from us mid-work: a wait is measured and a loss counted, both under the key.
      yield* Effect.exit(
        lock.withLock(
          key,
          Effect.zipRight(
            Effect.promise(() => client.set(key, "thief")),
            Effect.sleep("1200 millis")
          ),
          { ttl: "1 second" }
        )
      )
      expect(tagged("haechi_store_lock_wait_ms", { key }) - waits).toBe(1)
      expect(tagged("haechi_store_locks_lost_total", { key }) - lost).toBe(1)
    }).pipe(Effect.scoped)
  )

  it.live("README: conflicts, retries and exhaustion are tagged store and operation; vault reloads prefix", () =>
    Effect.gen(function* () {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const keyPrefix = uniquePrefix("observe-reloads")
      const reloads = tagged("haechi_store_vault_reloads_total", { prefix: keyPrefix })
      const vault = yield* TokenStore.make({ keyPrefix }).pipe(Effect.provide(layerFromClient(client)))
      yield* vault.read(() => Effect.void) // the first read loads the vault
      expect(tagged("haechi_store_vault_reloads_total", { prefix: keyPrefix }) - reloads).toBeGreaterThanOrEqual(1)
      const auditPrefix = uniquePrefix("observe-exhaust")
      const redis = layerFromClient(client)
      const audit = yield* AuditStore.make({ keyPrefix: auditPrefix, retry: Schedule.recurs(1) }).pipe(
        Effect.provide(redis)
      )
      const rival = yield* AuditStore.make({ keyPrefix: auditPrefix, lock: "never" }).pipe(Effect.provide(redis))
      const append = (s: AuditStore.AuditStoreShape, n: number) =>
        s.transaction((tx) =>
          Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord({ n }, head as never)))
        )
      const tags = { store: "audit", operation: "transaction" }
      const before = [
        tagged("haechi_store_fence_conflicts_total", tags),
        tagged("haechi_store_retries_total", tags),
        tagged("haechi_store_retries_exhausted_total", tags)
      ]
      let builds = 0
      const exit = yield* Effect.exit(
        audit.transaction((tx) =>
          Effect.gen(function* () {
            builds += 1
            const head = yield* tx.readLastIntegrity
            yield* append(rival, builds) // every attempt loses
            return yield* tx.persist(buildNextRecord({ ours: builds }, head as never))
          })
        )
      )
      expect(Exit.isFailure(exit)).toBe(true)
      expect([
        tagged("haechi_store_fence_conflicts_total", tags) - before[0]!,
        tagged("haechi_store_retries_total", tags) - before[1]!,
        tagged("haechi_store_retries_exhausted_total", tags) - before[2]!
      ]).toEqual([2, 1, 1])
      const names = [
        "haechi_store_fence_conflicts_total",
        "haechi_store_retries_total",
        "haechi_store_retries_exhausted_total"
      ]
      for (const name of names) {
        const keys = Metric.unsafeSnapshot().filter((p) => p.metricKey.name === name)
        expect(keys.length, name).toBeGreaterThan(0)
        for (const p of keys) expect(p.metricKey.tags.map((t) => t.key).sort(), name).toEqual(["operation", "store"])
      }
    }).pipe(Effect.scoped)
  )
})

/** The value (count) of the metric named `name` whose tags include `tags`, summed over matches (0 if none). */
const tagged = (name: string, tags: Record<string, string>): number =>
  Metric.unsafeSnapshot()
    .filter(
      (p) =>
        p.metricKey.name === name &&
        Object.entries(tags).every(([k, v]) => p.metricKey.tags.some((t) => t.key === k && t.value === v))
    )
    .reduce((sum, p) => {
      const state = p.metricState
      if (MetricState.isCounterState(state)) return sum + Number(state.count)
      if (MetricState.isHistogramState(state)) return sum + state.count
      return sum
    }, 0)
