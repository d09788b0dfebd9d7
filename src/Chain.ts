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
 * (`verifyChain`).
 */
import * as NodeCrypto from "node:crypto"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { isJsonObject } from "./internal/jsonRecord.js"

// ---------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------

/** The `auditIntegrity` object haechi attaches to every audit record. */
export interface AuditIntegrity {
  alg: "sha256"
  canonicalization: "json-stable-v1"
  sequence: number
  previousHash: string | null
  eventHash: string
}

/** An audit record: the sanitized event's fields plus `auditIntegrity`. */
export type AuditRecord = { [k: string]: unknown; auditIntegrity: AuditIntegrity }

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

const canonical = (value: unknown): string | undefined => {
  switch (typeof value) {
    case "string":
      return quote(value)
    case "number":
      // Number::toString is what JSON.stringify uses for finite numbers (-0 -> "0").
      return Number.isFinite(value) ? String(value) : "null"
    case "boolean":
      return value ? "true" : "false"
    case "object":
      if (value === null) return "null"
      return Array.isArray(value) ? canonicalArray(value) : canonicalObject(value, undefined)
    default:
      // undefined, function, symbol -> undefined; bigint -> throws (as JSON.stringify)
      return JSON.stringify(value)
  }
}

/** Characters JSON.stringify may escape: `"`, `\`, C0 controls, any surrogate half. */
const mayNeedEscape = /["\\\u0000-\u001f\ud800-\udfff]/

/** `JSON.stringify(text)`, skipping the native call when nothing needs escaping. */
const quote = (text: string): string => (mayNeedEscape.test(text) ? JSON.stringify(text) : "\"" + text + "\"")

const canonicalArray = (array: ReadonlyArray<unknown>): string => {
  let out = "["
  for (let i = 0; i < array.length; i++) {
    if (i > 0) out += ","
    const item = canonical(array[i])
    if (item !== undefined) out += item
  }
  return out + "]"
}

/** Canonical form of a non-array object, leaving out the key `skip` when given. */
const canonicalObject = (object: object, skip: string | undefined): string => {
  const plan = planFor(Object.keys(object))
  const keys = plan.keys
  const labels = plan.labels
  const fields = object as Record<string, unknown>
  let out = "{"
  let first = true
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (key === skip) continue
    if (first) first = false
    else out += ","
    // `+ undefined` renders "undefined", exactly as haechi's template string does.
    out += labels[i]! + canonical(fields[key])
  }
  return out + "}"
}

/**
 * Canonical form of `record` with `auditIntegrity` replaced by `auditIntegrity` minus
 * `eventHash`: what haechi hashes. Walks the record in place instead of building the
 * copy haechi builds (`{ ...record, auditIntegrity: rest }`); the output is the same
 * because both see the same own enumerable keys in the same sorted order (the rest of a
 * destructuring is a plain object, so `auditIntegrity` is always walked as an object).
 */
const canonicalUnsigned = (record: object, integrity: object): string => {
  const plan = planFor(Object.keys(record))
  const keys = plan.keys
  const labels = plan.labels
  const fields = record as Record<string, unknown>
  let out = "{"
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (i > 0) out += ","
    out += labels[i]! + (key === "auditIntegrity" ? canonicalObject(integrity, "eventHash") : canonical(fields[key]))
  }
  return out + "}"
}

/**
 * Key plans: for an object's own keys (in their enumeration order), the keys sorted by
 * JS default sort and each one's label `JSON.stringify(key) + ":"`. Audit records share
 * a handful of shapes, so plans are memoized in a trie over the exact key sequence; a
 * hit skips a sort and a `JSON.stringify` per key. This only memoizes a pure function
 * of the key list, so outputs never depend on it. Bounds: past `maxPlanNodes` nodes the
 * trie is dropped and rebuilt; objects with more than `maxPlanKeys` keys bypass it; and
 * when more than a quarter of a window of lookups miss (shapes that never repeat, e.g.
 * random keys) the trie is bypassed for the next `planBypassWindows` windows, so such
 * input costs what it would cost without a cache.
 */
interface KeyPlan {
  readonly keys: ReadonlyArray<string>
  readonly labels: ReadonlyArray<string>
}

interface PlanNode {
  next: Map<string, PlanNode> | undefined
  plan: KeyPlan | undefined
}

const maxPlanNodes = 8192
const maxPlanKeys = 64
const planWindow = 1024
const planBypassWindows = 8

let planRoot: PlanNode = { next: undefined, plan: undefined }
let planNodes = 0
let windowLookups = 0
let windowMisses = 0
let bypassLeft = 0

const makePlan = (keys: ReadonlyArray<string>): KeyPlan => {
  const sorted = keys.slice().sort()
  return { keys: sorted, labels: sorted.map((key) => JSON.stringify(key) + ":") }
}

