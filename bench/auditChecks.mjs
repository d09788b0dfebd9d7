// What the audit store's record checks cost per append (needs `npm run build` first).
//
//   node bench/auditChecks.mjs <redis-url> [baseline audit_append.lua]
//
// Use a throwaway server: it runs CONFIG RESETSTAT and leaves keys under "bench:checks:".
// 1. In-process, per record: the JSON-faithfulness check (jsonProblem) that every append
//    runs, and the eventHash recomputation that verifyRecords: "full" adds.
// 2. Server-side, per append: Redis's own time in audit_append.lua (INFO commandstats),
//    and, given a baseline script file, in that one on the same records (it must take the
//    same KEYS/ARGV; extra ARGV are ignored by an older script).
// 3. End to end, per append: one sink (haechi's core as bench/core.mjs does it) through the
//    facade, verifyRecords "chain" (default) against "full", alternating, medians.
import { readFileSync } from "node:fs"
import { createHash } from "node:crypto"
import { Redis } from "ioredis"
import { buildNextRecord, computeEventHash } from "../dist/Chain.js"
import { createRedisAuditStore } from "../dist/haechi.js"
import { jsonProblem } from "../dist/internal/jsonRecord.js"
import { appendKeysOf } from "../dist/internal/audit/backing.js"
import { auditKeys } from "../dist/internal/keys.js"
import { luaSource } from "../scripts/luaSource.mjs"

const url = process.argv[2]
if (!url) throw new Error("usage: node bench/auditChecks.mjs <redis-url> [baseline.lua]")
const baselineFile = process.argv[3]
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const event = (i) => ({
  type: "proxy.request",
  timestamp: new Date(1_700_000_000_000 + i).toISOString(),
  identity: { id: `user-${i % 50}`, roles: ["reader", "agent"] },
  request: { method: "POST", path: "/v1/chat/completions", model: "gpt-x", headers: { "content-type": "application/json" } },
  findings: [{ kind: "email", count: 2, action: "tokenize" }, { kind: "api_key", count: 1, action: "block" }],
  decision: { allowed: true, policy: "default", latencyMs: 12.5 },
  note: "x".repeat(400)
})

// 1. In-process checks.
{
  let previous = null
  const records = []
  for (let i = 0; i < 2_000; i++) {
    const record = buildNextRecord(event(i), previous)
    previous = record.auditIntegrity
    records.push(record)
  }
  const per = (f) => {
    const rounds = []
    for (let r = 0; r < 7; r++) {
      const started = process.hrtime.bigint()
      for (let k = 0; k < 5; k++) for (const record of records) f(record)
      rounds.push(Number(process.hrtime.bigint() - started) / 1000 / (5 * records.length))
    }
    return median(rounds)
  }
  const size = JSON.stringify(records[0]).length
  console.log(`record: ${size} bytes of JSON`)
  console.log(`jsonProblem (every append):             ${per((r) => jsonProblem(r)).toFixed(2)} µs per record`)
  console.log(`computeEventHash (verifyRecords "full"): ${per((r) => computeEventHash(r)).toFixed(2)} µs per record`)
}

const client = new Redis(url)
const keysOf = (prefix) => appendKeysOf(auditKeys(prefix))

// 2. Server-side script time, on the same records. `keptSeconds` is ARGV[14] (the store
// sends 30: at this rate every id is kept, and the floor read with the head keys says so;
// 0 keeps the last 1,000 only, and each append past them drops one). The variants run in
// 24 alternating batches of 250 appends, each on its own chain that grows across batches,
// and each batch's time is compared with the baseline's batch beside it: the machine's
// speed drifts 2x within a minute, a paired ratio does not.
const variant = (name, lua, keptSeconds, run) => ({
  name,
  lua,
  keptSeconds,
  sha: createHash("sha1").update(lua).digest("hex"),
  keys: keysOf(`bench:checks:${run}:${name}:`),
  previous: null,
  i: 0,
  samples: []
})
const batch = async (v, n) => {
  await client.config("RESETSTAT")
  for (let k = 0; k < n; k++, v.i++) {
    const record = buildNextRecord(event(v.i), v.previous)
    const integrity = record.auditIntegrity
    const reply = await client.evalsha(v.sha, 8, ...v.keys, integrity.previousHash ?? "", JSON.stringify(record),
      JSON.stringify(integrity), integrity.eventHash, integrity.sequence, `c${v.i}`, "", "", "", "", "",
      v.previous ? v.previous.sequence : "", v.previous ? v.previous.eventHash : "", v.keptSeconds)
    if (!Array.isArray(reply) || reply[0] !== 1) throw new Error(`${v.name} append ${v.i}: ${JSON.stringify(reply)}`)
    v.previous = integrity
  }
  const stats = await client.info("commandstats")
  v.samples.push(Number(/cmdstat_evalsha:calls=\d+,usec=\d+,usec_per_call=([\d.]+)/.exec(stats)?.[1]))
}
{
  const current = luaSource("audit_append")
  const run = Date.now().toString(36) // fresh chains per run, however many ran before
  const variants = [variant("current", current, 30, run), variant("count", current, 0, run)]
  if (baselineFile) variants.push(variant("baseline", readFileSync(baselineFile, "utf8"), 30, run))
  for (const v of variants) await client.script("LOAD", v.lua)
  for (let round = 0; round < 24; round++) {
    for (const v of round % 2 ? variants : [...variants].reverse()) await batch(v, 250)
  }
  const [ours, countOnly, baseline] = variants
  const paired = (v) => baseline ? `, ${median(v.samples.map((x, k) => x / baseline.samples[k])).toFixed(3)}x the baseline's (paired)` : ""
  console.log(`audit_append.lua in Redis:   ${median(ours.samples).toFixed(2)} µs per append${paired(ours)}`)
  console.log(`  ids kept by count only:    ${median(countOnly.samples).toFixed(2)} µs per append${paired(countOnly)}`)
  if (baseline) console.log(`baseline script in Redis:    ${median(baseline.samples).toFixed(2)} µs per append`)
}

// 3. End to end through the facade, one sink.
{
  const sinkRun = async (verifyRecords, prefix, n) => {
    const store = createRedisAuditStore({ client, keyPrefix: prefix, lock: "never", verifyRecords })
    const record = (e) =>
      store.transaction(async ({ readLastIntegrity, persist }) => {
        const r = buildNextRecord(e, await readLastIntegrity())
        await persist(r)
        return r
      })
    for (let i = 0; i < 500; i++) await record(event(i))
    const started = process.hrtime.bigint()
    for (let i = 0; i < n; i++) await record(event(i))
    return Number(process.hrtime.bigint() - started) / 1000 / n
  }
  const runs = { chain: [], full: [] }
  for (let round = 0; round < 4; round++) {
    for (const mode of round % 2 === 0 ? ["chain", "full"] : ["full", "chain"]) {
      runs[mode].push(await sinkRun(mode, `bench:checks:sink:${mode}:${round}:`, 3_000))
    }
  }
  const fmt = (xs) => xs.map((x) => x.toFixed(0)).join(", ")
  console.log(`one sink, verifyRecords "chain": ${median(runs.chain).toFixed(1)} µs per append (rounds ${fmt(runs.chain)})`)
  console.log(`one sink, verifyRecords "full":  ${median(runs.full).toFixed(1)} µs per append (rounds ${fmt(runs.full)})`)
}
await client.quit()
