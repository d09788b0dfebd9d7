/**
 * Verify.verifyCheckpoints against the real shared redis-server: chains written in
 * haechi's format (Chain.buildNextRecord, the head keys the append script sets), signed
 * checkpoints taken at random points, then the chain tampered with directly in Redis.
 *
 * The expected outcome is computed from where the tampering happened, not by our code:
 * d = the first sequence whose stored record differs from the original (the new length
 * + 1 when the chain is a prefix of the original); the verification must fail naming the
 * first checkpoint whose size is >= d, and must pass when no checkpoint is at or after d
 * (nothing anchored there, so nothing can tell).
 */
import { Effect, Layer } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditStore from "../src/AuditStore.js"
import { buildNextRecord, type AuditIntegrity } from "../src/Chain.js"
import * as Checkpoint from "../src/Checkpoint.js"
import * as RedisClient from "../src/RedisClient.js"
import { verifyCheckpoints, type CheckpointedResult } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
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

/** A chain of haechi records for `events`, as stored texts. */
const chainOf = (events: ReadonlyArray<object>, previous: AuditIntegrity | null = null): Array<string> => {
  const texts: Array<string> = []
  for (const event of events) {
    const record = buildNextRecord(event, previous)
    previous = record.auditIntegrity
    texts.push(JSON.stringify(record))
  }
  return texts
}

const integrity = (text: string): AuditIntegrity => JSON.parse(text).auditIntegrity

/** Replaces everything under `prefix` with `texts` and head keys consistent with them. */
const store = async (prefix: string, texts: ReadonlyArray<string>) => {
  const tx = redis.multi().del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
  if (texts.length > 0) {
    const head = integrity(texts.at(-1)!)
    tx.rpush(`${prefix}chain`, ...texts)
      .set(`${prefix}head`, JSON.stringify(head))
      .set(`${prefix}head:hash`, head.eventHash)
  }
  await tx.exec()
}

const events = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ type: "test", i, tag }))

const checkpointsAt = (texts: ReadonlyArray<string>, sizes: ReadonlyArray<number>) =>
  sizes.map((size) => Checkpoint.sign(signer, { size, hash: integrity(texts[size - 1]!).eventHash }))

const verify = (prefix: string, notes: string, fromCheckpoint = false): Promise<CheckpointedResult> =>
  Effect.runPromise(
    Effect.flatMap(Checkpoint.openAll(notes, signer.verifierKey), (checkpoints) =>
      verifyCheckpoints(checkpoints, { fromCheckpoint, pageSize: 4 })
    ).pipe(Effect.provide(AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layer(url)))))
  )

const firstDifference = (original: ReadonlyArray<string>, now: ReadonlyArray<string>): number => {
  for (let i = 0; i < now.length; i++) if (now[i] !== original[i]) return i + 1
  return now.length + 1
}

type Tamper =
  | { readonly kind: "rewrite"; readonly at: number; readonly length: number }
  | { readonly kind: "truncate"; readonly length: number }
  | { readonly kind: "swap"; readonly i: number; readonly j: number }
  | { readonly kind: "edit"; readonly at: number }
  | { readonly kind: "replace"; readonly length: number }

/** The tampered chain: every kind an attacker with write access to Redis can do. */
const tampered = (original: ReadonlyArray<string>, tamper: Tamper): Array<string> => {
  const n = original.length
  switch (tamper.kind) {
    case "rewrite": {
      // Every hash recomputed from `at` on: a valid chain, just not the signed one.
      const at = Math.min(tamper.at, n)
      const kept = original.slice(0, at - 1)
      const previous = kept.length === 0 ? null : integrity(kept.at(-1)!)
      return [...kept, ...chainOf(events(Math.max(1, tamper.length), "rewritten"), previous)]
    }
    case "truncate":
      return original.slice(0, Math.min(tamper.length, n - 1))
    case "swap": {
      const i = Math.min(tamper.i, n - 2)
      const j = Math.min(Math.max(tamper.j, i + 1), n - 1)
      const out = original.slice()
      ;[out[i], out[j]] = [out[j]!, out[i]!]
      return out
    }
    case "edit": {
      const at = Math.min(tamper.at, n) - 1
      const record = JSON.parse(original[at]!)
      record.tag = "edited"
      const out = original.slice()
      out[at] = JSON.stringify(record)
      return out
    }
    case "replace":
      // FLUSHALL, then a fresh chain.
      return chainOf(events(tamper.length, "replaced"))
  }
}

