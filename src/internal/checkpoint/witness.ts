/**
 * Replicas as witnesses: before a store is handed out, the chain must hold the newest
 * signed checkpoint known outside Redis. A chain shorter than it, or holding another
 * record at its sequence (a rewrite, a truncation, FLUSHALL and a fresh chain), is
 * refused with `ChainMissesCheckpoint`, so a replica never appends to a history that
 * contradicts what was signed.
 *
 * One read: LINDEX of the checkpoint's sequence. An honest chain only grows, so a record
 * that is there with the checkpointed hash stays there.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import {
  ChainMissesCheckpoint,
  type CheckpointKeyInvalid,
  type CheckpointNoteRejected,
  type CorruptData,
  type OperationTimeout,
  type RedisError
} from "../../Errors.js"
import { DEFAULT_TIMEOUT_MS, timeoutAfter } from "../deadline.js"
import type { AuditKeys } from "../keys.js"
import { type RedisClientShape } from "../../RedisClient.js"
import { wrongType } from "../redisReply.js"
import { newestOf, openCheckpoints, type SignedCheckpoint } from "./checkpoints.js"
import { verifierFromText } from "./ed25519.js"

export interface WitnessOptions {
  /** The checkpoint signer's verifier key, `<name>+<key id>+<base64 key>`. */
  readonly verifierKey: string
  /**
   * The newest checkpoint note (or a whole checkpoints file: the newest of its notes is
   * used, and every one must verify), read from outside Redis; undefined when there is
   * none yet. See `Checkpoint.latestFromFile`.
   */
  readonly latest: Effect.Effect<string | undefined, CheckpointNoteRejected>
}

export type WitnessError =
  CheckpointKeyInvalid | CheckpointNoteRejected | ChainMissesCheckpoint | RedisError | CorruptData | OperationTimeout

/** Fails with `ChainMissesCheckpoint` unless the chain under `keys` holds `checkpoint`. */
export const checkChainHolds = (
  redis: RedisClientShape,
  keys: AuditKeys,
  checkpoint: SignedCheckpoint
): Effect.Effect<void, ChainMissesCheckpoint | RedisError | CorruptData> =>
  redis
    .run("LINDEX chain", (c) => c.lindex(keys.chain, checkpoint.size - 1))
    .pipe(
      wrongType(keys.chain),
      Effect.flatMap((text) => {
        let found: { sequence: number; eventHash: string } | null = null
        if (text !== null) {
          let integrity: { sequence?: unknown; eventHash?: unknown } | undefined
          try {
            integrity = (JSON.parse(text) as { auditIntegrity?: typeof integrity }).auditIntegrity
          } catch {
            integrity = undefined
          }
          const sequence = typeof integrity?.sequence === "number" ? integrity.sequence : checkpoint.size
          const eventHash = typeof integrity?.eventHash === "string" ? integrity.eventHash : "(not an audit record)"
          if (sequence === checkpoint.size && eventHash === checkpoint.hash) return Effect.void
          found = { sequence, eventHash }
        }
        return Effect.fail(
          new ChainMissesCheckpoint({
            prefix: keys.prefix,
            checkpoint: { origin: checkpoint.origin, size: checkpoint.size, hash: checkpoint.hash },
            found
          })
        )
      })
    )

/**
 * The witness check: reads the newest checkpoint from `witness.latest`, verifies it with
 * the verifier key, and checks that the chain holds it. Succeeds at once when there is
 * no checkpoint yet.
 */
export const checkWitness = (
  redis: RedisClientShape,
  keys: AuditKeys,
  witness: WitnessOptions,
  timeoutMs: number = DEFAULT_TIMEOUT_MS
): Effect.Effect<void, WitnessError> =>
  Effect.gen(function* () {
    const key = verifierFromText(witness.verifierKey)
    if (Either.isLeft(key)) return yield* Effect.fail(key.left)
    const text = yield* witness.latest
    if (text === undefined || text === "") return
    const newest = newestOf(yield* openCheckpoints(text, key.right))
    if (newest !== undefined) yield* checkChainHolds(redis, keys, newest)
  }).pipe(
    // Bounded like the start-up checks: a frozen or paused Redis cannot hold the first call.
    timeoutAfter("witness check", timeoutMs),
    Effect.withSpan("haechi.audit.witness", { attributes: { "haechi.prefix": keys.prefix } })
  )
