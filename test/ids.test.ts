/**
 * Ids that need no Redis: lock tokens from the random pool, and lock options resolved once
 * when frozen (the facade's and the stores'), re-validated when not.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { nextCommitId, randomToken } from "../src/internal/commitId.js"
import { resolveOptions, type LockOptions } from "../src/internal/lock/options.js"

describe("ids", () => {
  it("lock tokens are 128-bit hex and never repeat, across several refills of the pool", () => {
    // 4 KiB per pool / 16 bytes per token: 1,000 tokens span four refills.
    const tokens = Array.from({ length: 1000 }, randomToken)
    for (const token of tokens) expect(token).toMatch(/^[0-9a-f]{32}$/)
    expect(new Set(tokens).size).toBe(tokens.length)
  })

  it("commit ids have no spaces and never repeat", () => {
    const ids = Array.from({ length: 1000 }, nextCommitId)
    for (const id of ids) expect(id).not.toMatch(/\s/)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it.effect("a frozen options object is resolved once; an unfrozen one is validated on every use", () =>
    Effect.gen(function* () {
      const frozen: LockOptions = Object.freeze({ ttl: "3 seconds", waitTimeout: "1 second" })
      const first = yield* resolveOptions(frozen)
      expect(first.ttlMs).toBe(3000)
      expect(first.waitMs).toBe(1000)
      expect(yield* resolveOptions(frozen)).toBe(first)

      const mutable: { ttl: LockOptions["ttl"] } = { ttl: "3 seconds" }
      expect((yield* resolveOptions(mutable)).ttlMs).toBe(3000)
      mutable.ttl = "nonsense" as never
      const exit = yield* Effect.exit(resolveOptions(mutable))
      expect(Exit.isFailure(exit)).toBe(true)
    })
  )
})
