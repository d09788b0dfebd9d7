/**
 * The shared audit chain, as haechi's core uses it: `transaction(build)` hands `build`
 * the last record's integrity and a `persist` that appends with a compare-and-append
 * fenced on the head, so the chain cannot fork whatever the lock does. A conflict
 * re-runs `build` on the new head under a bounded `Schedule`; running out fails closed.
 *
 * Fast path: the store keeps the head it last saw and hands it out without a read; a
 * stale head costs one rejected append whose reply carries the current head. One
 * round trip per append when uncontended.
 *
 * Exactly once: each append call carries a commit id (the script keeps the ids of the
 * last 1,000 appends by sequence). When a reply is lost, a re-sent call is recognised
 * by its id, and a failed call is resolved by looking its id up at its sequence before
 * anything is built again. Two replicas that build identical records still both land.
 */
import { nextCommitId } from "./CommitId.js"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import {
  CommitOutcomeUnknown,
  CorruptData,
  FenceConflict,
  InvalidConfig,
  InvalidRecord,
  type StoreError
} from "./Errors.js"
import {
  memoryAuditBacking,
  redisAuditBacking,
  isIntegrity,
  type AppendOutcome,
  type AuditBacking,
  type Integrity,
  type PreparedAppend
} from "./AuditBacking.js"
import { auditKeys, DEFAULT_AUDIT_PREFIX } from "./Keys.js"
import * as Metrics from "./Metrics.js"
import { observed } from "./Observe.js"
import type { Readiness } from "./Readiness.js"
import { RedisClient } from "./RedisClient.js"
import type { PlainOptions, StartupError } from "./StartupChecks.js"
import { setupRedisStore, type StoreOptions } from "./StoreOptions.js"
import { countConflict, defaultRetrySchedule, retryOnConflict } from "./Retry.js"
import { noGuard, noteClaim, type LockClaim } from "./StoreGuard.js"
import { checkWitness, type WitnessError, type WitnessOptions } from "./internal/checkpoint/witness.js"

export type { Integrity } from "./AuditBacking.js"

/** What `build` gets inside a transaction. */
export interface AuditTransaction {
  /** The last record's `auditIntegrity`, or null for the empty chain. */
  readonly readLastIntegrity: Effect.Effect<Integrity | null, StoreError>
  /**
   * Appends `record` if the head is still the one named by its `previousHash`;
   * fails with `FenceConflict` (and `build` re-runs) if another writer got there first.
   */
  readonly persist: (record: unknown) => Effect.Effect<void, FenceConflict | StoreError>
}

