/**
 * What the fast-lane tests share: the audit facade driven as haechi's core drives it, the
 * chain read back, and the two paths a facade transaction can take (the fast lane, on a
 * runtime with no tracer; the Effect path, on one whose tracer records spans).
 */
import { Effect, Metric, Runtime } from "effect"
import type { Redis } from "ioredis"
import { buildNextRecord } from "../../src/Chain.js"
import type { HaechiAuditStore, Integrity } from "../../src/haechi.js"
import { withTags } from "../../src/internal/metricTags.js"
import * as Metrics from "../../src/Metrics.js"
import { recordingTracer } from "./recordingTracer.js"

export type Path = "lane" | "effect"
export const PATHS: ReadonlyArray<Path> = ["lane", "effect"]

/** A runtime whose tracer records spans: the facade then takes the Effect path (its spans are seen). */
export const tracedRuntime = () => {
  const { spans, tracer } = recordingTracer()
  const runtime = Effect.runSync(Effect.withTracer(Effect.runtime<never>(), tracer))
  return { spans, runtime }
}

/** The runtime that makes the facade take `path`. */
export const runtimeFor = (path: Path): Runtime.Runtime<never> =>
  path === "lane" ? Runtime.defaultRuntime : tracedRuntime().runtime

/** One record appended the way haechi's core appends it; resolves with the record. */
export const append = (store: Pick<HaechiAuditStore, "transaction">, event: object) =>
  store.transaction(async ({ readLastIntegrity, persist }) => {
    const record = buildNextRecord(event, (await readLastIntegrity()) as Integrity | null)
    await persist(record)
    return record
  })

/** The chain as Redis holds it, parsed. */
export const chainOf = async (client: Redis, prefix: string) =>
  (await client.lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as Record<string, unknown>)

/** The audit transaction's latency samples so far (one per operation). */
export const latencySamples = () =>
  Effect.runSync(Metric.value(withTags(Metrics.keys.operationLatency, { store: "audit", operation: "transaction" })))
    .count

/**
 * A transaction whose first `losses` builds lose their race (`rival` commits inside each,
 * before its persist); `builds()` counts the builds so far.
 */
export const losingRaces = (
  store: Pick<HaechiAuditStore, "transaction">,
  rival: Pick<HaechiAuditStore, "transaction">,
  losses: number
) => {
  let builds = 0
  const done = store.transaction(async ({ readLastIntegrity, persist }) => {
    const build = ++builds
    const head = (await readLastIntegrity()) as Integrity | null
    if (build <= losses) await append(rival, { rival: build })
    await persist(buildNextRecord({ ours: build }, head))
  })
  return { done, builds: () => builds }
}
