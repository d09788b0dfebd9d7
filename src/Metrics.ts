/**
 * The metrics every store operation reports, with `store` and `prefix` tags where
 * they apply. Export them with @effect/opentelemetry (see the README).
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

const latencyBoundaries = MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 16 })

/** Fenced writes rejected because another writer committed first. */
export const fenceConflicts = Metric.counter("haechi_store_fence_conflicts_total", {
  description: "fenced writes rejected because another writer committed first",
  incremental: true
})

/** Re-runs of an operation after a fence conflict. */
export const retries = Metric.counter("haechi_store_retries_total", {
  description: "operations re-run after a fence conflict",
  incremental: true
})

/** Operations that ran out of retries (failed closed). */
export const retriesExhausted = Metric.counter("haechi_store_retries_exhausted_total", {
  description: "operations that gave up after the retry schedule (nothing written)",
  incremental: true
})

/** Commits whose reply was lost and whose outcome was then established from Redis. */
export const ambiguousCommitsResolved = Metric.counter("haechi_store_ambiguous_commits_resolved_total", {
  description: "commits whose reply was lost and whose outcome was established afterwards",
  incremental: true
})

/** Full vault reloads (the change log could not prove a cache current). */
export const vaultReloads = Metric.counter("haechi_store_vault_reloads_total", {
  description: "full vault reloads",
  incremental: true
})

/** Store operation latency in milliseconds. */
export const operationLatency = Metric.histogram(
  "haechi_store_operation_latency_ms",
  latencyBoundaries,
  "store operation latency in milliseconds"
)

/** Time spent waiting to acquire a lock, in milliseconds. */
export const lockWait = Metric.histogram(
  "haechi_store_lock_wait_ms",
  latencyBoundaries,
  "time spent waiting for a lock in milliseconds"
)

/** Locks lost while held (expired or taken). */
export const locksLost = Metric.counter("haechi_store_locks_lost_total", {
  description: "locks lost while held",
  incremental: true
})
