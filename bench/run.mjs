// The benchmark orchestrator: ours (../dist/haechi.js) against the reference
// haechi-store-redis, driven by bench/core.mjs the way haechi's core drives a store.
//
//   node bench/run.mjs --port <redis port> [--quick] [--only=audit,replicas,rtt,tokenize,reveal,account,memory,lock] [--delay=ms]
//                      [--rounds=N] [--cpu-prof[=ours|ref|both]]
//
// Every measurement runs in a fresh worker process; the two implementations alternate
// within each round (ours first in odd rounds, the reference first in even ones) against
// the same Redis, which is flushed (and the vault pre-loaded) before every run. Figures
// are medians over the rounds. Prints a markdown table and writes bench/results/latest.json.
import { fork } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import { flush, preloadRecords, preloadVault, verifyStoredChain } from "./admin.mjs"
import { delayProxy } from "./delayProxy.mjs"
import { openIoredis, oursWithRedisLock } from "./impls.mjs"
import { median, quantile } from "./stats.mjs"

const argv = process.argv.slice(2)
const flag = (name) => {
  const hit = argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  if (hit === undefined) return undefined
  return hit.includes("=") ? hit.slice(hit.indexOf("=") + 1) : true
}
const port = Number(flag("port"))
if (!Number.isInteger(port) || port <= 0) throw new Error("--port=<redis port> is required (bench/run.sh starts the server)")
const quick = flag("quick") === true
const only = typeof flag("only") === "string" ? new Set(flag("only").split(",")) : undefined
const profile = flag("cpu-prof") === true ? "ours" : flag("cpu-prof")
const IMPLS = ["ours", "ref"]
const SIZES = [0, 1000, 10000, 50000]
const POLICIES = ["always", "never", "adaptive"]

const cfg = quick
  ? { rounds: 1, auditMs: 1000, replicaMs: 1500, vaultMs: 800, revealMs: 600, accountOps: 8, accountMs: 1200, auditAccountOps: 100, lockOps: 100, lockMs: 2000 }
  : { rounds: 3, auditMs: 2500, replicaMs: 2500, vaultMs: 2000, revealMs: 1500, accountOps: 20, accountMs: 5000, auditAccountOps: 300, lockOps: 400, lockMs: 8000 }
if (typeof flag("rounds") === "string") cfg.rounds = Math.max(1, Number(flag("rounds")))
const REPLICAS = 4
/** Total appends/s offered in the open-loop row: a moderate load, under a third of either library's saturated rate here. */
const PACED_RATE = 500
const HARD_LIMIT_MS = 120_000 // no worker may outlive this, whatever it is doing

const resultsDir = new URL("./results/", import.meta.url)
mkdirSync(resultsDir, { recursive: true })
const profDir = new URL("./results/prof/", import.meta.url)

const log = (...parts) => process.stderr.write(parts.join(" ") + "\n")

/** Runs one worker to completion and returns its result (throws on failure or timeout). */
const runWorker = (params, { onReady, expose } = {}) =>
  new Promise((resolve, reject) => {
    const execArgv = []
    if (expose) execArgv.push("--expose-gc")
    if (profile && (profile === "both" || profile === params.impl)) {
      mkdirSync(profDir, { recursive: true })
      execArgv.push("--cpu-prof", `--cpu-prof-dir=${profDir.pathname}`, `--cpu-prof-name=${params.mode}-${params.impl}-${params.label ?? ""}-${Date.now()}.cpuprofile`)
    }
    const child = fork(new URL("./worker.mjs", import.meta.url), [], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] })
    let settled = false
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true
        child.kill("SIGKILL")
        reject(new Error(`${params.mode}/${params.impl} exceeded ${HARD_LIMIT_MS} ms`))
      }
    }, HARD_LIMIT_MS)
    child.on("message", (msg) => {
      if (msg.ready) return onReady?.(child, msg)
      settled = true
      clearTimeout(timer)
      if (msg.ok) resolve(msg.result)
      else reject(new Error(`${params.mode}/${params.impl}: ${msg.error}`))
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      if (!settled) {
        settled = true
        reject(new Error(`${params.mode}/${params.impl} exited with ${code} before answering`))
      }
    })
    child.send({ port, ...params })
  })

/** The two implementations in alternating order for round `r`. */
const order = (r) => (r % 2 === 0 ? IMPLS : [...IMPLS].reverse())
/**
 * The audit rows also run the bare-ioredis floor ("bare"), and with BENCH_BASE_DIST another
 * build of ours ("base", logged and in the JSON only); they rotate, round by round.
 */
