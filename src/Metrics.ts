/**
 * The metrics every store operation reports, with `store` and `prefix` tags where
 * they apply. Export them with @effect/opentelemetry (see the README).
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"

const latencyBoundaries = MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 16 })

/** The keys of the metrics that hot paths tag with fixed tags once (`internal/metricTags.ts`). */
export const keys = {
  fenceConflicts: MetricKey.counter("haechi_store_fence_conflicts_total", {
    description: "fenced writes rejected because another writer committed first",
    incremental: true
  }),
  retries: MetricKey.counter("haechi_store_retries_total", {
    description: "operations re-run after a fence conflict",
    incremental: true
  }),
  retriesExhausted: MetricKey.counter("haechi_store_retries_exhausted_total", {
    description: "operations that gave up after the retry schedule (nothing written)",
    incremental: true
  }),
  operationLatency: MetricKey.histogram(
    "haechi_store_operation_latency_ms",
    latencyBoundaries,
    "store operation latency in milliseconds"
  ),
  lockWait: MetricKey.histogram(
    "haechi_store_lock_wait_ms",
    latencyBoundaries,
    "time spent waiting for a lock in milliseconds"
  ),
  turns: MetricKey.counter("haechi_store_turns_total", {
    description: "turns of a store's lock: granted at once, handed on by the writer before, or waited for in vain",
    incremental: true
  }),
  locksLost: MetricKey.counter("haechi_store_locks_lost_total", {
    description: "locks lost while held",
    incremental: true
  })
}

/** Fenced writes rejected because another writer committed first. */
export const fenceConflicts = Metric.fromMetricKey(keys.fenceConflicts)

/** Re-runs of an operation after a fence conflict. */
export const retries = Metric.fromMetricKey(keys.retries)

/** Operations that ran out of retries (failed closed). */
export const retriesExhausted = Metric.fromMetricKey(keys.retriesExhausted)

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

/** Audit chains found rewound below the head a replica saw (see `ChainRewound`). */
export const chainRewinds = Metric.counter("haechi_store_chain_rewinds_total", {
  description: "audit chains found rewound below the head this replica saw",
  incremental: true
})

/** Vault caches found no longer backed by Redis (a lower version, lost keys, another commit): dropped and reloaded. */
export const vaultRewinds = Metric.counter("haechi_store_vault_rewinds_total", {
  description: "vault caches that Redis no longer backs (rewound or lost state), dropped and reloaded",
  incremental: true
})

/** Store operation latency in milliseconds. */
export const operationLatency = Metric.fromMetricKey(keys.operationLatency)

/** Time spent waiting to acquire a lock, in milliseconds. */
export const lockWait = Metric.fromMetricKey(keys.lockWait)

/**
 * Turns of a store's adaptive lock policy, by how the turn came (`how`): "granted" (asked
 * for with no holder), "handed" (the writer before handed the lock on, with the head to
 * build on), "timedOut" (a wait for the turn ran out; the operation tried again, its
 * place in the queue kept). The time waited goes to `haechi_store_lock_wait_ms`.
 */
export const turns = Metric.fromMetricKey(keys.turns)

/** Locks lost while held (expired or taken). */
export const locksLost = Metric.fromMetricKey(keys.locksLost)

/** Checkpoint notes signed and handed to a sink (see Checkpoint.ts). */
export const checkpointsSigned = Metric.counter("haechi_store_checkpoints_signed_total", {
  description: "checkpoint notes signed and handed to a sink",
  incremental: true
})

/** Scheduled checkpoints that failed (the chain did not verify or did not hold a checkpoint, Redis, the sink). */
export const checkpointFailures = Metric.counter("haechi_store_checkpoint_failures_total", {
  description: "scheduled checkpoints that failed; nothing was signed",
  incremental: true
})
/** Rate limiter requests allowed, and denied, by Redis or the in-memory backing (tagged by `prefix`). */
export const ratelimitKeys = {
  allowed: MetricKey.counter("haechi_store_ratelimit_allowed_total", {
    description: "rate limited requests allowed",
    incremental: true
  }),
  denied: MetricKey.counter("haechi_store_ratelimit_denied_total", {
    description: "rate limited requests denied (over the limit within the window)",
    incremental: true
  }),
  /** Tagged by `prefix` and `answer` (the fail mode's "allow" or "deny") and `reason` ("timeout", "unavailable", "refused", "corrupt"). */
  unavailable: MetricKey.counter("haechi_store_ratelimit_unavailable_total", {
    description: "rate limit decisions Redis could not make in time, answered with the configured fail mode",
    incremental: true
  })
}
