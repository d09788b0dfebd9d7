/**
 * What is under a prefix before a command works on it: a prefix or database with no
 * chain and no head is "nothing there" (a mistyped prefix, the wrong db), which fails
 * with exit 4 unless `--allow-empty`, rather than reading as a valid empty chain.
 */
import * as Effect from "effect/Effect"
import { AuditStore } from "haechi-store-effect"
import { CliFailure, ExitCode } from "./failure.js"
import type { RedisTarget } from "./target.js"

export interface ChainPresence {
  readonly length: number
  readonly headSequence: number | null
}

/** The chain's length and head sequence, failing with "nothing there" when both are absent. */
export const requireChain = (t: RedisTarget, prefix: string, allowEmpty: boolean) =>
  Effect.gen(function* () {
    const store = yield* AuditStore.AuditStore
    const head = yield* store.head
    const length = yield* store.length
    if (length === 0 && head === null && !allowEmpty) {
      return yield* Effect.fail(
        new CliFailure({
          line: t.scrub(
            `nothing there: no audit chain and no head under prefix "${prefix}" at ${t.shown} ` +
              "(check --prefix and the database in the URL; --allow-empty accepts an empty store)"
          ),
          code: ExitCode.empty
        })
      )
    }
    return { length, headSequence: head?.sequence ?? null } satisfies ChainPresence
  })
