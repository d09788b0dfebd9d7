/**
 * The record `onRewind: "record"` appends when a replica finds the chain rewound, and
 * the one way to recognise it again (`verify` lists them).
 *
 * It is an ordinary audit event (haechi's verifier checks it like any other record), so
 * the gap itself becomes part of the tamper-evident chain: the record names the head the
 * replica had seen, the head the chain was found at, and when. Its fields are strings and
 * numbers only, so it is stored exactly as it is hashed.
 */
import type { ChainPoint } from "../../Errors.js"
import { isJsonObject } from "../jsonRecord.js"

/** The event `type` of a rewind record. */
export const REWIND_EVENT_TYPE = "haechi_store.chain_rewound"

/** What a rewind record says. */
export interface RecordedRewind {
  /** The head this replica had seen, which the chain no longer holds. */
  readonly lost: ChainPoint
  /** The head the chain was found at (null: empty), on which the record was appended. */
  readonly resumedOn: ChainPoint | null
  /** When the rewind was detected (ISO 8601). */
  readonly detectedAt: string
}

/** The event recording a rewind (the chain's next record is built from it). */
export const rewindEvent = (rewind: RecordedRewind): Record<string, unknown> => ({
  type: REWIND_EVENT_TYPE,
  timestamp: rewind.detectedAt,
  rewind: {
    lostSequence: rewind.lost.sequence,
    lostEventHash: rewind.lost.eventHash,
    resumedOnSequence: rewind.resumedOn?.sequence ?? 0,
    resumedOnEventHash: rewind.resumedOn?.eventHash ?? null,
    detectedAt: rewind.detectedAt
  }
})

const MARKER = `"${REWIND_EVENT_TYPE}"`

/** What a stored record says if it is a rewind record, else undefined. Cheap on other records. */
export const recordedRewind = (json: string): RecordedRewind | undefined => {
  if (typeof json !== "string" || !json.includes(MARKER)) return undefined
  let record: unknown
  try {
    record = JSON.parse(json)
  } catch {
    return undefined
  }
  if (!isJsonObject(record) || record.type !== REWIND_EVENT_TYPE || !isJsonObject(record.rewind)) return undefined
  const { lostSequence, lostEventHash, resumedOnSequence, resumedOnEventHash, detectedAt } = record.rewind
  if (typeof lostSequence !== "number" || typeof lostEventHash !== "string" || typeof detectedAt !== "string")
    return undefined
  return {
    lost: { sequence: lostSequence, eventHash: lostEventHash },
    resumedOn:
      typeof resumedOnEventHash === "string" && typeof resumedOnSequence === "number"
        ? { sequence: resumedOnSequence, eventHash: resumedOnEventHash }
        : null,
    detectedAt
  }
}
