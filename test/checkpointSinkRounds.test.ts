/**
 * A running checkpointer reads its sink before every round: a note another checkpointer
 * tore (crashed mid-append) does not stop it, the newest whole note is found past a torn
 * one, a sink whose `latest` hangs is bounded by the timeout, `trusted` still stands in
 * for the sink's notes, and a newer note found there becomes its `latest`.
 */
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import { promiseRunner } from "../src/internal/facade/run.js"
import { uniquePrefix } from "./support/keys.js"
import { append, storeLayer } from "./support/auditChains.js"

let signer: Checkpoint.Signer
let dir: string
beforeAll(async () => {
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
  dir = await mkdtemp(join(tmpdir(), "ck2-ck-"))
})
afterAll(() => rm(dir, { recursive: true, force: true }))

describe("a running checkpointer and its sink", () => {
  it("a torn note another checkpointer left in the shared file (it crashed mid-append) does not stop this one signing", async () => {
    const prefix = uniquePrefix("ck2-ck-torn")
    const path = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
    await append(prefix, 5)
    const outcome = await promiseRunner()(
      Effect.scoped(
        Effect.gen(function* () {
          const c = yield* Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) })
          const first = yield* c.checkpoint
          // Another replica, same file, crashes halfway through its append.
          yield* Effect.promise(() => appendFile(path, "test.example/log\n7\n"))
          yield* Effect.promise(() => append(prefix, 5))
          const second = yield* Effect.either(c.checkpoint)
          yield* Effect.promise(() => append(prefix, 5))
          const third = yield* Effect.either(c.checkpoint)
          return { first, second, third }
        })
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(outcome.first._tag).toBe("Signed")
    const tag = (e: (typeof outcome)["second"]) => (e._tag === "Right" ? e.right._tag : e.left._tag)
    expect([tag(outcome.second), tag(outcome.third)]).toEqual(["Signed", "Signed"])
  })

  it("a sink whose latest hangs does not hold a round past the checkpointer's timeout", async () => {
    const prefix = uniquePrefix("ck2-ck-slow")
    await append(prefix, 5)
    let calls = 0
    const sink: Checkpoint.CheckpointSink = {
      name: "slow",
      emit: () => Effect.void,
      // answers at start-up, then hangs (a stalled NFS mount, object storage)
      latest: Effect.suspend(() => (++calls === 1 ? Effect.succeed(undefined) : Effect.never))
    }
    const result = await promiseRunner()(
      Effect.scoped(
        Effect.flatMap(Checkpoint.make({ key: signer, sink, timeout: 300 }), (c) =>
          c.checkpoint.pipe(
            Effect.either,
            Effect.map((e) => (e._tag === "Right" ? e.right._tag : e.left._tag)),
            Effect.timeoutTo({ duration: "3 seconds", onTimeout: () => "still running after 3 s", onSuccess: (x) => x })
          )
        )
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(result).not.toBe("still running after 3 s")
  })
})

describe("readLastNote over a tail with a torn note in it", () => {
  it("the newest whole note of the tail is found even when a torn one lies between it and the last", async () => {
    const path = join(dir, "torn-middle.notes")
    const hash = (n: number) => Buffer.alloc(32, n).toString("base64url")
    const n20 = Checkpoint.sign(signer, { size: 20, hash: hash(20) }).note
    const n10 = Checkpoint.sign(signer, { size: 10, hash: hash(10) }).note
    // A signs 20; B crashed halfway through appending 15; C's slow note for 10 lands last.
    await appendFile(path, n20 + "test.example/log\n15\n" + n10)
    const text = await Effect.runPromise(Checkpoint.latestFromFile(path))
    const newest = Checkpoint.newest(await Effect.runPromise(Checkpoint.openAll(text!, signer.verifierKey)))
    expect(newest?.size).toBe(20)
  })
})

describe("the trusted option against the sink's own notes", () => {
  it("a checkpointer given `trusted` (its sink holds notes of the key it replaced) still signs", async () => {
    const prefix = uniquePrefix("ck2-ck-trusted")
    const path = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
    await append(prefix, 5)
    // The file holds a note of the old key (rotated out); the operator starts the new key from nothing.
    const old = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
    await appendFile(path, Checkpoint.sign(old, { size: 3, hash: Buffer.alloc(32, 3).toString("base64url") }).note)
    const outcome = await promiseRunner()(
      Effect.scoped(
        Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path), trusted: "" }), (c) =>
          Effect.either(c.checkpoint)
        )
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    expect(outcome._tag === "Right" ? outcome.right._tag : outcome.left._tag).toBe("Signed")
  })
})

