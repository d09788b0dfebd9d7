/**
 * The checkpointer and the witness store against the real shared redis-server.
 *
 * - The fence (lua/checkpoint_advance.lua): two checkpointers never sign two different
 *   heads for one size, even when the chain is rewound under them (a failover to a
 *   lagging replica, simulated by cutting the list and its head keys back atomically
 *   while writers keep appending); sizes only grow.
 * - A checkpointer never signs past a history that contradicts its newest checkpoint,
 *   whether that checkpoint comes from the fence in Redis or from its sink (after
 *   FLUSHALL the fence is gone too; the sink outside Redis still knows).
 * - Schedules: every N records, every T seconds.
 * - A witness store (Effect and facade) refuses a chain that is shorter than, or does not
 *   contain, the newest checkpoint, and writes nothing.
 */
import { readFileSync } from "node:fs"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Layer } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord, type AuditIntegrity } from "../src/Chain.js"
import * as Checkpoint from "../src/Checkpoint.js"
import { ChainMissesCheckpoint } from "../src/Errors.js"
import { createRedisAuditStore, startCheckpointer } from "../src/haechi.js"
import * as RedisClient from "../src/RedisClient.js"
import { promiseRunner } from "../src/internal/facade/run.js"
import { verifyCheckpoints } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

let url: string
let redis: Redis
let dir: string
let signer: Checkpoint.Signer

beforeAll(async () => {
  url = sharedRedis().url
  redis = new Redis(url)
  dir = await mkdtemp(join(tmpdir(), "haechi-checkpointer-"))
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
})

afterAll(async () => {
  await redis.quit()
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** Each call: its own connection, as a replica has. */
const storeLayer = (prefix: string) =>
  AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provideMerge(RedisClient.layer(url)))

const append = (prefix: string, n: number, tag = "event") =>
  Effect.runPromise(
    Effect.flatMap(AuditLog.make, (log) =>
      Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) => log.record({ tag, i })
      )
    ).pipe(Effect.provide(storeLayer(prefix)))
  )

/** A checkpointer over its own connection, collecting notes; `use` runs while it lives. */
const withCheckpointer = <A, E>(
  prefix: string,
  options: Partial<Checkpoint.CheckpointOptions>,
  use: (checkpointer: Checkpoint.CheckpointShape, notes: Array<Checkpoint.SignedCheckpoint>) => Effect.Effect<A, E>
) => {
  const notes: Array<Checkpoint.SignedCheckpoint> = []
  // (promiseRunner: rejects with the tagged error itself, as the facade does.)
  return promiseRunner()(
    Effect.scoped(
      Effect.flatMap(
        Checkpoint.make({ key: signer, sink: Checkpoint.functionSink((c) => void notes.push(c)), ...options }),
        (checkpointer) => use(checkpointer, notes)
      )
    ).pipe(Effect.provide(storeLayer(prefix)))
  )
}

/** Cuts the chain back to `length` records, head keys consistent, atomically (a failover to a lagging replica). */
const rewind = async (prefix: string, length: number) => {
  const last = await redis.lindex(`${prefix}chain`, length - 1)
  const head = JSON.parse(last!).auditIntegrity as AuditIntegrity
  await redis
    .multi()
    .ltrim(`${prefix}chain`, 0, length - 1)
    .set(`${prefix}head`, JSON.stringify(head))
    .set(`${prefix}head:hash`, head.eventHash)
    .exec()
}

const hashAt = async (prefix: string, size: number) =>
  JSON.parse((await redis.lindex(`${prefix}chain`, size - 1))!).auditIntegrity.eventHash as string

const failureOf = async (promise: Promise<unknown>) => {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error("expected a rejection")
}

