/**
 * Verification and export of the audit chain where it lives, in bounded memory.
 *
 * Guarantees:
 * - `verifyStore` accepts a stored chain exactly when haechi's verifier accepts its
 *   records (the `json-stable-v1` rules of `Chain`) AND the chain ends at or after the
 *   head the store recorded when verification started, passing through that head. So
 *   beyond what a file verifier can see, a truncated tail (LTRIM) and a head that does
 *   not name a record of the chain are caught.
 * - It stops at the first failure and names it: the failing sequence, its list index
 *   and the reason (haechi's reasons; see `Chain.describeFailure`). Bad data is a
 *   `{ valid: false }` result, never an error; errors are the store's own (Redis).
 * - Memory is bounded by a few pages whatever the chain's length: the list is read in
 *   pages (LRANGE), the next page is fetched while the current one is hashed, and only
 *   one fold state (a few numbers and one hash) is carried from record to record.
 * - With a trusted checkpoint only its own record and what follows it are read.
 * - The head keys are checked against the list first, at one instant (the rule of
 *   `internal/audit/chainHead`): `head`/`head:hash` missing on a non-empty list, or disagreeing
 *   with it, is `{ valid: false }` with reason `HeadKeysDisagree` naming the keys (after
 *   the list itself verified; a failing record is reported first).
 * - Records appended by `onRewind: "record"` are listed in `rewinds` (absent when none).
 * - `exportJsonl` streams the stored records, one per line and in order, as JSONL that
 *   haechi's file verifier reads; it also holds only a few pages at a time.
 *
 * Records appended while a verification runs are read and verified too (they must
 * chain on); the store's head is read once, before the list, as the point the chain
 * must reach.
 *
 * Mechanism: the page fold (the checkpoint's record, `Chain.stepJson`, the recorded
 * head, the rewind records) is `internal/audit/verifyFold`; the options' checks
 * `internal/audit/verifyOptions`; the JSONL lines `internal/audit/verifyExport`.
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { AuditStore, type AuditStoreShape } from "./AuditStore.js"
import type { Checkpoint, VerifyResult } from "./Chain.js"
import { CorruptData, type InvalidConfig, type StoreError } from "./Errors.js"
import { parseIntegrity } from "./internal/audit/backing.js"
import { snapshotDisagreement } from "./internal/audit/chainHead.js"
import type { RecordedRewind } from "./internal/audit/rewindRecord.js"
import { oneLineEach } from "./internal/audit/verifyExport.js"
import { PageFold, withHeadKeys } from "./internal/audit/verifyFold.js"
import { checkCheckpoint, checkPageSize } from "./internal/audit/verifyOptions.js"
import { bySize, firstAtOrAfter, pinCheck } from "./internal/checkpoint/against.js"
import type { SignedCheckpoint } from "./internal/checkpoint/checkpoints.js"
import { auditKeys } from "./internal/keys.js"
import { spanned } from "./internal/observe.js"

export type { Checkpoint, VerifyResult } from "./Chain.js"
export type { RecordedRewind } from "./internal/audit/rewindRecord.js"

/** A stored chain's verification: the chain's result, and the rewinds it records (when any). */
export type StoreVerifyResult = VerifyResult & {
  /** The records `onRewind: "record"` appended, in order; absent when there are none. */
  readonly rewinds?: ReadonlyArray<RecordedRewind>
}

/**
 * Default LRANGE page (1000): large enough to keep round trips off the critical path
 * (the next page is fetched while one is hashed), small enough that one LRANGE blocks
 * Redis for well under a millisecond.
 */
export { DEFAULT_PAGE_SIZE } from "./internal/audit/verifyOptions.js"

export interface VerifyStoreOptions {
  /**
   * A trusted checkpoint: a sequence and the `eventHash` recorded for it earlier (for
   * example the `headSequence`/`headHash` of a previous run). Only its record (list
   * index `sequence - 1`, which must still hash to `eventHash`) and the records after
   * it are read. `{ sequence: 0, eventHash: null }` is the same as none.
   */
  readonly from?: Checkpoint | undefined
  /** Records per LRANGE; default `DEFAULT_PAGE_SIZE`. */
  readonly pageSize?: number | undefined
  /**
   * Called after each page with the list elements read so far and the number the list
   * held when verification started (from the start point on; it may grow).
   */
  readonly onProgress?: ((read: number, total: number) => Effect.Effect<void>) | undefined
}