export interface AuditStoreShape {
  readonly prefix: string
  /** Runs `build` until its record commits on the true head; returns `build`'s value. */
  readonly transaction: <A, E, R>(
    build: (tx: AuditTransaction) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, Exclude<E, FenceConflict> | StoreError, R>
  /** `{ ok: true }`, or `{ ok: false, reason }` within about 2 s when Redis is gone or read-only. */
  readonly ready: Effect.Effect<Readiness>
  /** The current head's integrity, read from the store (not the cache). */
  readonly head: Effect.Effect<Integrity | null, StoreError>
  /** The number of records in the chain. */
  readonly length: Effect.Effect<number, StoreError>
  /** The chain's stored JSON in order, read in pages of `pageSize`, from list index `from`. */
  readonly readChainJson: (options?: { readonly pageSize?: number; readonly from?: number }) => Stream.Stream<string, StoreError>
  /** The chain's records in order, parsed, read in pages. */
  readonly readChain: (options?: { readonly pageSize?: number; readonly from?: number }) => Stream.Stream<Record<string, unknown>, StoreError>
}

export class AuditStore extends Context.Tag("haechi-store-effect/AuditStore")<AuditStore, AuditStoreShape>() {}

export interface AuditStoreOptions extends StoreOptions {
  /** Key prefix; default "haechi:audit:" (use a hash tag such as "{haechi:audit}:" on a cluster). */
  readonly keyPrefix?: string
  /** Redis only: refuse (before the store is handed out) a chain that does not hold the newest signed checkpoint; see Checkpoint.ts. */
  readonly witness?: WitnessOptions
}

/** Resolving a lost reply: ask again for a little while, Redis may be reconnecting. */
const resolveSchedule = Schedule.intersect(Schedule.spaced("100 millis"), Schedule.recurs(15))

/** The semantics over any backing. */
export const makeWith = (backing: AuditBacking, options: AuditStoreOptions = {}): AuditStoreShape => {
  const prefix = backing.keys.prefix
  const schedule = options.retry ?? defaultRetrySchedule
  const guard = options.guard ?? noGuard
  const afterCommit = options.afterCommit ?? Effect.void
  // The head this replica last saw; undefined when unknown. Only ever a hint: the
  // append is fenced, so a stale value costs one rejected append, never a fork.
  let cached: Integrity | null | undefined

  const readLastIntegrity: Effect.Effect<Integrity | null, StoreError> = Effect.suspend(() =>
    cached !== undefined
      ? Effect.succeed(cached === null ? null : { ...cached })
      : Effect.map(backing.readHead, (head) => {
          cached = head
          return head === null ? null : { ...head }
        })
  )

  const prepare = (record: unknown, claim: LockClaim | undefined): Effect.Effect<PreparedAppend, InvalidRecord> =>
    Effect.suspend(() => {
      const invalid = (reason: string) => Effect.fail(new InvalidRecord({ store: "audit", reason }))
      if (typeof record !== "object" || record === null || Array.isArray(record)) {
        return invalid("a record must be a JSON object")
      }
      const integrity = (record as { auditIntegrity?: unknown }).auditIntegrity
      if (!isIntegrity(integrity)) {
        return invalid(
          "auditIntegrity is missing or malformed (it needs eventHash, a sequence >= 1 and previousHash)"
        )
      }
      if (integrity.previousHash === null && integrity.sequence !== 1) {
        return invalid(`sequence ${integrity.sequence} has no previousHash; only sequence 1 may`)
      }
      if (cached && integrity.previousHash === cached.eventHash && integrity.sequence !== cached.sequence + 1) {
        return invalid(`sequence ${integrity.sequence} does not follow the head's ${cached.sequence}`)
      }
      let recordJson: string | undefined
      try {
        recordJson = JSON.stringify(record)
      } catch (error) {
        return invalid(`not JSON-serializable (${error instanceof Error ? error.message : String(error)})`)
      }
      if (typeof recordJson !== "string") return invalid("not JSON-serializable")
      return Effect.succeed({
        expectedPrev: integrity.previousHash ?? "",
        recordJson,
        integrityJson: JSON.stringify(integrity),
        integrity: { ...integrity },
        eventHash: integrity.eventHash,
        sequence: integrity.sequence,
        commitId: nextCommitId(),
        claim
      })
    })

  // A call that got no answer may or may not have appended: find out before anything
  // is built again. Not found means it never will be: the lookup runs on the same
  // connection after the lost call, so that call has been executed or dropped by then.
  const appendOnce = (write: PreparedAppend): Effect.Effect<AppendOutcome, StoreError> =>
    backing.append(write).pipe(
      Effect.catchTag("RedisUnavailable", (lost) =>
        backing.isCommitted(write.sequence, write.commitId).pipe(
          Effect.retry({ schedule: resolveSchedule, while: (e) => e._tag === "RedisUnavailable" }),
          Effect.mapError(() => new CommitOutcomeUnknown({ store: "audit", prefix, cause: lost.cause })),
          Effect.tap(() => Metric.update(Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "audit")), 1)),
          Effect.map(
            (committed): AppendOutcome =>
              // (A lost call that asked for the lock may have taken it: count it as ours, so it is released.)
              committed
                ? { _tag: "AlreadyCommitted" }
                : { _tag: "Conflict", head: null, headHash: "?", tookLock: write.claim?.ask === true }
          ),
          Effect.tap((outcome) =>
            Effect.sync(() => {
              if (outcome._tag === "Conflict") cached = undefined
            })
          )
        )
      )
    )

  const persist = (claim: LockClaim | undefined) => (record: unknown): Effect.Effect<void, FenceConflict | StoreError> =>
    Effect.flatMap(prepare(record, claim), (write) =>
      Effect.flatMap(appendOnce(write), (outcome): Effect.Effect<void, FenceConflict | StoreError> => {
        noteClaim(claim, outcome)
        switch (outcome._tag) {
          case "Committed":
          case "AlreadyCommitted":
            cached = write.integrity
            return afterCommit
          case "LockHeld":
            return Effect.fail(new FenceConflict({ store: "audit", prefix, expected: write.expectedPrev, lockHeld: true }))
          case "Conflict":
            if (outcome.headHash !== "?") cached = outcome.head
            return Effect.fail(
              new FenceConflict({ store: "audit", prefix, expected: write.expectedPrev, actual: outcome.headHash })
            )
        }
      })
    )

  const tx: AuditTransaction = { readLastIntegrity, persist: persist(undefined) }
  const observeTransaction = observed("audit", "transaction", prefix)
  const observeHead = observed("audit", "head", prefix)
  const retryOptions = { store: "audit", prefix, operation: "transaction", schedule } as const
  const readChainJson = (opts: { readonly pageSize?: number; readonly from?: number } = {}) => {
    const pageSize = Math.max(1, Math.floor(opts.pageSize ?? 1000))
    return Stream.paginateChunkEffect(Math.max(0, opts.from ?? 0), (start) =>
      Effect.map(backing.readRange(start, start + pageSize - 1), (page) => [
        Chunk.unsafeFromArray(page as Array<string>),
        page.length === pageSize ? Option.some(start + pageSize) : Option.none()
      ] as const)
    )
  }

  return {
    prefix,
    transaction: (build) =>
      guard({
        // A lock-free attempt of the adaptive policy: it yields to a writer holding the lock.
        attempt: (claim) => countConflict(retryOptions)(build({ readLastIntegrity, persist: persist(claim) })),
        retrying: (fresh) =>
          Effect.zipRight(
            fresh ? Effect.sync(() => (cached = undefined)) : Effect.void,
            retryOnConflict(() => build(tx), retryOptions)
          )
      }).pipe(observeTransaction) as never,
    ready: backing.ready,
    head: backing.readHead.pipe(observeHead),
    length: backing.length,
    readChainJson,
    readChain: (opts) =>
      readChainJson(opts).pipe(
        Stream.zipWithIndex,
        Stream.mapEffect(([json, index]) =>
          Effect.try({
            try: () => JSON.parse(json) as Record<string, unknown>,
            catch: () =>
              new CorruptData({ key: backing.keys.chain, element: (opts?.from ?? 0) + index, detail: "not JSON" })
          })
        )
      )
  }
}