const AUDIT_IMPLS = ["ours", "ref", "bare", ...(process.env.BENCH_BASE_DIST ? ["base"] : [])]
const auditOrder = (r) => AUDIT_IMPLS.map((_, i) => AUDIT_IMPLS[(i + r) % AUDIT_IMPLS.length])
/** One way of the simulated network round trip (the delay proxy), in ms. */
const RTT_DELAY_MS = Number(flag("delay") ?? 1)

const admin = await openIoredis(port)
const started = Date.now()
const loadAtStart = os.loadavg().map((l) => Number(l.toFixed(2)))
const raw = {}
const push = (key, impl, value) => {
  raw[key] ??= { ours: [], ref: [] }
  ;(raw[key][impl] ??= []).push(value)
}
const wanted = (name) => !only || only.has(name)
let lastMark = Date.now()
const mark = (name) => {
  if (!wanted(name)) return
  log(`-- ${name}: ${((Date.now() - lastMark) / 1000).toFixed(1)} s (total ${((Date.now() - started) / 1000).toFixed(0)} s)`)
  lastMark = Date.now()
}
const safely = async (label, f) => {
  try {
    return await f()
  } catch (error) {
    log(`  ! ${label}: ${error.message.split("\n")[0]}`)
    return { failed: String(error.message).slice(0, 500) }
  }
}

// ---------------------------------------------------------------------------
// audit: one sink

if (wanted("audit")) {
  for (let r = 0; r < cfg.rounds; r++) {
    for (const impl of auditOrder(r)) {
      await flush(admin)
      const res = await safely(`audit ${impl}`, () => runWorker({ mode: "audit", impl, warmup: 2000, maxOps: 100_000, maxMs: cfg.auditMs }))
      if (!res.failed) res.chain = await verifyStoredChain(admin)
      push("audit", impl, res)
      log(
        `audit 1 sink   ${impl.padEnd(4)} round ${r + 1}: ${fmt(res.opsPerSec)}/s p50 ${fmt(res.p50, 3)} ms cpu ${fmt(res.cpuUsPerOp)} µs` +
          ` alloc ${fmt(res.allocBytesPerOp / 1024, 1)} KB per append chain ${res.chain?.valid ? "ok" : res.chain?.reason ?? "-"}`
      )
    }
  }
}

mark("audit")

// ---------------------------------------------------------------------------
// audit: 4 replica processes on one chain (ours by default and under each lock policy)

/** Resolves with the first message of `child` that `predicate` accepts; rejects if it exits or fails first. */
const nextMessage = (child, predicate, timeoutMs) =>
  new Promise((resolve, reject) => {
    const done = (f, value) => {
      child.off("message", onMessage)
      child.off("exit", onExit)
      clearTimeout(timer)
      f(value)
    }
    const onMessage = (m) => {
      if (m && m.ok === false) done(reject, new Error(m.error))
      else if (predicate(m)) done(resolve, m)
    }
    const onExit = (code) => done(reject, new Error(`replica exited with ${code}`))
    const timer = setTimeout(() => done(reject, new Error(`replica silent for ${timeoutMs} ms`)), timeoutMs)
    child.on("message", onMessage)
    child.on("exit", onExit)
  })

