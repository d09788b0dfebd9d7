/**
 * The `haechi-store` executable (the haechi-store-effect-cli package in cli/) end to end,
 * as a SUBPROCESS (`node cli/dist/bin.js …`, with dist/ and cli/dist/ built once by the
 * global setup), against real redis-servers: the shared one, a private one with an ACL
 * user that needs a password, and a free port with nothing listening.
 *
 * Checked: exit codes (0 valid / 1 invalid / 2 usage / 3 cannot run / 4 nothing there /
 * 130 and 143 on signals), the last line of verify and `verify --json`, the export file
 * (verified line by line by an independent oracle) and that an existing one is never
 * replaced by an empty or truncated export, stats --json numbers, the in-memory demo with
 * no REDIS_URL, one-line errors without a stack trace, a fast failure on an unreachable
 * Redis, wrong credentials named as such, a password never in output, help without
 * escape sequences unless on a terminal without NO_COLOR, the progress bar on a terminal
 * (never as wide as the terminal, with ETA, a final line with elapsed time and rate),
 * and no prompt waiting on a closed stdin.
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync } from "node:fs"
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import * as RedisClient from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { auditKeyList, vaultKeyList } from "../src/internal/keys.js"
import { uniquePrefix } from "./support/keys.js"
import { refusedPort, startRedis, type RedisServer } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"
import { refVerify } from "./support/oracle.js"

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const bin = join(root, "cli", "dist", "bin.js")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly ms: number
}

/** Runs a command; REDIS_URL is removed from the environment unless given in `env`. */
const exec = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}, timeoutMs = 60_000) =>
  new Promise<Run>((done, fail) => {
    const { REDIS_URL: _drop, ...inherited } = process.env
    const started = Date.now()
    const child = spawn(command, [...args], {
      cwd: root,
      env: { ...inherited, ...env, npm_config_update_notifier: "false" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr, ms: Date.now() - started })
    })
  })

const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  exec(process.execPath, [bin, ...args], env)

const lines = (text: string) => text.split("\n").filter((line) => line.length > 0)
const lastLine = (text: string) => lines(text).at(-1) ?? ""

/** One line on stderr, nothing that looks like a stack trace. */
const expectOneLineError = (run: Run) => {
  expect(lines(run.stderr), run.stderr).toHaveLength(1)
  expect(run.stderr).toMatch(/^haechi-store: \S/)
  expect(run.stderr).not.toMatch(/\n\s+at |Error:|FiberFailure|\{$/m)
}

const refVerifyLines = (texts: ReadonlyArray<string>) => refVerify(texts.map((text) => JSON.parse(text)))

let url: string
let redis: Redis
let dir: string

/** Writes `n` audit records under `prefix` through AuditLog; returns their eventHashes. */
const writeChain = async (prefix: string, n: number): Promise<Array<string>> => {
  const records = await Effect.runPromise(
    Effect.flatMap(AuditLog.AuditLog, (log) =>
      Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) => log.record({ type: "cli.test", i })
      )
    ).pipe(
      Effect.provide(
        AuditLog.layer.pipe(
          Layer.provide(AuditStore.layer({ keyPrefix: prefix })),
          Layer.provide(RedisClient.layer(url))
        )
      )
    )
  )
  return records.map((record) => record.auditIntegrity.eventHash)
}

beforeAll(async () => {
  url = sharedRedis().url
  redis = new Redis(url)
  dir = await mkdtemp(join(tmpdir(), "haechi-cli-"))
  // dist/ was built once by the global setup.
}, 180_000)

