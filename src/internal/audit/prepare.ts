/**
 * A record as the fenced append takes it, checked before anything is sent: a plain JSON
 * object with a well-formed `auditIntegrity` (only sequence 1 has previousHash null),
 * that JSON stores exactly as it was hashed (`jsonProblem`), and with `verifyRecords:
 * "full"` whose eventHash is its json-stable-v1 hash. Serialized once here.
 */
import type { AuditIntegrity } from "../../Chain.js"
import { computeEventHash } from "./chainBuild.js"
import { type ChainPoint, InvalidRecord } from "../../Errors.js"
import { callMadeAt } from "../resentCalls.js"
import { nextCommitId } from "../commitId.js"
import { isPlainObject, jsonProblem } from "../jsonRecord.js"
import type { LockClaim } from "../storeGuard.js"
import { isIntegrity, type PreparedAppend } from "./backing.js"
import type { OwnCommit } from "./commitLookup.js"

const invalid = (reason: string) => new InvalidRecord({ store: "audit", reason })

/** `record` ready to append on the head it names, or why it was refused (nothing sent). */
export const prepare = (
  record: unknown,
  claim: LockClaim | undefined,
  seen: ChainPoint | null,
  fullCheck: boolean,
  witness: OwnCommit | null
): PreparedAppend | InvalidRecord => {
  if (!isPlainObject(record)) return invalid("a record must be a plain JSON object")
  const integrity = record.auditIntegrity
  if (!isIntegrity(integrity)) {
    return invalid("auditIntegrity is missing or malformed (it needs eventHash, a sequence >= 1 and previousHash)")
  }
  if ((integrity.previousHash === null) !== (integrity.sequence === 1)) {
    return invalid(
      `sequence ${integrity.sequence} with previousHash ${JSON.stringify(integrity.previousHash)}: only sequence 1 has previousHash null`
    )
  }
  // What JSON would not store as it is would be hashed by the caller over one thing
  // and kept as another: refused, so every stored record verifies.
  const problem = jsonProblem(record)
  if (problem !== undefined) return invalid(problem)
  if (fullCheck) {
    const computed = computeEventHash(record as { auditIntegrity: object })
    if (computed !== integrity.eventHash) {
      return invalid(`eventHash ${integrity.eventHash} is not the record's json-stable-v1 hash (${computed})`)
    }
  }
  const recordJson = JSON.stringify(record)
  return {
    expectedPrev: integrity.previousHash ?? "",
    recordJson,
    integrityJson: integrityJsonOf(record, recordJson, integrity),
    integrity: { ...integrity },
    eventHash: integrity.eventHash,
    sequence: integrity.sequence,
    commitId: nextCommitId(),
    madeAt: callMadeAt(),
    seen,
    claim,
    witness
  }
}

/** Why a record whose parent is not a record of the chain was refused. */
export const notSuccessor = (write: PreparedAppend, head: AuditIntegrity | null): string => {
  const headSequence = head?.sequence ?? 0
  if (write.expectedPrev === (head?.eventHash ?? "")) {
    return `sequence ${write.sequence} does not follow the head's ${headSequence}`
  }
  if (write.sequence - 1 > headSequence) return `sequence ${write.sequence} skips ahead of the head's ${headSequence}`
  return `previousHash ${write.expectedPrev} is not the eventHash of the chain's record ${write.sequence - 1}`
}

const KEY = `"auditIntegrity":`

/**
 * The integrity's JSON, cut out of the record's instead of serialized a second time, when
 * the integrity is the record's last property (as haechi's core builds records) and holds
 * no object and no key of that name: then the key's last occurrence in the text is the
 * top-level one (a JSON string cannot hold it unescaped), and its value runs to the
 * record's closing brace. Anything else is serialized on its own.
 */
const integrityJsonOf = (record: Record<string, unknown>, recordJson: string, integrity: AuditIntegrity): string => {
  if (lastKeyOf(record) === "auditIntegrity" && isFlat(integrity)) {
    const at = recordJson.lastIndexOf(KEY)
    if (at > 0) return recordJson.slice(at + KEY.length, -1)
  }
  return JSON.stringify(integrity)
}

// For a plain object, for-in lists the own keys in JSON.stringify's order; an inherited
// enumerable key (a patched Object.prototype) comes last, and so falls back.
const lastKeyOf = (record: Record<string, unknown>): string | undefined => {
  let last: string | undefined
  for (const key in record) last = key
  return last
}

const isFlat = (integrity: AuditIntegrity): boolean => {
  for (const key in integrity) {
    const value = (integrity as unknown as Record<string, unknown>)[key]
    if (key === "auditIntegrity" || (typeof value === "object" && value !== null)) return false
  }
  return true
}