/** Four replica processes kept for a round; each variant opens its own clients and sinks in them. */
const replicaPool = async () => {
  const children = Array.from({ length: REPLICAS }, (_, i) => {
    const child = fork(new URL("./worker.mjs", import.meta.url), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
    child.send({ port, mode: "replica", replica: `r${i}` })
    return child
  })
  const close = () => {
    for (const child of children) {
      if (child.exitCode === null && child.connected) child.send({ exit: true })
      setTimeout(() => child.exitCode === null && child.kill("SIGKILL"), 3000).unref()
    }
  }
  try {
    await Promise.all(children.map((c) => nextMessage(c, (m) => m.up, 30_000)))
  } catch (error) {
    close()
    throw error
  }
  /**
   * Starts all replicas together on `impl` (with our `lock` policy), then verifies the chain;
   * with `separate`, each replica appends to a chain of its own (not verified here).
   */
  const run = async (impl, lock, separate = false, rate = undefined, maxMs = cfg.replicaMs, via = port) => {
    await flush(admin)
    for (const child of children) child.send({ impl, port: via, lock, separate, rate, warmup: 300 })
    await Promise.all(children.map((c) => nextMessage(c, (m) => m.ready, 30_000)))
    for (const child of children) child.send({ maxOps: 1_000_000, maxMs })
    const results = Promise.all(children.map((c) => nextMessage(c, (m) => m.result, maxMs + 60_000)))
    await Promise.all(children.map((c) => nextMessage(c, (m) => m.measured, maxMs + 60_000)))
    for (const child of children) child.send({ stop: true })
    const per = (await results).map((m) => m.result)
    const latencies = per.flatMap((p) => p.latencies)
    const sum = (f) => per.reduce((n, p) => n + f(p), 0)
    const ops = sum((p) => p.ops)
    const ms = Math.max(...per.map((p) => p.ms))
    const chain = separate ? undefined : await verifyStoredChain(admin)
    const expected = sum((p) => p.ops + p.warmupOk + p.coolOk)
    return {
      opsPerSec: (ops / ms) * 1000,
      ops,
      errors: sum((p) => p.errors),
      firstError: per.find((p) => p.firstError)?.firstError,
      perReplica: per.map((p) => p.ops),
      attemptsPerAppend: sum((p) => p.attempts) / Math.max(1, ops),
      cpuUsPerAppend: sum((p) => p.cpuUs) / Math.max(1, ops),
      allocBytesPerAppend: sum((p) => p.allocBytes) / Math.max(1, ops),
      fairness: Math.min(...per.map((p) => p.ops)) / Math.max(1, ops / per.length),
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies.reduce((a, b) => (b > a ? b : a), -Infinity),
      chain: chain === undefined ? undefined : { ...chain, expected, complete: chain.records === expected }
    }
  }
  return { run, close }
}

let lockProbe
if (wanted("replicas")) {
  lockProbe = await safely("lock policy probe", () => runWorker({ mode: "probe-lock", impl: "ours" }))
  log(`lock policies: ${JSON.stringify(lockProbe)}`)
  for (let r = 0; r < cfg.rounds; r++) {
    // Each library gets processes of its own, so neither runs in processes warmed (or
    // littered) by the other. (The first row measured on a pool still comes out 10-20%
    // slower than later ones, whichever option it is: the processes' age; see README.)
    for (const impl of r % 2 === 0 ? [...IMPLS, "bare"] : ["bare", ...IMPLS].reverse()) {
      const variants = impl === "ours" ? [undefined, ...POLICIES, "separate", "paced"] : impl === "bare" ? [undefined] : [undefined, "separate", "paced"]
      let pool
      for (const lock of variants) {
        const res = await safely(`replicas ${impl} ${lock ?? ""}`, async () => {
          if (pool === undefined) {
            pool = await replicaPool()
            // Fresh processes: unrecorded contended runs first, so that no variant is measured
            // while the processes still compile and grow their heaps.
            for (let i = 0; i < 2; i++) await pool.run(impl, undefined, false, undefined, cfg.replicaMs)
          }
          try {
            const policy = lock === "separate" || lock === "paced" ? undefined : lock
            return await pool.run(impl, policy, lock === "separate", lock === "paced" ? PACED_RATE / REPLICAS : undefined)
          } catch (error) {
            pool.close()
            pool = undefined
            throw error
          }
        })
        push(lock ? `replicas:${lock}` : "replicas", impl, res)
        log(
          `audit 4 procs  ${impl.padEnd(4)} ${(lock ?? "default").padEnd(8)} round ${r + 1}: ${fmt(res.opsPerSec)}/s p50 ${fmt(res.p50, 2)} p99 ${fmt(res.p99, 2)} ms` +
            ` attempts/append ${fmt(res.attemptsPerAppend, 2)} cpu/append ${fmt(res.cpuUsPerAppend)} µs per replica ${JSON.stringify(res.perReplica ?? [])}` +
            ` errors ${res.errors ?? "-"} chain ${lock === "separate" ? "(one per replica)" : res.chain?.valid && res.chain?.complete ? `ok (${res.chain.records})` : JSON.stringify(res.chain ?? res.failed)}`
        )
      }
      pool?.close()
    }
  }
}

mark("replicas")

// ---------------------------------------------------------------------------
// audit over a simulated network round trip: a delay proxy, RTT_DELAY_MS each way

if (wanted("rtt")) {
  const proxy = await delayProxy(port, RTT_DELAY_MS)
  try {
    for (let r = 0; r < cfg.rounds; r++) {
      for (const impl of auditOrder(r)) {
        await flush(admin)
        const res = await safely(`audit rtt ${impl}`, () =>
          runWorker({ mode: "audit", impl, port: proxy.port, warmup: 300, maxOps: 100_000, maxMs: cfg.auditMs })
        )
        if (!res.failed) res.chain = await verifyStoredChain(admin)
        push("audit:rtt", impl, res)
        log(`audit 1 sink   ${impl.padEnd(4)} +${RTT_DELAY_MS}ms/way round ${r + 1}: ${fmt(res.opsPerSec)}/s p50 ${fmt(res.p50, 2)} ms chain ${res.chain?.valid ? "ok" : res.chain?.reason ?? "-"}`)
      }
      for (const impl of auditOrder(r)) {
        const res = await safely(`replicas rtt ${impl}`, async () => {
          const pool = await replicaPool()
          try {
            await pool.run(impl, undefined, false, undefined, cfg.replicaMs / 2, proxy.port)
            return await pool.run(impl, undefined, false, undefined, cfg.replicaMs, proxy.port)
          } finally {
            pool.close()
          }
        })
        push("replicas:rtt", impl, res)
        log(
          `audit 4 procs  ${impl.padEnd(4)} +${RTT_DELAY_MS}ms/way round ${r + 1}: ${fmt(res.opsPerSec)}/s p99 ${fmt(res.p99, 2)} max ${fmt(res.max, 1)} ms` +
            ` attempts/append ${fmt(res.attemptsPerAppend, 2)} per replica ${JSON.stringify(res.perReplica ?? [])} chain ${res.chain?.valid && res.chain?.complete ? "ok" : JSON.stringify(res.chain ?? res.failed)}`
        )
      }
    }
  } finally {
    await proxy.close()
  }
}

mark("rtt")

// ---------------------------------------------------------------------------
// token vault: tokenize at each pre-loaded size, reveal at 0 and 50k

const vaultRun = async (impl, size, phase, maxMs) => {
  await flush(admin)
  const { tokens } = await preloadVault(admin, size)
  const sample = tokens.filter((_, i) => i % Math.max(1, Math.floor(tokens.length / 2000)) === 0)
  const res = await runWorker({ mode: "vault", impl, phase, tokens: sample, warmup: size >= 10000 ? 1 : 20, maxOps: 100_000, maxMs, label: `${phase}${size}` })
  // (The floor's Map is in its own process: Redis's count says nothing of it.)
  if (phase === "tokenize" && impl !== "floor") {
    const stored = await admin.hlen("bench:tv:tokens")
    res.stored = stored
    res.lost = size + res.tokenized - stored
  }
  return res
}

if (wanted("tokenize") || wanted("reveal")) await preloadRecords(50000)
if (wanted("tokenize")) {
  // The floor ("floor": the core's own cost at this size, the same driver over an in-process
  // Map, no Redis) runs in every round, as long as the others and in turn with them: on a
  // machine whose speed drifts 2x, a floor measured once, after them, was a different machine.
  const VAULT_IMPLS = [...IMPLS, "floor"]
  for (const size of SIZES) {
    for (let r = 0; r < cfg.rounds; r++) {
      for (const impl of VAULT_IMPLS.map((_, i) => VAULT_IMPLS[(i + r) % VAULT_IMPLS.length])) {
        const res = await safely(`tokenize ${impl} ${size}`, () => vaultRun(impl, size, "tokenize", cfg.vaultMs))
        push(`tokenize:${size}`, impl, res)
        const what = impl === "floor" ? "core over an in-process Map" : impl.padEnd(4)
        log(`tokenize @${String(size).padEnd(6)} ${what} round ${r + 1}: ${fmt(res.opsPerSec)}/s p50 ${fmt(res.p50, 2)} ms cpu ${fmt(res.cpuUsPerOp)} µs/op lost ${res.lost ?? "-"}`)
      }
    }
  }
}
mark("tokenize")
if (wanted("reveal")) {
  for (const size of [0, 50000]) {
    for (let r = 0; r < cfg.rounds; r++) {
      for (const impl of order(r)) {
        const res = await safely(`reveal ${impl} ${size}`, () => vaultRun(impl, size, "reveal", cfg.revealMs))
        push(`reveal:${size}`, impl, res)
        log(`reveal   @${String(size).padEnd(6)} ${impl.padEnd(4)} round ${r + 1}: p50 ${fmt(res.p50, 3)} ms (${res.ops} ops) wrong ${res.wrong ?? "-"}`)
      }
    }
  }
}

mark("reveal")

// ---------------------------------------------------------------------------
// Redis accounting per operation (one round: the counts are deterministic)

if (wanted("account")) {
  for (const impl of IMPLS) {
    await flush(admin)
    const res = await safely(`account audit ${impl}`, () =>
      runWorker({ mode: "account", impl, what: "audit", tokens: [], warmup: 20, ops: cfg.auditAccountOps, maxMs: cfg.accountMs })
    )
    push("account:audit", impl, res)
    log(`account audit  ${impl.padEnd(4)}: ${JSON.stringify(res.append ?? res)}`)
  }
  for (const size of [1000, 50000]) {
    for (const impl of IMPLS) {
      await flush(admin)
      const { tokens } = await preloadVault(admin, size)
      const res = await safely(`account vault ${impl} ${size}`, () =>
        runWorker({ mode: "account", impl, what: "vault", tokens: tokens.slice(0, 500), warmup: size >= 10000 ? 1 : 10, ops: cfg.accountOps, maxMs: cfg.accountMs, label: `account${size}` })
      )
      push(`account:${size}`, impl, res)
      log(`account @${size} ${impl.padEnd(4)}: tokenize ${JSON.stringify(res.tokenize ?? res)} reveal ${JSON.stringify(res.reveal ?? "")}`)
    }
  }
}

mark("account")

// ---------------------------------------------------------------------------
// memory per replica for a 50k-token vault

let jsonBytes
if (wanted("memory")) {
  for (const impl of IMPLS) {
    await flush(admin)
    ;({ jsonBytes } = await preloadVault(admin, 50000))
    const res = await safely(`memory ${impl}`, () => runWorker({ mode: "memory", impl }, { expose: true }))
    push("memory", impl, res)
    log(`memory 50k     ${impl.padEnd(4)}: ${JSON.stringify(res)} (vault JSON ${mb(jsonBytes)})`)
  }
}

mark("memory")

// ---------------------------------------------------------------------------
// lock hand-off (issue 3)

let lockSource
if (wanted("lock")) {
  lockSource = (await oursWithRedisLock().catch(() => undefined))
    ? process.env.BENCH_LOCK_MODULE ?? "dist/haechi.js"
    : undefined
  for (let r = 0; r < cfg.rounds; r++) {
    for (const impl of order(r)) {
      await flush(admin)
      const res = await safely(`lock ${impl}`, () => runWorker({ mode: "lock", impl, warmup: quick ? 50 : 200, maxOps: cfg.lockOps, maxMs: cfg.lockMs }))
      push("lock", impl, res)
      log(`lock hand-off  ${impl.padEnd(4)} round ${r + 1}: ${res.available === false ? "n/a (withRedisLock not exported)" : `p50 ${fmt(res.p50, 2)} p99 ${fmt(res.p99, 2)} ms`}`)
    }
    await flush(admin)
    const floor = await safely("lock floor", () => runWorker({ mode: "lock-floor", impl: "ours", warmup: quick ? 50 : 200, maxOps: cfg.lockOps, maxMs: cfg.lockMs }))
    push("lock:floor", "ours", floor)
    log(`lock hand-off  floor round ${r + 1}: p50 ${fmt(floor.p50, 2)} p99 ${fmt(floor.p99, 2)} ms (bare ioredis, no library)`)
  }
}

mark("lock")

await flush(admin)
await admin.quit()

// ---------------------------------------------------------------------------
// the table

function fmt(value, digits = 0) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "n/a"
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
}
function mb(bytes) {
  return typeof bytes === "number" && Number.isFinite(bytes) ? `${(bytes / 1048576).toFixed(1)} MB` : "n/a"
}