/**
 * Verifies the chain of the `AuditStore` in context, in place.
 *
 * Succeeds with `Chain.VerifyResult`: `{ valid: true, records, headHash, headSequence }`
 * where `records` counts the records verified after the checkpoint (all of them without
 * one); or `{ valid: false, failedSequence, index, reason, … }` for the first failure,
 * where `index` is the failing element's 0-based index in the Redis list. Store-level
 * failures use haechi's reasons: a list that ends before the recorded head (or before
 * the checkpoint) fails at the first missing sequence with `SequenceMismatch` whose
 * `actual` is `undefined`; a record at the head's sequence (or the checkpoint's) whose
 * hash is not the recorded one fails there with `EventHashMismatch` whose `expected` is
 * the recorded hash.
 *
 * Fails with `InvalidConfig` for a malformed checkpoint or page size, or with the
 * store's error (Redis unreachable, a key of the wrong type).
 */
export const verifyStore = (
  options: VerifyStoreOptions = {}
): Effect.Effect<StoreVerifyResult, StoreError | InvalidConfig, AuditStore> =>
  Effect.gen(function* () {
    const from = yield* checkCheckpoint(options.from)
    const pageSize = yield* checkPageSize(options.pageSize)
    const store = yield* AuditStore
    yield* Effect.annotateCurrentSpan("haechi.prefix", store.prefix)
    // The head first (with the list's end, at one instant): the list can only grow past it while we read.
    const keys = auditKeys(store.prefix)
    const snapshot = yield* store.headKeys
    const broken = snapshotDisagreement(keys, snapshot)
    if (broken instanceof CorruptData) return yield* Effect.fail(broken)
    const head = snapshot.headJson === null ? null : yield* parseIntegrity(snapshot.headJson, keys.head)
    const length = snapshot.length
    const checkpointSequence = from?.sequence ?? 0
    const startIndex = checkpointSequence > 0 ? checkpointSequence - 1 : 0
    const total = Math.max(0, length - startIndex)
    const progress = options.onProgress

    const fold = new PageFold(from, head)
    let read = 0
    // (Not Stream.runForEachWhile: in effect 3.22 it keeps every chunk it was given
    // until the stream ends, so memory would grow with the chain.)
    yield* store.readChainJson({ pageSize, from: startIndex }).pipe(
      Stream.chunks,
      Stream.buffer({ capacity: 1 }),
      Stream.takeWhile(() => fold.open),
      Stream.runForEach((page) => {
        fold.page(page)
        read += page.length
        return progress === undefined ? Effect.void : progress(read, total)
      })
    )
    const result: StoreVerifyResult = {
      ...withHeadKeys(fold.result(), broken),
      ...(fold.rewinds.length > 0 ? { rewinds: fold.rewinds } : {})
    }
    yield* Effect.annotateCurrentSpan({
      "haechi.verify.valid": result.valid,
      "haechi.verify.records": result.records,
      "haechi.verify.read": read,
      ...(result.valid ? {} : { "haechi.verify.failed_sequence": result.failedSequence })
    })
    return result
  }).pipe(spanned("haechi.audit.verify", { "haechi.verify.from": options.from?.sequence ?? 0 }))

export interface ExportOptions {
  /** Records per LRANGE; default `DEFAULT_PAGE_SIZE`. */
  readonly pageSize?: number | undefined
  /** Called after each page with the records exported so far and the list's length at the start. */
  readonly onProgress?: ((exported: number, total: number) => Effect.Effect<void>) | undefined
}

/**
 * The stored chain as JSONL lines: one element per record, in list order, from the
 * first record to the end of the list, each the record's stored JSON (a JSONL file is
 * these lines, each followed by "\n"). Emitted a page per chunk. Stored text is passed
 * through unchanged; an element spread over several lines (never written by a store)
 * is re-serialized onto one, and one that is not JSON fails the stream with
 * `CorruptData` (it cannot be one JSONL line). Fails with the store's error otherwise.
 * Keeping lines apart (rather than one string per page) lets a writer encode them into
 * a reused buffer, leaving no page-sized strings behind for the GC.
 */
export const exportJsonl = (
  options: ExportOptions = {}
): Stream.Stream<string, StoreError | InvalidConfig, AuditStore> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const pageSize = yield* checkPageSize(options.pageSize)
      const store = yield* AuditStore
      yield* Effect.annotateCurrentSpan("haechi.prefix", store.prefix)
      const total = yield* store.length
      const progress = options.onProgress
      const chainKey = auditKeys(store.prefix).chain
      let exported = 0
      return store.readChainJson({ pageSize }).pipe(
        Stream.chunks,
        Stream.filter((page) => Chunk.isNonEmpty(page)),
        Stream.buffer({ capacity: 1 }),
        Stream.mapEffect((page) => {
          const start = exported
          exported += page.length
          const lines = Effect.suspend(() => oneLineEach(page, start, chainKey))
          return progress === undefined ? lines : Effect.tap(lines, () => progress(exported, total))
        }),
        Stream.flattenChunks
      )
    })
  ).pipe(Stream.withSpan("haechi.audit.export"))

