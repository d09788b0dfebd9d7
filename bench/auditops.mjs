// Per-append cost of one audit sink (haechi's core, bench/core.mjs) on one replica, against
// a throwaway redis-server: appends/s, client CPU and JS heap allocated per append. Rows:
// each build of dist/ (DIST=a,b alternates two builds in one process: A/B on a busy
// machine), the reference haechi-store-redis, and a bare-ioredis store doing the same fenced
// one-round-trip append with no library (the floor). Each round runs every subject in turn
// (the order rotates); the medians over the rounds are printed, with ratios to the floor.
//
// Allocation is the heap growth over batches of appends in which no garbage collection ran
// (run with a large young generation, e.g. node --max-semi-space-size=64, so most batches
// qualify); the median batch is taken.
// DELAY=<ms> puts every subject behind a delay proxy (bench/delayProxy.mjs, in a process of its
// own, so its CPU is not counted): ms each way, a simulated network round trip.
// Usage: [DIST=<build>,<build>] [DELAY=<ms>] node bench/auditops.mjs [appends per round=3000] [rounds=5]
import { spawn } from "node:child_process"
import { createConnection, createServer } from "node:net"
import { PerformanceObserver, performance } from "node:perf_hooks"
import { pathToFileURL } from "node:url"
import { Redis } from "ioredis"
import { createAuditSink, sampleEvent, verifyChain } from "./core.mjs"
import { open } from "./impls.mjs"

const dists = (process.env.DIST ?? "").split(",").filter((d) => d !== "")
const builds = dists.length === 0 ? [new URL("../dist/", import.meta.url).href] : dists.map((d) => pathToFileURL(`${d}/`).href)
const [ops = 3000, rounds = 5] = process.argv.slice(2).map(Number)

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
const port = await freePort()
const server = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
const reachable = () =>
  new Promise((resolve) => {
    const socket = createConnection(port, "127.0.0.1")
    socket.once("connect", () => (socket.end(), resolve(true)))
    socket.once("error", () => resolve(false))
  })
for (let i = 0; i < 50 && !(await reachable()); i++) await new Promise((r) => setTimeout(r, 100))
// The subjects' port: the server's, or a delay proxy's in front of it.
const subjectPort = await (async () => {
  if (process.env.DELAY === undefined) return port
  const proxy = spawn(process.execPath, ["--input-type=module", "-e", `
    const { delayProxy } = await import(${JSON.stringify(new URL("./delayProxy.mjs", import.meta.url).href)})
    const p = await delayProxy(${port}, ${Number(process.env.DELAY)})
    console.log(p.port)`], { stdio: ["ignore", "pipe", "inherit"] })
  process.on("exit", () => proxy.kill())
  return await new Promise((resolve) => proxy.stdout.once("data", (d) => resolve(Number(String(d).trim()))))
})()
const connect = async (to = subjectPort) => {
  const client = new Redis(to, "127.0.0.1")
  client.on("error", () => {})
  await client.ping()
  return client
}
const admin = await connect(port)

// The floor: haechi's transaction contract over bare ioredis. The head is cached; the append
// is one script fenced on the head's hash, whose conflict reply carries the current head.
const FLOOR_APPEND = `
local hash = redis.call("GET", KEYS[1]) or ""
if hash ~= ARGV[1] then return {0, redis.call("GET", KEYS[3])} end
redis.call("RPUSH", KEYS[2], ARGV[2])
redis.call("SET", KEYS[3], ARGV[3])
redis.call("SET", KEYS[1], ARGV[4])
return {1}`
const floorStore = async (prefix) => {
  const client = await connect()
  client.defineCommand("floorAppend", { numberOfKeys: 3, lua: FLOOR_APPEND })
  const keys = [`${prefix}head:hash`, `${prefix}chain`, `${prefix}head`]
  let head = null
  return {
    client,
    store: {
      transaction: async (fn) => {
        for (let attempt = 0; attempt < 128; attempt++) {
          let conflict = false
          const result = await fn({
            readLastIntegrity: async () => head,
            persist: async (record) => {
              const integrity = record.auditIntegrity
              const [ok, current] = await client.floorAppend(
                ...keys,
                integrity.previousHash ?? "",
                JSON.stringify(record),
                JSON.stringify(integrity),
                integrity.eventHash
              )
              if (ok === 1) head = integrity
              else {
                head = current ? JSON.parse(current) : null
                conflict = true
                throw new Error("fence conflict")
              }
            }
          }).catch((error) => {
            if (!conflict) throw error
          })
          if (!conflict) return result
        }
        throw new Error("retries exhausted")
      }
    }
  }
}

