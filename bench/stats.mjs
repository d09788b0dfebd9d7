// Small statistics helpers.

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
 * Runs `op` serially until `maxOps` ops or `maxMs` milliseconds (at least one op), timing each.
 * Returns `{ ops, errors, ms, cpuUs, latencies, firstError }`: `cpuUs` is this process's CPU
 * time (user + system) over the run; a failed op counts as an error, not a latency.
 */
export const runFor = async (op, { maxOps, maxMs }) => {
  const latencies = []
  let errors = 0
  let firstError
  const cpu0 = process.cpuUsage()
  const start = now()
  let ops = 0
  while (ops + errors < maxOps && (ops + errors === 0 || now() - start < maxMs)) {
    const t0 = now()
    try {
      await op(ops)
      latencies.push(now() - t0)
      ops += 1
    } catch (error) {
      errors += 1
      firstError ??= String(error?.message ?? error).slice(0, 200)
    }
  }
  const ms = now() - start
  const cpu = process.cpuUsage(cpu0)
  return { ops, errors, ms, cpuUs: cpu.user + cpu.system, latencies, firstError }
}

/**
 * Runs `op` open-loop for `maxMs`: arrivals are a Poisson process of `rate` per second, each
 * op starts at its arrival or, if the previous one is still running, right after it. A
 * latency is measured from the arrival, not from the start, so a slow op also counts the
 * wait it caused the ones behind it (no coordinated omission). Same result shape as runFor.
 */
export const runPaced = async (op, { rate, maxMs }) => {
  const latencies = []
  let errors = 0
  let firstError
  const cpu0 = process.cpuUsage()
  const start = now()
  let arrival = start
  let ops = 0
  for (;;) {
    arrival += (-Math.log(1 - Math.random()) / rate) * 1000
    if (arrival - start >= maxMs) break
    const wait = arrival - now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    try {
      await op(ops)
      latencies.push(now() - arrival)
      ops += 1
    } catch (error) {
      errors += 1
      firstError ??= String(error?.message ?? error).slice(0, 200)
    }
  }
  const ms = now() - start
  const cpu = process.cpuUsage(cpu0)
  return { ops, errors, ms, cpuUs: cpu.user + cpu.system, latencies, firstError }
}

export const summarize = (latencies) => ({
  p50: quantile(latencies, 0.5),
  p99: quantile(latencies, 0.99),
  max: latencies.reduce((a, b) => (b > a ? b : a), -Infinity)
})
