// Per-operation cost of the vault's fast path on one replica: a haechi-style tokenize
// (prune over entries(), then one set) and a reveal (read + get), on a warm cache, against
// a throwaway redis-server. DIST= runs another build of dist/; DIST=a,b alternates rounds of
// two builds in one process (A/B on a busy machine) and prints each one's median round.
// Three floors run in the same rounds: a bare ioredis HGET of one record (what a reveal's
// round trip costs with no library), the read's own protocol called bare (vault_changes
// by EVALSHA, as a warm cache calls it: what a reveal that proves its cache fresh cannot go
// under) and the same tokenize over an in-process Map (the reference's memory store: what
// the caller's own work costs with no shared store).
// Usage: node bench/vaultops.mjs [tokens=1000] [ops per round=1000] [rounds=5]
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer } from "node:net"
import { performance } from "node:perf_hooks"
import { pathToFileURL } from "node:url"
import { Redis } from "ioredis"

const dists = (process.env.DIST ?? "").split(",").filter((d) => d !== "")
const builds = dists.length === 0 ? [new URL("../dist/", import.meta.url).href] : dists.map((d) => pathToFileURL(`${d}/`).href)
const [preload = 1000, ops = 1000, rounds = 5] = process.argv.slice(2).map(Number)

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
const port = await freePort()
const server = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" })
const client = new Redis(port, "127.0.0.1", { lazyConnect: true })
client.on("error", () => {})
for (let i = 0; i < 50; i++) {
  try {
    await client.connect()
    break
  } catch {
    await new Promise((r) => setTimeout(r, 100))
  }
}

const record = (token) => ({
  type: "email",
  createdAt: new Date().toISOString(),
  expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
  metadata: { fingerprint: randomBytes(16).toString("hex") },
  envelope: { alg: "test", iv: randomBytes(12).toString("base64url"), ciphertext: randomBytes(24).toString("base64url") },
  aad: { purpose: "token-vault", token, type: "email", context: {} }
})

const connections = []
/** One build's store on its own prefix, pre-loaded, with haechi-shaped tokenize and reveal. */
const setup = async (build, n) => {
  const { createRedisTokenStore } = await import(`${build}haechi.js`)
  // A connection per build: each defines its own scripts under the same command names.
  const own = new Redis(port, "127.0.0.1")
  own.on("error", () => {})
  connections.push(own)
  const store = createRedisTokenStore({ client: own, keyPrefix: `bench:tv:${n}:`, startupChecks: "off" })
  const ids = []
  for (let i = 0; i < preload; i += 500) {
    await store.mutate((view) => {
      for (let j = i; j < Math.min(preload, i + 500); j++) {
        const id = `tok_email_${j}`
        ids.push(id)
        view.set(id, record(id))
      }
    })
  }
  // The vault stays at `preload` tokens: each tokenize replaces the one it made before.
  let last
  const tokenize = () =>
    store.mutate(async (view) => {
      const now = Date.now()
      for (const [t] of view.entries().filter(([, r]) => r.expiresAt && Date.parse(r.expiresAt) < now)) view.delete(t)
      if (last !== undefined) view.delete(last)
      last = `tok_email_${randomBytes(8).toString("hex")}`
      view.set(last, record(last))
    })
  const reveal = () => store.read((view) => view.get(ids[Math.floor(Math.random() * ids.length)] ?? last))
  return { tokenize, reveal }
}

const time = async (op) => {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < ops; i++) await op()
  const cpu = process.cpuUsage(cpu0)
  return { wall: ((performance.now() - t0) * 1000) / ops, cpu: (cpu.user + cpu.system) / ops }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** The floors: a bare HGET round trip, and tokenize over the reference's in-process Map. */
