/**
 * The lock's metrics, tagged by lock key. A tagged metric is made once per key (a few
 * keys in practice; the table is bounded), not once per lock cycle.
 */
import * as Metric from "effect/Metric"
import * as Metrics from "../../Metrics.js"

const TAGGED_KEYS_MAX = 1024

const taggedByKey = <M extends Metric.Metric<any, any, any>>(metric: M, tag: (metric: M, key: string) => M) => {
  const byKey = new Map<string, M>()
  return (key: string): M => {
    let tagged = byKey.get(key)
    if (tagged === undefined) {
      if (byKey.size >= TAGGED_KEYS_MAX) byKey.clear()
      tagged = tag(metric, key)
      byKey.set(key, tagged)
    }
    return tagged
  }
}

/** `haechi_store_lock_wait_ms` tagged with the lock key. */
export const lockWaitOf = taggedByKey(Metrics.lockWait, (metric, key) => Metric.tagged(metric, "key", key))

/** `haechi_store_locks_lost_total` tagged with the lock key. */
export const locksLostOf = taggedByKey(Metrics.locksLost, (metric, key) => Metric.tagged(metric, "key", key))

/** `haechi_store_turns_total` tagged with the lock key and how the turn came. */
export const turnsOf = taggedByKey(Metrics.turns, (metric, key) => {
  const [lock, how] = key.split("\n") as [string, string]
  return metric.pipe(Metric.tagged("key", lock), Metric.tagged("how", how))
})
