/**
 * haechi's audit-chain rules (`json-stable-v1`), pure and fast.
 *
 * Guarantees:
 * - `canonicalize`, `computeEventHash` and `buildNextRecord` produce byte-for-byte what
 *   haechi's core produces for the same input, including its quirks (see
 *   `canonicalize`), so a record built here verifies in haechi and vice versa.
 * - Verification accepts exactly the chains haechi's verifier accepts (sequence 1, 2, 3, …
 *   with no gap; each `previousHash` equal to the previous `eventHash`, `null` first;
 *   each `eventHash` recomputed and equal) and stops at the first failure, naming the
 *   record's input index, the sequence expected there, and a structured reason.
 * - Verification never throws on bad data: a string that is not JSON, a value that is not
 *   an object, or a value that cannot be canonicalized is a failed verification, not an
 *   exception. The Stream variants fail only with the input stream's own error.
 * - Verification runs in bounded memory: one fold state (a few numbers and one hash)
 *   is carried from record to record; the Stream variants pull the input chunk by chunk
 *   and stop pulling at the first failure.
 *
 * Mechanism: one per-record step (`stepChain`, plus `stepJson` which parses first) is
 * written once and folded both over an `Iterable` (`verifyRecords`) and over a `Stream`
 * (`verifyChain`): `internal/audit/chainFold`. The canonical form and its hash, walked
 * in place with memoized key orders: `internal/audit/chainCanonical`.
 */
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import * as build from "./internal/audit/chainBuild.js"
import { canonical } from "./internal/audit/chainCanonical.js"
import * as fold from "./internal/audit/chainFold.js"
import type * as Types from "./internal/audit/chainTypes.js"
import type {
  AuditIntegrity,
  AuditRecord,
  Checkpoint,
  ChainState,
  VerifyOptions,
  VerifyResult
} from "./internal/audit/chainTypes.js"

// The chain's types live with its rules (internal/audit/chainTypes), which use them too.
export type { AuditIntegrity, AuditRecord, Checkpoint, ChainState, VerifyOptions, VerifyResult }

// ---------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------

// The decoding schemas of a head (`AuditIntegrity`, `AuditIntegrityFromJson`) live in
// ChainSchema.ts: effect/Schema (and the fast-check it loads) would more than double the
// import time of everything that verifies or appends, the facade included.

// ---------------------------------------------------------------------------
// Canonicalization and hashing
// ---------------------------------------------------------------------------

/**
 * The `json-stable-v1` canonical form of `value`, exactly as haechi's `canonical()`:
 * arrays -> `"[" + items joined by "," + "]"`; non-null objects -> `"{" + own enumerable
 * keys sorted by JS default sort, each `JSON.stringify(key) + ":" + canonical(value)`,
 * joined by "," + "}"`; anything else -> `JSON.stringify(value)`.
 *
 * Quirks kept on purpose (changing them would change hashes haechi computes):
 * - An object property whose value JSON cannot represent (`undefined`, a function, a
 *   symbol) is emitted as `"key":undefined`, because haechi interpolates the `undefined`
 *   that `JSON.stringify` returns into a template string. Such a record cannot survive a
 *   JSON round-trip (JSON drops the property), so haechi itself would persist a record
 *   that never verifies; we mirror that rather than silently diverge.
 * - Such an array item, and an array hole, is emitted as nothing (`[1,,2]`), because
 *   `Array.prototype.join` renders `undefined` as "".
 * - Objects are walked by their keys, never by `toJSON` (a nested `Date` is `{}`).
 * - Numbers follow JSON: `-0` -> `0`, `1e21` -> `1e+21`, `NaN`/`Infinity` -> `null`.
 *
 * Returns `undefined` only when `value` itself is `undefined`, a function or a symbol.
 * Throws what `JSON.stringify` throws (a `bigint`), and a `RangeError` on a cycle.
 */
export function canonicalize(value: undefined | symbol | ((...args: never) => unknown)): undefined
export function canonicalize(value: object | string | number | boolean | null): string
export function canonicalize(value: unknown): string | undefined
export function canonicalize(value: unknown): string | undefined {
  return canonical(value)
}

