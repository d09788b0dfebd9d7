// The benchmark's stand-in for haechi's core: it drives an audit store and a token store
// exactly the way the core does (see shared/docs/haechi-contracts.md), so both
// implementations are measured under the same caller.
//
// - createAuditSink: one in-process promise queue per sink; each record() runs
//   store.transaction(async ({ readLastIntegrity, persist }) => ...) building a
//   json-stable-v1 record with a sha256/base64url eventHash on the head it read.
// - createTokenVault: one promise queue per vault for mutations; tokenize prunes the
//   expired records over the whole vault (view.entries().filter(...)), encrypts with
//   AES-256-GCM, then view.set(token, record); reveal is store.read(view => view.get(token)).
// - verifyChain: the core's verifier rules (sequence 1..n with no gap, previousHash links,
//   eventHash recomputed), written here independently of both libraries.
import { createCipheriv, createDecipheriv, createHash, randomBytes, randomUUID } from "node:crypto"

// ---------------------------------------------------------------------------
// audit chain math (json-stable-v1)

/** json-stable-v1: arrays in order, object keys sorted by JS default sort, else JSON.stringify. */
export const canonical = (value) => {
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]"
  if (value !== null && typeof value === "object") {
    return (
      "{" +
      Object.keys(value)
        .sort()
        .map((key) => JSON.stringify(key) + ":" + canonical(value[key]))
        .join(",") +
      "}"
    )
  }
  return JSON.stringify(value)
}

export const sha256url = (text) => createHash("sha256").update(text).digest("base64url")

/** The eventHash of a record: sha256 over the canonical record whose auditIntegrity lacks eventHash. */
export const eventHashOf = (record) => {
  const { eventHash: _omit, ...integrity } = record.auditIntegrity
  return sha256url(canonical({ ...record, auditIntegrity: integrity }))
}

/** The next record on `previous` (an auditIntegrity or null), as the core builds it. */
export const buildRecord = (event, previous) => {
  // The core sanitizes the event first; a JSON round trip stands in for that work.
  const sanitized = JSON.parse(JSON.stringify(event))
  const integrity = {
    alg: "sha256",
    canonicalization: "json-stable-v1",
    sequence: previous ? previous.sequence + 1 : 1,
    previousHash: previous ? previous.eventHash : null
  }
  const eventHash = sha256url(canonical({ ...sanitized, auditIntegrity: integrity }))
  return { ...sanitized, auditIntegrity: { ...integrity, eventHash } }
}

/** A promise queue: each task starts when the previous one settled. */
const serial = () => {
  let tail = Promise.resolve()
  return (task) => {
    const run = tail.then(task)
    tail = run.then(
      () => undefined,
      () => undefined
    )
    return run
  }
}

/**
 * haechi's createAuditSink({ store }).record(event), as the contracts page states it.
 * `counts` (the bench's own) tallies how often the store ran `fn` and how often persist rejected.
 */
export const createAuditSink = ({ store }) => {
  const enqueue = serial()
  const counts = { attempts: 0, rejected: 0 }
  return {
    counts,
    record: (event) =>
      enqueue(() =>
        store.transaction(async ({ readLastIntegrity, persist }) => {
          counts.attempts += 1
          const previous = await readLastIntegrity()
          const record = buildRecord(event, previous)
          try {
            await persist(record)
          } catch (error) {
            counts.rejected += 1
            throw error
          }
          return record
        })
      )
  }
}

let eventCounter = 0
/** A gateway audit event of a realistic size (~450 bytes of JSON). */
export const sampleEvent = (replica = "r0") => {
  eventCounter += 1
  return {
    type: "gateway.request",
    timestamp: new Date().toISOString(),
    requestId: randomUUID(),
    replica,
    tenant: "acme-corp",
    route: "/v1/chat/completions",
    method: "POST",
    status: 200,
    decision: "allow",
    policy: { id: "default-pii", version: 7, mode: "tokenize" },
    findings: [
      { kind: "email", action: "tokenize", count: 1 },
      { kind: "phone", action: "tokenize", count: 2 }
    ],
    upstream: { provider: "openai", model: "gpt-4o-mini", latencyMs: 412 + (eventCounter % 50) },
    client: { ipHash: sha256url(`10.0.0.${eventCounter % 255}`).slice(0, 16), userAgent: "haechi-sdk/1.5.2" }
  }
}

