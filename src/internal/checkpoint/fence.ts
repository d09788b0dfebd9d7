/**
 * The checkpointers' fence: a compare-and-set of the last checkpointed size, taken only
 * where the chain holds the point (see lua/checkpoint_advance.lua). Sizes only grow and
 * one size is only ever recorded with one hash, so checkpointers that sign only what the
 * fence recorded never sign two heads for one size. The in-memory twin does the same
 * over an in-memory chain (one process), atomically because it runs without yielding
 * between its reads and its write.
 */
import * as Effect from "effect/Effect"
import { ChainMissesCheckpoint, CorruptData, type ChainPoint, type StoreError } from "../../Errors.js"
import type { AuditKeys } from "../keys.js"
import { type RedisClientShape } from "../../RedisClient.js"
import { wrongType } from "../redisReply.js"
import { Scripts } from "../scripts.js"

/** A point of the chain: `size` records, the last with `hash`. */
export interface Point {
  readonly size: number
  readonly hash: string
}

export type AdvanceOutcome =
  /** The fence now holds the candidate: sign it. */
  | { readonly _tag: "Advanced"; readonly point: Point }
  /** The fence was at or past the candidate already (another checkpointer signed it). */
  | { readonly _tag: "AtOrPast"; readonly point: Point }

export interface CheckpointFence {
  /**
   * Records `candidate` (a head the caller verified) as the last checkpoint if the chain
   * holds it, the fence's current point and `floor` (the caller's newest checkpoint), and
   * it is past the fence. Fails with `ChainMissesCheckpoint` naming the point the chain
   * does not hold.
   */
  readonly advance: (
    candidate: Point,
    floor: Point | undefined
  ) => Effect.Effect<AdvanceOutcome, ChainMissesCheckpoint | StoreError>
  /** What must hold before `candidate` is signed, once `advance` answered `outcome` (see `durableFence`). */
  readonly acknowledge?: (candidate: Point, outcome: AdvanceOutcome) => Effect.Effect<void, StoreError>
}

const missing = (prefix: string, origin: string, point: Point, at: string | null): ChainMissesCheckpoint =>
  new ChainMissesCheckpoint({
    prefix,
    checkpoint: { origin, size: point.size, hash: point.hash },
    found:
      at === null
        ? null
        : ({ sequence: point.size, eventHash: at === "" ? "(not a record of that sequence)" : at } satisfies ChainPoint)
  })

/** The fence on Redis, one script call. */
export const redisFence = (redis: RedisClientShape, keys: AuditKeys, origin: string): CheckpointFence => ({
  advance: (candidate, floor) =>
    redis
      .script(
        Scripts.checkpointAdvance,
        [keys.chain, keys.checkpoint],
        [candidate.size, candidate.hash, floor?.size ?? 0, floor?.hash ?? ""]
      )
      .pipe(
        wrongType(keys.chain),
        Effect.flatMap((reply): Effect.Effect<AdvanceOutcome, ChainMissesCheckpoint | CorruptData> => {
          const [status, size, hash, at] = reply as [number, number | string, string, string | null | undefined]
          const point = { size: Number(size), hash: String(hash) }
          switch (status) {
            case 1:
              return Effect.succeed({ _tag: "Advanced", point })
            case 2:
              return Effect.succeed({ _tag: "AtOrPast", point })
            case 3:
              return Effect.fail(missing(keys.prefix, origin, point, at ?? null))
            default:
              return Effect.fail(
                new CorruptData({ key: keys.checkpoint, detail: 'is not a checkpoint ("<size> <eventHash>")' })
              )
          }
        })
      )
})

/**
 * The fence over a chain read through `elementAt` (the in-memory store's): the same
 * rules; `elementAt` must answer synchronously for the check and the write to be atomic.
 */
export const memoryFence = (
  prefix: string,
  origin: string,
  elementAt: (index: number) => Effect.Effect<string | undefined, StoreError>
): CheckpointFence => {
  let last: Point = { size: 0, hash: "" }
  const hashAt = (size: number) =>
    Effect.map(elementAt(size - 1), (text): string | null => {
      if (text === undefined) return null
      try {
        const integrity = (JSON.parse(text) as { auditIntegrity?: { sequence?: unknown; eventHash?: unknown } })
          .auditIntegrity
        return integrity?.sequence === size && typeof integrity.eventHash === "string" ? integrity.eventHash : ""
      } catch {
        return ""
      }
    })
  return {
    advance: (candidate, floor) =>
      Effect.gen(function* () {
        for (const point of [last, floor ?? { size: 0, hash: "" }, candidate]) {
          if (point.size === 0) continue
          const at = yield* hashAt(point.size)
          if (at !== point.hash) return yield* Effect.fail(missing(prefix, origin, point, at))
        }
        if (last.size >= candidate.size) return { _tag: "AtOrPast", point: last } as const
        last = candidate
        return { _tag: "Advanced", point: candidate } as const
      })
  }
}

/**
 * `fence` whose recorded point is acknowledged by `durable` (the store's `durability`
 * step: `WAIT` / `WAITAOF`, bounded by its own timeout) before the caller may sign it. The
 * fence is replicated in order with the chain, so without it a failover to a replica that
 * had not received the fence takes it back, and a checkpointer that never saw the other's
 * note could sign another head for a size already signed. An outcome that leaves the
 * fence elsewhere needs none.
 */
export const durableFence = (fence: CheckpointFence, durable: Effect.Effect<void, StoreError>): CheckpointFence => ({
  advance: fence.advance,
  acknowledge: (candidate, outcome) =>
    outcome.point.size === candidate.size && outcome.point.hash === candidate.hash ? durable : Effect.void
})
