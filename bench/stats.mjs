// Small statistics helpers.
import v8 from "node:v8"

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export const quantile = (values, q) => {
  if (values.length === 0) return NaN
  const sorted = Float64Array.from(values).sort()
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]
}

export const median = (values) => {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v))
  if (finite.length === 0) return NaN
  const sorted = finite.sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

export const now = () => performance.now()

/**
 * Runs `op` serially while `next(ops + errors, start)` gives the time it is due (undefined
 * ends the run), waiting until then, and times each op from that time (or from its start,
 * if that came first). A failed op counts
 * as an error, not a latency. Returns `{ ops, errors, ms, cpuUs, latencies, firstError }`:
 * `cpuUs` is this process's CPU time (user + system) over the run; `allocBytes` the JS heap
 * it allocated (see `allocated`).
 */
const runUntil = async (op, next) => {
  const latencies = []
  let errors = 0
  let firstError
  const alloc = allocated()
  const cpu0 = process.cpuUsage()
  const start = now()
  let ops = 0
  for (let due = next(0, start); due !== undefined; due = next(ops + errors, start)) {
    const wait = due - now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    // A timer may fire up to a millisecond early: an op that starts before it is due is
    // timed from its start, never from a later due time (no negative latency).
    const started = now()
    try {
      await op(ops)
      latencies.push(now() - Math.min(due, started))
      ops += 1
    } catch (error) {
      errors += 1
      firstError ??= String(error?.message ?? error).slice(0, 200)
    }
  }
  const ms = now() - start
  const cpu = process.cpuUsage(cpu0)
  const allocBytes = alloc.stop()
  return { ops, errors, ms, cpuUs: cpu.user + cpu.system, allocBytes, latencies, firstError }
}

/**
 * Counts the JS heap allocated from now to `stop()`: the heap's growth plus what every GC
 * in between freed (V8's GC profiler reports each GC's heap before and after). Includes
 * the measuring loop's own few objects per op (the same for every implementation).
 */
export const allocated = () => {
  const profiler = typeof v8.GCProfiler === "function" ? new v8.GCProfiler() : undefined
  const used0 = process.memoryUsage().heapUsed
  profiler?.start()
  return {
    stop: () => {
      const used1 = process.memoryUsage().heapUsed
      const stats = profiler?.stop()
      if (stats === undefined) return NaN
      let freed = 0
      for (const gc of stats.statistics) freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize
      return used1 - used0 + freed
    }
  }
}

/** Runs `op` back to back until `maxOps` ops or `maxMs` milliseconds (at least one op). */
export const runFor = (op, { maxOps, maxMs }) =>
  runUntil(op, (done, start) => (done < maxOps && (done === 0 || now() - start < maxMs) ? now() : undefined))

/**
 * Runs `op` open-loop for `maxMs`: arrivals are a Poisson process of `rate` per second, each
 * op starts at its arrival or, if the previous one is still running, right after it. A
 * latency is measured from the arrival, not from the start, so a slow op also counts the
 * wait it caused the ones behind it (no coordinated omission).
 */
export const runPaced = (op, { rate, maxMs }) => {
  let arrival
  return runUntil(op, (_done, start) => {
    arrival = (arrival ?? start) + (-Math.log(1 - Math.random()) / rate) * 1000
    return arrival - start < maxMs ? arrival : undefined
  })
}

export const summarize = (latencies) => ({
  p50: quantile(latencies, 0.5),
  p99: quantile(latencies, 0.99),
  max: latencies.reduce((a, b) => (b > a ? b : a), -Infinity)
})