const planFor = (keys: ReadonlyArray<string>): KeyPlan => {
  if (keys.length > maxPlanKeys) return makePlan(keys)
  if (bypassLeft > 0) {
    bypassLeft--
    return makePlan(keys)
  }
  if (++windowLookups === planWindow) {
    if (windowMisses * 4 > planWindow) bypassLeft = planBypassWindows * planWindow
    windowLookups = 0
    windowMisses = 0
  }
  let node = planRoot
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    let next = node.next?.get(key)
    if (next === undefined) {
      if (planNodes >= maxPlanNodes) {
        planRoot = { next: undefined, plan: undefined }
        planNodes = 0
        windowMisses++
        return makePlan(keys)
      }
      next = { next: undefined, plan: undefined }
      planNodes++
      ;(node.next ??= new Map()).set(key, next)
    }
    node = next
  }
  if (node.plan === undefined) {
    windowMisses++
    node.plan = makePlan(keys)
  }
  return node.plan
}

const sha256Base64Url: (text: string) => string =
  typeof NodeCrypto.hash === "function"
    ? (text) => NodeCrypto.hash("sha256", text, "base64url")
    : (text) => NodeCrypto.createHash("sha256").update(text).digest("base64url")

/**
 * The `eventHash` haechi computes for `record`: base64url (unpadded) of sha256 over the
 * canonical form of `record` with `auditIntegrity` minus its `eventHash`. Any stored
 * `eventHash` is ignored. Throws only where `canonicalize` throws (non-JSON input).
 */
export const computeEventHash = (record: { readonly auditIntegrity: object }): string =>
  sha256Base64Url(canonicalUnsigned(record, record.auditIntegrity))

/**
 * The record haechi's core appends after `previous` (`null` = empty chain):
 * `{ ...event, auditIntegrity: { alg, canonicalization, sequence, previousHash, eventHash } }`
 * with `sequence = previous.sequence + 1` (or 1) and `previousHash = previous.eventHash`
 * (or `null`). `event` should already be sanitized JSON. Throws only where
 * `canonicalize` throws.
 */
