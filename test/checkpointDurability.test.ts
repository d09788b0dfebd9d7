/**
 * A durable fence: with `durability`, the checkpointer signs a head only once the fence's
 * write is on the replicas asked for, so a failover to one of them keeps the fence and
 * checkpointers with separate sinks cannot sign two heads for one size. With no replica
 * to acknowledge it, nothing is signed (`DurabilityTimeout`); bad options are refused.
 */
import { Effect, Exit, Layer } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import * as Checkpoint from "../src/Checkpoint.js"
import { startCheckpointer } from "../src/haechi.js"
import { layerFromClient } from "../src/RedisClient.js"
import { uniquePrefix } from "./support/keys.js"
import { parseInfo, startRedis, type RedisServer } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

let primary: RedisServer
let secondary: RedisServer
let onPrimary: Redis
let onReplica: Redis
let signer: Checkpoint.Signer

beforeAll(async () => {
  primary = await startRedis()
  secondary = await startRedis()
  onPrimary = new Redis(primary.port, "127.0.0.1")
  onReplica = new Redis(secondary.port, "127.0.0.1")
  await onPrimary.config("SET", "repl-diskless-sync-delay", "0")
  await onReplica.replicaof("127.0.0.1", primary.port)
  const deadline = Date.now() + 10_000
  while (parseInfo(await onReplica.info("replication"))["master_link_status"] !== "up") {
    if (Date.now() > deadline) throw new Error("replica link did not come up")
    await new Promise((r) => setTimeout(r, 25))
  }
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/durable"))).signer
}, 30_000)

afterAll(async () => {
  onPrimary?.disconnect()
  onReplica?.disconnect()
  await secondary?.stop()
  await primary?.stop()
})

const storeOn = (client: Redis, prefix: string) =>
  AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provideMerge(layerFromClient(client)))

const appendOn = (client: Redis, prefix: string, n: number) =>
  Effect.runPromise(
    Effect.flatMap(AuditLog.make, (log) =>
      Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) => log.record({ i })
      )
    ).pipe(Effect.provide(storeOn(client, prefix)))
  )

const checkpointOnce = (client: Redis, prefix: string, options: Partial<Checkpoint.CheckpointOptions>) =>
  Effect.runPromiseExit(
    Effect.scoped(
      Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.stdoutSink, ...options }), (c) => c.checkpoint)
    ).pipe(Effect.provide(storeOn(client, prefix)))
  )

describe("checkpoints with a durable fence", () => {
  it("replicas: 1: when the note is emitted, the replica already holds the fence at that head", async () => {
    const prefix = uniquePrefix("ck-durable")
    await appendOn(onPrimary, prefix, 5)
    const onReplicaAtEmit: Array<string | null> = []
    const notes: Array<Checkpoint.SignedCheckpoint> = []
    const sink = Checkpoint.functionSink(async (c) => {
      onReplicaAtEmit.push(await onReplica.get(`${prefix}checkpoint`))
      notes.push(c)
    })
    const waits = async () => Number(/cmdstat_wait:calls=(\d+)/.exec(await onPrimary.info("commandstats"))?.[1] ?? 0)
    const waitsBefore = await waits()
    const exit = await checkpointOnce(onPrimary, prefix, { sink, durability: { replicas: 1, timeout: "3 seconds" } })
    expect(await waits()).toBeGreaterThan(waitsBefore)
    expect(Exit.isSuccess(exit) && exit.value._tag).toBe("Signed")
    expect(notes.map((c) => c.size)).toEqual([5])
    expect(onReplicaAtEmit).toEqual([`5 ${notes[0]!.hash}`])
  })

  it("no replica to acknowledge: DurabilityTimeout, nothing signed; the facade passes the option through", async () => {
    const client = new Redis(sharedRedis().url)
    try {
      const prefix = uniquePrefix("ck-durable-none")
      await appendOn(client, prefix, 3)
      const notes: Array<Checkpoint.SignedCheckpoint> = []
      const sink = Checkpoint.functionSink((c) => void notes.push(c))
      const exit = await checkpointOnce(client, prefix, { sink, durability: { replicas: 1, timeout: "100 millis" } })
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("DurabilityTimeout")
      expect(notes).toEqual([])
      const facade = await startCheckpointer({
        client,
        keyPrefix: prefix,
        key: await keyText(),
        sink: (c) => void notes.push(c),
        durability: { replicas: 1, timeout: "100 millis" }
      })
      try {
        await expect(facade.checkpoint()).rejects.toMatchObject({ _tag: "DurabilityTimeout" })
        expect(notes).toEqual([])
      } finally {
        await facade.close()
      }
    } finally {
      client.disconnect()
    }
  })

  it("a bad durability option is InvalidConfig when the checkpointer is made", async () => {
    const client = new Redis(sharedRedis().url)
    try {
      const prefix = uniquePrefix("ck-durable-bad")
      for (const durability of [{ replicas: -1 }, { replicas: 1.5 }, { replicas: 1, timeout: 0 }]) {
        const exit = await checkpointOnce(client, prefix, { durability })
        expect(Exit.isFailure(exit) && JSON.stringify(exit.cause), JSON.stringify(durability)).toContain(
          "InvalidConfig"
        )
      }
    } finally {
      client.disconnect()
    }
  })
})

/** A private key text for the facade (it takes a path or a key text). */
const keyText = async (): Promise<string> => {
  const { Redacted } = await import("effect")
  const { privateKey } = await Effect.runPromise(Checkpoint.generateKey("test.example/durable-facade"))
  return Redacted.value(privateKey)
}