/** The store on Redis; `RedisClient` supplies the connection. */
export function make(options?: AuditStoreOptions & PlainOptions & { readonly witness?: undefined }): Effect.Effect<AuditStoreShape, InvalidConfig, RedisClient>
export function make(options?: AuditStoreOptions): Effect.Effect<AuditStoreShape, InvalidConfig | StartupError | WitnessError, RedisClient>
export function make(options: AuditStoreOptions = {}): Effect.Effect<AuditStoreShape, InvalidConfig | StartupError | WitnessError, RedisClient> {
  return Effect.gen(function* () {
    const redis = yield* RedisClient
    const setup = yield* setupRedisStore(redis, options, DEFAULT_AUDIT_PREFIX, auditKeys)
    if (options.witness !== undefined) yield* checkWitness(redis, auditKeys(setup.prefix), options.witness)
    return makeWith(redisAuditBacking(redis, setup.prefix), { ...options, guard: setup.guard, afterCommit: setup.afterCommit })
  })
}

/** The audit store on Redis, as a layer. */
export function layer(options?: AuditStoreOptions & PlainOptions & { readonly witness?: undefined }): Layer.Layer<AuditStore, InvalidConfig, RedisClient>
export function layer(options?: AuditStoreOptions): Layer.Layer<AuditStore, InvalidConfig | StartupError | WitnessError, RedisClient>
export function layer(options: AuditStoreOptions = {}): Layer.Layer<AuditStore, InvalidConfig | StartupError | WitnessError, RedisClient> {
  return Layer.effect(AuditStore, make(options))
}

/** An in-memory audit store (one process only): same contract, same atomicity. */
export const layerMemory = (options: Omit<AuditStoreOptions, "guard"> = {}): Layer.Layer<AuditStore> =>
  Layer.sync(AuditStore, () => makeWith(memoryAuditBacking(options.keyPrefix), options))