export const buildNextRecord = (event: object, previous: AuditIntegrity | null): AuditRecord => {
  const integrity: AuditIntegrity = {
    alg: "sha256",
    canonicalization: "json-stable-v1",
    sequence: previous ? previous.sequence + 1 : 1,
    previousHash: previous?.eventHash ?? null,
    eventHash: ""
  }
  const record: AuditRecord = { ...event, auditIntegrity: integrity }
  integrity.eventHash = computeEventHash(record)
  return record
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

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

/** Constructors and matchers for `VerifyFailureReason`. */
export const VerifyFailureReason = Data.taggedEnum<VerifyFailureReason>()

/**
 * The reason as haechi's verifier words it ("missing auditIntegrity", "sequence
 * mismatch", "previous hash mismatch", "event hash mismatch"); our extra reasons read
 * "unparseable", "not an object" and "uncanonicalizable". Never contains record content.
 */
export const describeFailure = (reason: VerifyFailureReason): string => {
  switch (reason._tag) {
    case "Unparseable":
      return "unparseable"
    case "NotAnObject":
      return "not an object"
    case "MissingAuditIntegrity":
      return "missing auditIntegrity"
    case "SequenceMismatch":
      return "sequence mismatch"
    case "PreviousHashMismatch":
      return "previous hash mismatch"
    case "EventHashMismatch":
      return "event hash mismatch"
    case "Uncanonicalizable":
      return "uncanonicalizable"
    case "HeadKeysDisagree":
      return "head keys disagree with the list"
  }
}

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

/**
 * The state before the first record: sequence 1 after `null`, or the record after
 * `options.from`. Throws a `RangeError` if the checkpoint is malformed (a sequence that
 * is not a non-negative safe integer, or a hash that is null past sequence 0).
 */
export const initialChainState = (options?: VerifyOptions): ChainState => {
  const from = options?.from
  if (from === undefined) return { expectedSequence: 1, previousHash: null, records: 0, failure: undefined }
  if (!Number.isSafeInteger(from.sequence) || from.sequence < 0) {
    throw new RangeError("checkpoint sequence must be a non-negative safe integer")
  }
  if ((from.sequence === 0) !== (from.eventHash === null)) {
    throw new RangeError("checkpoint eventHash must be null exactly at sequence 0")
  }
  return { expectedSequence: from.sequence + 1, previousHash: from.eventHash, records: 0, failure: undefined }
}

/** Whether the state still accepts records (no failure yet). */
export const isOpen = (state: ChainState): boolean => state.failure === undefined

const fail = (state: ChainState, failure: VerifyFailureReason): ChainState => ({
  expectedSequence: state.expectedSequence,
  previousHash: state.previousHash,
  records: state.records,
  failure
})

const { EventHashMismatch, MissingAuditIntegrity, PreviousHashMismatch, SequenceMismatch } = VerifyFailureReason
const notAnObject = VerifyFailureReason.NotAnObject()
const missingAuditIntegrity = MissingAuditIntegrity()
const unparseable = VerifyFailureReason.Unparseable()
const uncanonicalizable = VerifyFailureReason.Uncanonicalizable()

/**
 * Checks one parsed record against the state, in haechi's order (auditIntegrity
 * present, sequence, previousHash, eventHash), and returns the next state. A closed
 * state is returned unchanged. Never throws.
 */
export const stepChain = (state: ChainState, record: unknown): ChainState => {
  if (state.failure !== undefined) return state
  if (!isJsonObject(record)) return fail(state, notAnObject)
  const integrity = (record as { readonly auditIntegrity?: unknown }).auditIntegrity
  if (!integrity) return fail(state, missingAuditIntegrity)
  const fields = integrity as { readonly sequence?: unknown; readonly previousHash?: unknown; readonly eventHash?: unknown }
  const sequence = fields.sequence
  if (sequence !== state.expectedSequence) {
    return fail(state, SequenceMismatch({ expected: state.expectedSequence, actual: sequence }))
  }
  // haechi reads `previousHash ?? null`: an absent previousHash counts as null.
  const previousHash = fields.previousHash ?? null
  if (previousHash !== state.previousHash) {
    return fail(state, PreviousHashMismatch({ expected: state.previousHash, actual: fields.previousHash }))
  }
  let expected: string
  try {
    // `integrity` is an object here: only objects carry the expected numeric sequence.
    expected = sha256Base64Url(canonicalUnsigned(record, integrity as object))
  } catch {
    return fail(state, uncanonicalizable)
  }
  const eventHash = fields.eventHash
  if (eventHash !== expected) return fail(state, EventHashMismatch({ expected, actual: eventHash }))
  return { expectedSequence: state.expectedSequence + 1, previousHash: expected, records: state.records + 1, failure: undefined }
}

/**
 * Parses one stored JSON text and checks it like `stepChain`. Text that is not JSON (or
 * a value that is not a string) closes the state with `Unparseable`; never throws.
 */
export const stepJson = (state: ChainState, text: string): ChainState => {
  if (state.failure !== undefined) return state
  if (typeof text !== "string") return fail(state, unparseable)
  let record: unknown
  try {
    record = JSON.parse(text)
  } catch {
    return fail(state, unparseable)
  }
  return stepChain(state, record)
}

/** The verification result a state stands for (valid while no record failed). */
export const chainResult = (state: ChainState): VerifyResult =>
  state.failure === undefined
    ? {
      valid: true,
      records: state.records,
      headHash: state.previousHash,
      headSequence: state.expectedSequence - 1
    }
    : {
      valid: false,
      records: state.records,
      failedSequence: state.expectedSequence,
      index: state.records,
      reason: state.failure,
      headHash: state.previousHash,
      headSequence: state.expectedSequence - 1
    }

const foldIterable = <A>(
  items: Iterable<A>,
  options: VerifyOptions | undefined,
  step: (state: ChainState, item: A) => ChainState
): VerifyResult => {
  let state = initialChainState(options)
  for (const item of items) {
    state = step(state, item)
    if (state.failure !== undefined) break
  }
  return chainResult(state)
}

const foldStream = <A, E, R>(
  items: Stream.Stream<A, E, R>,
  options: VerifyOptions | undefined,
  step: (state: ChainState, item: A) => ChainState
): Effect.Effect<VerifyResult, E, R> =>
  Effect.suspend(() => Stream.runFoldWhile(items, initialChainState(options), isOpen, step)).pipe(
    Effect.map(chainResult)
  )

/**
 * Verifies parsed records in order, stopping at the first failure (the rest of the
 * iterable is not consumed). Returns the result; throws only a `RangeError` for a
 * malformed `options.from`.
 */
export const verifyRecords = (records: Iterable<unknown>, options?: VerifyOptions): VerifyResult =>
  foldIterable(records, options, stepChain)

/**
 * Verifies stored JSON texts (e.g. the elements of a Redis list) in order; text that is
 * not JSON fails as `Unparseable` at its index. Throws only a `RangeError` for a
 * malformed `options.from`.
 */
export const verifyJsonRecords = (texts: Iterable<string>, options?: VerifyOptions): VerifyResult =>
  foldIterable(texts, options, stepJson)

/**
 * Verifies a stream of parsed records in bounded memory, pulling chunk by chunk and
 * stopping at the first failure. Succeeds with the result (an invalid chain is a
 * successful `{ valid: false }`); fails only with the stream's error `E`. A malformed
 * `options.from` is a defect.
 */
export const verifyChain = <E, R>(
  records: Stream.Stream<unknown, E, R>,
  options?: VerifyOptions
): Effect.Effect<VerifyResult, E, R> => foldStream(records, options, stepChain)

/**
 * Like `verifyChain` over stored JSON texts (e.g. LRANGE pages of a Redis list): each
 * text is parsed inside the step and text that is not JSON is an `Unparseable` failure
 * at its index, never a thrown exception.
 */
export const verifyJsonChain = <E, R>(
  texts: Stream.Stream<string, E, R>,
  options?: VerifyOptions
): Effect.Effect<VerifyResult, E, R> => foldStream(texts, options, stepJson)