const tamperArb: fc.Arbitrary<Tamper> = fc.oneof(
  fc.record({
    kind: fc.constant("rewrite" as const),
    at: fc.integer({ min: 1, max: 40 }),
    length: fc.integer({ min: 1, max: 45 })
  }),
  fc.record({ kind: fc.constant("truncate" as const), length: fc.integer({ min: 0, max: 40 }) }),
  fc.record({
    kind: fc.constant("swap" as const),
    i: fc.integer({ min: 0, max: 39 }),
    j: fc.integer({ min: 1, max: 39 })
  }),
  fc.record({ kind: fc.constant("edit" as const), at: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant("replace" as const), length: fc.integer({ min: 0, max: 45 }) })
)

describe("verifyCheckpoints", () => {
  it("any rewrite, truncation, reordering, edit or replacement of a checkpointed prefix fails at the right checkpoint", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 40 }),
        fc.uniqueArray(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
        tamperArb,
        async (n, rawSizes, tamper) => {
          const prefix = uniquePrefix("cp-tamper")
          const original = chainOf(events(n, "original"))
          const sizes = [...new Set(rawSizes.map((s) => Math.min(s, n)))]
          const notes = checkpointsAt(original, sizes)
          await store(prefix, original)
          const honest = await verify(prefix, notes.map((c) => c.note).join(""))
          expect(honest.valid).toBe(true)

          const now = tampered(original, tamper)
          await store(prefix, now)
          const d = firstDifference(original, now)
          const expected = [...sizes].sort((a, b) => a - b).find((size) => size >= d)
          // Notes in any order: the file order does not matter.
          const result = await verify(
            prefix,
            notes
              .reverse()
              .map((c) => c.note)
              .join("")
          )
          await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
          if (expected === undefined) {
            // Nothing anchored at or after the change: only the chain's own rules apply.
            expect(result.valid || result.checkpoint === undefined, JSON.stringify(result)).toBe(true)
          } else {
            expect(result.valid, JSON.stringify({ tamper, d, sizes })).toBe(false)
            expect(result.valid ? undefined : result.checkpoint?.size, JSON.stringify({ tamper, d, sizes })).toBe(
              expected
            )
          }
        }
      ),
      { numRuns: 120 }
    )
  })

  it("any honest growing chain with checkpoints at random points passes, also from the newest checkpoint", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }), async (batches) => {
        const prefix = uniquePrefix("cp-honest")
        let texts: Array<string> = []
        const notes: Array<string> = []
        for (const batch of batches) {
          const previous = texts.length === 0 ? null : integrity(texts.at(-1)!)
          texts = [...texts, ...chainOf(events(batch, `batch-${notes.length}`), previous)]
          await store(prefix, texts)
          notes.push(checkpointsAt(texts, [texts.length])[0]!.note)
          const result = await verify(prefix, notes.join(""))
          expect(result.valid, JSON.stringify(result)).toBe(true)
        }
        // More records after the newest checkpoint: still valid; from it, only those are read.
        const previous = integrity(texts.at(-1)!)
        await store(prefix, [...texts, ...chainOf(events(3, "after"), previous)])
        const full = await verify(prefix, notes.join(""))
        const incremental = await verify(prefix, notes.join(""), true)
        await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
        expect(full).toMatchObject({ valid: true, checkpoints: new Set(notes).size })
        expect(full.chain).toMatchObject({ valid: true, records: texts.length + 3 })
        expect(incremental).toMatchObject({ valid: true, checkpoints: 1 })
        expect(incremental.chain).toMatchObject({ valid: true, records: 3, headSequence: texts.length + 3 })
      }),
      { numRuns: 40 }
    )
  })

  it("names the failure: another record at the checkpoint, a chain that is shorter, a chain that fails before it", async () => {
    const prefix = uniquePrefix("cp-reasons")
    const original = chainOf(events(20, "original"))
    const notes = checkpointsAt(original, [5, 10, 15])
    const all = notes.map((c) => c.note).join("")
    // Rewritten from 8 with every hash recomputed: checkpoint 10 no longer holds.
    await store(prefix, tampered(original, { kind: "rewrite", at: 8, length: 13 }))
    const rewritten = await verify(prefix, all)
    expect(rewritten).toMatchObject({ valid: false, checkpoint: { size: 10 }, failure: { _tag: "NotHeld" } })
    expect(rewritten.valid === false && rewritten.failure._tag === "NotHeld" && rewritten.failure.found).toBe(
      integrity(tampered(original, { kind: "rewrite", at: 8, length: 13 })[9]!).eventHash
    )
    // Cut to 12 records, head keys made consistent: checkpoint 15 is missing.
    await store(prefix, original.slice(0, 12))
    expect(await verify(prefix, all)).toMatchObject({
      valid: false,
      checkpoint: { size: 15 },
      failure: { _tag: "Shorter", length: 12 }
    })
    // From the newest checkpoint, the same cut is found at it.
    expect(await verify(prefix, all, true)).toMatchObject({
      valid: false,
      checkpoint: { size: 15 },
      failure: { _tag: "Shorter" }
    })
    // FLUSHALL and a new chain of 30: the first checkpoint already fails.
    await store(prefix, chainOf(events(30, "replaced")))
    expect(await verify(prefix, all)).toMatchObject({
      valid: false,
      checkpoint: { size: 5 },
      failure: { _tag: "NotHeld" }
    })
    expect(await verify(prefix, all, true)).toMatchObject({
      valid: false,
      checkpoint: { size: 15 },
      failure: { _tag: "NotHeld" }
    })
    // A record edited in place (hash not recomputed) at 3: the chain fails there, under checkpoint 5.
    await store(prefix, tampered(original, { kind: "edit", at: 3 }))
    const edited = await verify(prefix, all)
    expect(edited).toMatchObject({
      valid: false,
      checkpoint: { size: 5 },
      failure: { _tag: "ChainInvalid" },
      chain: { failedSequence: 3 }
    })
    // ... but after the newest checkpoint, no checkpoint breaks: the chain alone is invalid.
    await store(prefix, tampered(original, { kind: "edit", at: 18 }))
    expect(await verify(prefix, all)).toMatchObject({
      valid: false,
      checkpoint: undefined,
      chain: { valid: false, failedSequence: 18 }
    })
    await redis.del(`${prefix}chain`, `${prefix}head`, `${prefix}head:hash`)
  })

  it("refuses a checkpoints file with a note signed by another key, an altered note, or two heads for one size", async () => {
    const original = chainOf(events(10, "original"))
    const [five, ten] = checkpointsAt(original, [5, 10]) as [Checkpoint.SignedCheckpoint, Checkpoint.SignedCheckpoint]
    const other = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
    const forged = Checkpoint.sign(other, { size: 10, hash: ten.hash })
    const open = (text: string) => Effect.runPromise(Effect.either(Checkpoint.openAll(text, signer.verifierKey)))
    expect(await open(five.note + forged.note)).toMatchObject({
      _tag: "Left",
      left: { _tag: "CheckpointNoteRejected", note: 2 }
    })
    expect(await open(five.note + ten.note.replace("\n10\n", "\n11\n"))).toMatchObject({
      _tag: "Left",
      left: { note: 2, reason: expect.stringMatching(/does not verify/) }
    })
    const fork = Checkpoint.sign(signer, { size: 5, hash: ten.hash })
    expect(await open(five.note + ten.note + fork.note)).toMatchObject({
      _tag: "Left",
      left: { note: 3, reason: expect.stringMatching(/another head for size 5 than note 1/) }
    })
    // The same note twice is one checkpoint.
    expect(await open(five.note + five.note + ten.note)).toMatchObject({ _tag: "Right", right: { length: 3 } })
  })
})