/** The median of `pick` over the rounds of `key` for `impl` (failed runs left out). */
const med = (key, impl, pick) => median((raw[key]?.[impl] ?? []).filter((r) => r && !r.failed && r.available !== false).map(pick))
/** The floor's median, and ours against it round by round (each round's pair ran side by side), their median. */
const floorNote = (key, pick, digits, unit) => {
  const f = med(key, "floor", pick)
  if (!Number.isFinite(f)) return ""
  const ours = raw[key]?.ours ?? []
  const ratios = (raw[key]?.floor ?? []).map((fl, i) => (ours[i] && !ours[i].failed && !fl.failed ? pick(ours[i]) / pick(fl) : NaN)).filter(Number.isFinite)
  const paired = ratios.length > 0 ? `; ours ${[...ratios].sort((a, b) => a - b)[Math.floor(ratios.length / 2)].toFixed(2)}× of it, the median of its rounds` : ""
  return ` [core alone, in-process Map: ${fmt(f, digits)}${unit}${paired}]`
}
const problems = (key, impl) => {
  const runs = raw[key]?.[impl] ?? []
  const notes = []
  const failed = runs.filter((r) => r?.failed).length
  if (failed) notes.push(`${failed} run(s) failed`)
  const errors = runs.reduce((n, r) => n + (r?.errors ?? 0), 0)
  if (errors) notes.push(`${errors} op errors`)
  if (runs.some((r) => r?.chain && !(r.chain.valid && (r.chain.complete ?? true)))) notes.push("CHAIN INVALID")
  if (runs.some((r) => r?.lost)) notes.push("LOST TOKENS")
  if (runs.some((r) => r?.wrong)) notes.push("WRONG REVEAL")
  return notes.length ? ` ⚠ ${notes.join(", ")}` : ""
}
const rows = []
const row = (figure, key, pick, { digits = 0, unit = "", better = "higher", refKey = key, refPick = pick, note } = {}) => {
  if (!raw[key] && !raw[refKey]) return
  const a = med(key, "ours", pick)
  const b = med(refKey, "ref", refPick)
  const ratio = Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN
  const bare = med(key, "bare", pick)
  if (Number.isFinite(bare)) figure += ` [bare ioredis floor: ${fmt(bare, digits)}${unit}; ours ${Number.isFinite(a) && bare !== 0 ? (a / bare).toFixed(2) : "n/a"}× of it]`
  rows.push({
    figure,
    ours: a,
    ref: b,
    ratio,
    better,
    cells: [
      `${figure} ${better === "higher" ? "↑" : "↓"}`,
      `${fmt(a, digits)}${unit}${problems(key, "ours")}${note ? ` ${note}` : ""}`.trim(),
      `${fmt(b, digits)}${unit}${problems(refKey, "ref")}`,
      Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : "n/a"
    ]
  })
}

