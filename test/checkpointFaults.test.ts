/**
 * The checkpointer under faults: a sink that failed (the note is emitted again, not
 * reported Unchanged), a frozen link under a witness store's first call (bounded by its
 * timeout), a failover that rewinds the chain and the fence together (separate sinks can
 * then sign two heads for one size, and verifying their notes together catches it), and
 * a checkpoints file two checkpointers append to (the newest note is taken, whatever
 * order they landed in, and read again before every round).
 */
import { Effect } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import * as Checkpoint from "../src/Checkpoint.js"
import { createRedisAuditStore } from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import { promiseRunner } from "../src/internal/facade/run.js"
import * as Verify from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { append, storeLayer } from "./support/auditChains.js"
import { sharedRedis } from "./support/shared.js"

let url: string
let redis: Redis
let signer: Checkpoint.Signer
const proxies: Array<TcpProxy> = []
const opened: Array<Redis> = []

beforeAll(async () => {
  url = sharedRedis().url
  redis = new Redis(url)
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
})

afterAll(async () => {
  for (const c of opened) c.disconnect()
  await Promise.all(proxies.map((p) => p.stop()))
  await redis.quit()
})

describe("checkpointer and its sink", () => {
  it("a checkpoint whose sink failed is emitted again on the next call (not reported Unchanged)", async () => {
    const prefix = uniquePrefix("ck-sinkfail")
    await append(prefix, 5)
    const emitted: Array<Checkpoint.SignedCheckpoint> = []
    let failNext = true
    const sink = Checkpoint.functionSink((c) => {
      if (failNext) {
        failNext = false
        throw new Error("WORM storage unavailable")
      }
      emitted.push(c)
    })
    const outcome = await promiseRunner()(
      Effect.scoped(
        Effect.flatMap(Checkpoint.make({ key: signer, sink }), (checkpointer) =>
          Effect.gen(function* () {
            const first = yield* Effect.either(checkpointer.checkpoint)
            expect(first._tag).toBe("Left")
            // Nothing reached the sink; the checkpointer must not count it as its newest.
            const latestAfterFailure = yield* checkpointer.latest
            const second = yield* checkpointer.checkpoint
            return { latestAfterFailure, second }
          })
        )
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(outcome.second._tag).toBe("Signed")
    expect(emitted.map((c) => c.size)).toEqual([5])
    expect(outcome.latestAfterFailure).toBeUndefined()
  })
})

describe("deadlines of the witness check", () => {
  it("a witness store's first call rejects within its timeout on a frozen link", async () => {
    const prefix = uniquePrefix("ck-witness-frozen")
    await append(prefix, 3)
    const hash = JSON.parse((await redis.lindex(`${prefix}chain`, 2))!).auditIntegrity.eventHash as string
    const note = Checkpoint.sign(signer, { size: 3, hash }).note
    const proxy = await tcpProxy(sharedRedis().port)
    proxies.push(proxy)
    const client = new Redis(proxy.port, "127.0.0.1")
    client.on("error", () => {})
    opened.push(client)
    await client.ping()
    const timeoutMs = 400
    const store = createRedisAuditStore({
      client,
      keyPrefix: prefix,
      timeout: timeoutMs,
      witness: { verifierKey: signer.verifierKey, latest: () => note }
    })
    const frozen = proxy.freezeWhen("lindex")
    const started = performance.now()
    const result = await Promise.race([
      store
        .transaction(async ({ readLastIntegrity }) => readLastIntegrity())
        .then(
          () => "resolved",
          (error: unknown) => `rejected: ${(error as { _tag?: string })._tag}`
        ),
      new Promise<string>((done) => setTimeout(() => done("still pending"), 5000))
    ])
    const ms = performance.now() - started
    await frozen
    proxy.thaw()
    expect(result).toMatch(/^rejected/)
    expect(ms).toBeLessThan(timeoutMs + 1000)
  })
})

describe("the fence across a failover", () => {
  const withCheckpointer = <A>(
    prefix: string,
    notes: Array<Checkpoint.SignedCheckpoint>,
    use: (c: Checkpoint.CheckpointShape) => Effect.Effect<A, unknown>
  ) =>
    Effect.scoped(
      Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.functionSink((c) => void notes.push(c)) }), use)
    ).pipe(Effect.provide(storeLayer(prefix)))

  it("a failover that rewinds chain and fence: separate sinks can sign two heads for one size, and verifying both logs catches it", async () => {
    const prefix = uniquePrefix("ck-failover")
    const notesA: Array<Checkpoint.SignedCheckpoint> = []
    const notesB: Array<Checkpoint.SignedCheckpoint> = []
    await append(prefix, 10, "original")
    // B (replica 2) signs 10; A (replica 1) later signs 20.
    const b = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const checkpointerB = yield* Checkpoint.make({
            key: signer,
            sink: Checkpoint.functionSink((c) => void notesB.push(c))
          })
          yield* checkpointerB.checkpoint
          // The replica Redis fails over to has replicated up to here (chain 15, fence "10 ...").
          yield* Effect.promise(() => append(prefix, 5, "original"))
          const replicated = yield* Effect.promise(() =>
            Promise.all([
              redis.lrange(`${prefix}chain`, 0, -1),
              redis.get(`${prefix}head`),
              redis.get(`${prefix}head:hash`),
              redis.get(`${prefix}checkpoint`)
            ])
          )
          yield* Effect.promise(() => append(prefix, 5, "original"))
          yield* Effect.promise(() => Effect.runPromise(withCheckpointer(prefix, notesA, (a) => a.checkpoint)))
          // Failover to the lagging replica: chain, head keys and fence as they were there.
          const [chain, head, headHash, fence] = replicated
          yield* Effect.promise(() =>
            redis
              .multi()
              .del(`${prefix}chain`)
              .rpush(`${prefix}chain`, ...chain)
              .set(`${prefix}head`, head!)
              .set(`${prefix}head:hash`, headHash!)
              .set(`${prefix}checkpoint`, fence!)
              .exec()
          )
          // Writers go on on the new primary: a different 16..20.
          yield* Effect.promise(() => append(prefix, 5, "after-failover"))
          return yield* Effect.either(checkpointerB.checkpoint)
        })
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(notesA.map((c) => c.size)).toEqual([20])
    // The fence went back with the chain, and B's sink never saw A's note: B signs the
    // new history's 20 (the documented limit of checkpointers with separate sinks).
    expect(b._tag).toBe("Right")
    const signedB = notesB.find((c) => c.size === 20)
    expect(signedB?.hash).not.toBe(notesA[0]!.hash)
    // Verifying both logs' notes together catches the fork: no chain holds both.
    const both = await Effect.runPromise(
      Verify.verifyCheckpoints([...notesA, ...notesB]).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(both.valid).toBe(false)
    const own = await Effect.runPromise(Verify.verifyCheckpoints(notesB).pipe(Effect.provide(storeLayer(prefix))))
    expect(own.valid).toBe(true)
  })
})