describe("what latest reports once the sink holds a newer note", () => {
  it("a checkpointer that found a newer note in its shared file reports it as its latest (its schedule is not due every poll)", async () => {
    const prefix = uniquePrefix("ck2-ck-latest")
    const path = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
    await append(prefix, 10)
    const run = <A>(use: (c: Checkpoint.CheckpointShape) => Effect.Effect<A, unknown>) =>
      Effect.scoped(Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) }), use)).pipe(
        Effect.provide(storeLayer(prefix))
      )
    const result = await promiseRunner()(
      run((a) =>
        Effect.gen(function* () {
          yield* a.checkpoint
          yield* Effect.promise(() => append(prefix, 10))
          // B, same file, signs 20.
          yield* Effect.promise(() => promiseRunner()(run((b) => b.checkpoint)))
          const outcome = yield* a.checkpoint
          const latest = yield* a.latest
          return { outcome: outcome._tag, latest: latest?.size }
        })
      )
    )
    expect(result).toEqual({ outcome: "Unchanged", latest: 20 })
  })
})

describe("a note torn mid-line", () => {
  it("a note torn mid-line (no newline), then appended to, does not stop later rounds: the next note starts on a line of its own", async () => {
    const prefix = uniquePrefix("ck2-torn")
    const path = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
    await append(prefix, 5)
    const outcome = await promiseRunner()(
      Effect.scoped(
        Effect.gen(function* () {
          const c = yield* Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) })
          const first = yield* c.checkpoint
          // Another replica, same file, crashes in the middle of its note's hash line.
          yield* Effect.promise(() => appendFile(path, "test.example/log\n7\nAAAAAAAA"))
          yield* Effect.promise(() => append(prefix, 5))
          const second = yield* Effect.either(c.checkpoint)
          yield* Effect.promise(() => append(prefix, 5))
          const third = yield* Effect.either(c.checkpoint)
          return { first, second, third }
        })
      ).pipe(Effect.provide(storeLayer(prefix)))
    )
    const tag = (e: (typeof outcome)["second"]) => (e._tag === "Right" ? e.right._tag : e.left._tag)
    expect([outcome.first._tag, tag(outcome.second), tag(outcome.third)]).toEqual(["Signed", "Signed", "Signed"])
    expect(await readFile(path, "utf8")).toContain("AAAAAAAA\ntest.example/log\n10\n")
  })

  for (const torn of ["test.example/log\n7\n", "test.example/log\n7\nAAAA"]) {
    it(`a sink file holding only a torn first note (${JSON.stringify(torn)}) does not stop the checkpointer`, async () => {
      const prefix = uniquePrefix("ck2-torn-first")
      const path = join(dir, `${prefix.replace(/:/g, "_")}.notes`)
      await append(prefix, 5)
      // The first checkpointer ever crashed halfway through its first append.
      await writeFile(path, torn)
      const outcome = await promiseRunner()(
        Effect.scoped(
          Effect.flatMap(Checkpoint.make({ key: signer, sink: Checkpoint.fileSink(path) }), (c) => c.checkpoint)
        ).pipe(
          Effect.either,
          Effect.map((e) => (e._tag === "Right" ? e.right._tag : e.left._tag)),
          Effect.provide(storeLayer(prefix))
        )
      )
      expect(outcome).toBe("Signed")
    })
  }
})

describe("the sink read at start-up", () => {
  it("a sink whose latest hangs from the start fails make within the checkpointer's timeout", async () => {
    const prefix = uniquePrefix("ck2-slow-start")
    await append(prefix, 5)
    const sink: Checkpoint.CheckpointSink = { name: "slow", emit: () => Effect.void, latest: Effect.never }
    const result = await promiseRunner()(
      Effect.scoped(Effect.flatMap(Checkpoint.make({ key: signer, sink, timeout: 300 }), (c) => c.checkpoint)).pipe(
        Effect.either,
        Effect.map((e) => (e._tag === "Right" ? e.right._tag : e.left._tag)),
        Effect.timeoutTo({ duration: "3 seconds", onTimeout: () => "still running after 3 s", onSuccess: (x) => x }),
        Effect.provide(storeLayer(prefix))
      )
    )
    expect(result).toBe("CheckpointSinkFailed")
  })
})