row("audit appends/s, one sink", "audit", (r) => r.opsPerSec)
row("audit append p50, one sink (ms)", "audit", (r) => r.p50, { digits: 3, better: "lower" })
row(`audit appends/s, ${REPLICAS} replica processes (total)`, "replicas", (r) => r.opsPerSec)
row(`audit append p50, ${REPLICAS} replicas (ms)`, "replicas", (r) => r.p50, { digits: 2, better: "lower" })
row(`audit append p99, ${REPLICAS} replicas (ms)`, "replicas", (r) => r.p99, { digits: 2, better: "lower" })
if (raw.replicas) {
  const chainCell = (impl) => {
    const runs = raw.replicas[impl].filter((r) => r.chain)
    const ok = runs.every((r) => r.chain.valid && r.chain.complete)
    return `${ok ? "valid" : "INVALID"}, ${runs.map((r) => r.chain.records).join("/")} records`
  }
  rows.push({ figure: "4-replica chain verified", cells: ["4-replica chain verified (seq 1..n, links, hashes, count)", chainCell("ours"), chainCell("ref"), ""] })
}
row("client CPU per audit append, one sink (µs)", "audit", (r) => r.cpuUsPerOp, { better: "lower" })
row("JS heap allocated per audit append, one sink (KB)", "audit", (r) => r.allocBytesPerOp / 1024, { digits: 1, better: "lower" })
row(`audit appends/s, one sink, over a delay proxy (+${RTT_DELAY_MS} ms each way)`, "audit:rtt", (r) => r.opsPerSec)
row(`audit appends/s, ${REPLICAS} replicas, over the delay proxy`, "replicas:rtt", (r) => r.opsPerSec)
row(`audit attempts per append, ${REPLICAS} replicas, over the delay proxy`, "replicas:rtt", (r) => r.attemptsPerAppend, { digits: 2, better: "lower" })
row(`audit append p99, ${REPLICAS} replicas, over the delay proxy (ms)`, "replicas:rtt", (r) => r.p99, { digits: 2, better: "lower" })
row(`audit append max latency, ${REPLICAS} replicas (ms)`, "replicas", (r) => r.max, { digits: 1, better: "lower" })
row(`fewest appends of a replica / fair share, ${REPLICAS} replicas`, "replicas", (r) => r.fairness, { digits: 2 })
row(`JS heap allocated per append, ${REPLICAS} replicas (KB, all replicas)`, "replicas", (r) => r.allocBytesPerAppend / 1024, { digits: 1, better: "lower" })
row(`${REPLICAS} replicas at ${PACED_RATE} appends/s offered (open loop, Poisson arrivals): p50 (ms, from arrival)`, "replicas:paced", (r) => r.p50, { digits: 2, better: "lower" })
row(`${REPLICAS} replicas at ${PACED_RATE} appends/s offered (open loop, Poisson arrivals): p99 (ms, from arrival)`, "replicas:paced", (r) => r.p99, { digits: 2, better: "lower" })
row(`control: ${REPLICAS} replica processes, each on a chain of its own (nothing shared): appends/s`, "replicas:separate", (r) => r.opsPerSec)
row(`control: ${REPLICAS} replica processes, each on a chain of its own: p99 (ms)`, "replicas:separate", (r) => r.p99, { digits: 2, better: "lower" })
row(`audit attempts per append, ${REPLICAS} replicas (fn runs / commit)`, "replicas", (r) => r.attemptsPerAppend, { digits: 2, better: "lower" })
row(`client CPU per append, ${REPLICAS} replicas (µs, all replicas)`, "replicas", (r) => r.cpuUsPerAppend, { better: "lower" })
for (const size of SIZES) {
  row(`tokenize/s, ${fmt(size)} tokens pre-loaded${floorNote(`tokenize:${size}`, (r) => r.opsPerSec, 0, "/s")}`, `tokenize:${size}`, (r) => r.opsPerSec)
}
for (const size of SIZES) {
  row(`client CPU per tokenize (µs), ${fmt(size)} tokens${floorNote(`tokenize:${size}`, (r) => r.cpuUsPerOp, 0, " µs")}`, `tokenize:${size}`, (r) => r.cpuUsPerOp, { better: "lower" })
}
for (const size of [0, 50000]) row(`reveal p50 (ms), ${fmt(size)} tokens`, `reveal:${size}`, (r) => r.p50, { digits: 3, better: "lower" })
for (const size of [0, 50000]) row(`client CPU per reveal (µs), ${fmt(size)} tokens`, `reveal:${size}`, (r) => r.cpuUsPerOp, { better: "lower" })
const acct = (key, phase, field) => (r) => r[phase]?.[field]
const rtCell = (key, phase) => [(r) => r[phase]?.roundTrips, (r) => r[phase]?.statsCalls]
for (const [label, key, phase] of [
  ["audit append", "account:audit", "append"],
  ["tokenize @1k", "account:1000", "tokenize"],
  ["tokenize @50k", "account:50000", "tokenize"],
  ["reveal @1k", "account:1000", "reveal"],
  ["reveal @50k", "account:50000", "reveal"]
]) {
  if (!raw[key]) continue
  const [sent, all] = rtCell(key, phase)
  const a = [med(key, "ours", sent), med(key, "ours", all)]
  const b = [med(key, "ref", sent), med(key, "ref", all)]
  rows.push({
    figure: `Redis round trips per ${label}`,
    ours: a[0],
    ref: b[0],
    ratio: a[0] / b[0],
    better: "lower",
    cells: [
      `Redis round trips per ${label} (commandstats calls incl. in-script) ↓`,
      `${fmt(a[0], 2)} (${fmt(a[1], 1)})${problems(key, "ours")}`,
      `${fmt(b[0], 2)} (${fmt(b[1], 1)})${problems(key, "ref")}`,
      Number.isFinite(a[0] / b[0]) ? `${(a[0] / b[0]).toFixed(2)}×` : "n/a"
    ]
  })
}
for (const [label, key, phase] of [
  ["audit append", "account:audit", "append"],
  ["tokenize @1k", "account:1000", "tokenize"],
  ["tokenize @50k", "account:50000", "tokenize"],
  ["reveal @1k", "account:1000", "reveal"],
  ["reveal @50k", "account:50000", "reveal"]
]) {
  row(`Redis time per ${label} (µs, each command at its median)`, key, acct(key, phase, "redisUsec"), { digits: 0, better: "lower" })
}
if (raw.memory) {
  row("memory per replica, 50k vault: retained heap (MB)", "memory", (r) => r.heapDelta / 1048576, { digits: 1, better: "lower" })
  row("memory per replica, 50k vault: RSS after (MB)", "memory", (r) => r.rssDelta / 1048576, { digits: 1, better: "lower" })
  row("memory per replica, 50k vault: peak RSS during first mutate (MB)", "memory", (r) => (r.peakRssDelta ?? NaN) / 1048576, { digits: 1, better: "lower" })
  row("first tokenize on a cold replica, 50k vault (ms)", "memory", (r) => r.firstMs, { digits: 0, better: "lower" })
  rows.push({ figure: "vault JSON size (50k tokens)", cells: ["vault JSON size, 50k tokens (ids + records)", mb(jsonBytes), mb(jsonBytes), ""] })
}
if (raw.lock) {
  const na = lockSource ? "" : " (not exported by dist/haechi.js)"
  for (const [label, pick] of [
    ["p50", (r) => r.p50],
    ["p99", (r) => r.p99]
  ]) {
    row(`lock hand-off ${label} (ms, holder's fn ends → waiter's fn starts)`, "lock", pick, { digits: 2, better: "lower", note: na.trim() })
  }
  if (raw["lock:floor"]) {
    const floor = (pick) => fmt(med("lock:floor", "ours", pick), 2)
    rows.push({
      figure: "lock hand-off floor",
      cells: [
        "lock hand-off floor, p50 / p99 (ms): bare ioredis, the release script hands over and PUBLISHes, no library",
        `${floor((r) => r.p50)} / ${floor((r) => r.p99)}`,
        "",
        ""
      ]
    })
  }
}
if (raw.replicas) {
  for (const policy of POLICIES) {
    const probe = lockProbe?.policies?.[policy]
    const honoured = probe?.honoured === true
    const tag = honoured ? `lock: "${policy}" honoured` : `lock: "${policy}" NOT honoured → n/a`
    for (const [label, pick, digits, better] of [
      ["appends/s", (r) => r.opsPerSec, 0, "higher"],
      ["p99 (ms)", (r) => r.p99, 2, "lower"]
    ]) {
      if (honoured) {
        row(`${REPLICAS} replicas, ours lock "${policy}" vs reference: ${label}`, `replicas:${policy}`, pick, { digits, better, refKey: "replicas" })
      } else {
        const b = med("replicas", "ref", pick)
        rows.push({ figure: `${REPLICAS} replicas, ours lock "${policy}": ${label}`, ours: NaN, ref: b, cells: [`${REPLICAS} replicas, ours lock "${policy}" vs reference: ${label} ${better === "higher" ? "↑" : "↓"}`, `n/a (${tag})`, fmt(b, digits), "n/a"] })
      }
    }
  }
}

