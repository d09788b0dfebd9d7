/**
 * The published package works for a consumer: dist/ (built by the global setup), `npm pack` into a temp
 * dir, a blank ESM project that installs the tarball and ioredis@5 (then ioredis@6) from the registry, and
 * a script that imports `haechi-store-effect` and `haechi-store-effect/haechi` and uses
 * the in-memory stores end to end, then the Redis stores on the shared server (which
 * runs the Lua scripts embedded in `dist/`).
 */
import { execFile } from "node:child_process"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const run = promisify(execFile)
const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const dirs: Array<string> = []
afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))))

const sh = async (command: string, args: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    return await run(command, [...args], {
      cwd,
      env: { ...process.env, ...env, npm_config_update_notifier: "false" },
      maxBuffer: 64 * 1024 * 1024
    })
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(`${command} ${args.join(" ")} failed in ${cwd}:\n${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`)
  }
}

// What the consumer runs: plain JS, as a haechi gateway would.
const consumer = String.raw`
import { createHash } from "node:crypto"
import * as Lib from "haechi-store-effect"
import * as Haechi from "haechi-store-effect/haechi"
import { Redis } from "ioredis"

const assert = (ok, what) => { if (!ok) { throw new Error("assertion failed: " + what) } }
const canonical = (v) => Array.isArray(v) ? "[" + v.map(canonical).join(",") + "]"
  : v !== null && typeof v === "object" ? "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}"
  : JSON.stringify(v)
const next = (event, previous) => {
  const integrity = { alg: "sha256", canonicalization: "json-stable-v1", sequence: previous ? previous.sequence + 1 : 1, previousHash: previous ? previous.eventHash : null }
  const eventHash = createHash("sha256").update(canonical({ ...event, auditIntegrity: integrity })).digest("base64url")
  return { ...event, auditIntegrity: { ...integrity, eventHash } }
}
const record = (store, event) => store.transaction(async ({ readLastIntegrity, persist }) => {
  const r = next(event, await readLastIntegrity())
  await persist(r)
  return r
})
const useVault = async (vault) => {
  await vault.mutate(async (view) => {
    assert(view.get("__proto__") === undefined, "empty get")
    view.set("tok_email_1", { type: "email", createdAt: "c", expiresAt: null, metadata: {}, envelope: { ct: "x" }, aad: {} })
    view.set("__proto__", { type: "odd" })
  })
  const entries = await vault.read((view) => view.entries())
  assert(Array.isArray(entries) && entries.length === 2, "entries")
  assert((await vault.read((view) => view.get("__proto__"))).type === "odd", "odd id")
  const boom = new Error("boom")
  const err = await vault.mutate(async (view) => { view.delete("tok_email_1"); throw boom }).catch((e) => e)
  assert(err instanceof Error && err.message === "boom", "fn error")
  assert((await vault.read((view) => view.entries().length)) === 2, "nothing written")
}

// In memory, through the Promise facade.
const audit = Haechi.createMemoryAuditStore()
assert((await audit.ready()).ok === true, "ready")
const first = await record(audit, { type: "request", id: 1 })
const second = await record(audit, { type: "request", id: 2 })
assert(second.auditIntegrity.previousHash === first.auditIntegrity.eventHash, "chained")
assert((await audit._records()).length === 2, "records")
const bad = await audit.transaction(({ persist }) => persist({ no: "integrity" })).catch((e) => e)
assert(bad instanceof Haechi.InvalidRecord && bad._tag === "InvalidRecord", "typed rejection")
assert(bad instanceof Lib.InvalidRecord, "one error class for both entry points")
await useVault(Haechi.createMemoryTokenStore())

// The Effect API is there.
assert(typeof Lib.AuditStore.layerMemory === "function" && typeof Lib.TokenStore.layer === "function", "effect api")

// On Redis: the scripts are embedded in dist/.
const client = new Redis(process.env.REDIS_URL)
try {
  const prefix = process.env.PREFIX
  const redisAudit = Haechi.createRedisAuditStore({ client, keyPrefix: prefix + "audit:" })
  assert((await redisAudit.ready()).ok === true, "redis ready")
  await record(redisAudit, { id: "a" })
  await record(redisAudit, { id: "b" })
  const chain = await Haechi.readChain(client, prefix + "audit:")
  assert(chain.length === 2 && chain[1].auditIntegrity.sequence === 2, "redis chain")
  await useVault(Haechi.createRedisTokenStore({ client, keyPrefix: prefix + "tv:" }))
} finally {
  await client.quit()
}
console.log("consumer ok")
`

describe("the packed package", () => {
  it("builds, packs, installs into a blank ESM project and works end to end", async () => {
    const pack = await mkdtemp(join(tmpdir(), "haechi-pack-"))
    const project = await mkdtemp(join(tmpdir(), "haechi-consumer-"))
    dirs.push(pack, project)

    // dist/ was built once by the global setup (a build here could race the CLI tests').
    const { stdout: packed } = await sh("npm", ["pack", "--json", "--pack-destination", pack], root)
    const [info] = JSON.parse(packed) as Array<{ filename: string; files: Array<{ path: string }> }>
    const files = info!.files.map((f) => f.path)
    for (const needed of ["package.json", "dist/index.js", "dist/index.d.ts", "dist/haechi.js", "dist/haechi.d.ts"]) {
      expect(files, needed).toContain(needed)
    }
    // The scripts travel inside dist/ (embedded), not as files beside it.
    expect(files).toContain("dist/internal/luaSources.js")
    expect(files.filter((f) => f.startsWith("lua/"))).toEqual([])
    expect(files.filter((f) => f.startsWith("src/") || f.startsWith("test/"))).toEqual([])
    // Every bin the manifest declares is in the tarball.
    const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { bin?: Record<string, string> }
    for (const target of Object.values(manifest.bin ?? {})) expect(files).toContain(target.replace(/^\.\//, ""))

    await sh("npm", ["init", "-y"], project)
    const pkg = JSON.parse(await readFile(join(project, "package.json"), "utf8")) as Record<string, unknown>
    await writeFile(join(project, "package.json"), JSON.stringify({ ...pkg, type: "module" }, null, 2))
    await sh("npm", ["install", join(pack, info!.filename), "ioredis@5", "--no-audit", "--no-fund"], project)
    await writeFile(join(project, "consumer.mjs"), consumer)
    const { stdout } = await sh("node", ["consumer.mjs"], project, {
      REDIS_URL: sharedRedis().url,
      PREFIX: uniquePrefix("package")
    })
    expect(stdout).toContain("consumer ok")

    // A consumer on ioredis 6 (the peer range is >=5 <7): same package, same program.
    await sh("npm", ["install", "ioredis@6", "--no-audit", "--no-fund"], project)
    const installed = JSON.parse(await readFile(join(project, "node_modules/ioredis/package.json"), "utf8")) as {
      version: string
    }
    expect(installed.version).toMatch(/^6\./)
    const six = await sh("node", ["consumer.mjs"], project, {
      REDIS_URL: sharedRedis().url,
      PREFIX: uniquePrefix("package6")
    })
    expect(six.stdout).toContain("consumer ok")
  }, 240_000)
})
