// The rate limiter's cost: ours (createRedisRateLimiter().allow, ../dist/haechi.js) against
// the bare ioredis script haechi's satellite runs (INCR, then PEXPIRE on the first hit, on
// `${prefix}${key}:${floor(Date.now() / windowMs)}`: a fixed window on the caller's clock),
// in one process, alternating within each round, same Redis, same connection settings.
//
//   node bench/ratelimit.mjs --port <redis port> [--quick] [--rounds=N]
//   npm run bench -- --ratelimit [--quick]      # bench/run.sh starts a throwaway Redis
//
// Rows: "many keys" (1,000 identities, limit 600/min: every call allowed, each key's log
// grows), "hot key" (one identity over its 100/min limit: nearly every call denied).
// Latency: one call in flight, p50/p99 over the calls. Throughput: 32 calls in flight for a
// fixed time. Also the memory one full key's log takes (MEMORY USAGE). Medians over rounds.
import { Redis } from "ioredis"
import { median, quantile } from "./stats.mjs"

const argv = process.argv.slice(2)
const flag = (name) => {
  const hit = argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  return hit === undefined ? undefined : hit.includes("=") ? hit.slice(hit.indexOf("=") + 1) : true
}
const port = Number(flag("port"))
if (!Number.isInteger(port) || port <= 0) throw new Error("--port=<redis port> is required (bench/run.sh starts the server)")
const quick = flag("quick") === true
const rounds = typeof flag("rounds") === "string" ? Math.max(1, Number(flag("rounds"))) : quick ? 1 : 3
const LATENCY_CALLS = quick ? 1_000 : 4_000
const THROUGHPUT_MS = quick ? 1_000 : 3_000
const IN_FLIGHT = 32
const WINDOW_MS = 60_000
const log = (...parts) => process.stderr.write(parts.join(" ") + "\n")

const { createRedisRateLimiter } = await import(new URL("../dist/haechi.js", import.meta.url).href)

const open = async () => {
  const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true })
  await client.connect()
  return client
}

// The satellite's store (`hit(key, windowMs) -> count`), as it runs it: one Lua INCR + PEXPIRE.
const satellite = (client, keyPrefix) => {
  client.defineCommand("benchFixedWindowHit", {
    numberOfKeys: 1,
    lua: "local c = redis.call('INCR', KEYS[1]) if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return c"
  })
  return {
    allow: async (key, limit) =>
      (await client.benchFixedWindowHit(`${keyPrefix}${key}:${Math.floor(Date.now() / WINDOW_MS)}`, WINDOW_MS)) <= limit
  }
}

const impls = {
  ours: (client, run) => createRedisRateLimiter({ client, keyPrefix: `bench:rl:ours:${run}:` }),
  satellite: (client, run) => satellite(client, `bench:rl:sat:${run}:`)
}

const rows = {
  "many keys": { keys: 1_000, limit: 600 },
  "hot key": { keys: 1, limit: 100 }
}

let runs = 0
const measure = async (implName, row) => {
  const client = await open()
  const limiter = impls[implName](client, ++runs)
  let n = 0
  const call = () => limiter.allow(`id-${n++ % row.keys}`, row.limit)
  for (let i = 0; i < 2_000; i++) await call() // warm-up (JIT, script loaded)
  const latencies = []
  let allowed = 0
  for (let i = 0; i < LATENCY_CALLS; i++) {
    const t = performance.now()
    if (await call()) allowed++
    latencies.push(performance.now() - t)
  }
  let done = 0
  const until = performance.now() + THROUGHPUT_MS
  const started = performance.now()
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < until) {
        await call()
        done++
      }
    })
  )
  const perSecond = done / ((performance.now() - started) / 1000)
  await client.quit()
  return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), perSecond, allowedShare: allowed / LATENCY_CALLS }
}

const results = {}
for (let round = 1; round <= rounds; round++) {
  for (const [rowName, row] of Object.entries(rows)) {
    const order = round % 2 === 1 ? ["ours", "satellite"] : ["satellite", "ours"]
    for (const impl of order) {
      const r = await measure(impl, row)
      ;((results[rowName] ??= {})[impl] ??= []).push(r)
      log(`round ${round} ${rowName} ${impl}: p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms, ${Math.round(r.perSecond)}/s`)
    }
  }
}

// Memory of one key's full log (the satellite's counter is one small string per window).
const client = await open()
const memory = {}
for (const limit of [60, 128, 129, 1_000, 10_000]) {
  const limiter = createRedisRateLimiter({ client, keyPrefix: `bench:rl:mem:${limit}:` })
  for (let i = 0; i < limit; i += 200) await Promise.all(Array.from({ length: Math.min(200, limit - i) }, () => limiter.allow("k", limit)))
  const bytes = await client.call("MEMORY", "USAGE", `bench:rl:mem:${limit}:k`, "SAMPLES", "0")
  memory[limit] = { bytes, perEntry: bytes / limit }
}
const satKey = "bench:rl:sat:memory:k"
await client.set(satKey, "1", "PX", WINDOW_MS)
const satBytes = await client.call("MEMORY", "USAGE", satKey)
const version = (await client.info("server")).match(/redis_version:(\S+)/)?.[1]
await client.quit()

const med = (xs, k) => median(xs.map((x) => x[k]))
console.log(`\nRate limiter: allow() on redis-server ${version}, ${rounds} round(s), medians; ${IN_FLIGHT} in flight for throughput\n`)
console.log("| row | impl | p50 ms | p99 ms | calls/s | allowed |")
console.log("|---|---|---|---|---|---|")
for (const [rowName, byImpl] of Object.entries(results)) {
  for (const [impl, rs] of Object.entries(byImpl)) {
    console.log(`| ${rowName} | ${impl} | ${med(rs, "p50").toFixed(3)} | ${med(rs, "p99").toFixed(3)} | ${Math.round(med(rs, "perSecond")).toLocaleString("en-US")} | ${(med(rs, "allowedShare") * 100).toFixed(0)}% |`)
  }
  const o = byImpl.ours
  const s = byImpl.satellite
  console.log(`| ${rowName} | ours / satellite | ${(med(o, "p50") / med(s, "p50")).toFixed(2)}x | ${(med(o, "p99") / med(s, "p99")).toFixed(2)}x | ${(med(o, "perSecond") / med(s, "perSecond")).toFixed(2)}x | |`)
}
console.log("\n| limit (full log) | bytes | bytes per entry |")
console.log("|---|---|---|")
for (const [limit, m] of Object.entries(memory)) console.log(`| ${limit} | ${m.bytes} | ${m.perEntry.toFixed(1)} |`)
console.log(`| satellite counter | ${satBytes} | |`)
