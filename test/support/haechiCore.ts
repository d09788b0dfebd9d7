/**
 * A test double of haechi's core that DRIVES the stores exactly as the core does
 * (haechi itself is not on npm; see /work/shared/docs/haechi-contracts.md).
 *
 * Guarantees, mirroring the contract page:
 * - `createAuditSink` serializes its own `record()` calls with an in-process promise
 *   queue and, inside `store.transaction`, awaits `readLastIntegrity()`, builds the next
 *   record with the real chain rules (`src/Chain.ts`), awaits `persist(record)` without
 *   catching, and returns the record. `fn` is safe to re-run.
 * - `createTokenVault` serializes its own mutations with an in-process promise queue;
 *   every tokenize / purge / purgeExpired first prunes expired records over the WHOLE
 *   vault (`view.entries().filter(...)`); tokenize awaits its "encryption" inside `fn`
 *   before `set`; re-tokenizing a live value edits the stored object IN PLACE and then
 *   `set`s it. All view calls are synchronous (never awaited). Reads go through
 *   `store.read` (`get` for reveal/detokenize, `entries().filter().map()` for export).
 * - No real crypto: the envelope is a reversible base64url encoding, which is enough to
 *   check that what was stored round-trips.
 */
import { createHash, randomBytes } from "node:crypto"
import {
  type AuditIntegrity,
  type AuditRecord,
  buildNextRecord,
  describeFailure,
  verifyRecords
} from "../../src/Chain.js"

// ---------------------------------------------------------------------------
// Store contracts, as the core sees them
// ---------------------------------------------------------------------------

export interface AuditTransaction {
  readLastIntegrity(): Promise<AuditIntegrity | null>
  persist(record: AuditRecord): Promise<void>
}

export interface AuditStore {
  transaction<A>(fn: (tx: AuditTransaction) => Promise<A>): Promise<A>
  ready?(): Promise<{ ok: true } | { ok: false; reason: string }>
}

export interface TokenReadView {
  get(token: string): unknown
  entries(): Array<[string, unknown]>
}

export interface TokenMutableView extends TokenReadView {
  set(token: string, record: unknown): void
  delete(token: string): void
}

export interface TokenStore {
  mutate<A>(fn: (view: TokenMutableView) => Promise<A>): Promise<A>
  read<A>(fn: (view: TokenReadView) => A | Promise<A>): Promise<A>
}

/** The JSON record the core stores per token. */
export interface TokenRecord {
  type: string
  createdAt: string
  expiresAt: string | null
  metadata: { fingerprint?: string; [k: string]: unknown }
  envelope: { alg: "test"; iv: string; ciphertext: string }
  aad: { purpose: "token-vault"; token: string; type: string; context: Record<string, unknown> }
}

// ---------------------------------------------------------------------------
// Shared: the core's in-process promise queue
// ---------------------------------------------------------------------------

/** Runs operations one after another; a failed operation does not block the next. */
const makeQueue = () => {
  let tail: Promise<unknown> = Promise.resolve()
  return <A>(operation: () => Promise<A>): Promise<A> => {
    const run = tail.then(operation)
    tail = run.catch(() => {})
    return run
  }
}

// ---------------------------------------------------------------------------
// Audit sink
// ---------------------------------------------------------------------------

/** A copy of plain JSON data (arrays and objects copied, scalars kept). */
const sanitize = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(sanitize)
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, sanitize(item)]))
  }
  return value
}

export interface AuditSink {
  /** Appends `event` to the chain; resolves with the record persisted. */
  record(event: object): Promise<AuditRecord>
  ready(): Promise<{ ok: true } | { ok: false; reason: string }>
}

/** The core's `createAuditSink({ store })`. */
export const createAuditSink = ({ store }: { store: AuditStore }): AuditSink => {
  const enqueue = makeQueue()
  return {
    record: (event) =>
      enqueue(() =>
        store.transaction(async ({ readLastIntegrity, persist }) => {
          const previous = await readLastIntegrity()
          const record = buildNextRecord(sanitize(event) as object, previous)
          await persist(record)
          return record
        })
      ),
    ready: () => (typeof store.ready === "function" ? store.ready() : Promise.resolve({ ok: true as const }))
  }
}

/** haechi's verifier result: `{ valid, records, reason?, headHash? }`. */
export type HaechiVerifyResult =
  { valid: true; records: number; headHash: string | null } | { valid: false; records: number; reason: string }

/** The core's `verifyAuditChain` over records already read (in order). */
export const verifyAuditChain = (records: ReadonlyArray<unknown>): HaechiVerifyResult => {
  const result = verifyRecords(records)
  return result.valid
    ? { valid: true, records: result.records, headHash: result.headHash }
    : { valid: false, records: result.records, reason: describeFailure(result.reason) }
}

// ---------------------------------------------------------------------------
// Token vault
// ---------------------------------------------------------------------------

const defaultTtlMs = 30 * 24 * 60 * 60 * 1000

const fingerprintOf = (type: string, value: string): string =>
  createHash("sha256").update(`${type}:${value}`).digest("hex").slice(0, 32)

