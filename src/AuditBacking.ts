/**
 * The audit chain's storage primitives, written once per backing: read the head, a
 * compare-and-append fenced on the head's eventHash, and the reads that verification,
 * export and commit resolution need. The contract's semantics (the retry schedule, the
 * replica's cached head, resolving a lost reply) live once above this, in AuditStore,
 * so the Redis and in-memory stores cannot drift apart.
 */
import * as Effect from "effect/Effect"
import { CorruptData, type RedisError } from "./Errors.js"
import { auditKeys, type AuditKeys } from "./Keys.js"
import { probe, READY, type Readiness } from "./Readiness.js"
import { wrongType, type RedisClientShape } from "./RedisClient.js"
import { Scripts } from "./Scripts.js"
import { claimArgs, type LockClaim } from "./StoreGuard.js"

/** The last record's `auditIntegrity`, as the chain stores it. */
export interface Integrity {
  readonly alg?: string
  readonly canonicalization?: string
  readonly sequence: number
  readonly previousHash: string | null
  readonly eventHash: string
  readonly [key: string]: unknown
}

/** One record, ready to be appended: serialized once, fenced on `expectedPrev`. */
export interface PreparedAppend {
  /** The head eventHash the record was built on; "" for the empty chain. */
  readonly expectedPrev: string
  readonly recordJson: string
  readonly integrityJson: string
  /** A private copy of the record's integrity (the next head once committed). */
  readonly integrity: Integrity
  readonly eventHash: string
  readonly sequence: number
  /** Unique to this append call; a re-sent call repeats it, a rebuilt record gets a new one. */
  readonly commitId: string
  /**
   * Set for a lock-free attempt: it must not write while another writer holds the
   * store's lock, and it takes or gives back the lock as the claim says.
   */
  readonly claim: LockClaim | undefined
}

export type AppendOutcome =
  | { readonly _tag: "Committed" }
  /** The very record is already in the chain: a re-sent call whose reply was lost. */
  | { readonly _tag: "AlreadyCommitted" }
  /**
   * The head moved; `head` is the current one, so no extra read is needed to retry.
   * `tookLock`: the attempt's claim asked for the lock and now holds it.
   */
  | { readonly _tag: "Conflict"; readonly head: Integrity | null; readonly headHash: string; readonly tookLock: boolean }
  /** Another writer holds the lock and the attempt was asked to yield; nothing written. */
  | { readonly _tag: "LockHeld" }

export type BackingError = RedisError | CorruptData

export interface AuditBacking {
  readonly keys: AuditKeys
  readonly readHead: Effect.Effect<Integrity | null, BackingError>
  readonly append: (write: PreparedAppend) => Effect.Effect<AppendOutcome, BackingError>
  /** Whether the append with this commit id committed (at this sequence). */
  readonly isCommitted: (sequence: number, commitId: string) => Effect.Effect<boolean, BackingError>
  readonly length: Effect.Effect<number, BackingError>
  /** Stored record JSON for list indexes `start..stop` (inclusive), in order. */
  readonly readRange: (start: number, stop: number) => Effect.Effect<ReadonlyArray<string>, BackingError>
  readonly ready: Effect.Effect<Readiness>
}

/** Parses a stored head (auditIntegrity JSON); anything else is corrupt data at `key`. */
export const parseIntegrity = (json: string, key: string, element?: number): Effect.Effect<Integrity, CorruptData> =>
  Effect.try({
    try: () => JSON.parse(json) as unknown,
    catch: () => new CorruptData({ key, element, detail: "not JSON" })
  }).pipe(
    Effect.flatMap((value) =>
      isIntegrity(value)
        ? Effect.succeed(value)
        : Effect.fail(new CorruptData({ key, element, detail: "not an auditIntegrity object" }))
    )
  )

export const isIntegrity = (value: unknown): value is Integrity => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false
  const v = value as Record<string, unknown>
  return (
    typeof v.eventHash === "string" &&
    v.eventHash.length > 0 &&
    Number.isSafeInteger(v.sequence) &&
    (v.sequence as number) >= 1 &&
    (v.previousHash === null || typeof v.previousHash === "string")
  )
}

