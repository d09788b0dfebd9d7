/**
 * Observability against real Redis: every store operation gets a span with its outcome
 * and attempt count, and the metrics count conflicts, retries, latency and lock waits
 * with the tags the README documents.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Metric, Option, Tracer } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import * as Metrics from "../src/Metrics.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

interface Recorded {
  readonly name: string
  readonly attributes: Map<string, unknown>
  ended?: Exit.Exit<unknown, unknown>
  parent: string | undefined
}

/** A tracer that keeps every span it is asked for. */
const recordingTracer = () => {
  const spans: Array<Recorded> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const recorded: Recorded = { name, attributes: new Map(), parent: Option.getOrUndefined(parent)?.spanId }
      spans.push(recorded)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId: String(spans.length),
        traceId: "test",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: recorded.attributes,
        links,
        sampled: true,
        kind,
        end: (_endTime, exit) => void (recorded.ended = exit),
        attribute: (key, value) => void recorded.attributes.set(key, value),
        event: () => {},
        addLinks: () => {}
      }
      return span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const histogramCount = (metric: Metric.Metric<any, number, { readonly count: number }>) =>
  Effect.runSync(Metric.value(metric)).count

describe("observability", () => {
  it.live("an audit transaction that lost one race: one span (outcome, attempts), conflict, retry and latency counted", () =>
    Effect.gen(function*() {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const keyPrefix = uniquePrefix("observe-audit")
      const redis = layerFromClient(client)
      const store = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
      const rival = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
      const tags = { store: "audit", operation: "transaction" }
      const conflicts = Metrics.withTags(Metrics.keys.fenceConflicts, tags)
      const retries = Metrics.withTags(Metrics.keys.retries, tags)
      const latency = Metrics.withTags(Metrics.keys.operationLatency, tags)
      const before = { conflicts: count(conflicts), retries: count(retries), latency: histogramCount(latency) }

      const append = (s: AuditStore.AuditStoreShape, event: object) =>
        s.transaction((tx) => Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord(event, head as never))))
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
    }).pipe(Effect.scoped))

  it.live("a failed vault mutation ends its span with the failure's tag; a lock wait is measured", () =>
    Effect.gen(function*() {
      const client = new Redis(sharedRedis().url)
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const keyPrefix = uniquePrefix("observe-vault")
      const store = yield* TokenStore.make({ keyPrefix, lock: "always" }).pipe(Effect.provide(layerFromClient(client)))
      const waits = Metrics.lockWait
      const waitsBefore = histogramCount(waits)
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
      expect(histogramCount(waits) - waitsBefore).toBeGreaterThanOrEqual(1)
      expect(Option.isNone(Option.fromNullable(yield* Effect.promise(() => client.get(`${keyPrefix}lock`))))).toBe(true)
    }).pipe(Effect.scoped))
})

