/**
 * The CLI's `checkpoint` against a frozen link ends within --timeout, and given a key
 * text where the key file belongs it never prints the key.
 */
import { spawn } from "node:child_process"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import * as Checkpoint from "../src/Checkpoint.js"
import * as RedisClient from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
const bin = join(root, "cli", "dist", "bin.js")

let dir: string
let keyFile: string
const proxies: Array<TcpProxy> = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ck-cli-"))
  keyFile = join(dir, "audit.key")
  await Effect.runPromise(Checkpoint.keygen({ name: "test.example/log", out: keyFile }))
})
afterAll(async () => {
  await Promise.all(proxies.map((p) => p.stop()))
  await rm(dir, { recursive: true, force: true })
})

const cli = (args: ReadonlyArray<string>, killAfterMs: number) =>
  new Promise<{ code: number | null; killed: boolean; ms: number; stderr: string; stdout: string }>((done, fail) => {
    const { REDIS_URL: _drop, ...env } = process.env
    const started = performance.now()
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true
    })
    let stderr = ""
    let stdout = ""
    let killed = false
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    const timer = setTimeout(() => {
      killed = true
      process.kill(-child.pid!, "SIGKILL")
    }, killAfterMs)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, killed, ms: performance.now() - started, stderr, stdout })
    })
  })

describe("CLI checkpoint deadlines", () => {
  it(
    "checkpoint --timeout 500 exits (3) when Redis stops answering at the fence script",
    async () => {
      const shared = sharedRedis()
      const prefix = uniquePrefix("ck-cli-frozen")
      await Effect.runPromise(
        Effect.flatMap(AuditLog.make, (log) => Effect.forEach([1, 2, 3], (i) => log.record({ i }))).pipe(
          Effect.provide(
            AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provideMerge(RedisClient.layer(shared.url)))
          )
        )
      )
      const proxy = await tcpProxy(shared.port)
      proxies.push(proxy)
      // Freeze when the fence script is sent (the only command naming the fence key).
      void proxy.freezeWhen(`${prefix}checkpoint`)
      const run = await cli(
        ["checkpoint", "--url", proxy.url, "--prefix", prefix, "--key", keyFile, "--timeout", "500"],
        15_000
      )
      proxy.thaw()
      expect(run.killed, `still running after 15 s; stderr: ${run.stderr}`).toBe(false)
      expect(run.code).toBe(3)
    },
    { timeout: 60_000 }
  )
})

describe("CLI checkpoint --wait-replicas", () => {
  it(
    "with no replica to acknowledge the fence: exit 3, not signed, no note printed",
    async () => {
      const shared = sharedRedis()
      const prefix = uniquePrefix("ck-cli-wait")
      await Effect.runPromise(
        Effect.flatMap(AuditLog.make, (log) => Effect.forEach([1, 2], (i) => log.record({ i }))).pipe(
          Effect.provide(
            AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provideMerge(RedisClient.layer(shared.url)))
          )
        )
      )
      const args = ["checkpoint", "--url", shared.url, "--prefix", prefix, "--key", keyFile, "--timeout", "300"]
      const run = await cli([...args, "--wait-replicas", "1"], 30_000)
      expect(run.code, run.stderr).toBe(3)
      expect(run.stderr).toMatch(/not signed: .*1 replica/)
      expect(run.stdout).toBe("")
      const plain = await cli(args, 30_000)
      expect(plain.code, plain.stderr).toBe(0)
      expect(plain.stdout).toMatch(/^test\.example\/log\n2\n/)
    },
    { timeout: 60_000 }
  )
})

describe("CLI checkpoint --key given a key text", () => {
  it(
    "never prints the private key",
    async () => {
      const { Redacted } = await import("effect")
      const { privateKey } = await Effect.runPromise(Checkpoint.generateKey("test.example/log"))
      const text = Redacted.value(privateKey)
      const run = await cli(["checkpoint", "--url", sharedRedis().url, "--key", text], 30_000)
      expect(run.code).not.toBe(0)
      expect(run.stderr).not.toContain(text.split("+").slice(4).join("+"))
    },
    { timeout: 60_000 }
  )
})
