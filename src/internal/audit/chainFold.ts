/**
 * The verification fold of `Chain`: one per-record step, checked in haechi's order
 * (auditIntegrity present, sequence, previousHash, eventHash), written once and folded
 * over an `Iterable` or a `Stream`. A step never throws: bad data closes the state with
 * a reason, and a closed state absorbs every further step, so a fold stops at the first
 * failure and carries only one state (a few numbers and one hash) between records.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { ChainState, VerifyFailureReason, VerifyOptions, VerifyResult } from "./chainTypes.js"
import { unsignedHash } from "./chainCanonical.js"
import { isJsonObject } from "../jsonRecord.js"

/** Constructors and matchers for `VerifyFailureReason` (`Chain.VerifyFailureReason`). */
export const Reason = Data.taggedEnum<VerifyFailureReason>()

/** `Chain.describeFailure`: haechi's wording of a reason, never record content. */
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

/** `Chain.initialChainState`; throws a `RangeError` for a malformed checkpoint. */
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

export const isOpen = (state: ChainState): boolean => state.failure === undefined

/** The state closed by `failure` where it stands (its counts and hash unchanged). */
export const closeWith = (state: ChainState, failure: VerifyFailureReason): ChainState => ({
  expectedSequence: state.expectedSequence,
  previousHash: state.previousHash,
  records: state.records,
  failure
})

const { EventHashMismatch, MissingAuditIntegrity, PreviousHashMismatch, SequenceMismatch } = Reason
const notAnObject = Reason.NotAnObject()
const missingAuditIntegrity = MissingAuditIntegrity()
const unparseable = Reason.Unparseable()
const uncanonicalizable = Reason.Uncanonicalizable()

/** `Chain.stepChain`: one parsed record against the state. Never throws. */
export const stepChain = (state: ChainState, record: unknown): ChainState => {
  if (state.failure !== undefined) return state
  if (!isJsonObject(record)) return closeWith(state, notAnObject)
  const integrity = (record as { readonly auditIntegrity?: unknown }).auditIntegrity
  if (!integrity) return closeWith(state, missingAuditIntegrity)
  const fields = integrity as {
    readonly sequence?: unknown
    readonly previousHash?: unknown
    readonly eventHash?: unknown
  }
  const sequence = fields.sequence
  if (sequence !== state.expectedSequence) {
    return closeWith(state, SequenceMismatch({ expected: state.expectedSequence, actual: sequence }))
  }
  // haechi reads `previousHash ?? null`: an absent previousHash counts as null.
  const previousHash = fields.previousHash ?? null
  if (previousHash !== state.previousHash) {
    return closeWith(state, PreviousHashMismatch({ expected: state.previousHash, actual: fields.previousHash }))
  }
  let expected: string
  try {
    // `integrity` is an object here: only objects carry the expected numeric sequence.
    expected = unsignedHash(record, integrity as object)
  } catch {
    return closeWith(state, uncanonicalizable)
  }
  const eventHash = fields.eventHash
  if (eventHash !== expected) return closeWith(state, EventHashMismatch({ expected, actual: eventHash }))
  return {
    expectedSequence: state.expectedSequence + 1,
    previousHash: expected,
    records: state.records + 1,
    failure: undefined
  }
}

/** `Chain.stepJson`: parses one stored text, then `stepChain`. Never throws. */
export const stepJson = (state: ChainState, text: string): ChainState => {
  if (state.failure !== undefined) return state
  if (typeof text !== "string") return closeWith(state, unparseable)
  let record: unknown
  try {
    record = JSON.parse(text)
  } catch {
    return closeWith(state, unparseable)
  }
  return stepChain(state, record)
}

/** `Chain.chainResult`. */
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

/** The fold over an `Iterable`, which is not consumed past the first failure. */
export const foldIterable = <A>(
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

/** The fold over a `Stream`, pulled chunk by chunk until the first failure. */
export const foldStream = <A, E, R>(
  items: Stream.Stream<A, E, R>,
  options: VerifyOptions | undefined,
  step: (state: ChainState, item: A) => ChainState
): Effect.Effect<VerifyResult, E, R> =>
  Effect.suspend(() => Stream.runFoldWhile(items, initialChainState(options), isOpen, step)).pipe(
    Effect.map(chainResult)
  )