const floors = async () => {
  const bare = new Redis(port, "127.0.0.1")
  bare.on("error", () => {})
  connections.push(bare)
  const key = "bench:tv:0:tokens"
  const ids = Object.keys(await bare.hgetall(key))
  const hget = () => bare.hget(key, ids[Math.floor(Math.random() * ids.length)])
  // The read's own protocol with no library: vault_changes called bare (EVALSHA, its keys and
  // arguments as a warm cache sends them, the reply left undecoded), then the same HGET-free
  // answer from memory. What a proven-fresh reveal cannot go under.
  const { luaSources } = await import(`${builds[0]}internal/luaSources.js`)
  const { sha1, source } = luaSources.vault_changes
  await bare.script("LOAD", source)
  const p = "bench:tv:0:"
  let version = ""
  let seen = ""
  // Where build 0's cache stands now (its tokenize rounds move it): read before each round.
  const current = async () => {
    const [v, log] = await Promise.all([bare.get(`${p}version`), bare.lrange(`${p}log`, -1, -1)])
    version = v ?? ""
    seen = (log[0] ?? "").split(" ")[1] ?? ""
  }
  const changes = () => bare.evalsha(sha1, 3, `${p}version`, `${p}tokens`, `${p}log`, version, seen, "", 64)
  const { createMemoryTokenStore } = await import(new URL("./node_modules/haechi-store-redis/memory.mjs", import.meta.url).href)
  const map = createMemoryTokenStore()
  await map.mutate((view) => {
    for (let j = 0; j < preload; j++) view.set(`tok_email_${j}`, record(`tok_email_${j}`))
  })
  let last
  const tokenize = () =>
    map.mutate(async (view) => {
      const now = Date.now()
      for (const [t] of view.entries().filter(([, r]) => r.expiresAt && Date.parse(r.expiresAt) < now)) view.delete(t)
      if (last !== undefined) view.delete(last)
      last = `tok_email_${randomBytes(8).toString("hex")}`
      view.set(last, record(last))
    })
  return { tokenize, reveal: hget, changes, current }
}

const subjects = await Promise.all(builds.map((b, n) => setup(b, n)))
const floor = await floors()
subjects.push(floor, { tokenize: async () => {}, reveal: floor.changes, before: floor.current, floorOnly: true })
for (const s of subjects) {
  await s.before?.()
  for (let i = 0; i < 300; i++) await s.tokenize(), await s.reveal() // warm-up
}
const results = subjects.map(() => ({ tokenize: [], reveal: [] }))
for (let r = 0; r < rounds; r++) {
  // The order alternates by round: whatever runs first in a round fares better (GC debt, a warmer CPU).
  const order = [...subjects.entries()]
  // Every subject's reveals, then every subject's tokenizes: a reveal phase that came right
  // after its own tokenize phase would pay that phase's GC debt, which a floor's does not.
  const ordered = r % 2 === 0 ? order : order.reverse()
  for (const [n, s] of ordered) {
    await s.before?.()
    results[n].reveal.push(await time(s.reveal))
  }
  for (const [n, s] of ordered) if (!s.floorOnly) results[n].tokenize.push(await time(s.tokenize))
}
console.log(`${preload} tokens, ${rounds} rounds of ${ops} ops, medians:`)
const line = (n, name) =>
  `${name} ${median(results[n][name].map((x) => x.wall)).toFixed(0)} µs wall / ${median(results[n][name].map((x) => x.cpu)).toFixed(0)} µs CPU`
for (const [n, build] of builds.entries()) {
  const ratios =
    `tokenize ${(median(results[builds.length].tokenize.map((x) => x.wall)) / median(results[n].tokenize.map((x) => x.wall))).toFixed(2)}x the Map's rate, ` +
    `reveal CPU ${(median(results[n].reveal.map((x) => x.cpu)) / median(results[builds.length].reveal.map((x) => x.cpu))).toFixed(2)}x a bare HGET's, ` +
    `${(median(results[n].reveal.map((x) => x.cpu)) / median(results[builds.length + 1].reveal.map((x) => x.cpu))).toFixed(2)}x a bare vault_changes EVALSHA's`
  console.log(`  ${dists[n] ?? "dist"}: ${line(n, "tokenize")}; ${line(n, "reveal")} (${ratios})`)
}
console.log(
  `  floors: ${line(builds.length, "tokenize").replace("tokenize", "tokenize over a Map")}; ${line(builds.length, "reveal").replace("reveal", "bare HGET")}; ` +
    `${line(builds.length + 1, "reveal").replace("reveal", "bare vault_changes EVALSHA")} (${(median(results[builds.length + 1].reveal.map((x) => x.cpu)) / median(results[builds.length].reveal.map((x) => x.cpu))).toFixed(2)}x the HGET's CPU)`
)
await Promise.all([client, ...connections].map((c) => c.quit()))
server.kill()
