/**
 * `haechi-store keygen`, `checkpoint` and `verify --checkpoints` end to end, as a
 * SUBPROCESS (`node cli/dist/bin.js …`, dist/ and cli/dist/ built once by the global setup), against a
 * private redis-server of this file's own (FLUSHALL is run on it).
 *
 * Checked: exit codes (0 / 1 naming the checkpoint that failed / 2 / 3), the key file's
 * mode, that the private key never appears in any output, that notes appended by
 * `checkpoint --out` verify, and that a full rewrite with every hash recomputed, a
 * truncation with the head keys made consistent, a chain replaced after FLUSHALL, a note
 * by another key and an altered note all fail.
 */
import { spawn } from "node:child_process"
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord, type AuditIntegrity } from "../src/Chain.js"
import * as Checkpoint from "../src/Checkpoint.js"
import * as RedisClient from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { startRedis, type RedisServer } from "./support/redisServer.js"

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const bin = join(root, "cli", "dist", "bin.js")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const cli = (args: ReadonlyArray<string>) =>
  new Promise<Run>((done, fail) => {
    const { REDIS_URL: _drop, ...env } = process.env
    const child = spawn(process.execPath, [bin, ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })

/** Each run starts a Node process (the CLI re-runs itself with a capped heap): seconds each on a loaded machine. */
const SLOW = { timeout: 240_000 }

const lines = (text: string) => text.split("\n").filter((line) => line.length > 0)
const lastLine = (text: string) => lines(text).at(-1) ?? ""
const oneLineError = (run: Run) => {
  expect(lines(run.stderr), run.stderr).toHaveLength(1)
  expect(run.stderr).toMatch(/^haechi-store: \S/)
  expect(run.stderr).not.toMatch(/\n\s+at |FiberFailure/)
}

let server: RedisServer
let url: string
let redis: Redis
let dir: string
let keyFile: string
let verifierKey: string
let secret: string

const append = (prefix: string, n: number, tag = "cli") =>
  Effect.runPromise(
    Effect.flatMap(AuditLog.make, (log) =>
      Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) => log.record({ tag, i })
      )
    ).pipe(Effect.provide(AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layer(url)))))
  )

/** Rewrites the chain from sequence `from` on with other records, every hash recomputed and the head keys set to match. */
const rewrite = async (prefix: string, from: number, length: number) => {
  const texts = await redis.lrange(`${prefix}chain`, 0, from - 2)
  let previous: AuditIntegrity | null = texts.length === 0 ? null : JSON.parse(texts.at(-1)!).auditIntegrity
  for (let i = 0; i < length; i++) {
    const record = buildNextRecord({ tag: "forged", i }, previous)
    previous = record.auditIntegrity
    texts.push(JSON.stringify(record))
  }
  await redis
    .multi()
    .del(`${prefix}chain`)
    .rpush(`${prefix}chain`, ...texts)
    .set(`${prefix}head`, JSON.stringify(previous))
    .set(`${prefix}head:hash`, previous!.eventHash)
    .exec()
}

/** Cuts the chain to `length` records with the head keys made consistent. */
const truncate = async (prefix: string, length: number) => {
  const head = JSON.parse((await redis.lindex(`${prefix}chain`, length - 1))!).auditIntegrity
  await redis
    .multi()
    .ltrim(`${prefix}chain`, 0, length - 1)
    .set(`${prefix}head`, JSON.stringify(head))
    .set(`${prefix}head:hash`, head.eventHash)
    .exec()
}

beforeAll(async () => {
  server = await startRedis()
  url = server.url
  redis = new Redis(url)
  dir = await mkdtemp(join(tmpdir(), "haechi-cli-checkpoint-"))
  keyFile = join(dir, "log.key")
  const run = await cli(["keygen", "--name", "example.com/audit", "--out", keyFile])
  expect(run.code, run.stderr).toBe(0)
  verifierKey = lastLine(run.stdout)
  secret = (await readFile(keyFile, "utf8")).trim().split("+").slice(4).join("+")
}, 120_000)