describe("the checkpointer", () => {
  it("signs the verified head once per new head, records it in the fence, and its notes verify", async () => {
    const prefix = uniquePrefix("cp-once")
    const records = await append(prefix, 7)
    await withCheckpointer(prefix, {}, (checkpointer, notes) =>
      Effect.gen(function* () {
        const first = yield* checkpointer.checkpoint
        expect(first).toMatchObject({
          _tag: "Signed",
          checkpoint: { size: 7, hash: records[6]!.auditIntegrity.eventHash }
        })
        expect(yield* checkpointer.checkpoint).toEqual({ _tag: "Unchanged", size: 7 })
        yield* Effect.promise(() => append(prefix, 3))
        expect(yield* checkpointer.checkpoint).toMatchObject({ _tag: "Signed", checkpoint: { size: 10 } })
        expect(notes.map((c) => c.size)).toEqual([7, 10])
        expect(yield* Effect.promise(() => redis.get(`${prefix}checkpoint`))).toBe(`10 ${notes[1]!.hash}`)
        const opened = yield* Checkpoint.openAll(notes.map((c) => c.note).join(""), checkpointer.verifierKey)
        expect(opened.map((c) => [c.size, c.hash])).toEqual(notes.map((c) => [c.size, c.hash]))
      })
    )
  })

  it("an empty chain is not signed", async () => {
    const prefix = uniquePrefix("cp-empty")
    await withCheckpointer(prefix, {}, (checkpointer, notes) =>
      Effect.gen(function* () {
        expect(yield* checkpointer.checkpoint).toEqual({ _tag: "Unchanged", size: 0 })
        expect(notes).toEqual([])
        expect(yield* Effect.promise(() => redis.exists(`${prefix}checkpoint`))).toBe(0)
      })
    )
  })

  it("concurrent checkpointers, writers appending and the chain rewound under them: never two hashes for one size", async () => {
    const prefix = uniquePrefix("cp-race")
    await append(prefix, 5)
    const refusals: Array<unknown> = []
    // Refusals after the rewind: the fence or the newest checkpoint is no longer in the
    // chain, or a verification that was under way saw the chain end before the head it read.
    const refused = <A, E extends { readonly _tag: string }, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.catchIf(
        effect,
        (e) => e._tag === "ChainMissesCheckpoint" || e._tag === "CorruptData",
        (e) => Effect.sync(() => void refusals.push(e))
      )
    const attempts = Array.from({ length: 40 }, (_, i) => i)
    // Two long-lived checkpointers (each remembers its newest checkpoint) ...
    const longLived = [0, 1].map(() => {
      const notes: Array<Checkpoint.SignedCheckpoint> = []
      const done = withCheckpointer(
        prefix,
        { sink: Checkpoint.functionSink((c) => void notes.push(c)) },
        (checkpointer) =>
          Effect.forEach(attempts, () => Effect.zipRight(refused(checkpointer.checkpoint), Effect.sleep("3 millis")), {
            discard: true
          })
      )
      return { notes, done, fresh: false }
    })
    // ... and two that start afresh for every checkpoint (a cron job printing to stdout):
    // they know nothing but what the fence in Redis tells them.
    const fresh = [0, 1].map(() => {
      const notes: Array<Checkpoint.SignedCheckpoint> = []
      const once = Effect.scoped(
        Effect.flatMap(
          Checkpoint.make({ key: signer, sink: Checkpoint.functionSink((c) => void notes.push(c)) }),
          (c) => c.checkpoint
        )
      )
      const done = promiseRunner()(
        Effect.forEach(attempts, () => Effect.zipRight(refused(once), Effect.sleep("3 millis")), {
          discard: true
        }).pipe(Effect.provide(storeLayer(prefix)))
      )
      return { notes, done, fresh: true }
    })
    const racers = [...longLived, ...fresh]
    const writers = [append(prefix, 60, "a"), append(prefix, 60, "b")]
    // Mid-run, a failover to a replica that lags: the chain loses its last records and
    // the writers carry on from there, so sequences past the cut get new hashes.
    for (let i = 0; i < 200 && (await redis.llen(`${prefix}chain`)) < 40; i++)
      await new Promise((done) => setTimeout(done, 5))
    const length = await redis.llen(`${prefix}chain`)
    const cut = Math.max(1, length - 8)
    await rewind(prefix, cut)
    await Promise.all([...racers.map((r) => r.done), ...writers])

    const hashes = new Map<number, Set<string>>()
    for (const racer of racers) {
      // Sizes only grow (one that starts afresh may hand out the fence's own note again: the same bytes).
      const sizes = racer.notes.map((c) => c.size)
      expect(sizes).toEqual([...sizes].sort((a, b) => a - b))
      if (!racer.fresh) expect(new Set(sizes).size).toBe(sizes.length)
      for (const c of racer.notes) hashes.set(c.size, (hashes.get(c.size) ?? new Set()).add(c.hash))
    }
    expect(hashes.size).toBeGreaterThan(1)
    for (const [size, set] of hashes) expect([size, set.size]).toEqual([size, 1])
    for (const racer of racers)
      for (const c of racer.notes) await Effect.runPromise(Checkpoint.open(c.note, signer.verifierKey))
    // The fence holds the largest size signed.
    const largest = Math.max(...hashes.keys())
    expect((await redis.get(`${prefix}checkpoint`))?.split(" ")[0]).toBe(String(largest))
    // If a checkpoint was signed past the cut, the rewound chain cannot be signed any more.
    if ([...hashes.keys()].some((size) => size > cut)) expect(refusals.length).toBeGreaterThan(0)
  })

  it("refuses to sign a chain rewound under a checkpoint (the fence remembers it), naming it", async () => {
    const prefix = uniquePrefix("cp-rewound")
    await append(prefix, 20)
    const signed = await withCheckpointer(prefix, {}, (c) => c.checkpoint)
    expect(signed).toMatchObject({ _tag: "Signed", checkpoint: { size: 20 } })
    const old = await hashAt(prefix, 20)
    await rewind(prefix, 15)
    await append(prefix, 5, "after-failover")
    expect(await hashAt(prefix, 20)).not.toBe(old)
    // A fresh checkpointer (nothing outside Redis) is stopped by the fence.
    const error = await failureOf(withCheckpointer(prefix, {}, (c) => c.checkpoint))
    expect(error).toBeInstanceOf(ChainMissesCheckpoint)
    expect(error).toMatchObject({
      checkpoint: { size: 20, hash: old },
      found: { sequence: 20, eventHash: await hashAt(prefix, 20) }
    })
    expect(await redis.get(`${prefix}checkpoint`)).toBe(`20 ${old}`)
  })

  it("after FLUSHALL (fence gone too) and a new chain, the checkpoint in its sink stops it", async () => {
    const prefix = uniquePrefix("cp-flushed")
    const file = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
    await append(prefix, 12)
    await withCheckpointer(prefix, { sink: Checkpoint.fileSink(file) }, (c) => c.checkpoint)
    const before = await readFile(file, "utf8")
    await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`, `${prefix}checkpoint`, `${prefix}commits`)
    await append(prefix, 30, "replaced")
    const error = await failureOf(withCheckpointer(prefix, { sink: Checkpoint.fileSink(file) }, (c) => c.checkpoint))
    expect(error).toMatchObject({ _tag: "ChainMissesCheckpoint", checkpoint: { size: 12 } })
    expect(await readFile(file, "utf8")).toBe(before)
    // A sink that does not hold the note: refused at start (the note must verify with the key).
    const other = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
    const foreign = join(dir, "foreign.notes")
    await writeFile(foreign, Checkpoint.sign(other, { size: 1, hash: await hashAt(prefix, 1) }).note)
    expect(
      await failureOf(withCheckpointer(prefix, { sink: Checkpoint.fileSink(foreign) }, (c) => c.checkpoint))
    ).toMatchObject({
      _tag: "CheckpointNoteRejected"
    })
  })

  it("refuses a chain that does not verify, and signs nothing", async () => {
    const prefix = uniquePrefix("cp-corrupt")
    await append(prefix, 6)
    const record = JSON.parse((await redis.lindex(`${prefix}chain`, 2))!)
    record.i = 99
    await redis.lset(`${prefix}chain`, 2, JSON.stringify(record))
    const error = await failureOf(withCheckpointer(prefix, {}, (c) => c.checkpoint))
    expect(error).toMatchObject({
      _tag: "CorruptData",
      element: 2,
      detail: expect.stringMatching(/sequence 3 .*nothing signed/)
    })
    expect(await redis.exists(`${prefix}checkpoint`)).toBe(0)
  })

  it("signs every N records and every T seconds on its own", async () => {
    const prefix = uniquePrefix("cp-schedule")
    await withCheckpointer(prefix, { everyRecords: 10, pollInterval: "10 millis" }, (_, notes) =>
      Effect.gen(function* () {
        for (let i = 0; i < 5; i++) {
          yield* Effect.promise(() => append(prefix, 10))
          yield* Effect.sleep("80 millis")
        }
        const sizes = notes.map((c) => c.size)
        expect(sizes.length).toBeGreaterThanOrEqual(3)
        for (let i = 1; i < sizes.length; i++) expect(sizes[i]! - sizes[i - 1]!).toBeGreaterThanOrEqual(10)
        expect(sizes.at(-1)).toBe(50)
      })
    )
    const timed = uniquePrefix("cp-timed")
    await append(timed, 3)
    await withCheckpointer(timed, { everySeconds: 0.1 }, (_, notes) =>
      Effect.gen(function* () {
        yield* Effect.sleep("350 millis")
        expect(notes.map((c) => c.size)).toEqual([3])
        yield* Effect.promise(() => append(timed, 2))
        yield* Effect.sleep("350 millis")
        expect(notes.map((c) => c.size)).toEqual([3, 5])
      })
    )
    expect(await failureOf(withCheckpointer(timed, { everyRecords: 0 }, (c) => c.checkpoint))).toMatchObject({
      _tag: "InvalidConfig",
      option: "everyRecords"
    })
  })

  it("the facade's startCheckpointer: key file, file sink, schedule, close", async () => {
    const prefix = uniquePrefix("cp-facade")
    const keyFile = join(dir, "facade.key")
    const verifierKey = await Effect.runPromise(Checkpoint.keygen({ name: "facade.example/log", out: keyFile }))
    const file = join(dir, "facade.notes")
    const client = new Redis(url)
    try {
      const checkpointer = await startCheckpointer({
        client,
        keyPrefix: prefix,
        key: keyFile,
        sink: { file },
        everyRecords: 5
      })
      expect(checkpointer.verifierKey).toBe(verifierKey)
      await append(prefix, 4)
      expect(await checkpointer.checkpoint()).toMatchObject({ _tag: "Signed", checkpoint: { size: 4 } })
      await checkpointer.close()
      const notes = await Effect.runPromise(Checkpoint.openAll(await readFile(file, "utf8"), verifierKey))
      expect(notes.map((c) => c.size)).toEqual([4])
      // Restarted, it starts from the file's newest note.
      const again = await startCheckpointer({ client, keyPrefix: prefix, key: keyFile, sink: { file } })
      expect((await again.latest())?.size).toBe(4)
      await again.close()
      expect(
        await failureOf(startCheckpointer({ client, keyPrefix: prefix, key: join(dir, "none.key"), sink: "stdout" }))
      ).toMatchObject({
        _tag: "CheckpointKeyInvalid",
        reason: "no such file"
      })
    } finally {
      await client.quit()
    }
  })
})

describe("the in-memory checkpointer", () => {
  it("signs an in-memory store's head with the same rules (fence in memory)", async () => {
    const notes: Array<Checkpoint.SignedCheckpoint> = []
    const outcomes = await Effect.runPromise(
      Effect.gen(function* () {
        const log = yield* AuditLog.AuditLog
        const checkpointer = yield* Checkpoint.Checkpoint
        const out: Array<string> = []
        for (const n of [3, 0, 2]) {
          for (let i = 0; i < n; i++) yield* log.record({ i })
          out.push((yield* checkpointer.checkpoint)._tag)
        }
        return out
      }).pipe(
        Effect.provide(
          Layer.mergeAll(
            AuditLog.layer,
            Checkpoint.layerMemory({ key: signer, sink: Checkpoint.functionSink((c) => void notes.push(c)) })
          ).pipe(Layer.provideMerge(AuditStore.layerMemory()))
        )
      )
    )
    expect(outcomes).toEqual(["Signed", "Unchanged", "Signed"])
    expect(notes.map((c) => c.size)).toEqual([3, 5])
  })
})

describe("replicas as witnesses", () => {
  const witnessed = (prefix: string, latest: string | undefined, verifierKey = signer.verifierKey) =>
    Effect.runPromiseExit(
      AuditStore.make({ keyPrefix: prefix, witness: { verifierKey, latest: Effect.succeed(latest) } }).pipe(
        Effect.provide(RedisClient.layer(url))
      )
    )

  it("a store that is given the newest checkpoint refuses a chain that is shorter or does not contain it", async () => {
    const prefix = uniquePrefix("witness")
    const records = await append(prefix, 10)
    const note = Checkpoint.sign(signer, { size: 10, hash: records[9]!.auditIntegrity.eventHash }).note
    expect(Exit.isSuccess(await witnessed(prefix, note))).toBe(true)
    expect(Exit.isSuccess(await witnessed(prefix, undefined))).toBe(true)
    await append(prefix, 2)
    expect(Exit.isSuccess(await witnessed(prefix, note))).toBe(true)

    await rewind(prefix, 8)
    const shorter = await witnessed(prefix, note)
    expect(shorter).toMatchObject({
      _tag: "Failure",
      cause: { error: { _tag: "ChainMissesCheckpoint", found: null, checkpoint: { size: 10 } } }
    })

    // FLUSHALL, and a fresh chain longer than the checkpoint.
    await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`, `${prefix}commits`)
    await append(prefix, 15, "fresh")
    const replaced = await witnessed(prefix, note)
    expect(replaced).toMatchObject({
      _tag: "Failure",
      cause: { error: { _tag: "ChainMissesCheckpoint", found: { sequence: 10, eventHash: await hashAt(prefix, 10) } } }
    })

    // A note that is not the key's, a bad verifier key.
    const other = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
    expect(await witnessed(prefix, note, other.verifierKey)).toMatchObject({
      cause: { error: { _tag: "CheckpointNoteRejected" } }
    })
    expect(await witnessed(prefix, note, "nonsense")).toMatchObject({
      cause: { error: { _tag: "CheckpointKeyInvalid" } }
    })
  })

  it("the facade's witness option: checked() and the first transaction reject, nothing is appended", async () => {
    const prefix = uniquePrefix("witness-facade")
    const records = await append(prefix, 6)
    const file = join(dir, "witness.notes")
    await writeFile(file, Checkpoint.sign(signer, { size: 6, hash: records[5]!.auditIntegrity.eventHash }).note)
    const latest = () => Effect.runPromise(Checkpoint.latestFromFile(file))
    const client = new Redis(url)
    try {
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        witness: { verifierKey: signer.verifierKey, latest }
      })
      await store.checked()
      await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`, `${prefix}commits`)
      const fresh = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        witness: { verifierKey: signer.verifierKey, latest }
      })
      expect(await failureOf(fresh.checked())).toBeInstanceOf(ChainMissesCheckpoint)
      const build = async ({ readLastIntegrity, persist }: any) => {
        const previous = await readLastIntegrity()
        await persist(buildNextRecord({ tag: "x" }, previous))
      }
      expect(await failureOf(fresh.transaction(build))).toBeInstanceOf(ChainMissesCheckpoint)
      expect(await redis.llen(`${prefix}chain`)).toBe(0)
    } finally {
      await client.quit()
    }
  })
})

describe("verifyCheckpoints over notes the checkpointer wrote", () => {
  it("passes while the chain grows and fails on a rewrite after the last note", async () => {
    const prefix = uniquePrefix("cp-e2e")
    const file = join(dir, "e2e.notes")
    for (const n of [3, 9, 1]) {
      await append(prefix, n)
      await withCheckpointer(prefix, { sink: Checkpoint.fileSink(file) }, (c) => c.checkpoint)
    }
    const verify = () =>
      Effect.runPromise(
        Effect.flatMap(Checkpoint.openAll(readFileSync(file, "utf8"), signer.verifierKey), (checkpoints) =>
          verifyCheckpoints(checkpoints)
        ).pipe(Effect.provide(storeLayer(prefix)))
      )
    expect(await verify()).toMatchObject({ valid: true, checkpoints: 3, newest: { size: 13 } })
    await rewind(prefix, 11)
    expect(await verify()).toMatchObject({
      valid: false,
      checkpoint: { size: 12 },
      failure: { _tag: "Shorter", length: 11 }
    })
  })
})
