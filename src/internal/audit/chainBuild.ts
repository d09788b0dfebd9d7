/**
 * Building haechi's next record and its eventHash (documented in Chain.ts, which
 * re-exports these). Kept apart from the verification folds so the stores' append path
 * loads no `effect/Stream`.
 */
import type { AuditIntegrity, AuditRecord } from "./chainTypes.js"
import { unsignedHash } from "./chainCanonical.js"

/** haechi's eventHash of `record`: sha256 base64url of its canonical form without `eventHash`. */
export const computeEventHash = (record: { readonly auditIntegrity: object }): string =>
  unsignedHash(record, record.auditIntegrity)

/** The record haechi's core appends after `previous` (`null` = empty chain). */
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
