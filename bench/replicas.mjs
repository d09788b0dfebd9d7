// A quick probe of N replica processes appending to one audit chain with ours, for tuning
// the lock policy (the full comparison with the reference is `npm run bench`).
//   node bench/replicas.mjs <redis port> [policy=adaptive] [replicas=4] [seconds=3] [warm-up appends=1500]
// SEPARATE=1 gives each replica a chain of its own (nothing shared: the machine's floor);
// RATE=<appends/s> offers that total load open-loop (Poisson arrivals) instead of flat out;
// DIST=<dir> benchmarks another build of dist/ (an A/B); PROF=1 writes a CPU profile of each replica to bench/results/prof-replicas/
// (PROF=window: of the measured seconds only); CPUSPLIT=1 prints the client CPU and time of the appends that took under
// 1 ms (inside a turn) apart from the others (that waited for one).
// Flushes the server's data first: point it at a throwaway redis-server.
import { fork } from "node:child_process"
import { Redis } from "ioredis"
import { fileURLToPath } from "node:url"

const [port, policy = "adaptive", n = "4", secs = "3", warm = "1500"] = process.argv.slice(2)
if (!Number(port)) throw new Error("usage: node bench/replicas.mjs <redis port> [policy] [replicas] [seconds] [warm-up]")

if (process.send) {
  const mod = await import(process.env.DIST ? `${process.env.DIST}/haechi.js` : new URL("../dist/haechi.js", import.meta.url).href)
  const core = await import(new URL("./core.mjs", import.meta.url).href)
  const client = new Redis({ port: Number(port), lazyConnect: true })
  await client.connect()
  const keyPrefix = process.env.SEPARATE ? `probe${process.pid}:` : "probe:"
  const sink = core.createAuditSink({ store: mod.createRedisAuditStore({ client, keyPrefix, lock: policy }) })
  const name = `w${process.pid}`
  for (let i = 0; i < Number(warm); i++) await sink.record(core.sampleEvent(name)).catch(() => {})
  process.send({ ready: true })
  await new Promise((resolve) => process.once("message", resolve))
  // METRICS: the lock's turns, conflicts and retries of the measured seconds only (not the
  // warm-up's). Imported before a profile starts, so the profile holds no module loading.
  const { Effect, Metric } = await import("effect")
  // PROF=window: a CPU profile of the measured seconds only (no start-up, no warm-up).
  const session = process.env.PROF === "window" ? new (await import("node:inspector/promises")).Session() : undefined
  if (session) {
    session.connect()
    await session.post("Profiler.enable")
    await session.post("Profiler.setSamplingInterval", { interval: 50 })
    await session.post("Profiler.start")
  }
  const counters = () =>
    new Map(
      Effect.runSync(Metric.snapshot)
        .filter((p) => /turns|conflicts|retries/.test(p.metricKey.name))
        .map((p) => [`${p.metricKey.name}{${p.metricKey.tags.map((t) => `${t.key}=${t.value}`).join(",")}}`, p.metricState.count])
    )
  const counters0 = counters()
  const latencies = []
  // CPUSPLIT: client CPU of the appends that took under 1 ms (in a turn) and of the others (waited for one).
  const split = process.env.CPUSPLIT ? { fast: { n: 0, us: 0, ms: 0 }, waited: { n: 0, us: 0, ms: 0 } } : undefined
  const finishedAt = []
  let errors = 0
  const cpu0 = process.cpuUsage()
  const attempts0 = sink.counts.attempts
  const end = performance.now() + Number(secs) * 1000
  // RATE: open loop, Poisson arrivals at RATE/replicas per second each, latency from arrival.
  const rate = Number(process.env.RATE ?? 0) / Number(n)
  let arrival = performance.now()
  while (performance.now() < end) {
    if (rate > 0) {
      arrival += (-Math.log(1 - Math.random()) / rate) * 1000
      if (arrival >= end) break
      const wait = arrival - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
    // From the arrival, or from the start if a timer fired early (as stats.mjs's runPaced).
    const started = rate > 0 ? Math.min(arrival, performance.now()) : performance.now()
    const cpuBefore = split ? process.cpuUsage() : undefined
    try {
      await sink.record(core.sampleEvent(name))
    } catch {
      errors += 1
    }
    latencies.push(performance.now() - started)
    if (cpuBefore) {
      const used = process.cpuUsage(cpuBefore)
      const kind = latencies.at(-1) < 1 ? split.fast : split.waited
      kind.n += 1
      kind.us += used.user + used.system
      kind.ms += latencies.at(-1)
    }
    if (process.env.DBG) finishedAt.push(performance.timeOrigin + performance.now())
  }
  const cpu = process.cpuUsage(cpu0)
  const attempts = sink.counts.attempts - attempts0
  const countersAtEnd = counters()
  if (session) {
    const { profile } = await session.post("Profiler.stop")
    const { mkdirSync, writeFileSync } = await import("node:fs")
    const dir = fileURLToPath(new URL("./results/prof-replicas/", import.meta.url))
    mkdirSync(dir, { recursive: true })
    writeFileSync(`${dir}window-${process.pid}.cpuprofile`, JSON.stringify(profile))
  }
  // Cool-down: go on writing, unmeasured, a little longer, so no replica's last operations meet another's shutdown.
  const coolEnd = performance.now() + 300
  while (performance.now() < coolEnd) await sink.record(core.sampleEvent(name)).catch(() => {})
  if (process.env.DBG) {
    const slow = latencies.flatMap((l, i) => (l > Number(process.env.DBG) ? [`${l.toFixed(1)}ms@${(finishedAt[i] - performance.timeOrigin - (end - Number(secs) * 1000)).toFixed(0)}`] : []))
    console.error(`[${process.pid}] t0 ${(performance.timeOrigin + end - Number(secs) * 1000).toFixed(0)} slow: ${slow.join(" ")}`)
  }
  if (split) {
    const per = (k) => `${k.n} appends at ${Math.round(k.us / Math.max(1, k.n))} µs, ${(k.ms / Math.max(1, k.n)).toFixed(3)} ms each (${Math.round(k.ms)} ms in all)`
    console.error(`[${process.pid}] CPU: under 1 ms ${per(split.fast)}; waited ${per(split.waited)}`)
  }
  if (process.env.METRICS) {
    const window = [...countersAtEnd].map(([key, count]) => [key, count - (counters0.get(key) ?? 0)])
    const turns = window.filter(([key]) => /turns.*how=(handed|granted)/.test(key)).reduce((sum, [, c]) => sum + c, 0)
    console.error(`[${process.pid}] ${window.map(([key, c]) => `${key} ${c}`).join(" | ")} | appends per turn ${(latencies.length / Math.max(1, turns)).toFixed(1)}`)
  }
  process.send({ ops: latencies.length, errors, cpuUs: cpu.user + cpu.system, sysUs: cpu.system, latencies, attempts })
  await client.quit()
  process.exit(0)
} else {
  const admin = new Redis({ port: Number(port) })
  await admin.flushall()
  const profDir = fileURLToPath(new URL("./results/prof-replicas/", import.meta.url))
  const execArgv = [...(process.env.PROF && process.env.PROF !== "window" ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : []), ...(process.env.TRACE_GC ? ["--trace-gc"] : []), ...(process.env.EXEC_ARGV ? process.env.EXEC_ARGV.split(" ") : [])]
  const kids = Array.from({ length: Number(n) }, () => fork(fileURLToPath(import.meta.url), process.argv.slice(2), { execArgv }))
  const next = (kid) => new Promise((resolve, reject) => {
    kid.once("message", resolve)
    kid.once("exit", (code) => reject(new Error(`replica exited with ${code}`)))
  })
  await Promise.all(kids.map(next))
  const results = Promise.all(kids.map(next))
  kids.forEach((kid) => kid.send("go"))
  const per = await results
  const all = per.flatMap((r) => r.latencies).sort((a, b) => a - b)
  const ops = per.reduce((sum, r) => sum + r.ops, 0)
  const q = (p) => all[Math.floor(p * (all.length - 1))].toFixed(2)
  console.log(
    `${policy}${process.env.SEPARATE ? " (separate chains)" : ""}, ${n} replicas: ${Math.round(ops / Number(secs))} appends/s, ` +
      `p50 ${q(0.5)} p99 ${q(0.99)} max ${q(1)} ms (${all.filter((l) => l > 50).length} over 50), failed ${per.map((r) => r.errors).join("/")}, ` +
      `client CPU ${Math.round(per.reduce((sum, r) => sum + r.cpuUs, 0) / ops)} µs/append (system ${Math.round(per.reduce((sum, r) => sum + r.sysUs, 0) / ops)}), ` +
      `${(per.reduce((sum, r) => sum + r.attempts, 0) / ops).toFixed(2)} attempts/append, per replica ${per.map((r) => r.ops).join("/")}`
  )
  await admin.quit()
}
