/**
 * The published packages work for a consumer with every common client. Both packages are
 * packed (dist/ and cli/dist/ were built by the global setup); then, for each of npm,
 * `npm --legacy-peer-deps`, pnpm 9 and yarn 1 (the last two through `npx`), a blank ESM
 * project runs the README's install line (`haechi-store-effect ioredis effect@3`) and:
 * - the library adds no package beyond `effect`, `ioredis` and their own dependencies,
 *   none with an install script or a native build, and `effect` is on its 3.x line;
 * - a plain-JS consumer imports `haechi-store-effect` and `haechi-store-effect/haechi`
 *   and uses the in-memory stores, then the Redis stores on the shared server;
 * - the CLI package, added next, runs `haechi-store demo` (in memory and on Redis).
 * With npm the consumer also runs on the other ioredis major the peer range allows.
 *
 * Packages come from the registry through each client's own cache, so a second run is
 * mostly offline. The tarballs stand in for the registry's copies of our two packages
 * (an override/resolution points the CLI's dependency on the library at the tarball).
 */
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { lstat, readdir, readFile, writeFile } from "node:fs/promises"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { beforeAll, describe, expect, it } from "vitest"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"
import { tempDirs } from "./support/tempDirs.js"

const run = promisify(execFile)
const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const tempDir = tempDirs()