afterAll(async () => {
  await redis?.quit()
  await server?.stop()
  if (dir) await rm(dir, { recursive: true, force: true })
})

const neverShowsTheKey = (...runs: Array<Run>) => {
  for (const run of runs) {
    expect(run.stdout + run.stderr).not.toContain(secret)
    expect(run.stdout + run.stderr).not.toContain("PRIVATE+KEY")
  }
}

describe("keygen", () => {
  it(
    "writes a 0600 key file, prints its verifier key, never replaces a file, refuses a bad name",
    async () => {
      expect(verifierKey).toMatch(/^example\.com\/audit\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/)
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600)
      const again = await cli(["keygen", "--name", "example.com/audit", "--out", keyFile])
      expect(again.code).toBe(3)
      oneLineError(again)
      expect(again.stderr).toContain("already exists")
      const bad = await cli(["keygen", "--name", "has a space", "--out", join(dir, "bad.key")])
      expect(bad.code).toBe(2)
      oneLineError(bad)
      neverShowsTheKey(again, bad)
    },
    SLOW
  )
})

describe("checkpoint and verify --checkpoints", () => {
  it(
    "signs, appends, and verifies an honest growing chain; --from-checkpoint reads only what is new",
    async () => {
      const prefix = uniquePrefix("cli-cp")
      const notes = join(dir, "honest.notes")
      await append(prefix, 10)
      const first = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      expect(first.code, first.stderr).toBe(0)
      expect(lastLine(first.stdout)).toMatch(/^signed checkpoint 10 [A-Za-z0-9_-]{43} to /)
      const same = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      expect(lastLine(same.stdout)).toBe("nothing new since checkpoint 10")
      await append(prefix, 5)
      const second = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      expect(lastLine(second.stdout)).toMatch(/^signed checkpoint 15 /)
      // Without --out, stdout is the note and nothing else.
      await append(prefix, 1)
      const printed = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile])
      expect(printed.code, printed.stderr).toBe(0)
      expect(await Effect.runPromise(Checkpoint.open(printed.stdout, verifierKey))).toMatchObject({
        size: 16,
        origin: "example.com/audit"
      })
      neverShowsTheKey(first, same, second, printed)

      const file = await Effect.runPromise(Checkpoint.openAll(await readFile(notes, "utf8"), verifierKey))
      expect(file.map((c) => c.size)).toEqual([10, 15])
      const verify = await cli([
        "verify",
        "--url",
        url,
        "--prefix",
        prefix,
        "--checkpoints",
        notes,
        "--public-key",
        verifierKey
      ])
      expect(verify.code, verify.stderr).toBe(0)
      expect(lastLine(verify.stdout)).toMatch(
        /^valid: 16 records \(head 16 \S+\); holds 2 checkpoints \(newest checkpoint 15\)$/
      )
      const incremental = await cli([
        "verify",
        "--url",
        url,
        "--prefix",
        prefix,
        "--checkpoints",
        notes,
        "--public-key",
        verifierKey,
        "--from-checkpoint"
      ])
      expect(incremental.code, incremental.stderr).toBe(0)
      expect(lastLine(incremental.stdout)).toMatch(
        /^valid: 1 records after checkpoint 15 \(head 16 \S+\); holds 1 checkpoint/
      )
    },
    SLOW
  )

  it(
    "a rewrite with every hash recomputed, a truncation with consistent head keys, FLUSHALL and a new chain: exit 1 naming the checkpoint",
    async () => {
      const prefix = uniquePrefix("cli-cp-tamper")
      const notes = join(dir, "tamper.notes")
      await append(prefix, 10)
      await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      await append(prefix, 10)
      await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      const verify = () =>
        cli(["verify", "--url", url, "--prefix", prefix, "--checkpoints", notes, "--public-key", verifierKey])
      const plain = () => cli(["verify", "--url", url, "--prefix", prefix])
      const original = await redis.lrange(`${prefix}chain`, 0, -1)

      await rewrite(prefix, 14, 8)
      expect((await plain()).code).toBe(0) // the hash chain alone cannot tell
      const rewritten = await verify()
      expect(rewritten.code).toBe(1)
      expect(lastLine(rewritten.stdout)).toMatch(
        /^invalid at checkpoint 20 \(note 2, \S+\): the chain holds another record at sequence 20/
      )

      await redis.del(`${prefix}chain`)
      await redis.rpush(`${prefix}chain`, ...original)
      await truncate(prefix, 17)
      expect((await plain()).code).toBe(0)
      const truncated = await verify()
      expect(truncated.code).toBe(1)
      expect(lastLine(truncated.stdout)).toMatch(
        /^invalid at checkpoint 20 \(note 2, \S+\): the chain ends at sequence 17, before it$/
      )

      await redis.flushall()
      await append(prefix, 25, "after-flushall")
      expect((await plain()).code).toBe(0)
      const replaced = await verify()
      expect(replaced.code).toBe(1)
      expect(lastLine(replaced.stdout)).toMatch(
        /^invalid at checkpoint 10 \(note 1, \S+\): the chain holds another record at sequence 10/
      )
      // The checkpointer will not sign the replaced chain either: its file knows better.
      const before = await readFile(notes, "utf8")
      const refused = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      expect(refused.code).toBe(1)
      oneLineError(refused)
      expect(refused.stderr).toMatch(/refused: .*does not hold checkpoint example\.com\/audit 20 /)
      expect(await readFile(notes, "utf8")).toBe(before)
    },
    SLOW
  )

  it(
    "a note by another key or an altered note is refused (exit 1); bad arguments exit 2, a missing file 3",
    async () => {
      const prefix = uniquePrefix("cli-cp-notes")
      const notes = join(dir, "notes.notes")
      await append(prefix, 5)
      await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", keyFile, "--out", notes])
      const honest = await readFile(notes, "utf8")
      const verify = (file = notes, key = verifierKey) =>
        cli(["verify", "--url", url, "--prefix", prefix, "--checkpoints", file, "--public-key", key])
      expect((await verify()).code).toBe(0)

      const otherKey = join(dir, "other.key")
      await cli(["keygen", "--name", "example.com/audit", "--out", otherKey])
      await append(prefix, 2)
      const forged = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", otherKey])
      await appendFile(notes, forged.stdout)
      const byOther = await verify()
      expect(byOther.code).toBe(1)
      expect(lastLine(byOther.stdout)).toMatch(
        /^invalid: checkpoint note 2 refused: no signature by example\.com\/audit\+[0-9a-f]{8}/
      )

      const altered = join(dir, "altered.notes")
      await writeFile(altered, honest.replace("\n5\n", "\n4\n"))
      const alteredRun = await verify(altered)
      expect(alteredRun.code).toBe(1)
      expect(lastLine(alteredRun.stdout)).toMatch(/^invalid: checkpoint note 1 refused: .*does not verify/)

      const badKey = await verify(notes, "not-a-key")
      expect(badKey.code).toBe(2)
      oneLineError(badKey)
      const noKey = await cli(["verify", "--url", url, "--prefix", prefix, "--checkpoints", notes])
      expect(noKey.code).toBe(2)
      oneLineError(noKey)
      const missing = await verify(join(dir, "none.notes"))
      expect(missing.code).toBe(3)
      oneLineError(missing)
      const noKeyFile = await cli(["checkpoint", "--url", url, "--prefix", prefix, "--key", join(dir, "none.key")])
      expect(noKeyFile.code).toBe(2)
      oneLineError(noKeyFile)
      expect(noKeyFile.stderr).toContain("no such file")
      neverShowsTheKey(byOther, alteredRun, badKey, noKey, missing, noKeyFile)
    },
    SLOW
  )
})
