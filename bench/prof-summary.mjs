// Summarizes a V8 .cpuprofile (from `npm run bench -- --cpu-prof ...`): where the time went
// by module (effect, ioredis, our dist/, the bench driver, node internals, GC, idle), then
// the top functions by self time and by inclusive time.
//   node bench/prof-summary.mjs bench/results/prof/<file>.cpuprofile [--top=25] [--filter=text]
import { readFileSync } from "node:fs"

const args = process.argv.slice(2)
const file = args.find((a) => !a.startsWith("--"))
if (!file) throw new Error("usage: node bench/prof-summary.mjs <file.cpuprofile> [--top=N] [--filter=text]")
const top = Number(args.find((a) => a.startsWith("--top="))?.slice(6) ?? 25)
const filter = args.find((a) => a.startsWith("--filter="))?.slice(9)

const profile = JSON.parse(readFileSync(file, "utf8"))
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const moduleOf = ({ url, functionName }) => {
  if (functionName === "(garbage collector)") return "GC"
  if (functionName === "(idle)") return "idle"
  if (functionName === "(program)") return "(program)"
  if (!url) return "native/builtin"
  if (url.includes("/node_modules/effect/")) return "effect"
  if (url.includes("/node_modules/ioredis/") || url.includes("/node_modules/@ioredis/") || url.includes("redis-parser")) return "ioredis"
  if (url.includes("/node_modules/@redis/") || url.includes("/node_modules/redis/")) return "node-redis"
  if (url.includes("/node_modules/haechi-store-redis/")) return "haechi-store-redis"
  if (url.includes("/dist/")) return "ours (dist/)"
  if (url.includes("/bench/")) return "bench driver"
  if (url.startsWith("node:")) return "node internals"
  return url.replace(/^.*\/node_modules\//, "").split("/")[0]
}
const keyOf = ({ functionName, url, lineNumber }) =>
  `${functionName || "(anonymous)"} ${url ? url.replace(/^.*\/(node_modules|dist|bench)\//, "$1/") : ""}:${lineNumber + 1}`

const self = new Map()
const inclusive = new Map()
const modules = new Map()
let total = 0
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0
  const leaf = byId.get(profile.samples[i])
  if (!leaf) continue
  total += dt
  const k = keyOf(leaf.callFrame)
  self.set(k, (self.get(k) ?? 0) + dt)
  const m = moduleOf(leaf.callFrame)
  modules.set(m, (modules.get(m) ?? 0) + dt)
  const seen = new Set()
  for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
    const key = keyOf(byId.get(id).callFrame)
    if (seen.has(key)) continue
    seen.add(key)
    inclusive.set(key, (inclusive.get(key) ?? 0) + dt)
  }
}
const busy = total - (modules.get("idle") ?? 0)
const pct = (t, of = busy) => `${((t / of) * 100).toFixed(1).padStart(5)}%`
const ms = (t) => `${(t / 1000).toFixed(0).padStart(7)} ms`
const print = (title, map, n) => {
  console.log(`\n${title}`)
  for (const [k, t] of [...map].filter(([k]) => !filter || k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, n)) {
    console.log(`${ms(t)} ${pct(t)}  ${k}`)
  }
}
console.log(`${file}\nsampled ${ms(total)}, busy (not idle) ${ms(busy)}; percentages are of busy time`)
print("by module (self time)", modules, 20)
print(`top ${top} by self time`, self, top)
print(`top ${top} by inclusive time`, inclusive, top)
