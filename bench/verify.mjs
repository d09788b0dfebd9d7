#!/usr/bin/env node
/**
 * Benchmark: verify and export a large audit chain IN REDIS through dist/ (build first:
 * `npm run build`).
 *
 *   npm run build && node bench/verify.mjs [--records N] [--page-size P]
 *
 * 1. starts a throwaway redis-server (no persistence) on a free 127.0.0.1 port, in a
 *    temporary directory; it is killed on exit, Ctrl-C included;
 * 2. builds a valid N-record chain (default 1,000,000) of haechi-sized records with
 *    dist/Chain.js and RPUSHes it in pipelined batches, then sets the head keys exactly
 *    as the store's append script does;
 * 3. runs `verifyStore`, then `haechi-store export` to a temporary file (the CLI's own
 *    code, `main` from cli/dist/Cli.js), each in its OWN child process, so that the peak RSS
 *    reported (`process.resourceUsage().maxRSS`) is that of the verification or export
 *    alone, not of building the chain (the export's time excludes counting its lines);
 * 4. prints records/s and peak RSS for each, and whether the targets are met
 *    (>= 100,000 records/s, peak RSS < 150 MB at 1,000,000 records); then both again
 *    with V8's heap capped as NODE_OPTIONS could (they complete: what they keep alive is bounded),
 *    and the chain rules alone over in-memory texts (Chain.stepJson, the CPU ceiling on
 *    this machine at this moment), with the load average, to read the figures by.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, statSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const dist = (file) => new URL(`file://${join(root, "dist", file)}`).href

const args = process.argv.slice(2)
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  if (i === -1) return fallback
  const value = args[i + 1]
  if (value === undefined) throw new Error(`--${name} needs a value`)
  return value
}
const PREFIX = "bench:verify:"
/** V8 heap caps an operator can set with NODE_OPTIONS for a small footprint. */
const CAPPED = ["--max-old-space-size=96", "--max-semi-space-size=8"]

// ---------------------------------------------------------------------------
// child: one measured run (verify or export) against an existing chain

const child = async (what, url, pageSize, out) => {
  const { Effect, Layer } = await import("effect")
  const AuditStore = await import(dist("AuditStore.js"))
  const RedisClient = await import(dist("RedisClient.js"))
  const { verifyStore } = await import(dist("Verify.js"))
  const { main } = await import(new URL(`file://${join(root, "cli", "dist", "Cli.js")}`).href)
  const NodeContext = await import("@effect/platform-node/NodeContext")
  if (what === "core") {
    // The chain rules alone (Chain.stepJson over JSON texts in memory, no Redis, no
    // Stream): the CPU ceiling for verification on this machine right now.
    const { buildNextRecord, initialChainState, stepJson } = await import(dist("Chain.js"))
    const n = 100_000
    const texts = []
    let previous = null
    for (let i = 0; i < n; i++) {
      const record = buildNextRecord(event(i), previous)
      previous = record.auditIntegrity
      texts.push(JSON.stringify(record))
    }
    const t0 = performance.now()
    let state = initialChainState()
    for (const text of texts) state = stepJson(state, text)
    if (state.records !== n) throw new Error("the in-memory chain did not verify")
    process.stdout.write(JSON.stringify({ what, records: n, ms: performance.now() - t0, maxRssKb: process.resourceUsage().maxRSS }) + "\n")
    return
  }
  const started = performance.now()
  let records
  let extra = {}
  if (what === "verify") {
    const layer = AuditStore.layer({ keyPrefix: PREFIX }).pipe(Layer.provide(RedisClient.layer(url)))
    const result = await Effect.runPromise(Effect.provide(verifyStore({ pageSize }), layer))
    if (!result.valid) throw new Error(`the chain did not verify: ${JSON.stringify(result)}`)
    records = result.records
    extra = { headSequence: result.headSequence }
  } else {
    // Exactly what `haechi-store export` runs (its writer included), in this process.
    const code = await Effect.runPromise(
      Effect.provide(main(["node", "haechi-store", "export", "--url", url, "--prefix", PREFIX, "--out", out, "--page-size", String(pageSize)]), NodeContext.layer)
    )
    if (code !== 0) throw new Error(`export exited ${code}`)
    const ms = performance.now() - started
    const maxRssKb = process.resourceUsage().maxRSS
    // Count the file's lines in a stream (after the measurement).
    const { createReadStream } = await import("node:fs")
    records = 0
    for await (const chunk of createReadStream(out)) for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) records++
    process.stdout.write(JSON.stringify({ what, records, ms, maxRssKb, bytes: statSync(out).size }) + "\n")
    return
  }
  const ms = performance.now() - started
  process.stdout.write(JSON.stringify({ what, records, ms, maxRssKb: process.resourceUsage().maxRSS, ...extra }) + "\n")
}

