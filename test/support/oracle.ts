/**
 * The contract page's chain rules written the naive way, sharing no code with src/: the
 * oracle the chain, verify, audit-log and CLI tests check our implementation against.
 */
import { createHash } from "node:crypto"

/** json-stable-v1 canonicalization, straight from the contracts page. */
export const refCanonical = (value: unknown): string | undefined => {
  if (Array.isArray(value)) return `[${value.map((item) => refCanonical(item)).join(",")}]`
  if (value && typeof value === "object") {
    const object = value as Record<string, unknown>
    return `{${Object.keys(object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${refCanonical(object[key])}`)
      .join(",")}}`
  }
  return JSON.stringify(value)
}

/** base64url(sha256(canonical(record with auditIntegrity minus eventHash))). */
export const refHash = (record: any): string => {
  const { eventHash: _omit, ...rest } = record.auditIntegrity
  return createHash("sha256")
    .update(refCanonical({ ...record, auditIntegrity: rest })!)
    .digest("base64url")
}

/** haechi's verifier rules: sequence 1, 2, 3…, previousHash links, eventHash recomputed. */
export const refVerify = (records: ReadonlyArray<any>): { valid: boolean; records: number } => {
  let previous: string | null = null
  let count = 0
  for (const record of records) {
    const integrity = record?.auditIntegrity
    if (!integrity || integrity.sequence !== count + 1 || (integrity.previousHash ?? null) !== previous) break
    const hash = refHash(record)
    if (hash !== integrity.eventHash || integrity.alg !== "sha256" || integrity.canonicalization !== "json-stable-v1")
      break
    previous = hash
    count++
  }
  return { valid: count === records.length, records: count }
}
