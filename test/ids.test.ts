/**
 * Ids that need no Redis: lock tokens from the random pool, commit ids (unique in every
 * process, also in processes restored from one V8 startup snapshot), and lock options
 * resolved once when frozen (the facade's and the stores'), re-validated when not.
 */
import { execFile } from "node:child_process"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { build } from "esbuild"
import { nextCommitId, randomToken } from "../src/internal/commitId.js"
import { resolveOptions, type LockOptions } from "../src/internal/lock/options.js"
import { tempDirs } from "./support/tempDirs.js"

const run = promisify(execFile)
const tempDir = tempDirs()

describe("ids", () => {
  it("lock tokens are 128-bit hex and never repeat, across several refills of the pool", () => {
    // 4 KiB per pool / 16 bytes per token: 1,000 tokens span four refills.
    const tokens = Array.from({ length: 1000 }, randomToken)
    for (const token of tokens) expect(token).toMatch(/^[0-9a-f]{32}$/)
    expect(new Set(tokens).size).toBe(tokens.length)
  })

  it("commit ids have no spaces and never repeat", () => {
    const ids = Array.from({ length: 1000 }, nextCommitId)
    for (const id of ids) expect(id).not.toMatch(/\s/)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it("two processes restored from one startup snapshot make different commit ids and tokens", async () => {
    const dir = await tempDir("haechi-snapshot-")
    const entry = join(dir, "main.ts")
    const commitId = fileURLToPath(new URL("../src/internal/commitId.ts", import.meta.url))
    await writeFile(
      entry,
      `import { startupSnapshot } from "node:v8"
import { nextCommitId, randomToken } from ${JSON.stringify(commitId)}
startupSnapshot.setDeserializeMainFunction(() => console.log(nextCommitId() + " " + randomToken()))
`
    )
    const bundled = join(dir, "main.cjs")
    await build({
      entryPoints: [entry],
      bundle: true,
      platform: "node",
      format: "cjs",
      outfile: bundled,
      logLevel: "warning"
    })
    const blob = join(dir, "snap.blob")
    await run(process.execPath, ["--snapshot-blob", blob, "--build-snapshot", bundled], { cwd: dir })
    const restored = async () => (await run(process.execPath, ["--snapshot-blob", blob], { cwd: dir })).stdout.trim()
    const [a, b] = [await restored(), await restored()]
    expect(a).toMatch(/^\S+ [0-9a-f]{32}$/)
    const [idA, tokenA] = a.split(" ")
    const [idB, tokenB] = b.split(" ")
    expect(idA).not.toBe(idB)
    expect(tokenA).not.toBe(tokenB)
  }, 60_000)

  it.effect("a frozen options object is resolved once; an unfrozen one is validated on every use", () =>
    Effect.gen(function* () {
      const frozen: LockOptions = Object.freeze({ ttl: "3 seconds", waitTimeout: "1 second" })
      const first = yield* resolveOptions(frozen)
      expect(first.ttlMs).toBe(3000)
      expect(first.waitMs).toBe(1000)
      expect(yield* resolveOptions(frozen)).toBe(first)

      const mutable: { ttl: LockOptions["ttl"] } = { ttl: "3 seconds" }
      expect((yield* resolveOptions(mutable)).ttlMs).toBe(3000)
      mutable.ttl = "nonsense" as never
      const exit = yield* Effect.exit(resolveOptions(mutable))
      expect(Exit.isFailure(exit)).toBe(true)
    })
  )
})