/**
 * The core's verifier: `{ valid, records, reason?, headHash? }`, stopping at the first failure.
 * `records` is an iterable of parsed records in chain order.
 */
export const verifyChain = (records) => {
  let previous = null
  let count = 0
  for (const record of records) {
    const integrity = record?.auditIntegrity
    const at = count + 1
    if (!integrity || typeof integrity !== "object") return { valid: false, records: count, reason: `record ${at}: no auditIntegrity` }
    if (integrity.sequence !== at) return { valid: false, records: count, reason: `record ${at}: sequence ${integrity.sequence}` }
    const expectedPrev = previous ? previous.eventHash : null
    if (integrity.previousHash !== expectedPrev) return { valid: false, records: count, reason: `record ${at}: previousHash does not link` }
    if (eventHashOf(record) !== integrity.eventHash) return { valid: false, records: count, reason: `record ${at}: eventHash mismatch` }
    previous = integrity
    count += 1
  }
  return { valid: true, records: count, headHash: previous ? previous.eventHash : null }
}

// ---------------------------------------------------------------------------
// token vault

const KEY = createHash("sha256").update("haechi-store-effect bench key").digest()
const KID = "local-2025-01"

/** A local AES-256-GCM crypto provider, async like the core's. */
export const cryptoProvider = {
  async encrypt(plaintext, aad) {
    const iv = randomBytes(12)
    const cipher = createCipheriv("aes-256-gcm", KEY, iv)
    cipher.setAAD(Buffer.from(aad))
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()])
    return {
      v: 1,
      alg: "aes-256-gcm",
      kid: KID,
      iv: iv.toString("base64url"),
      ciphertext: ciphertext.toString("base64url"),
      tag: cipher.getAuthTag().toString("base64url")
    }
  },
  async decrypt(envelope, aad) {
    const decipher = createDecipheriv("aes-256-gcm", KEY, Buffer.from(envelope.iv, "base64url"))
    decipher.setAAD(Buffer.from(aad))
    decipher.setAuthTag(Buffer.from(envelope.tag, "base64url"))
    return Buffer.concat([decipher.update(Buffer.from(envelope.ciphertext, "base64url")), decipher.final()]).toString("utf8")
  }
}

const DAY = 86_400_000
export const newToken = (type = "email") => `tok_${type}_${randomBytes(12).toString("hex")}`
export const aadOf = (token, type) => `haechi:tv:v1:${token}:${type}`
/** The plaintext a benchmark token stands for (so a reveal can be checked). */
export const plaintextOf = (token) => `user.${token.slice(-12)}@example.com, +82-10-5555-${token.slice(-4)}; account holder note ${token.slice(-8)} (pii sample)`

/** A token record `{ type, createdAt, expiresAt, metadata, envelope, aad }` (~540 bytes of JSON). */
export const makeRecord = async (token, type = "email", now = Date.now()) => {
  const aad = aadOf(token, type)
  return {
    type,
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 30 * DAY).toISOString(),
    metadata: { source: "gateway", route: "/v1/chat/completions", tenant: "acme-corp", requestId: randomUUID() },
    envelope: await cryptoProvider.encrypt(plaintextOf(token), aad),
    aad
  }
}

const isExpired = (record, now) => Date.parse(record.expiresAt) <= now

/** haechi's createTokenVault({ store, cryptoProvider }): tokenize and reveal as the core runs them. */
export const createTokenVault = ({ store }) => {
  const enqueue = serial()
  return {
    tokenize: (type = "email") =>
      enqueue(() =>
        store.mutate(async (view) => {
          const now = Date.now()
          view
            .entries()
            .filter(([, record]) => isExpired(record, now))
            .forEach(([token]) => view.delete(token))
          const token = newToken(type)
          view.set(token, await makeRecord(token, type, now))
          return token
        })
      ),
    reveal: async (token) => {
      const record = await store.read((view) => view.get(token))
      if (record === undefined) return undefined
      return cryptoProvider.decrypt(record.envelope, record.aad)
    }
  }
}