/** Stands in for the crypto provider: yields to the event loop like real async crypto. */
const encrypt = async (plaintext: string): Promise<TokenRecord["envelope"]> => {
  await new Promise<void>((resolve) => setImmediate(resolve))
  return {
    alg: "test",
    iv: randomBytes(12).toString("base64url"),
    ciphertext: Buffer.from(plaintext, "utf8").toString("base64url")
  }
}

const decrypt = (envelope: unknown): string => {
  const e = envelope as Partial<TokenRecord["envelope"]> | null | undefined
  if (!e || e.alg !== "test" || typeof e.ciphertext !== "string") throw new Error("Token decrypt failed")
  return Buffer.from(e.ciphertext, "base64url").toString("utf8")
}

const asRecord = (value: unknown): TokenRecord | undefined =>
  value !== null && typeof value === "object" ? (value as TokenRecord) : undefined

const isExpired = (record: TokenRecord | undefined, now: number): boolean =>
  record !== undefined && !!record.expiresAt && Date.parse(record.expiresAt) < now

export interface TokenVault {
  tokenize(
    value: string,
    options: { type: string; ttlMs?: number }
  ): Promise<{ token: string; type: string; reused: boolean }>
  reveal(token: string): Promise<{ token: string; type: string; plaintext: string }>
  detokenize(tokens: ReadonlyArray<string>): Promise<Map<string, string>>
  purge(token: string): Promise<{ token: string; purged: boolean }>
  purgeExpired(): Promise<{ purged: number }>
  exportMetadata(options?: { type?: string }): Promise<
    Array<{
      token: string
      type: string
      createdAt: string
      expiresAt: string | null
      metadata: Record<string, unknown>
    }>
  >
}

/** The core's `createTokenVault({ store })`, with an injectable clock. */
export const createTokenVault = ({ now = Date.now, store }: { store: TokenStore; now?: () => number }): TokenVault => {
  const enqueue = makeQueue()
  const mutate = <A>(fn: (view: TokenMutableView) => Promise<A>): Promise<A> => enqueue(() => store.mutate(fn))

  /** Deletes every expired record, reading the whole vault; returns how many. */
  const pruneExpired = (view: TokenMutableView, at: number): number => {
    const expired = view.entries().filter(([, record]) => isExpired(asRecord(record), at))
    for (const [token] of expired) view.delete(token)
    return expired.length
  }

  return {
    tokenize: (value, { ttlMs = defaultTtlMs, type }) =>
      mutate(async (view) => {
        const at = now()
        pruneExpired(view, at)
        const fingerprint = fingerprintOf(type, value)
        const live = view.entries().find(([, record]) => {
          const r = asRecord(record)
          return r !== undefined && r.type === type && r.metadata?.fingerprint === fingerprint
        })
        const expiresAt = new Date(at + ttlMs).toISOString()
        if (live !== undefined) {
          const token = live[0]
          const existing = view.get(token) as TokenRecord
          existing.expiresAt = expiresAt
          view.set(token, existing)
          return { token, type, reused: true }
        }
        const token = `tok_${type}_${randomBytes(8).toString("hex")}`
        const aad: TokenRecord["aad"] = { purpose: "token-vault", token, type, context: {} }
        const envelope = await encrypt(value)
        const record: TokenRecord = {
          type,
          createdAt: new Date(at).toISOString(),
          expiresAt,
          metadata: { fingerprint },
          envelope,
          aad
        }
        view.set(token, record)
        return { token, type, reused: false }
      }),

    reveal: async (token) => {
      const record = asRecord(await store.read((view) => view.get(token)))
      if (record === undefined) throw new Error("Unknown token")
      if (isExpired(record, now())) throw new Error("Token expired")
      return { token, type: record.type, plaintext: decrypt(record.envelope) }
    },

    detokenize: async (tokens) => {
      const found = await store.read((view) => {
        const map = new Map<string, unknown>()
        for (const token of tokens) map.set(token, view.get(token))
        return map
      })
      const values = new Map<string, string>()
      const at = now()
      for (const token of tokens) {
        const record = asRecord(found.get(token))
        if (record === undefined || isExpired(record, at)) continue
        try {
          values.set(token, decrypt(record.envelope))
        } catch {
          // skipped, as the core does
        }
      }
      return values
    },

    purge: (token) =>
      mutate(async (view) => {
        pruneExpired(view, now())
        const purged = Boolean(view.get(token))
        view.delete(token)
        return { token, purged }
      }),

    purgeExpired: () => mutate(async (view) => ({ purged: pruneExpired(view, now()) })),

    exportMetadata: (options) =>
      store.read((view) =>
        view
          .entries()
          .filter(([, record]) => !options?.type || asRecord(record)?.type === options.type)
          .map(([token, record]) => {
            const r = asRecord(record)!
            return { token, type: r.type, createdAt: r.createdAt, expiresAt: r.expiresAt, metadata: { ...r.metadata } }
          })
      )
  }
}
