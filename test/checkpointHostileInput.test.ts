/**
 * The checkpointer against hostile input: values at the fence and chain keys that no
 * checkpointer wrote (typed failures, never a defect), a poll interval that is no
 * duration or zero, key names that would sign notes no verifier opens, and a private key
 * text passed where a key file path belongs (refused without echoing the key).
 */
import { Cause, Effect, Exit } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import { verifyCheckpoints } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { append, storeLayer } from "./support/auditChains.js"
import { sharedRedis } from "./support/shared.js"

let url: string
let redis: Redis
let signer: Checkpoint.Signer
beforeAll(async () => {
  url = sharedRedis().url
  redis = new Redis(url)
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
})
afterAll(async () => {
  await redis.quit()
})
const describeExit = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isSuccess(exit)
    ? `ok ${JSON.stringify(exit.value).slice(0, 80)}`
    : Cause.isFailType(exit.cause)
      ? `fail ${(exit.cause.error as { _tag?: string })._tag}: ${(exit.cause.error as Error).message?.slice(0, 150)}`
      : `DEFECT ${Cause.pretty(exit.cause).slice(0, 300)}`

const checkpointOnce = (prefix: string, options: Partial<Checkpoint.CheckpointOptions> = {}) =>
  Effect.runPromiseExit(
    Effect.scoped(
      Effect.flatMap(
        Checkpoint.make({ key: signer, sink: Checkpoint.functionSink(() => {}), ...options }),
        (c) => c.checkpoint
      )
    ).pipe(Effect.provide(storeLayer(prefix, 2000)))
  )

describe("hostile data at the checkpoint keys", () => {
  const cases: Array<[string, (p: string) => Promise<unknown>]> = [
    ["fence is a list", (p) => redis.rpush(`${p}checkpoint`, "x")],
    ["fence is garbage", (p) => redis.set(`${p}checkpoint`, "garbage")],
    ["fence size huge", (p) => redis.set(`${p}checkpoint`, "100000000000000000 AAAA")],
    ["fence size 15 digits", (p) => redis.set(`${p}checkpoint`, "123456789012345 AAAA")],
    ["fence size 0", (p) => redis.set(`${p}checkpoint`, "0 AAAA")],
    ["record at 3 is a deep json", (p) => redis.lset(`${p}chain`, 2, "[".repeat(2000) + "]".repeat(2000))],
    [
      "record at 3 sequence float",
      async (p) => {
        const t = JSON.parse((await redis.lindex(`${p}chain`, 2))!)
        t.auditIntegrity.sequence = 3.5
        await redis.lset(`${p}chain`, 2, JSON.stringify(t))
      }
    ]
  ]
  for (const [name, tamper] of cases) {
    it(name, async () => {
      const prefix = uniquePrefix("ck-hostile")
      await append(prefix, 3)
      await tamper(prefix)
      const exit = await checkpointOnce(prefix)
      expect(describeExit(exit)).not.toMatch(/^DEFECT/)
      // The fence's own reply for a value that is not a checkpoint is CorruptData (code 4).
      if (name === "fence size huge") expect(describeExit(exit)).toMatch(/^fail CorruptData/)
    })
  }
  it("chain is a hash: checkpoint, verifyCheckpoints", async () => {
    const prefix = uniquePrefix("ck-hostile")
    await redis.hset(`${prefix}chain`, "a", "b")
    const note = Checkpoint.sign(signer, { size: 1, hash: "A".repeat(42) + "A" })
    const exit = await Effect.runPromiseExit(verifyCheckpoints([note]).pipe(Effect.provide(storeLayer(prefix, 2000))))
    expect(describeExit(exit)).toMatch(/^fail /)
    expect(describeExit(await checkpointOnce(prefix))).toMatch(/^fail /)
  })
  it("pollInterval invalid", async () => {
    const prefix = uniquePrefix("ck-hostile")
    await append(prefix, 1)
    const exit = await checkpointOnce(prefix, { everyRecords: 1, pollInterval: "soon" as never })
    expect(describeExit(exit)).toMatch(/^fail InvalidConfig/)
  })
})

describe("config and signing inputs", () => {
  it("pollInterval 0 is refused (it would poll Redis in a busy loop)", async () => {
    const prefix = uniquePrefix("ck-poll0")
    await append(prefix, 1)
    const exit = await checkpointOnce(prefix, { everyRecords: 1000, pollInterval: 0 })
    expect(describeExit(exit)).toMatch(/^fail InvalidConfig/)
  })

  it("a key name past 1,024 characters is refused (its notes would be longer than a verifier reads); one at the limit signs notes that open", async () => {
    const result = await Effect.runPromise(
      Effect.either(
        Effect.flatMap(Checkpoint.generateKey("a".repeat(70_000)), ({ signer: long }) =>
          Checkpoint.open(Checkpoint.sign(long, { size: 1, hash: "A".repeat(43) }).note, long.verifierKey)
        )
      )
    )
    // Refused up front: its notes would be longer than a verifier reads.
    expect(result._tag === "Left" && (result.left as { _tag: string })._tag).toBe("CheckpointKeyInvalid")
    const atLimit = await Effect.runPromise(
      Effect.flatMap(Checkpoint.generateKey("a".repeat(1024)), ({ signer: long }) =>
        Checkpoint.open(Checkpoint.sign(long, { size: 1, hash: "A".repeat(43) }).note, long.verifierKey)
      )
    )
    expect(atLimit.size).toBe(1)
  })

  it("Signer.fromSeed refuses a name no verifier accepts; a good name signs notes that open", async () => {
    const seed = new Uint8Array(32).fill(7)
    expect(() => Checkpoint.Signer.fromSeed("bad name+x", seed)).toThrow(/key name contains/)
    const good = Checkpoint.Signer.fromSeed("good.example/log", seed)
    const opened = await Effect.runPromise(
      Checkpoint.open(Checkpoint.sign(good, { size: 1, hash: "A".repeat(43) }).note, good.verifierKey)
    )
    expect(opened.size).toBe(1)
  })
})

describe("key text where a key path is expected", () => {
  const leaks = (error: unknown, secret: string) => {
    const seen = `${(error as Error).message} ${JSON.stringify(error)} ${String(error)}`
    return seen.includes(secret)
  }
  it("Checkpoint.make given the private key text (not a path) fails without printing the key", async () => {
    const { privateKey } = await Effect.runPromise(Checkpoint.generateKey("test.example/log"))
    const { Redacted } = await import("effect")
    const text = Redacted.value(privateKey)
    const secret = text.split("+").slice(4).join("+")
    const prefix = uniquePrefix("ck-keytext")
    const exit = await checkpointOnce(prefix, { key: text })
    expect(exit._tag).toBe("Failure")
    const error = Exit.isFailure(exit) && Cause.isFailType(exit.cause) ? exit.cause.error : exit
    expect(leaks(error, secret)).toBe(false)
  })
  it("startCheckpointer given the key text with a leading space fails without printing the key", async () => {
    const { startCheckpointer } = await import("../src/haechi.js")
    const { privateKey } = await Effect.runPromise(Checkpoint.generateKey("test.example/log"))
    const { Redacted } = await import("effect")
    const text = Redacted.value(privateKey)
    const secret = text.split("+").slice(4).join("+")
    const client = new Redis(url)
    try {
      const error = await startCheckpointer({ client, key: ` ${text}`, sink: "stdout" }).then(
        () => undefined,
        (e: unknown) => e
      )
      expect(error).toBeDefined()
      expect(leaks(error, secret)).toBe(false)
    } finally {
      client.disconnect()
    }
  })
})
