/**
 * The lock's metrics, tagged by lock key. A tagged metric is made once per key (a few
 * keys in practice; the table is bounded), not once per lock cycle, with its tags fixed
 * (`withTags`): an update is then a cached hook's, not a registry lookup.
 */
import type * as Metric from "effect/Metric"
import * as Metrics from "../../Metrics.js"
import { withTags } from "../metricTags.js"

const TAGGED_KEYS_MAX = 1024

const taggedByKey = <M extends Metric.Metric<any, any, any>>(tag: (key: string) => M) => {
  const byKey = new Map<string, M>()
  return (key: string): M => {
    let tagged = byKey.get(key)
    if (tagged === undefined) {
      if (byKey.size >= TAGGED_KEYS_MAX) byKey.clear()
      tagged = tag(key)
      byKey.set(key, tagged)
    }
    return tagged
  }
}

/** `haechi_store_lock_wait_ms` tagged with the lock key. */
export const lockWaitOf = taggedByKey((key) => withTags(Metrics.keys.lockWait, { key }))

/** `haechi_store_locks_lost_total` tagged with the lock key. */
export const locksLostOf = taggedByKey((key) => withTags(Metrics.keys.locksLost, { key }))

/**
 * `haechi_store_turns_total` tagged with the lock key and how the turn came ("<key>\n<how>",
 * split at the last line break: a key prefix may hold one, `how` never does).
 */
export const turnsOf = taggedByKey((keyAndHow) => {
  const at = keyAndHow.lastIndexOf("\n")
  return withTags(Metrics.keys.turns, { key: keyAndHow.slice(0, at), how: keyAndHow.slice(at + 1) })
})
