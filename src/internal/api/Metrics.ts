/**
 * The documented surface of Metrics.ts, exported by the index as `Metrics`: the metrics
 * the README's Observability section lists, and their keys. `withTags` stays internal.
 */
export {
  ambiguousCommitsResolved,
  chainRewinds,
  checkpointFailures,
  checkpointsSigned,
  fenceConflicts,
  keys,
  locksLost,
  lockWait,
  operationLatency,
  ratelimitKeys,
  retries,
  retriesExhausted,
  vaultReloads,
  vaultRewinds
} from "../../Metrics.js"