/** The chain on Redis, in haechi-store-redis's layout. */
export const redisAuditBacking = (redis: RedisClientShape, prefix: string): AuditBacking => {
  const keys = auditKeys(prefix)
  const readHead = redis.run("GET head", (c) => c.get(keys.head)).pipe(
    wrongType(keys.head),
    Effect.flatMap((json) => (json === null ? Effect.succeed(null) : parseIntegrity(json, keys.head)))
  )
  return {
    keys,
    readHead,
    append: (write) =>
      redis
        .script(
          Scripts.auditAppend,
          [keys.headHash, keys.chain, keys.head, keys.commits, keys.lock],
          [
            write.expectedPrev,
            write.recordJson,
            write.integrityJson,
            write.eventHash,
            write.sequence,
            write.commitId,
            ...claimArgs(write.claim)
          ]
        )
        .pipe(
          wrongType(keys.chain),
          Effect.flatMap((reply): Effect.Effect<AppendOutcome, BackingError> => {
            const [status, head, took] = reply as [number, string | null | undefined, number | undefined]
            if (status === 1) return Effect.succeed({ _tag: "Committed" })
            if (status === 2) return Effect.succeed({ _tag: "AlreadyCommitted" })
            if (status === 4) return Effect.succeed({ _tag: "LockHeld" })
            if (status === 3) {
              return Effect.fail(new CorruptData({ key: String(head), detail: "holds the wrong Redis type" }))
            }
            const tookLock = took === 1
            if (head === null || head === undefined) {
              return Effect.succeed({ _tag: "Conflict", head: null, headHash: "", tookLock })
            }
            return Effect.map(parseIntegrity(head, keys.head), (integrity) => ({
              _tag: "Conflict" as const,
              head: integrity,
              headHash: integrity.eventHash,
              tookLock
            }))
          })
        ),
    isCommitted: (sequence, commitId) =>
      redis
        .run("HGET commits", (c) => c.hget(keys.commits, String(sequence)))
        .pipe(
          wrongType(keys.commits),
          Effect.map((id) => id === commitId)
        ),
    length: redis.run("LLEN chain", (c) => c.llen(keys.chain)).pipe(wrongType(keys.chain)),
    readRange: (start, stop) =>
      redis.run("LRANGE chain", (c) => c.lrange(keys.chain, start, stop)).pipe(wrongType(keys.chain)),
    ready: probe(redis, keys.readyProbe)
  }
}

/**
 * The chain in this process's memory: the same primitives, atomic because each runs
 * synchronously. Records are kept as the JSON Redis would hold, so nothing a caller
 * does to an object after handing it over can change the chain.
 */
export const memoryAuditBacking = (prefix = "memory:audit:"): AuditBacking => {
  const keys = auditKeys(prefix)
  const chain: Array<string> = []
  const commits = new Map<number, string>()
  let head: { integrityJson: string; hash: string } | undefined
  return {
    keys,
    readHead: Effect.suspend(() =>
      head === undefined ? Effect.succeed(null) : parseIntegrity(head.integrityJson, keys.head)
    ),
    append: (write) =>
      Effect.suspend((): Effect.Effect<AppendOutcome, BackingError> => {
        const current = head?.hash ?? ""
        if (current === write.expectedPrev) {
          chain.push(write.recordJson)
          head = { integrityJson: write.integrityJson, hash: write.eventHash }
          commits.set(write.sequence, write.commitId)
          commits.delete(write.sequence - 1000)
          return Effect.succeed({ _tag: "Committed" })
        }
        if (commits.get(write.sequence) === write.commitId) {
          return Effect.succeed({ _tag: "AlreadyCommitted" })
        }
        return Effect.map(
          head === undefined ? Effect.succeed(null) : parseIntegrity(head.integrityJson, keys.head),
          (integrity) => ({ _tag: "Conflict" as const, head: integrity, headHash: current, tookLock: false })
        )
      }),
    isCommitted: (sequence, commitId) => Effect.sync(() => commits.get(sequence) === commitId),
    length: Effect.sync(() => chain.length),
    readRange: (start, stop) => Effect.sync(() => chain.slice(start, stop + 1)),
    ready: Effect.succeed(READY)
  }
}

