/**
 * The types of haechi's audit chain (a record's integrity, a verification's outcome and
 * its fold state), declared here so that the chain's rules (`chainBuild`, `chainFold`)
 * and the public `Chain` module, which re-exports them, share them without importing
 * each other.
 */
import type * as Data from "effect/Data"

/**
 * A record's `auditIntegrity`, and so a chain's head (the last record's): what a store's
 * `readLastIntegrity` hands out and `buildNextRecord` builds on. haechi and
 * `buildNextRecord` write `alg: "sha256"` and `canonicalization: "json-stable-v1"`; the
 * chain's rules read only `sequence`, `previousHash` and `eventHash`, and those are what
 * a store checks of a record it appends, so a head another writer stored may carry
 * other values in the first two, or none (`ChainSchema.AuditIntegrity` insists on
 * haechi's).
 */
export interface AuditIntegrity {
  alg?: string
  canonicalization?: string
  sequence: number
  previousHash: string | null
  eventHash: string
}

/** An audit record: the sanitized event's fields plus `auditIntegrity`. */
export type AuditRecord = { [k: string]: unknown; auditIntegrity: AuditIntegrity }

/** Why a record failed verification. */
export type VerifyFailureReason = Data.TaggedEnum<{
  /** The stored text is not JSON. */
  Unparseable: {}
  /** The record is not a JSON object (null, a primitive, or an array). */
  NotAnObject: {}
  /** The record has no (or a falsy) `auditIntegrity`. */
  MissingAuditIntegrity: {}
  /** `auditIntegrity.sequence` is not the next sequence: a gap, a repeat or a reorder. */
  SequenceMismatch: { readonly expected: number; readonly actual: unknown }
  /** `auditIntegrity.previousHash` is not the previous record's `eventHash`. */
  PreviousHashMismatch: { readonly expected: string | null; readonly actual: unknown }
  /** The stored `eventHash` is not the hash recomputed from the record's content. */
  EventHashMismatch: { readonly expected: string; readonly actual: unknown }
  /** The record holds a value that cannot be canonicalized (a bigint, a cycle). */
  Uncanonicalizable: {}
  /**
   * Store-level (never from a record): the head keys disagree with the list, or are
   * missing on a non-empty list. `keys` names them, `detail` says what disagrees.
   */
  HeadKeysDisagree: { readonly keys: ReadonlyArray<string>; readonly detail: string }
}>

/**
 * Outcome of a verification. `records` counts the records that verified (on failure:
 * those before the failing one). `headHash`/`headSequence` are the last verified
 * record's `eventHash`/`sequence` (the checkpoint's when none verified after it;
 * `null`/0 for an empty chain). On failure, `index` is the failing record's 0-based
 * position in the input and `failedSequence` the sequence expected at that position.
 */
export type VerifyResult =
  | {
      readonly valid: true
      readonly records: number
      readonly headHash: string | null
      readonly headSequence: number
    }
  | {
      readonly valid: false
      readonly records: number
      readonly failedSequence: number
      readonly index: number
      readonly reason: VerifyFailureReason
      readonly headHash: string | null
      readonly headSequence: number
    }

/**
 * A trusted checkpoint: a sequence and the `eventHash` recorded for it earlier (an
 * `AuditIntegrity` fits). Verification then expects the input to start at
 * `sequence + 1` with `previousHash === eventHash`. `{ sequence: 0, eventHash: null }`
 * is the empty chain, the same as no checkpoint.
 */
export interface Checkpoint {
  readonly sequence: number
  readonly eventHash: string | null
}

export interface VerifyOptions {
  readonly from?: Checkpoint | undefined
}

/**
 * The fold state carried from record to record. Treat as opaque; obtain one from
 * `initialChainState`, advance it with `stepChain`/`stepJson`, read it with `chainResult`.
 */
export interface ChainState {
  /** Sequence the next record must carry. */
  readonly expectedSequence: number
  /** `eventHash` the next record's `previousHash` must equal (`null` at the start). */
  readonly previousHash: string | null
  /** Records verified so far (= input index of the next record while open). */
  readonly records: number
  /** Set once a record fails; the state is then closed and absorbs further steps. */
  readonly failure: VerifyFailureReason | undefined
}