const clients = []
const subjects = []
for (const [n, build] of builds.entries()) {
  const { createRedisAuditStore } = await import(`${build}haechi.js`)
  // A connection per build: each defines its own scripts under the same command names.
  const client = await connect()
  clients.push(client)
  const prefix = `bench:audit:${n}:`
  subjects.push({ name: dists[n] ?? "dist", prefix, sink: createAuditSink({ store: createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off" }) }) })
}
// AUDITOPS_BUILDS_ONLY=1 leaves the reference and the floor out (e.g. for a --cpu-prof of ours alone).
if (!process.env.AUDITOPS_BUILDS_ONLY) {
  const ref = await open("ref", subjectPort, { auditPrefix: "bench:audit:ref:" })
  clients.push({ quit: ref.close })
  subjects.push({ name: "reference", prefix: "bench:audit:ref:", sink: createAuditSink({ store: ref.audit() }) })
  const floor = await floorStore("bench:audit:floor:")
  clients.push(floor.client)
  subjects.push({ name: "bare ioredis", prefix: "bench:audit:floor:", sink: createAuditSink({ store: floor.store }), floor: true })
}

let gcs = 0
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ["gc"] })
const settle = () => new Promise((r) => setImmediate(r))

const time = async (sink) => {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < ops; i++) await sink.record(sampleEvent())
  const cpu = process.cpuUsage(cpu0)
  const ms = performance.now() - t0
  return { perSec: (ops / ms) * 1000, cpu: (cpu.user + cpu.system) / ops }
}
const BATCH = 100
const alloc = async (sink) => {
  const samples = []
  for (let b = 0; b < 30 && samples.length < 8; b++) {
    await settle()
    const g0 = gcs
    const h0 = process.memoryUsage().heapUsed
    for (let i = 0; i < BATCH; i++) await sink.record(sampleEvent())
    const h1 = process.memoryUsage().heapUsed
    await settle()
    if (gcs === g0 && h1 > h0) samples.push((h1 - h0) / BATCH)
  }
  return median(samples)
}
const median = (xs) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)])

for (const s of subjects) for (let i = 0; i < 1500; i++) await s.sink.record(sampleEvent()) // warm-up
const results = subjects.map(() => ({ perSec: [], cpu: [], alloc: [] }))
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < subjects.length; k++) {
    const n = (k + r) % subjects.length
    const t = await time(subjects[n].sink)
    results[n].perSec.push(t.perSec)
    results[n].cpu.push(t.cpu)
    results[n].alloc.push(await alloc(subjects[n].sink))
  }
}
// Every chain must verify (the core's own verifier).
for (const s of subjects) {
  const records = (await admin.lrange(`${s.prefix}chain`, 0, -1)).map((j) => JSON.parse(j))
  const v = verifyChain(records)
  if (!v.valid) console.log(`  ! ${s.name}: chain does not verify: ${v.reason}`)
}
const floorAt = subjects.findIndex((s) => s.floor)
const fm = (n, k) => median(results[n][k])
console.log(`one sink, ${rounds} rounds of ${ops} appends (alloc: batches of ${BATCH}), medians:`)
for (const [n, s] of subjects.entries()) {
  const ratio = (k) => (n === floorAt || floorAt < 0 ? "" : ` (${(fm(n, k) / fm(floorAt, k)).toFixed(2)}x)`)
  console.log(
    `  ${s.name.padEnd(28)} ${fm(n, "perSec").toFixed(0).padStart(6)}/s${ratio("perSec")}  CPU ${fm(n, "cpu").toFixed(0)} µs${ratio("cpu")}  alloc ${(fm(n, "alloc") / 1024).toFixed(1)} KB${ratio("alloc")}`
  )
}
console.log(`  per round appends/s: ${subjects.map((s, n) => `${s.name}: ${results[n].perSec.map((x) => x.toFixed(0)).join(" ")}`).join("; ")}`)
await Promise.all([admin, ...clients].map((c) => c.quit()))
server.kill()
