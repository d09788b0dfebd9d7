/**
 * The `retry` schedule governs every re-attempt under every lock policy, against real
 * Redis: a rival replica commits inside our build so each attempt loses a real race;
 * `Schedule.recurs(n)` then allows exactly n re-attempts and ends in `RetriesExhausted`
 * with nothing of ours written, and the span's `haechi.attempts`, the retries and the
 * conflicts counters report the attempts each policy made.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Metric, Schedule } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord } from "../src/Chain.js"
import type { LockPolicy } from "../src/internal/lock/policy.js"
import * as Metrics from "../src/Metrics.js"
import { layerFromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { uniquePrefix } from "./support/keys.js"
import { recordingTracer } from "./support/recordingTracer.js"
import { sharedRedis } from "./support/shared.js"
import { withTags } from "../src/internal/metricTags.js"

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const counters = (store: "audit" | "vault", operation: string) => {
  const tags = { store, operation }
  const conflicts = withTags(Metrics.keys.fenceConflicts, tags)
  const retries = withTags(Metrics.keys.retries, tags)
  const exhausted = withTags(Metrics.keys.retriesExhausted, tags)
  const before = { conflicts: count(conflicts), retries: count(retries), exhausted: count(exhausted) }
  return () => ({
    conflicts: count(conflicts) - before.conflicts,
    retries: count(retries) - before.retries,
    exhausted: count(exhausted) - before.exhausted
  })
}

const connect = Effect.acquireRelease(
  Effect.sync(() => new Redis(sharedRedis().url)),
  (client) => Effect.promise(() => client.quit())
)

const append = (s: AuditStore.AuditStoreShape, event: object) =>
  s.transaction((tx) =>
    Effect.flatMap(tx.readLastIntegrity, (head) => tx.persist(buildNextRecord(event, head as never)))
  )

const policies: ReadonlyArray<LockPolicy> = ["never", "always", "adaptive"]

describe("the retry schedule under every lock policy", () => {
  for (const policy of policies) {
    for (const [recurs, losses] of [
      [0, 10],
      [2, 10],
      [10, 2]
    ] as const) {
      const commits = losses <= recurs
      it.live(
        `audit, lock "${policy}", recurs(${recurs}), ${losses} lost races: ${commits ? "commits" : "RetriesExhausted"} after ${Math.min(losses, recurs) + 1} builds`,
        () =>
          Effect.gen(function* () {
            const client = yield* connect
            const keyPrefix = uniquePrefix(`retry-audit-${policy}`)
            const redis = layerFromClient(client)
            const store = yield* AuditStore.make({ keyPrefix, lock: policy, retry: Schedule.recurs(recurs) }).pipe(
              Effect.provide(redis)
            )
            const rival = yield* AuditStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
            yield* append(store, { warm: true })
            const counted = counters("audit", "transaction")
            const { spans, tracer } = recordingTracer()
            let builds = 0
            const exit = yield* store
              .transaction((tx) =>
                Effect.gen(function* () {
                  builds += 1
                  const head = yield* tx.readLastIntegrity
                  if (builds <= losses) yield* append(rival, { rival: builds }) // commits first: our persist loses
                  return yield* tx.persist(buildNextRecord({ ours: builds }, head as never))
                })
              )
              .pipe(Effect.withTracer(tracer), Effect.exit)

            const attempts = Math.min(losses, recurs) + 1
            expect(builds).toBe(attempts)
            const span = spans.find((s) => s.name === "haechi.audit.transaction")
            expect(span?.attributes.get("haechi.attempts")).toBe(attempts)
            expect(counted()).toEqual({
              conflicts: Math.min(losses, attempts),
              retries: attempts - 1,
              exhausted: commits ? 0 : 1
            })
            const chain = (yield* Effect.promise(() => client.lrange(`${keyPrefix}chain`, 0, -1))).map((j) =>
              JSON.parse(j)
            )
            if (commits) {
              expect(Exit.isSuccess(exit)).toBe(true)
              expect(span?.attributes.get("haechi.outcome")).toBe("ok")
              expect(chain.filter((r) => r.ours !== undefined).length).toBe(1)
            } else {
              expect(exit).toMatchObject({ _tag: "Failure", cause: { error: { _tag: "RetriesExhausted", attempts } } })
              expect(span?.attributes.get("haechi.outcome")).toBe("RetriesExhausted")
              expect(chain.filter((r) => r.ours !== undefined)).toEqual([]) // nothing of ours written
            }
            expect(chain.length).toBe(1 + Math.min(losses, attempts) + (commits ? 1 : 0))
          }).pipe(Effect.scoped)
      )
    }

    it.live(`vault, lock "${policy}", recurs(1), 5 lost races: RetriesExhausted after 2 runs, nothing written`, () =>
      Effect.gen(function* () {
        const client = yield* connect
        const keyPrefix = uniquePrefix(`retry-vault-${policy}`)
        const redis = layerFromClient(client)
        const store = yield* TokenStore.make({ keyPrefix, lock: policy, retry: Schedule.recurs(1) }).pipe(
          Effect.provide(redis)
        )
        const rival = yield* TokenStore.make({ keyPrefix, lock: "never" }).pipe(Effect.provide(redis))
        yield* store.mutate((v) => Effect.sync(() => v.set("warm", { type: "t" })))
        const counted = counters("vault", "mutate")
        const { spans, tracer } = recordingTracer()
        let runs = 0
        const exit = yield* store
          .mutate((v) =>
            Effect.gen(function* () {
              runs += 1
              yield* rival.mutate((r) => Effect.sync(() => r.set(`rival${runs}`, { type: "t" })))
              v.set("ours", { type: "t" })
            })
          )
          .pipe(Effect.withTracer(tracer), Effect.exit)
        expect(runs).toBe(2)
        expect(exit).toMatchObject({ _tag: "Failure", cause: { error: { _tag: "RetriesExhausted", attempts: 2 } } })
        const span = spans.find((s) => s.name === "haechi.vault.mutate")
        expect(span?.attributes.get("haechi.attempts")).toBe(2)
        expect(counted()).toEqual({ conflicts: 2, retries: 1, exhausted: 1 })
        expect(yield* Effect.promise(() => client.hexists(`${keyPrefix}tokens`, "ours"))).toBe(0)
      }).pipe(Effect.scoped)
    )
  }
})
