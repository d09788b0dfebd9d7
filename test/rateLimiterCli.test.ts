/**
 * `haechi-store stats --ratelimit-key KEY` (the built CLI, as a subprocess, against the
 * shared Redis): the key's current count within the window, in text and in --json, and
 * nothing about rate limits unless asked; reading it takes nothing from the key.
 */
import { spawn } from "node:child_process"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { createRedisRateLimiter } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const bin = join(resolve(fileURLToPath(new URL(".", import.meta.url)), ".."), "cli", "dist", "bin.js")

const cli = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
    const { REDIS_URL: _drop, ...env } = process.env
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c))
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c))
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.on("error", fail)
    child.on("close", (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })

const client = new Redis(sharedRedis().url)
afterAll(() => client.quit())

describe("haechi-store stats --ratelimit-key", () => {
  it("shows the key's count within the window, in text and JSON, and takes nothing", async () => {
    const keyPrefix = uniquePrefix("rl-cli")
    const limiter = createRedisRateLimiter({ client, keyPrefix })
    for (let i = 0; i < 3; i++) await limiter.allow("anonymous", 10)
    const seeded = Date.now()
    const url = sharedRedis().url
    const asked = ["stats", "--url", url, "--ratelimit-key", "anonymous", "--ratelimit-prefix", keyPrefix]
    const json = await cli([...asked, "--json"])
    expect(json.code, json.stderr).toBe(0)
    const parsed = JSON.parse(json.stdout) as { ratelimit: Record<string, unknown> }
    expect(parsed.ratelimit).toMatchObject({ prefix: keyPrefix, key: "anonymous", windowMs: 60_000, count: 3 })
    expect(parsed.ratelimit["resetAfterMs"]).toBeGreaterThanOrEqual(60_000 - (Date.now() - seeded))
    expect(parsed.ratelimit["resetAfterMs"]).toBeLessThanOrEqual(60_000)
    const text = await cli(asked)
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(
      new RegExp(
        `rate limit \\(${keyPrefix}anonymous\\): 3 requests in the last 60000 ms; the whole limit is back in \\d+ ms`
      )
    )
    // A 1 ms window ending now holds none of them; an unknown key holds nothing.
    const narrow = JSON.parse((await cli([...asked, "--ratelimit-window", "1", "--json"])).stdout) as typeof parsed
    expect(narrow.ratelimit["count"]).toBe(0)
    const other = JSON.parse(
      (await cli(["stats", "--url", url, "--ratelimit-key", "nobody", "--ratelimit-prefix", keyPrefix, "--json"]))
        .stdout
    ) as typeof parsed
    expect(other.ratelimit).toMatchObject({ count: 0, resetAfterMs: 0 })
    const plain = await cli(["stats", "--url", url, "--json"])
    expect(JSON.parse(plain.stdout)).not.toHaveProperty("ratelimit")
    expect(await client.zcard(`${keyPrefix}anonymous`)).toBe(3)
    const bad = await cli(["stats", "--url", url, "--ratelimit-key", "anonymous", "--ratelimit-prefix", "haechi:"])
    expect(bad.code).toBe(2)
  }, 60_000)
})