const machine = {
  loadAverage: { start: loadAtStart, end: os.loadavg().map((l) => Number(l.toFixed(2))) },
  cpu: os.cpus()[0]?.model,
  cores: os.cpus().length,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  platform: `${os.type()} ${os.release()}`
}
const header = ["figure (↑ higher is better, ↓ lower is better)", "ours (haechi-store-effect)", "reference (haechi-store-redis 0.1.2)", "ours / ref"]
const table = [
  `| ${header.join(" | ")} |`,
  `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
  ...rows.map((r) => `| ${r.cells.join(" | ")} |`)
].join("\n")
const elapsed = (Date.now() - started) / 1000
const footer =
  `\n${quick ? "Quick run" : "Full run"}: ${cfg.rounds} round(s), medians over rounds; ${machine.cores}× ${machine.cpu}, ${machine.memoryGiB} GiB, Node ${machine.node}, ` +
  `one local redis-server (no persistence); ${elapsed.toFixed(0)} s; load average ${machine.loadAverage.start[0]} at the start, ${machine.loadAverage.end[0]} at the end.` +
  (raw.lock && !lockSource ? "\nLock hand-off (ours): n/a, `withRedisLock` is not exported by dist/haechi.js yet." : "") +
  (raw.lock && lockSource && lockSource !== "dist/haechi.js" ? `\nLock hand-off (ours): withRedisLock taken from ${lockSource} (BENCH_LOCK_MODULE).` : "") +
  (lockProbe && !lockProbe.failed
    ? `\nLock policies of ours: ${POLICIES.map((p) => `${p} ${lockProbe.policies[p]?.honoured ? "honoured" : "not honoured"}`).join(", ")} (bogus policy ${lockProbe.bogus}).`
    : "")

process.stdout.write(`\n${table}\n${footer}\n`)
writeFileSync(
  new URL("./latest.json", resultsDir),
  JSON.stringify({ quick, config: cfg, machine, startedAt: new Date(started).toISOString(), seconds: elapsed, lockProbe, lockSource: lockSource ?? null, rows: rows.map(({ cells, ...r }) => r), raw }, null, 1)
)
log(`\nwrote bench/results/latest.json`)
