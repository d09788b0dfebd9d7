/**
 * The fold `Verify.verifyStore` runs over a stored chain, page by page: the
 * checkpoint's own record first (when there is a checkpoint), then `Chain.stepJson` per
 * record, with the head the store recorded checked when the fold passes its sequence,
 * and the rewind records met along the way collected. One fold state is carried, so
 * memory does not grow with the chain. Plain loops: this is the hot path.
 */
import * as Chunk from "effect/Chunk"
import type { AuditIntegrity, ChainState, Checkpoint, VerifyFailureReason, VerifyResult } from "../../Chain.js"
import type { ChainBroken } from "../../Errors.js"
import { unsignedHash } from "./chainCanonical.js"
import { chainResult, closeWith, initialChainState, Reason, stepJson } from "./chainFold.js"
import { recordedRewind, type RecordedRewind } from "./rewindRecord.js"
import { isJsonObject } from "../jsonRecord.js"

export class PageFold {
  private state: ChainState
  /** The checkpoint whose record must come first; undefined once it has been checked. */
  private pending: Checkpoint | undefined
  /** A failure at the checkpoint's record, which precedes the fold proper. */
  private checkpointFailure: VerifyFailureReason | undefined
  private readonly headSequence: number
  private readonly headHash: string | null
  /** The rewind records met so far (in verified records only). */
  readonly rewinds: Array<RecordedRewind> = []

  constructor(
    private readonly from: Checkpoint | undefined,
    head: AuditIntegrity | null
  ) {
    this.state = initialChainState(from === undefined ? undefined : { from })
    this.pending = from
    this.headSequence = head?.sequence ?? 0
    this.headHash = head?.eventHash ?? null
  }

  get open(): boolean {
    return this.checkpointFailure === undefined && this.state.failure === undefined
  }

  page(page: Chunk.Chunk<string>): void {
    const texts = Chunk.toReadonlyArray(page)
    let i = 0
    if (this.pending !== undefined && texts.length > 0) {
      this.checkpointFailure = checkpointRecord(texts[0]!, this.pending, this.headSequence, this.headHash)
      this.pending = undefined
      i = 1
    }
    let state = this.state
    const headSequence = this.headSequence
    for (; i < texts.length && state.failure === undefined; i++) {
      const text = texts[i]!
      const next = stepJson(state, text)
      const rewind = next.failure === undefined ? recordedRewind(text) : undefined
      if (rewind !== undefined) this.rewinds.push(rewind)
      if (
        next.failure === undefined &&
        next.expectedSequence - 1 === headSequence &&
        next.previousHash !== this.headHash
      ) {
        state = closeWith(state, Reason.EventHashMismatch({ expected: this.headHash ?? "", actual: next.previousHash }))
      } else {
        state = next
      }
    }
    this.state = state
  }

  /** The result, with list indexes (the checkpoint's records counted). */
  result(): VerifyResult {
    const from = this.from
    const base = from === undefined ? 0 : from.sequence
    if (this.pending !== undefined || this.checkpointFailure !== undefined) {
      // The checkpoint's own record is missing or is not what the checkpoint recorded.
      const sequence = (from as Checkpoint).sequence
      return {
        valid: false,
        records: 0,
        failedSequence: sequence,
        index: sequence - 1,
        reason: this.checkpointFailure ?? Reason.SequenceMismatch({ expected: sequence, actual: undefined }),
        headHash: null,
        headSequence: sequence - 1
      }
    }
    let state = this.state
    if (state.failure === undefined && state.expectedSequence - 1 < this.headSequence) {
      // The list ends before the head the store recorded: its tail is missing.
      state = closeWith(state, Reason.SequenceMismatch({ expected: state.expectedSequence, actual: undefined }))
    }
    const result = chainResult(state)
    return result.valid ? result : { ...result, index: base + result.index }
  }
}

/**
 * Checks the checkpoint's own record: it must be a record with the checkpoint's
 * sequence whose content hashes to its stored `eventHash`, which must be the
 * checkpoint's (and the recorded head's, when it is the head). Returns the failure.
 */
const checkpointRecord = (
  text: string,
  from: Checkpoint,
  headSequence: number,
  headHash: string | null
): VerifyFailureReason | undefined => {
  let record: unknown
  try {
    record = JSON.parse(text)
  } catch {
    return Reason.Unparseable()
  }
  if (!isJsonObject(record)) return Reason.NotAnObject()
  const integrity = (record as { auditIntegrity?: unknown }).auditIntegrity
  if (!integrity || typeof integrity !== "object") return Reason.MissingAuditIntegrity()
  const fields = integrity as { sequence?: unknown; eventHash?: unknown }
  if (fields.sequence !== from.sequence)
    return Reason.SequenceMismatch({ expected: from.sequence, actual: fields.sequence })
  let computed: string
  try {
    computed = unsignedHash(record, integrity)
  } catch {
    return Reason.Uncanonicalizable()
  }
  if (fields.eventHash !== computed) return Reason.EventHashMismatch({ expected: computed, actual: fields.eventHash })
  if (computed !== from.eventHash) return Reason.EventHashMismatch({ expected: from.eventHash ?? "", actual: computed })
  if (from.sequence === headSequence && computed !== headHash) {
    return Reason.EventHashMismatch({ expected: headHash ?? "", actual: computed })
  }
  return undefined
}

/** The list's result, failed with `HeadKeysDisagree` when the list verified but the head keys do not agree with it. */
export const withHeadKeys = (result: VerifyResult, broken: ChainBroken | undefined): VerifyResult =>
  !result.valid || broken === undefined
    ? result
    : {
        valid: false,
        records: result.records,
        failedSequence: result.headSequence + 1,
        index: result.headSequence,
        reason: Reason.HeadKeysDisagree({ keys: broken.keys, detail: broken.detail }),
        headHash: result.headHash,
        headSequence: result.headSequence
      }