afterAll(async () => {
  await redis?.quit()
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe("verify", () => {
  it("exits 0 with valid and the record count on the last line", async () => {
    const prefix = uniquePrefix("cli-verify")
    const hashes = await writeChain(prefix, 50)
    const run = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(run.code, run.stderr).toBe(0)
    expect(lastLine(run.stdout)).toBe(`valid: 50 records (head 50 ${hashes[49]})`)
    expect(run.stderr).toBe("")
    // REDIS_URL works as the default for --url.
    const fromEnv = await cli(["verify", "--prefix", prefix], { REDIS_URL: url })
    expect(fromEnv.code).toBe(0)
    expect(lastLine(fromEnv.stdout)).toMatch(/^valid: 50 records/)
  })

  it("exits 1 with the failing sequence and reason after tampering", async () => {
    const prefix = uniquePrefix("cli-tamper")
    await writeChain(prefix, 50)
    const record = JSON.parse((await redis.lindex(`${prefix}chain`, 20))!)
    record.i = 1000
    await redis.lset(`${prefix}chain`, 20, JSON.stringify(record))
    const run = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(run.code).toBe(1)
    expect(lastLine(run.stdout)).toMatch(/^invalid at sequence 21 \(list index 20\): event hash mismatch/)
    expect(run.stderr).toBe("")

    await redis.ltrim(`${prefix}chain`, 0, 9)
    const truncated = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(truncated.code).toBe(1)
    expect(lastLine(truncated.stdout)).toMatch(
      /^invalid at sequence 11 \(list index 10\): sequence mismatch \(record missing\)/
    )
  })

  it("verifies from a checkpoint given as --from-sequence and --from-hash", async () => {
    const prefix = uniquePrefix("cli-checkpoint")
    const hashes = await writeChain(prefix, 50)
    await redis.lset(`${prefix}chain`, 5, "damage before the checkpoint")
    const run = await cli([
      "verify",
      "--url",
      url,
      "--prefix",
      prefix,
      "--from-sequence",
      "40",
      "--from-hash",
      hashes[39]!
    ])
    expect(run.code, run.stderr).toBe(0)
    expect(lastLine(run.stdout)).toBe(`valid: 10 records after checkpoint 40 (head 50 ${hashes[49]})`)
    const wrong = await cli([
      "verify",
      "--url",
      url,
      "--prefix",
      prefix,
      "--from-sequence",
      "40",
      "--from-hash",
      hashes[38]!
    ])
    expect(wrong.code).toBe(1)
    expect(lastLine(wrong.stdout)).toMatch(/^invalid at sequence 40 .*event hash mismatch/)
  })
})

describe("export", () => {
  it("writes JSONL whose lines are the stored records, in order, and verify", async () => {
    const prefix = uniquePrefix("cli-export")
    await writeChain(prefix, 45)
    const out = join(dir, "chain.jsonl")
    const run = await cli(["export", "--out", out, "--url", url, "--prefix", prefix, "--page-size", "10"])
    expect(run.code, run.stderr).toBe(0)
    expect(lastLine(run.stdout)).toBe(`exported 45 records to ${out}`)
    const text = await readFile(out, "utf8")
    expect(text.endsWith("\n")).toBe(true)
    const fileLines = text.split("\n").slice(0, -1)
    expect(fileLines).toEqual(await redis.lrange(`${prefix}chain`, 0, -1))
    expect(refVerifyLines(fileLines)).toEqual({ valid: true, records: 45 })
    // Only the finished file is left behind (no temporary file).
    expect(await readdir(dir)).toEqual(["chain.jsonl"])

    // A chain whose length is a multiple of the page size, and an empty one.
    const full = await cli(["export", "--out", out, "--url", url, "--prefix", prefix, "--page-size", "15"])
    expect(full.code, full.stderr).toBe(0)
    expect((await readFile(out, "utf8")).split("\n").slice(0, -1)).toEqual(fileLines)
    await rm(out)
  })

  it("never replaces an existing file with an empty or truncated export", async () => {
    const out = join(dir, "backup.jsonl")
    const good = "a good backup\n"
    await writeFile(out, good)
    const nothing = uniquePrefix("cli-export-nothing")
    // A mistyped prefix: nothing there, exit 4, the backup untouched.
    const empty = await cli(["export", "--out", out, "--url", url, "--prefix", nothing])
    expect(empty.code).toBe(4)
    expectOneLineError(empty)
    expect(empty.stderr).toContain("nothing there")
    expect(await readFile(out, "utf8")).toBe(good)
    // --allow-empty accepts the empty store, but still does not put an empty file over one.
    const allowed = await cli(["export", "--out", out, "--url", url, "--prefix", nothing, "--allow-empty"])
    expect(allowed.code).toBe(4)
    expect(allowed.stderr).toContain(`not replacing ${out}: the export is empty`)
    expect(await readFile(out, "utf8")).toBe(good)
    // A new file may be empty with --allow-empty.
    const fresh = join(dir, "fresh.jsonl")
    const created = await cli(["export", "--out", fresh, "--url", url, "--prefix", nothing, "--allow-empty"])
    expect(created.code, created.stderr).toBe(0)
    expect(lastLine(created.stdout)).toBe(`exported 0 records to ${fresh}`)
    expect(await readFile(fresh, "utf8")).toBe("")
    // A truncated chain (the list ends before its head): exit 1, the backup untouched.
    const prefix = uniquePrefix("cli-export-truncated")
    await writeChain(prefix, 20)
    await redis.ltrim(`${prefix}chain`, 0, 9)
    const truncated = await cli(["export", "--out", out, "--url", url, "--prefix", prefix])
    expect(truncated.code).toBe(1)
    expectOneLineError(truncated)
    expect(truncated.stderr).toContain("holds 10 records but its head is at sequence 20")
    expect(await readFile(out, "utf8")).toBe(good)
    expect((await readdir(dir)).filter((f) => f.includes(".tmp-"))).toEqual([])
    await rm(out)
    await rm(fresh)
  })

  it("fails with one line and leaves no file when the target cannot be written", async () => {
    const prefix = uniquePrefix("cli-export-fail")
    await writeChain(prefix, 3)
    const out = join(dir, "no-such-dir", "chain.jsonl")
    const run = await cli(["export", "--out", out, "--url", url, "--prefix", prefix])
    expect(run.code).toBe(3)
    expectOneLineError(run)
    expect(existsSync(out)).toBe(false)
  })
})

describe("stats", () => {
  it("--json parses and has the right numbers, never the lock's token", async () => {
    const auditPrefix = uniquePrefix("cli-stats-audit")
    const vaultPrefix = uniquePrefix("cli-stats-vault")
    const hashes = await writeChain(auditPrefix, 12)
    await Effect.runPromise(
      Effect.gen(function* () {
        const vault = yield* TokenStore.TokenStore
        for (const token of ["tok_a", "tok_b", "tok_c"]) {
          yield* vault.mutate((view) => Effect.sync(() => view.set(token, { type: "email", expiresAt: null })))
        }
        yield* vault.mutate((view) => Effect.sync(() => void view.delete("tok_b")))
      }).pipe(Effect.provide(TokenStore.layer({ keyPrefix: vaultPrefix }).pipe(Layer.provide(RedisClient.layer(url)))))
    )
    const lockToken = `secret-lock-token-${randomBytes(6).toString("hex")}`
    await redis.set(`${auditPrefix}lock`, lockToken, "PX", 30_000)
    const run = await cli([
      "stats",
      "--json",
      "--url",
      url,
      "--audit-prefix",
      auditPrefix,
      "--vault-prefix",
      vaultPrefix
    ])
    expect(run.code, run.stderr).toBe(0)
    const stats = JSON.parse(lastLine(run.stdout))
    expect(stats).toMatchObject({
      audit: { prefix: auditPrefix, length: 12, headSequence: 12, headHash: hashes[11], lock: { state: "held" } },
      vault: {
        prefix: vaultPrefix,
        size: 2,
        version: 4,
        changeLog: { length: 4, fromVersion: 1, toVersion: 4 },
        lock: { state: "free", ttlMs: null }
      }
    })
    expect(stats.audit.lock.ttlMs).toBeGreaterThan(0)
    expect(stats.audit.lock.ttlMs).toBeLessThanOrEqual(30_000)
    expect(run.stdout + run.stderr).not.toContain(lockToken)

    const text = await cli(["stats", "--url", url, "--audit-prefix", auditPrefix, "--vault-prefix", vaultPrefix])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain(`12 records, head 12 ${hashes[11]}`)
    expect(text.stdout).toContain("2 tokens, version 4, change log 4 entries (versions 1-4)")
    expect(text.stdout).not.toContain(lockToken)
  })
})

describe("demo", () => {
  it("runs on the in-memory stores with no REDIS_URL, exits 0 and prints a summary", async () => {
    const run = await cli(["demo"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toBe("")
    expect(run.stdout).toMatch(/^demo: 4 replicas, 200 events on the in-memory stores/m)
    expect(run.stdout).toMatch(
      /^tokens: \d+ created, \d+ reused, \d+ expired and pruned; vault holds \d+ at version \d+$/m
    )
    expect(run.stdout).toMatch(/^chain valid: 200 records \(head 200 [A-Za-z0-9_-]{43}\)$/m)
    expect(lastLine(run.stdout)).toMatch(/^elapsed \d+\.\d\d s, \d+ events\/s$/)
  })

  it("runs replicas on Redis with --url, each with its own connection, and the chain verifies", async () => {
    const run = await cli(["demo", "--url", url, "--replicas", "3", "--events", "60", "--keep"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/^chain valid: 60 records/m)
    const prefix = /under (\S+) and (\S+) \(kept\)/.exec(run.stdout)
    expect(prefix).not.toBe(null)
    const [, auditPrefix, vaultPrefix] = prefix!
    const verify = await cli(["verify", "--url", url, "--prefix", auditPrefix!])
    expect(lastLine(verify.stdout)).toMatch(/^valid: 60 records/)
    expect(await redis.hlen(`${vaultPrefix}tokens`)).toBeGreaterThan(0)
    await redis.del(...auditKeyList(auditPrefix!), ...vaultKeyList(vaultPrefix!))
    expect(await redis.keys(`*${auditPrefix}*`)).toEqual([])
    expect(await redis.keys(`*${vaultPrefix}*`)).toEqual([])
  })

  // `*demo:*`, not `demo:*`: a lock's fence counter and waiter queue are `{<prefix>lock}:…`.
  it("without --keep leaves no key behind on Redis, its locks' keys included", async () => {
    const before = (await redis.keys("*demo:*")).sort()
    const run = await cli(["demo", "--url", url, "--replicas", "4", "--events", "80"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain("on Redis (demo keys deleted)")
    // (Only keys that were not there before: another file's demo may end meanwhile and delete its own.)
    expect((await redis.keys("*demo:*")).filter((key) => !before.includes(key))).toEqual([])
  })
})

describe("errors", () => {
  it("a bad argument exits 2 with one line on stderr and no stack trace", async () => {
    for (const args of [
      ["demo", "--replicas", "abc"],
      ["demo", "--replicas", "0"],
      ["verify", "--bogus"],
      ["frobnicate"],
      [],
      ["export", "--url", url],
      ["verify", "--url", url, "--from-sequence", "3"],
      ["verify", "--url", url, "--from-sequence", "3", "--from-hash", "short"],
      ["verify", "--url", "not a url"],
      ["verify"]
    ]) {
      const run = await cli(args)
      expect({ args, code: run.code }).toEqual({ args, code: 2 })
      expect(run.stdout).toBe("")
      expectOneLineError(run)
    }
  }, 120_000) // ten runs, each a Node start-up of the launcher and the CLI: slow on a loaded machine

  it("an unreachable Redis fails fast with one line, never showing the password", async () => {
    const port = await refusedPort()
    const password = `pw-${randomBytes(8).toString("hex")}`
    const target = `redis://:${password}@127.0.0.1:${port}`
    for (const [args, env] of [
      [["verify", "--url", target], {}],
      [["stats", "--json"], { REDIS_URL: target }],
      [["export", "--out", join(dir, "never.jsonl")], { REDIS_URL: target }],
      [["demo"], { REDIS_URL: target }]
    ] as Array<[Array<string>, Record<string, string>]>) {
      const run = await cli(args, env)
      expect({ args, code: run.code }).toEqual({ args, code: 3 })
      expect(run.ms).toBeLessThan(10_000)
      expectOneLineError(run)
      expect(run.stderr).toContain(`redis://:***@127.0.0.1:${port}`)
      expect(run.stdout + run.stderr).not.toContain(password)
    }
    expect(existsSync(join(dir, "never.jsonl"))).toBe(false)
  }, 120_000)

  describe("with a password-protected user", () => {
    let server: RedisServer
    const password = `pw-${randomBytes(8).toString("hex")}`
    beforeAll(async () => {
      server = await startRedis({ config: [`user op on >${password} ~* &* +@all`] })
    })
    afterAll(async () => {
      await server?.stop()
    })

    it("works with the right password and fails with one line on a wrong one, printing neither", async () => {
      const good = `redis://op:${password}@127.0.0.1:${server.port}`
      const ok = await cli(["stats", "--json"], { REDIS_URL: good })
      expect(ok.code, ok.stderr).toBe(0)
      expect(JSON.parse(lastLine(ok.stdout)).audit.length).toBe(0)
      expect(ok.stdout + ok.stderr).not.toContain(password)

      const wrongPassword = `wrong-${randomBytes(8).toString("hex")}`
      const bad = await cli(["verify", "--url", `redis://op:${wrongPassword}@127.0.0.1:${server.port}`])
      expect(bad.code).toBe(3)
      expectOneLineError(bad)
      expect(bad.stderr).toContain(`redis://op:***@127.0.0.1:${server.port}`)
      expect(bad.stderr).toContain("refused the credentials")
      expect(bad.stderr).toMatch(/WRONGPASS/)
      expect(bad.stderr).not.toContain("cannot reach")
      expect(bad.stdout + bad.stderr).not.toContain(wrongPassword)
    })
  })

  it("--help exits 0 and lists the commands", async () => {
    const run = await cli(["--help"])
    expect(run.code).toBe(0)
    for (const command of ["verify", "export", "stats", "demo"]) expect(run.stdout).toContain(command)
  })
})

/** Runs the CLI on a pseudo-terminal `columns` wide (util-linux `script`): what a person sees. */
const onTerminal = (args: ReadonlyArray<string>, columns: number, env: Record<string, string> = {}) => {
  const quote = (word: string) => `'${word.replace(/'/g, "'\\''")}'`
  const command = `stty cols ${columns} rows 24; exec ${[process.execPath, bin, ...args].map(quote).join(" ")}`
  return exec("script", ["-qec", command, "/dev/null"], { TERM: "xterm", ...env })
}

const hasEscapes = (text: string) => text.includes("\u001b[")

describe("operator behaviour", () => {
  it("a prefix with no chain and no head is nothing there (exit 4) unless --allow-empty", async () => {
    const prefix = uniquePrefix("cli-nothing")
    const run = await cli(["verify", "--url", url, "--prefix", prefix])
    expect(run.code).toBe(4)
    expect(run.stdout).toBe("")
    expectOneLineError(run)
    expect(run.stderr).toContain(`nothing there: no audit chain and no head under prefix "${prefix}"`)
    const wrongDb = await cli(["verify", "--url", `${url}/7`])
    expect(wrongDb.code).toBe(4)
    const allowed = await cli(["verify", "--url", url, "--prefix", prefix, "--allow-empty"])
    expect(allowed.code, allowed.stderr).toBe(0)
    expect(lastLine(allowed.stdout)).toBe("valid: 0 records (empty chain)")
  })

  it("verify --json prints one JSON object, valid or not", async () => {
    const prefix = uniquePrefix("cli-json")
    const hashes = await writeChain(prefix, 30)
    const valid = await cli(["verify", "--json", "--url", url, "--prefix", prefix])
    expect(valid.code, valid.stderr).toBe(0)
    expect(lines(valid.stdout)).toHaveLength(1)
    expect(JSON.parse(valid.stdout)).toEqual({
      prefix,
      valid: true,
      records: 30,
      from: null,
      headSequence: 30,
      headHash: hashes[29],
      rewinds: []
    })
    await redis.lset(`${prefix}chain`, 11, "not json")
    const invalid = await cli(["verify", "--json", "--url", url, "--prefix", prefix])
    expect(invalid.code).toBe(1)
    expect(JSON.parse(invalid.stdout)).toMatchObject({
      prefix,
      valid: false,
      records: 11,
      failedSequence: 12,
      index: 11,
      reason: "Unparseable",
      lastValidSequence: 11,
      lastValidHash: hashes[10]
    })
  })

  it("SIGINT and SIGTERM end with 130 and 143, one line on stderr, nothing else", async () => {
    for (const [signal, code] of [
      ["SIGINT", 130],
      ["SIGTERM", 143]
    ] as const) {
      const started = Date.now()
      const child = spawn(process.execPath, [bin, "demo", "--replicas", "1", "--events", "1000000"], {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
      const exited = new Promise<number | null>((done) => child.on("close", (c) => done(c)))
      await new Promise((wait) => setTimeout(wait, 2500))
      child.kill(signal)
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
      const exitCode = await exited
      clearTimeout(timer)
      expect({ signal, exitCode }).toEqual({ signal, exitCode: code })
      expect(stderr).toBe(`haechi-store: interrupted by ${signal}\n`)
      expect(stdout).toBe("")
      expect(Date.now() - started).toBeLessThan(15_000)
    }
  }, 40_000)

  it("Ctrl-C on a terminal erases the bar, prints one line and exits 130", async () => {
    const quote = (word: string) => `'${word.replace(/'/g, "'\\''")}'`
    const command = `stty cols 80 rows 24; exec ${[process.execPath, bin, "demo", "--replicas", "1", "--events", "1000000"].map(quote).join(" ")}`
    const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: root, stdio: ["pipe", "pipe", "pipe"] })
    let screen = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (screen += chunk))
    const exited = new Promise<number | null>((done) => child.on("close", (c) => done(c)))
    // Ctrl-C once the bar is drawn: the terminal sends SIGINT to the whole foreground group.
    const deadline = Date.now() + 20_000
    while (!screen.includes("ETA") && Date.now() < deadline) await new Promise((wait) => setTimeout(wait, 100))
    child.stdin.write("\u0003")
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
    const code = await exited
    clearTimeout(timer)
    expect(code).toBe(130)
    const afterCtrlC = screen.slice(screen.lastIndexOf("ETA"))
    // The bar line is erased (carriage return, erase line) before the one line.
    expect(afterCtrlC).toMatch(/\r\u001b\[Khaechi-store: interrupted by SIGINT\r?\n$/)
    expect(afterCtrlC.match(/haechi-store:/g)).toHaveLength(1)
  }, 40_000)

  it("help lists the exit codes and has no escape sequences when piped or with NO_COLOR", async () => {
    const piped = await cli(["--help"])
    expect(piped.code).toBe(0)
    expect(piped.stdout).toContain("EXIT CODES")
    for (const code of ["130 / 143", "nothing there", "bad arguments"]) expect(piped.stdout).toContain(code)
    expect(hasEscapes(piped.stdout)).toBe(false)
    const verifyHelp = await cli(["verify", "--help"])
    expect(verifyHelp.stdout).toContain("--json")
    expect(hasEscapes(verifyHelp.stdout)).toBe(false)
    // On a terminal colours are on, unless NO_COLOR.
    const coloured = await onTerminal(["--help"], 100)
    expect(coloured.code).toBe(0)
    expect(hasEscapes(coloured.stdout)).toBe(true)
    const noColor = await onTerminal(["--help"], 100, { NO_COLOR: "1" })
    expect(noColor.code).toBe(0)
    expect(noColor.stdout).toContain("EXIT CODES")
    expect(hasEscapes(noColor.stdout)).toBe(false)
  })

  it("--wizard on a closed stdin is a usage error at once, not a hang", async () => {
    const run = await cli(["--wizard"])
    expect(run.code).toBe(2)
    expectOneLineError(run)
    expect(run.stderr).toContain("--wizard needs an interactive terminal")
    expect(run.ms).toBeLessThan(10_000)
  })

  it("on a terminal the bar fits the width, has count, rate and ETA, and ends in elapsed time and rate", async () => {
    const prefix = uniquePrefix("cli-bar")
    await writeChain(prefix, 300)
    const columns = 50
    const run = await onTerminal(["verify", "--url", url, "--prefix", prefix, "--page-size", "10"], columns)
    expect(run.code, run.stdout).toBe(0)
    const screen = run.stdout.replace(/\u001b\[K/g, "")
    const bars = screen.split(/[\r\n]+/).filter((segment) => segment.includes("ETA"))
    expect(bars.length).toBeGreaterThan(0)
    for (const bar of bars) {
      expect(bar.length).toBeLessThan(columns)
      expect(bar).toMatch(/^verify (\[[#.]+\] )?\d+% \d+\/\d+ records [\d.]+\/s ETA /)
    }
    expect(screen).toMatch(/^verify: 300 records in [\d.]+ s, [\d.]+\/s\r?$/m)
    expect(screen).toMatch(/^valid: 300 records \(head 300 /m)
    // Piped: no bar, no carriage returns, no escape sequences.
    const piped = await cli(["verify", "--url", url, "--prefix", prefix, "--page-size", "10"])
    expect(piped.code).toBe(0)
    expect(piped.stderr).toBe("")
    expect(piped.stdout).not.toMatch(/\r|\u001b/)
  })
})

describe("version", () => {
  it("--version prints the CLI package's version, read from its package.json", async () => {
    const manifest = JSON.parse(await readFile(join(root, "cli", "package.json"), "utf8")) as { version: string }
    const run = await cli(["--version"])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout.trim()).toBe(manifest.version)
  })
})