// ---------------------------------------------------------------------------
// against signed checkpoints (see Checkpoint.ts)

/** Why a verification against checkpoints failed at `checkpoint`. */
export type CheckpointFailure =
  /** The record at the checkpoint's sequence carries another eventHash (`found`; null: none). */
  | { readonly _tag: "NotHeld"; readonly found: string | null }
  /** The chain ends before the checkpoint's sequence (it has `length` verified records). */
  | { readonly _tag: "Shorter"; readonly length: number }
  /** The chain itself fails (see `chain`) at or before the checkpoint's sequence. */
  | { readonly _tag: "ChainInvalid" }

export type CheckpointedResult =
  | {
      readonly valid: true
      /** The chain's own verification (from the newest checkpoint with `fromCheckpoint`). */
      readonly chain: VerifyResult
      /** Distinct checkpoints checked against the chain. */
      readonly checkpoints: number
      readonly newest: SignedCheckpoint | undefined
    }
  | {
      readonly valid: false
      readonly chain: VerifyResult
      /** The checkpoint the chain breaks; undefined when it fails only after the newest one. */
      readonly checkpoint: SignedCheckpoint | undefined
      readonly failure: CheckpointFailure
    }

export interface VerifyCheckpointsOptions {
  /**
   * Start from the newest checkpoint: its record must hold its hash, and only what
   * follows it is read and verified (the older checkpoints' signatures were checked when
   * they were opened, their positions are not re-read).
   */
  readonly fromCheckpoint?: boolean | undefined
  readonly pageSize?: number | undefined
  readonly onProgress?: ((read: number, total: number) => Effect.Effect<void>) | undefined
}

/**
 * Verifies the chain of the `AuditStore` in context like `verifyStore`, and against
 * `checkpoints` (opened and signature-checked, e.g. by `Checkpoint.openAll`): the chain
 * must hold exactly each checkpoint's hash at its sequence and be at least as long as the
 * newest. A failure names the checkpoint it breaks: the first one at or after the first
 * record that fails, differs or is missing. Bounded memory, as `verifyStore`; the
 * checkpoints themselves are held (a few dozen bytes each).
 */
export const verifyCheckpoints = (
  checkpoints: ReadonlyArray<SignedCheckpoint>,
  options: VerifyCheckpointsOptions = {}
): Effect.Effect<CheckpointedResult, StoreError | InvalidConfig, AuditStore> =>
  Effect.gen(function* () {
    const sorted = bySize(checkpoints)
    const newest = sorted.at(-1)
    const store = yield* AuditStore
    const fromNewest = options.fromCheckpoint === true && newest !== undefined
    const pinned = fromNewest ? sorted.filter((c) => c.size === newest.size) : sorted
    const from = fromNewest ? { sequence: newest.size, eventHash: newest.hash } : undefined
    const start = from === undefined ? 0 : from.sequence - 1
    const { check, state } = pinCheck(pinned, start)
    const checked: AuditStoreShape = {
      ...store,
      readChainJson: (opts) => Stream.takeWhile(store.readChainJson(opts), check)
    }
    const chain = yield* verifyStore({ from, pageSize: options.pageSize, onProgress: options.onProgress }).pipe(
      Effect.provideService(AuditStore, checked)
    )
    // (The check runs as pages are read, which is a page ahead of the fold: a failure the
    // fold found earlier in the chain comes first.)
    const broken = state.broken
    if (broken !== undefined && (chain.valid || chain.failedSequence >= broken.checkpoint.size)) {
      return {
        valid: false,
        chain,
        checkpoint: broken.checkpoint,
        failure: { _tag: "NotHeld", found: broken.found }
      } as const
    }
    if (!chain.valid) {
      const sequence = chain.failedSequence
      const missing = chain.reason._tag === "SequenceMismatch" && chain.reason.actual === undefined
      const failure: CheckpointFailure =
        from !== undefined && sequence === from.sequence
          ? missing
            ? { _tag: "Shorter", length: sequence - 1 }
            : { _tag: "NotHeld", found: null }
          : { _tag: "ChainInvalid" }
      return { valid: false, chain, checkpoint: firstAtOrAfter(pinned, sequence), failure } as const
    }
    if (newest !== undefined && chain.headSequence < newest.size) {
      return {
        valid: false,
        chain,
        checkpoint: firstAtOrAfter(pinned, chain.headSequence + 1),
        failure: { _tag: "Shorter", length: chain.headSequence }
      } as const
    }
    return { valid: true, chain, checkpoints: pinned.length, newest } as const
  }).pipe(spanned("haechi.audit.verify_checkpoints", { "haechi.verify.checkpoints": checkpoints.length }))