// ---------------------------------------------------------------------------
// parent: redis-server, the chain, the measured children

const freePort = () =>
  new Promise((done, fail) => {
    const server = createServer()
    server.once("error", fail)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => done(port))
    })
  })

const startRedis = async (dir) => {
  const port = await freePort()
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no"],
    { stdio: ["ignore", "ignore", "inherit"] }
  )
  await new Promise((done, fail) => {
    proc.once("error", fail)
    proc.once("spawn", done)
  })
  const { Redis } = await import("ioredis")
  const client = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  client.on("error", () => {})
  for (let i = 0; ; i++) {
    try {
      await client.connect()
      if ((await client.ping()) === "PONG") break
    } catch (error) {
      if (i > 100) throw new Error(`redis-server did not start on port ${port}: ${error.message}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return { port, proc, client, url: `redis://127.0.0.1:${port}` }
}

/** A record of the size and shape haechi writes for a gateway request (~450 bytes). */
const event = (i) => ({
  type: "gateway.request",
  at: new Date(1_900_000_000_000 + i * 37).toISOString(),
  requestId: `req_${i.toString(16).padStart(12, "0")}`,
  tenant: `tenant-${i % 17}`,
  route: { provider: "openai", model: "gpt-4o-mini", path: "/v1/chat/completions" },
  decision: i % 23 === 0 ? "blocked" : "allowed",
  findings: [
    { type: "email", count: i % 3, action: "tokenize" },
    { type: "api_key", count: i % 2, action: "redact" }
  ],
  tokens: [`tok_email_${(i * 2654435761 % 4294967296).toString(16).padStart(8, "0")}`],
  latencyMs: (i * 7) % 900,
  bytes: { in: 1000 + (i % 5000), out: 400 + (i % 9000) }
})

const buildChain = async (client, n) => {
  const { buildNextRecord } = await import(dist("Chain.js"))
  await client.del(`${PREFIX}chain`, `${PREFIX}head`, `${PREFIX}head:hash`)
  const batch = 5000
  let previous = null
  let bytes = 0
  const started = performance.now()
  for (let start = 0; start < n; start += batch) {
    const texts = []
    for (let i = start; i < Math.min(n, start + batch); i++) {
      const record = buildNextRecord(event(i), previous)
      previous = record.auditIntegrity
      const text = JSON.stringify(record)
      bytes += text.length
      texts.push(text)
    }
    const pipeline = client.pipeline()
    for (let i = 0; i < texts.length; i += 1000) pipeline.rpush(`${PREFIX}chain`, ...texts.slice(i, i + 1000))
    await pipeline.exec()
    if (process.stderr.isTTY) process.stderr.write(`\rbuilding the chain: ${Math.min(n, start + batch)}/${n}`)
  }
  if (previous !== null) {
    await client.set(`${PREFIX}head`, JSON.stringify(previous))
    await client.set(`${PREFIX}head:hash`, previous.eventHash)
  }
  if (process.stderr.isTTY) process.stderr.write("\r\u001b[K")
  return { ms: performance.now() - started, bytes }
}

const measure = (what, url, pageSize, out, nodeFlags = []) =>
  new Promise((done, fail) => {
    const proc = spawn(process.execPath, [...nodeFlags, fileURLToPath(import.meta.url), "--child", what, "--url", url, "--page-size", String(pageSize), "--out", out], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let stdout = ""
    proc.stdout.setEncoding("utf8").on("data", (chunk) => (stdout += chunk))
    proc.on("error", fail)
    proc.on("close", (code) => (code === 0 ? done(JSON.parse(stdout.trim().split("\n").at(-1))) : fail(new Error(`${what} child exited ${code}`))))
  })

/** Runs the built CLI under /usr/bin/time: wall time, the largest process's peak RSS, its last line. */
const measureCli = (cliArgs) =>
  new Promise((done, fail) => {
    const started = performance.now()
    const proc = spawn("/usr/bin/time", ["-f", "maxrss %M", process.execPath, join(root, "cli", "dist", "bin.js"), ...cliArgs], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    proc.stdout.setEncoding("utf8").on("data", (chunk) => (stdout += chunk))
    proc.stderr.setEncoding("utf8").on("data", (chunk) => (stderr += chunk))
    proc.on("error", fail)
    proc.on("close", (code) => {
      const ms = performance.now() - started
      const rss = /maxrss (\d+)/.exec(stderr)
      if (code !== 0 || !rss) return fail(new Error(`haechi-store ${cliArgs[0]} exited ${code}: ${stderr.trim()}`))
      done({ ms, maxRssKb: Number(rss[1]), last: stdout.trim().split("\n").at(-1) })
    })
  })

const parent = async () => {
  const n = Number(option("records", "1000000"))
  const pageSize = Number(option("page-size", "1000"))
  if (!Number.isSafeInteger(n) || n < 1) throw new Error("--records must be a positive integer")
  if (!Number.isSafeInteger(pageSize) || pageSize < 1) throw new Error("--page-size must be a positive integer")
  try {
    statSync(join(root, "dist", "Verify.js"))
  } catch {
    throw new Error("dist/Verify.js is missing: run `npm run build` first")
  }
  const dir = mkdtempSync(join(tmpdir(), "haechi-bench-verify-"))
  let redis
  const cleanup = () => {
    try {
      redis?.proc.kill("SIGKILL")
    } catch {}
    rmSync(dir, { recursive: true, force: true })
  }
  process.on("exit", cleanup)
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130))
  redis = await startRedis(dir)
  console.log(`redis-server on 127.0.0.1:${redis.port}; ${n} records, pages of ${pageSize}`)
  const built = await buildChain(redis.client, n)
  const memory = await redis.client.info("memory")
  const used = /used_memory_human:(\S+)/.exec(memory)?.[1]
  console.log(
    `built the chain in ${(built.ms / 1000).toFixed(1)} s (${Math.round(n / (built.ms / 1000))} records/s, ` +
      `${(built.bytes / n).toFixed(0)} bytes/record, redis used_memory ${used})`
  )
  await redis.client.quit()

  const out = join(dir, "chain.jsonl")
  const results = []
  const runs = [
    ["verify", "verify", []],
    ["export", "export", []],
    // The same runs with V8's heap capped (as NODE_OPTIONS would): they complete, so what
    // they keep alive is bounded; the RSS is then mostly the runtime's own baseline.
    ["verify", `verify, ${CAPPED.join(" ")}`, CAPPED],
    ["export", `export, ${CAPPED.join(" ")}`, CAPPED],
    ["core", "Chain.stepJson alone, in memory (CPU ceiling)", []]
  ]
  for (const [what, label, flags] of runs) {
    const r = await measure(what, redis.url, pageSize, out, flags)
    results.push(r)
    const rate = r.records / (r.ms / 1000)
    const rssMb = r.maxRssKb / 1024
    const target = what === "core" ? "" : `  [${rate >= 100_000 && rssMb < 150 ? "meets" : "MISSES"} >= 100,000 records/s and < 150 MB]`
    console.log(
      `${label}: ${r.records} records in ${(r.ms / 1000).toFixed(2)} s, ${Math.round(rate).toLocaleString("en-US")} records/s, ` +
        `peak RSS ${rssMb.toFixed(0)} MB${r.bytes ? `, ${(r.bytes / 1024 / 1024).toFixed(0)} MB written` : ""}${target}`
    )
    if (what !== "core" && r.records !== n) throw new Error(`${what} saw ${r.records} records, expected ${n}`)
  }
  // The CLI as shipped: `haechi-store verify` caps V8's heap itself (cli/src/bin.ts).
  const cli = await measureCli(["verify", "--url", redis.url, "--prefix", PREFIX])
  {
    const rate = n / (cli.ms / 1000)
    const rssMb = cli.maxRssKb / 1024
    console.log(
      `haechi-store verify (the CLI as shipped): ${n} records in ${(cli.ms / 1000).toFixed(2)} s, ` +
        `${Math.round(rate).toLocaleString("en-US")} records/s, peak RSS ${rssMb.toFixed(0)} MB  ` +
        `[${rate >= 100_000 && rssMb < 150 ? "meets" : "MISSES"} >= 100,000 records/s and < 150 MB]; last line: ${cli.last}`
    )
  }
  const { loadavg, cpus } = await import("node:os")
  console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(" ")} on ${cpus().length} CPUs (figures are for this machine at this load)`)
  return results
}

if (args[0] === "--child") {
  await child(args[1], option("url"), Number(option("page-size", "1000")), option("out"))
  process.exit(0)
} else {
  try {
    await parent()
    process.exit(0)
  } catch (error) {
    console.error(`bench/verify: ${error instanceof Error ? error.message : String(error)}`)
    process.exit(1)
  }
}