describe("the newest note of a checkpoints file two checkpointers append to", () => {
  it("a witness reading the file refuses a chain rewound below the newest checkpoint, whatever order the notes landed in", async () => {
    const { mkdtemp, appendFile, rm } = await import("node:fs/promises")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const dir = await mkdtemp(join(tmpdir(), "ck-order-"))
    const path = join(dir, "checkpoints.notes")
    try {
      const prefix = uniquePrefix("ck-order")
      await append(prefix, 10)
      let releaseA!: () => void
      const aMayWrite = new Promise<void>((done) => (releaseA = done))
      // Replica A's file write is slow (a busy host, a slow NFS fsync); replica B's is not.
      const sinkA = Checkpoint.functionSink(async (c) => {
        await aMayWrite
        await appendFile(path, c.note)
      })
      const run = <A>(
        sink: Checkpoint.CheckpointSink,
        use: (c: Checkpoint.CheckpointShape) => Effect.Effect<A, unknown>
      ) =>
        promiseRunner()(
          Effect.scoped(Effect.flatMap(Checkpoint.make({ key: signer, sink }), use)).pipe(
            Effect.provide(storeLayer(prefix))
          )
        )
      const a = run(sinkA, (c) => c.checkpoint)
      // A has recorded 10 in the fence and is writing; meanwhile the chain grows and B signs 20.
      while ((await redis.get(`${prefix}checkpoint`)) === null) await new Promise((r) => setTimeout(r, 5))
      await append(prefix, 10)
      const b = await run(Checkpoint.fileSink(path), (c) => c.checkpoint)
      expect(b).toMatchObject({ _tag: "Signed", checkpoint: { size: 20 } })
      releaseA()
      expect(await a).toMatchObject({ _tag: "Signed", checkpoint: { size: 10 } })
      // Failover to a replica that had 15 records.
      const last = JSON.parse((await redis.lindex(`${prefix}chain`, 14))!).auditIntegrity
      await redis
        .multi()
        .ltrim(`${prefix}chain`, 0, 14)
        .set(`${prefix}head`, JSON.stringify(last))
        .set(`${prefix}head:hash`, last.eventHash)
        .del(`${prefix}checkpoint`)
        .exec()
      const exit = await Effect.runPromiseExit(
        AuditStore.make({
          keyPrefix: prefix,
          witness: { verifierKey: signer.verifierKey, latest: Checkpoint.latestFromFile(path) }
        }).pipe(Effect.provide(RedisClient.layer(url)))
      )
      expect(exit._tag).toBe("Failure")
      expect(JSON.stringify(exit)).toMatch(/ChainMissesCheckpoint/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe("the fence across a failover, checkpointers sharing one checkpoints file", () => {
  it("B does not sign a head for size 20 other than the one A appended to the shared file", async () => {
    const { mkdtemp, readFile, rm } = await import("node:fs/promises")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const dir = await mkdtemp(join(tmpdir(), "ck-shared-"))
    const path = join(dir, "checkpoints.notes")
    try {
      const prefix = uniquePrefix("ck-failover-file")
      await append(prefix, 10, "original")
      const outcome = await promiseRunner()(
        Effect.scoped(
          Effect.gen(function* () {
            const checkpointerB = yield* Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) })
            yield* checkpointerB.checkpoint
            yield* Effect.promise(() => append(prefix, 5, "original"))
            const replicated = yield* Effect.promise(() =>
              Promise.all([
                redis.lrange(`${prefix}chain`, 0, -1),
                redis.get(`${prefix}head`),
                redis.get(`${prefix}head:hash`),
                redis.get(`${prefix}checkpoint`)
              ])
            )
            yield* Effect.promise(() => append(prefix, 5, "original"))
            // A (another replica, same file) signs 20.
            yield* Effect.promise(() =>
              promiseRunner()(
                Effect.scoped(
                  Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) }), (a) => a.checkpoint)
                ).pipe(Effect.provide(storeLayer(prefix)))
              )
            )
            const [chain, head, headHash, fence] = replicated
            yield* Effect.promise(() =>
              redis
                .multi()
                .del(`${prefix}chain`)
                .rpush(`${prefix}chain`, ...chain)
                .set(`${prefix}head`, head!)
                .set(`${prefix}head:hash`, headHash!)
                .set(`${prefix}checkpoint`, fence!)
                .exec()
            )
            yield* Effect.promise(() => append(prefix, 5, "after-failover"))
            return yield* Effect.either(checkpointerB.checkpoint)
          })
        ).pipe(Effect.provide(storeLayer(prefix)))
      )
      // The file must still open: one hash per size.
      const text = await readFile(path, "utf8")
      const opened = await Effect.runPromise(Effect.either(Checkpoint.openAll(text, signer.verifierKey)))
      expect(opened._tag).toBe("Right")
      expect(outcome._tag).toBe("Left")
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