const sh = async (command: string, args: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    return await run(command, [...args], {
      cwd,
      env: {
        ...process.env,
        ...env,
        npm_config_update_notifier: "false",
        npm_config_fund: "false",
        npm_config_audit: "false",
        COREPACK_ENABLE_STRICT: "0"
      },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 240_000
    })
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(
      `${command} ${args.join(" ")} failed in ${cwd}:\n${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`
    )
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

interface Packed {
  readonly tarball: string
  readonly files: ReadonlyArray<string>
}

const pack = async (dir: string, into: string): Promise<Packed> => {
  const { stdout } = await sh("npm", ["pack", "--json", "--pack-destination", into], dir)
  const [info] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  return { tarball: join(into, info!.filename), files: info!.files.map((f) => f.path) }
}

interface Manifest {
  readonly name: string
  readonly version: string
  readonly dependencies?: Record<string, string>
  readonly optionalDependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly scripts?: Record<string, string>
  readonly gypfile?: boolean
}

/**
 * Every installed package (name, manifest, directory), whatever the client's layout:
 * nested node_modules (npm, yarn) or pnpm's `.pnpm` store. Symlinks are not followed.
 */
const installedPackages = async (project: string) => {
  const found: Array<{ manifest: Manifest; dir: string }> = []
  const visitModules = async (modules: string, depth: number): Promise<void> => {
    if (depth > 12 || !existsSync(modules)) return
    for (const entry of await readdir(modules)) {
      if (entry === ".bin" || entry === ".cache") continue
      const path = join(modules, entry)
      if (entry === ".pnpm") {
        for (const slot of await readdir(path)) {
          if (slot !== "node_modules") await visitModules(join(path, slot, "node_modules"), depth + 1)
        }
        continue
      }
      if (entry.startsWith("@")) {
        for (const scoped of await readdir(path)) await visitPackage(join(path, scoped), depth)
        continue
      }
      await visitPackage(path, depth)
    }
  }
  const visitPackage = async (dir: string, depth: number) => {
    if ((await lstat(dir)).isSymbolicLink() || !existsSync(join(dir, "package.json"))) return
    found.push({ manifest: JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as Manifest, dir })
    await visitModules(join(dir, "node_modules"), depth + 1)
  }
  await visitModules(join(project, "node_modules"), 0)
  return found
}

/** Names reachable from `roots` through the installed packages' dependencies. */
const closure = (packages: ReadonlyArray<{ manifest: Manifest }>, roots: ReadonlyArray<string>) => {
  const byName = new Map<string, Array<Manifest>>()
  for (const { manifest } of packages) byName.set(manifest.name, [...(byName.get(manifest.name) ?? []), manifest])
  const reached = new Set<string>()
  const queue = [...roots]
  while (queue.length > 0) {
    const name = queue.pop()!
    if (reached.has(name)) continue
    reached.add(name)
    for (const m of byName.get(name) ?? []) {
      queue.push(...Object.keys({ ...m.dependencies, ...m.optionalDependencies, ...m.peerDependencies }))
    }
  }
  return reached
}

const INSTALL_SCRIPTS = ["preinstall", "install", "postinstall", "prepare"] as const

interface Client {
  readonly name: string
  /** package.json fields that point the CLI's dependency on the library at the tarball. */
  readonly pin: (libTarball: string) => Record<string, unknown>
  readonly add: (specs: ReadonlyArray<string>) => [string, Array<string>]
}

const npmAdd =
  (...flags: Array<string>) =>
  (specs: ReadonlyArray<string>): [string, Array<string>] => [
    "npm",
    ["install", ...specs, "--prefer-offline", ...flags]
  ]

const clients: ReadonlyArray<Client> = [
  { name: "npm", pin: () => ({}), add: npmAdd() },
  { name: "npm --legacy-peer-deps", pin: () => ({}), add: npmAdd("--legacy-peer-deps") },
  {
    name: "pnpm 9",
    pin: (lib) => ({ pnpm: { overrides: { "haechi-store-effect": `file:${lib}` } } }),
    add: (specs) => ["npx", ["-y", "pnpm@9", "add", "--prefer-offline", ...specs]]
  },
  {
    name: "yarn 1",
    pin: (lib) => ({ resolutions: { "haechi-store-effect": `file:${lib}` } }),
    add: (specs) => [
      "npx",
      [
        "-y",
        "yarn@1",
        "add",
        "--non-interactive",
        "--prefer-offline",
        ...specs.map((s) => (s.startsWith("/") ? `file:${s}` : s))
      ]
    ]
  }
]

let lib: Packed
let cli: Packed

beforeAll(async () => {
  const into = await tempDir("haechi-pack-")
  // dist/ and cli/dist/ were built once by the global setup (a build here could race the CLI tests').
  lib = await pack(root, into)
  cli = await pack(join(root, "cli"), into)
}, 120_000)

describe("the packed packages", () => {
  it("hold what a consumer needs, no sources, no source maps, no install script", async () => {
    for (const needed of ["package.json", "dist/index.js", "dist/index.d.ts", "dist/haechi.js", "dist/haechi.d.ts"]) {
      expect(lib.files, needed).toContain(needed)
    }
    // The scripts travel inside dist/ (embedded), not as files beside it.
    expect(lib.files).toContain("dist/internal/luaSources.js")
    for (const packed of [lib, cli]) {
      expect(packed.files.filter((f) => /^(src|test|lua|cli)\//.test(f) || f.endsWith(".map"))).toEqual([])
    }
    const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as Manifest & { bin?: unknown }
    expect(manifest.dependencies).toBeUndefined()
    expect(manifest.bin).toBeUndefined()
    expect(manifest.peerDependencies).toEqual({ effect: "^3.22.0", ioredis: ">=5 <7" })
    const cliManifest = JSON.parse(await readFile(join(root, "cli", "package.json"), "utf8")) as Manifest & {
      bin: Record<string, string>
    }
    for (const target of Object.values(cliManifest.bin)) expect(cli.files).toContain(target.replace(/^\.\//, ""))
    expect(cliManifest.dependencies?.["haechi-store-effect"]).toBe(manifest.version)
    for (const m of [manifest, cliManifest]) {
      for (const script of INSTALL_SCRIPTS) expect(m.scripts?.[script], `${m.name} ${script}`).toBeUndefined()
    }
    // Every @effect package the CLI loads is declared (yarn 1 and --legacy-peer-deps install no peers).
    for (const needed of [
      "@effect/cli",
      "@effect/platform",
      "@effect/platform-node",
      "@effect/printer",
      "@effect/printer-ansi",
      "@effect/typeclass",
      "effect",
      "ioredis"
    ]) {
      expect(cliManifest.dependencies, needed).toHaveProperty([needed])
    }
  })

  for (const client of clients) {
    it(`install with ${client.name}: the library costs only its peers, imports, runs on Redis; the CLI runs demo`, async () => {
      const project = await tempDir("haechi-consumer-")
      await writeFile(
        join(project, "package.json"),
        JSON.stringify(
          { name: "consumer", version: "1.0.0", private: true, type: "module", ...client.pin(lib.tarball) },
          null,
          2
        )
      )
      // The README's install line.
      const [command, args] = client.add([lib.tarball, "ioredis", "effect@3"])
      await sh(command, args, project)

      const installed = await installedPackages(project)
      const names = new Set(installed.map((p) => p.manifest.name))
      const allowed = closure(installed, ["effect", "ioredis"])
      expect([...names].filter((name) => name !== "haechi-store-effect" && !allowed.has(name)).sort()).toEqual([])
      const withScripts = installed
        .filter(
          ({ manifest }) =>
            INSTALL_SCRIPTS.some((s) => manifest.scripts?.[s] !== undefined) || manifest.gypfile === true
        )
        .map(({ manifest }) => manifest.name)
      const native = installed
        .filter(({ dir }) => existsSync(join(dir, "binding.gyp")))
        .map(({ manifest }) => manifest.name)
      expect({ withScripts, native }).toEqual({ withScripts: [], native: [] })
      const effect = JSON.parse(await readFile(join(project, "node_modules/effect/package.json"), "utf8")) as Manifest
      expect(effect.version).toMatch(/^3\./)

      await writeFile(join(project, "consumer.mjs"), consumer)
      const { stdout } = await sh("node", ["consumer.mjs"], project, {
        REDIS_URL: sharedRedis().url,
        PREFIX: uniquePrefix("package")
      })
      expect(stdout).toContain("consumer ok")

      if (client.name === "npm") {
        // The other ioredis major of the peer range (>=5 <7): same package, same program.
        const ioredis = JSON.parse(
          await readFile(join(project, "node_modules/ioredis/package.json"), "utf8")
        ) as Manifest
        const other = ioredis.version.startsWith("6.") ? "5" : "6"
        await sh("npm", ["install", `ioredis@${other}`, "--prefer-offline"], project)
        const now = JSON.parse(await readFile(join(project, "node_modules/ioredis/package.json"), "utf8")) as Manifest
        expect(now.version.startsWith(`${other}.`)).toBe(true)
        const again = await sh("node", ["consumer.mjs"], project, {
          REDIS_URL: sharedRedis().url,
          PREFIX: uniquePrefix("package-io")
        })
        expect(again.stdout).toContain("consumer ok")
      }

      // The CLI, a package of its own.
      const [addCli, cliArgs] = client.add([cli.tarball])
      await sh(addCli, cliArgs, project)
      const bin = join(project, "node_modules", ".bin", "haechi-store")
      const demo = await sh(bin, ["demo", "--events", "40"], project, { REDIS_URL: "" })
      expect(demo.stdout).toMatch(/^chain valid: 40 records/m)
      const onRedis = await sh(bin, ["demo", "--events", "20", "--replicas", "2", "--url", sharedRedis().url], project)
      expect(onRedis.stdout).toMatch(/^chain valid: 20 records/m)
      expect(onRedis.stdout).toContain("on Redis (demo keys deleted)")
      const effectAfter = JSON.parse(
        await readFile(join(project, "node_modules/effect/package.json"), "utf8")
      ) as Manifest
      expect(effectAfter.version).toMatch(/^3\./)
    }, 480_000)
  }
})