/**
 * The `eventHash` haechi computes for `record`: base64url (unpadded) of sha256 over the
 * canonical form of `record` with `auditIntegrity` minus its `eventHash`. Any stored
 * `eventHash` is ignored. Throws only where `canonicalize` throws (non-JSON input).
 */
export const computeEventHash: (record: { readonly auditIntegrity: object }) => string = build.computeEventHash

/**
 * The record haechi's core appends after `previous` (`null` = empty chain):
 * `{ ...event, auditIntegrity: { alg, canonicalization, sequence, previousHash, eventHash } }`
 * with `sequence = previous.sequence + 1` (or 1) and `previousHash = previous.eventHash`
 * (or `null`). `event` should already be sanitized JSON. Throws only where
 * `canonicalize` throws.
 */
export const buildNextRecord: (event: object, previous: AuditIntegrity | null) => AuditRecord = build.buildNextRecord

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/** Why a record failed verification (see `internal/audit/chainTypes`). */
export type VerifyFailureReason = Types.VerifyFailureReason
/** Constructors and matchers for `VerifyFailureReason`. */
export const VerifyFailureReason = fold.Reason

/**
 * The reason as haechi's verifier words it ("missing auditIntegrity", "sequence
 * mismatch", "previous hash mismatch", "event hash mismatch"); our extra reasons read
 * "unparseable", "not an object" and "uncanonicalizable". Never contains record content.
 */
export const describeFailure: (reason: VerifyFailureReason) => string = fold.describeFailure

/**
 * The state before the first record: sequence 1 after `null`, or the record after
 * `options.from`. Throws a `RangeError` if the checkpoint is malformed (a sequence that
 * is not a non-negative safe integer, or a hash that is null past sequence 0).
 */
export const initialChainState: (options?: VerifyOptions) => ChainState = fold.initialChainState

/** Whether the state still accepts records (no failure yet). */
export const isOpen: (state: ChainState) => boolean = fold.isOpen

/**
 * Checks one parsed record against the state, in haechi's order (auditIntegrity
 * present, sequence, previousHash, eventHash), and returns the next state. A closed
 * state is returned unchanged. Never throws.
 */
export const stepChain: (state: ChainState, record: unknown) => ChainState = fold.stepChain

/**
 * Parses one stored JSON text and checks it like `stepChain`. Text that is not JSON (or
 * a value that is not a string) closes the state with `Unparseable`; never throws.
 */
export const stepJson: (state: ChainState, text: string) => ChainState = fold.stepJson

/** The verification result a state stands for (valid while no record failed). */
export const chainResult: (state: ChainState) => VerifyResult = fold.chainResult

/**
 * Verifies parsed records in order, stopping at the first failure (the rest of the
 * iterable is not consumed). Returns the result; throws only a `RangeError` for a
 * malformed `options.from`.
 */
export const verifyRecords = (records: Iterable<unknown>, options?: VerifyOptions): VerifyResult =>
  fold.foldIterable(records, options, fold.stepChain)

/**
 * Verifies stored JSON texts (e.g. the elements of a Redis list) in order; text that is
 * not JSON fails as `Unparseable` at its index. Throws only a `RangeError` for a
 * malformed `options.from`.
 */
export const verifyJsonRecords = (texts: Iterable<string>, options?: VerifyOptions): VerifyResult =>
  fold.foldIterable(texts, options, fold.stepJson)

/**
 * Verifies a stream of parsed records in bounded memory, pulling chunk by chunk and
 * stopping at the first failure. Succeeds with the result (an invalid chain is a
 * successful `{ valid: false }`); fails only with the stream's error `E`. A malformed
 * `options.from` is a defect.
 */
export const verifyChain = <E, R>(
  records: Stream.Stream<unknown, E, R>,
  options?: VerifyOptions
): Effect.Effect<VerifyResult, E, R> => fold.foldStream(records, options, fold.stepChain)

/**
 * Like `verifyChain` over stored JSON texts (e.g. LRANGE pages of a Redis list): each
 * text is parsed inside the step and text that is not JSON is an `Unparseable` failure
 * at its index, never a thrown exception.
 */
export const verifyJsonChain = <E, R>(
  texts: Stream.Stream<string, E, R>,
  options?: VerifyOptions
): Effect.Effect<VerifyResult, E, R> => fold.foldStream(texts, options, fold.stepJson)
