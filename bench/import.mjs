/**
 * What importing the facade costs next to importing `effect/Effect`: each sample is a
 * fresh `node` process that times one dynamic `import()` (performance.now() around it),
 * the targets alternated; prints the medians, their ratio, and which of effect/Schema,
 * effect/Stream, ioredis and fast-check each graph loads (a resolve hook records every ES
 * module; CommonJS files a package requires, such as ioredis's own, are not counted).
 *
 *   npm run build && node bench/import.mjs [samples=15]
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const samples = Math.max(3, Math.min(101, Number(process.argv[2] ?? 15)))
const targets = {
  "effect/Effect": "effect/Effect",
  "ioredis (the peer a facade user constructs)": "ioredis",
  "effect/Stream": "effect/Stream",
  "haechi-store-effect/haechi (dist/haechi.js)": pathToFileURL(join(root, "dist/haechi.js")).href,
  "haechi-store-effect (dist/index.js)": pathToFileURL(join(root, "dist/index.js")).href
}

const timeOnce = (specifier) =>
  Number(
    execFileSync(
      process.execPath,
      ["--input-type=module", "-e", `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t)`],
      { cwd: root, encoding: "utf8", timeout: 30_000 }
    ).trim()
  )

/** The module URLs one import loads, through a resolve hook that appends each to a file. */
const loaded = (specifier) => {
  const dir = mkdtempSync(join(tmpdir(), "import-bench-"))
  const log = join(dir, "loaded.txt")
  const hook = `import { appendFileSync } from "node:fs"
export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r }`
  const register = `import { register } from "node:module"; register(${JSON.stringify("data:text/javascript," + encodeURIComponent(hook))})`
  try {
    execFileSync(
      process.execPath,
      ["--import", "data:text/javascript," + encodeURIComponent(register), "--input-type=module", "-e", `await import(${JSON.stringify(specifier)})`],
      { cwd: root, encoding: "utf8", timeout: 30_000 }
    )
    return [...new Set(readFileSync(log, "utf8").split("\n").filter(Boolean))]
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const times = Object.fromEntries(Object.keys(targets).map((name) => [name, []]))
for (let i = 0; i < samples; i++) for (const [name, specifier] of Object.entries(targets)) times[name].push(timeOnce(specifier))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const base = median(times["effect/Effect"])
console.log(`import() time in a fresh process, median of ${samples} (ms):`)
for (const [name, xs] of Object.entries(times)) {
  console.log(`  ${name.padEnd(46)} ${median(xs).toFixed(1).padStart(7)}   ${(median(xs) / base).toFixed(2)}x effect/Effect`)
}
for (const [name, specifier] of Object.entries(targets).filter(([name]) => name.startsWith("haechi"))) {
  const urls = loaded(specifier)
  const has = (pattern) => (urls.some((u) => pattern.test(u)) ? "loaded" : "not loaded")
  const schema = has(/\/effect\/dist\/esm\/Schema\.js$/)
  const stream = has(/\/effect\/dist\/esm\/Stream\.js$/)
  const ioredis = has(/\/ioredis\//)
  const fastCheck = has(/\/fast-check\//)
  console.log(`  ${name}: ${urls.length} ES modules; effect/Schema ${schema}; effect/Stream ${stream}; ioredis ${ioredis}; fast-check ${fastCheck}`)
}
