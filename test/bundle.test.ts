/**
 * A bundled consumer works: an app importing `haechi-store-effect` and
 * `haechi-store-effect/haechi` is bundled by esbuild into ONE file (the Lua scripts come
 * embedded in dist/, built by the global setup), copied to a directory with no
 * node_modules and no lua/ anywhere above it, and run there against the shared Redis:
 * the facade's audit and vault stores, the Effect layers and `withRedisLock`.
 *
 * And a bundle whose embedded scripts are broken (one damaged, one missing) fails when
 * a store or the rate limiter is made, with `InvalidConfig` naming the script, even with Redis unreachable:
 * never `RedisUnavailable`, never at the first write.
 */
import { execFile } from "node:child_process"
import { mkdir, symlink, writeFile } from "node:fs/promises"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { build, type Plugin } from "esbuild"
import { describe, expect, it } from "vitest"
import { uniquePrefix } from "./support/keys.js"
import { refusedPort } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"
import { tempDirs } from "./support/tempDirs.js"

const run = promisify(execFile)
const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const tempDir = tempDirs()

// ioredis is CommonJS: an ESM bundle gives its require() calls a real `require`.
const banner = `import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);`

/** Bundles `source` (an app importing the package by name) into `<dir>/app.mjs`. */
const bundle = async (source: string, dir: string, plugins: Array<Plugin> = []) => {
  const src = await tempDir("haechi-bundle-src-")
  // The package by name, resolved as a consumer's would be: node_modules, then `exports`.
  await mkdir(join(src, "node_modules"))
  await symlink(root, join(src, "node_modules", "haechi-store-effect"), "dir")
  const entry = join(src, "app.mjs")
  await writeFile(entry, source)
  const outfile = join(dir, "app.mjs")
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    banner: { js: banner },
    // The app's own `effect` and `ioredis` (the package's peers) from this repository.
    nodePaths: [join(root, "node_modules")],
    plugins,
    logLevel: "silent"
  })
  return outfile
}

const node = async (file: string, env: Record<string, string>) => {
  try {
    return await run(process.execPath, [file], {
      cwd: resolve(file, ".."),
      env: { ...process.env, ...env },
      timeout: 60_000
    })
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(`${file} failed:\n${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`)
  }
}

const app = String.raw`
import { Effect, Layer } from "effect"
import * as Lib from "haechi-store-effect"
import * as Haechi from "haechi-store-effect/haechi"
import { Redis } from "ioredis"

const assert = (ok, what) => { if (!ok) throw new Error("assertion failed: " + what) }
const prefix = process.env.PREFIX
const client = new Redis(process.env.REDIS_URL)
try {
  // The facade: every script (append, vault apply/changes/scan, ready probe) runs.
  const audit = Haechi.createRedisAuditStore({ client, keyPrefix: prefix + "audit:" })
  assert((await audit.ready()).ok === true, "ready")
  for (const id of [1, 2, 3]) {
    await audit.transaction(async ({ readLastIntegrity, persist }) => {
      const last = await readLastIntegrity()
      const sequence = last ? last.sequence + 1 : 1
      await persist({ id, auditIntegrity: { sequence, previousHash: last ? last.eventHash : null, eventHash: "h" + sequence } })
    })
  }
  assert((await Haechi.readChain(client, prefix + "audit:")).length === 3, "chain of 3")
  const vault = Haechi.createRedisTokenStore({ client, keyPrefix: prefix + "tv:" })
  await vault.mutate(async (view) => view.set("tok_1", { type: "email", expiresAt: null }))
  const other = Haechi.createRedisTokenStore({ client, keyPrefix: prefix + "tv:" })
  assert((await other.read((view) => view.entries())).length === 1, "vault read by another instance")
  // The lock scripts (acquire, release).
  assert((await Haechi.withRedisLock(client, prefix + "lock", async () => 42)) === 42, "lock")
  // The Effect API.
  const length = await Effect.runPromise(
    Effect.flatMap(Lib.AuditStore.AuditStore, (store) => store.length).pipe(
      Effect.provide(Lib.AuditStore.layer({ keyPrefix: prefix + "audit:" }).pipe(Layer.provide(Lib.RedisClient.layerFromClient(client))))
    )
  )
  assert(length === 3, "effect length")
} finally {
  await client.quit()
}
console.log("bundle ok")
`

const broken = String.raw`
import { Effect } from "effect"
import * as Lib from "haechi-store-effect"
import * as Haechi from "haechi-store-effect/haechi"
import { Redis } from "ioredis"

const client = new Redis(process.env.REDIS_URL, { lazyConnect: true, retryStrategy: () => null })
client.on("error", () => {})
const outcome = (f) => { try { f(); return "created" } catch (e) { return e._tag + ": " + e.message } }
console.log("facade " + outcome(() => Haechi.createRedisAuditStore({ client, keyPrefix: "b:audit:" })))
console.log("facade " + outcome(() => Haechi.createRedisTokenStore({ client, keyPrefix: "b:tv:" })))
console.log("facade " + outcome(() => Haechi.createRedisRateLimiter({ client, onUnavailable: "allow" })))
for (const made of [Lib.TokenStore.make({ keyPrefix: "b:tv:" }), Lib.RateLimiter.make()]) {
  const exit = await Effect.runPromiseExit(made.pipe(Effect.provide(Lib.RedisClient.layerFromClient(client))))
  console.log("effect " + (exit._tag === "Failure" && exit.cause._tag === "Fail" ? exit.cause.error._tag + ": " + exit.cause.error.message : exit._tag))
}
client.disconnect()
`

/** Replaces the embedded scripts: `audit_append` damaged, `vault_scan` missing. */
const breakScripts: Plugin = {
  name: "break-scripts",
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]internal[\\/]luaSources\.js$/ }, async (args) => {
      const { luaSources } = (await import(args.path)) as {
        luaSources: Record<string, { sha1: string; source: string }>
      }
      const copy = { ...luaSources }
      copy.audit_append = {
        ...copy.audit_append!,
        source: copy.audit_append!.source.replace("redis.call", "redis.cal")
      }
      delete copy.vault_scan
      return { contents: `export const luaSources = ${JSON.stringify(copy)}`, loader: "js" }
    })
  }
}

describe("an esbuild bundle of a consumer", () => {
  it("runs from another directory (no node_modules, no lua/) against Redis", async () => {
    const dir = await tempDir("haechi-bundle-run-")
    const file = await bundle(app, dir)
    const { stdout } = await node(file, { REDIS_URL: sharedRedis().url, PREFIX: uniquePrefix("bundle") })
    expect(stdout.trim()).toBe("bundle ok")
  }, 60_000)

  it("with a damaged or missing script fails at store creation with InvalidConfig, even with Redis down", async () => {
    const dir = await tempDir("haechi-bundle-broken-")
    const file = await bundle(broken, dir, [breakScripts])
    const { stdout } = await node(file, { REDIS_URL: `redis://127.0.0.1:${await refusedPort()}` })
    const lines = stdout.trim().split("\n")
    // the audit store, the vault and the rate limiter (whose own script is intact) on the facade; the vault and the rate limiter on the Effect API
    expect(lines).toHaveLength(5)
    for (const line of lines) {
      expect(line).toMatch(/^(facade|effect) InvalidConfig: invalid scripts: /)
      expect(line).toContain("lua/audit_append.lua is damaged in this build")
      expect(line).toContain("lua/vault_scan.lua is not embedded in this build")
      expect(line).not.toContain("RedisUnavailable")
    }
  }, 60_000)
})
