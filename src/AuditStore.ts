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
 * Continuity (checked by the fenced append itself, so still one round trip): a record
 * commits only if the head keys agree with the list (else `ChainBroken`, nothing
 * written, never a new genesis on a non-empty list), it is the head's successor (else
 * `InvalidRecord`, whatever this replica cached), and the chain still holds the latest
 * head this replica saw (else a rewind: counted, logged, then `onRewind` records the gap
 * in the chain or fails with `ChainRewound`). Nothing found inconsistent is overwritten.
 * Before that, a record JSON would not store as it was hashed is `InvalidRecord` naming
 * the path (`jsonProblem`); `verifyRecords: "full"` also recomputes its eventHash.
 *
 * Exactly once: each append call carries a commit id (the script keeps the ids of the
 * last 1,000 appends by sequence). When a reply is lost, a re-sent call is recognised
 * by its id, and a failed call is resolved by looking its id up at its sequence before
 * anything is built again. Two replicas that build identical records still both land.
 */
import { nextCommitId } from "./internal/commitId.js"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { type AuditIntegrity, buildNextRecord, computeEventHash } from "./Chain.js"
import {
  ChainRewound,
  type ChainPoint,
  CommitOutcomeUnknown,
  CorruptData,
  FenceConflict,
  InvalidConfig,
  InvalidRecord,
  PersistCalledTwice,
  type StoreError
} from "./Errors.js"
import type { ReadError } from "./Errors.js"
import type { HeadKeys } from "./internal/audit/chainHead.js"
import { isPlainObject, jsonProblem } from "./internal/jsonRecord.js"
import { rewindEvent } from "./internal/audit/rewindRecord.js"
import {
  memoryAuditBacking,
  redisAuditBacking,
  isIntegrity,
  type AppendOutcome,
  type AuditBacking,
  type Integrity,
  type PreparedAppend
} from "./internal/audit/backing.js"
import { committing, unsafeTimeoutMsOf, within, withinRead } from "./internal/deadline.js"
import { auditKeys, DEFAULT_AUDIT_PREFIX } from "./internal/keys.js"
import * as Metrics from "./Metrics.js"
import { observed } from "./internal/observe.js"
import type { Readiness } from "./internal/readiness.js"
import { RedisClient } from "./RedisClient.js"
import type { PlainOptions, StartupError } from "./internal/startupChecks.js"
import { optionsFromConfig, setupRedisStore, storeConfig, type StoreConfig, type StoreOptions } from "./StoreOptions.js"
import { defaultRetrySchedule, withRetryBudget } from "./Retry.js"
import { resolveSchedule } from "./internal/schedules.js"
import { DEFAULT_PAGE_SIZE } from "./internal/chainPages.js"
import { noGuard, noteClaim, type LockClaim } from "./internal/storeGuard.js"
import { checkWitness, type WitnessError, type WitnessOptions } from "./internal/checkpoint/witness.js"

export type { Integrity } from "./internal/audit/backing.js"

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
  readonly head: Effect.Effect<Integrity | null, ReadError>
  /** The number of records in the chain. */
  readonly length: Effect.Effect<number, ReadError>
  /** The head keys and the list's end, read at one instant (see `internal/chainHead`). */
  readonly headKeys: Effect.Effect<HeadKeys, ReadError>
  /** The chain's stored JSON in order, read in pages of `pageSize`, from list index `from`. */
  readonly readChainJson: (options?: { readonly pageSize?: number; readonly from?: number }) => Stream.Stream<string, ReadError>
  /** The chain's records in order, parsed, read in pages. */
  readonly readChain: (options?: { readonly pageSize?: number; readonly from?: number }) => Stream.Stream<Record<string, unknown>, ReadError>
}

export class AuditStore extends Context.Tag("haechi-store-effect/AuditStore")<AuditStore, AuditStoreShape>() {}

/**
 * What a replica does when the chain no longer holds a head it saw (`ChainRewound`):
 * "record" appends, on the current head, a record naming the lost head and when it was
 * detected, then goes on; "fail" fails every append with `ChainRewound` until the chain
 * holds that head again (or the process restarts).
 */
export type OnRewind = "record" | "fail"

/**
 * What is checked of a record before it is persisted: "chain" (default) its place in
 * the chain (inside the fenced script) and that JSON stores it as it is; "full" also
 * recomputes its eventHash (json-stable-v1) and refuses a mismatch.
 */
export type VerifyRecords = "chain" | "full"

export interface AuditStoreOptions extends StoreOptions {
  /** Key prefix; default "haechi:audit:" (use a hash tag such as "{haechi:audit}:" on a cluster). */
  readonly keyPrefix?: string
  /** On a rewound chain: "record" (default) or "fail"; see `OnRewind`. */
  readonly onRewind?: OnRewind
  /** "chain" (default) or "full"; see `VerifyRecords`. */
  readonly verifyRecords?: VerifyRecords
  /** Redis only: refuse (before the store is handed out) a chain that does not hold the newest signed checkpoint; see Checkpoint.ts. */
  readonly witness?: WitnessOptions
}

/** `InvalidConfig` for an `onRewind` or `verifyRecords` the store does not know, else undefined. */
export const checkAuditOptions = (options: AuditStoreOptions): InvalidConfig | undefined => {
  const { onRewind, verifyRecords } = options
  if (onRewind !== undefined && onRewind !== "record" && onRewind !== "fail") {
    return new InvalidConfig({ option: "onRewind", reason: `must be "record" or "fail", got ${JSON.stringify(onRewind) ?? typeof onRewind}` })
  }
  if (verifyRecords !== undefined && verifyRecords !== "chain" && verifyRecords !== "full") {
    return new InvalidConfig({
      option: "verifyRecords",
      reason: `must be "chain" or "full", got ${JSON.stringify(verifyRecords) ?? typeof verifyRecords}`
    })
  }
  return undefined
}

const pointOf = (head: Integrity | null): ChainPoint | null =>
  head === null ? null : { sequence: head.sequence, eventHash: head.eventHash }

const samePoint = (a: ChainPoint, b: ChainPoint | null): boolean =>
  b !== null && a.sequence === b.sequence && a.eventHash === b.eventHash

/** Why a record whose parent is not a record of the chain was refused. */
const notSuccessor = (write: PreparedAppend, head: Integrity | null): string => {
  const headSequence = head?.sequence ?? 0
  if (write.expectedPrev === (head?.eventHash ?? "")) {
    return `sequence ${write.sequence} does not follow the head's ${headSequence}`
  }
  if (write.sequence - 1 > headSequence) return `sequence ${write.sequence} skips ahead of the head's ${headSequence}`
  return `previousHash ${write.expectedPrev} is not the eventHash of the chain's record ${write.sequence - 1}`
}

/** Whether an append took effect (for the deadline: after it, a timeout cannot say "nothing committed"). */
const landed = (outcome: AppendOutcome): boolean => outcome._tag === "Committed" || outcome._tag === "AlreadyCommitted"

/** The semantics over any backing. Throws `InvalidConfig` for an unusable `onRewind` or `verifyRecords`. */
export const makeWith = (backing: AuditBacking, options: AuditStoreOptions = {}): AuditStoreShape => {
  const invalidOption = checkAuditOptions(options)
  if (invalidOption !== undefined) throw invalidOption
  const prefix = backing.keys.prefix
  const schedule = options.retry ?? defaultRetrySchedule
  const guard = options.guard ?? noGuard
  const afterCommit = options.afterCommit ?? Effect.void
  const timeoutMs = unsafeTimeoutMsOf(options.timeout)
  const bounded = (operation: string) => within({ store: "audit", prefix, operation: `audit ${operation}`, timeoutMs })
  const boundedRead = (operation: string) => withinRead({ store: "audit", prefix, operation: `audit ${operation}`, timeoutMs })
  const onRewind: OnRewind = options.onRewind ?? "record"
  const fullCheck = options.verifyRecords === "full"
  const rewindCounter = Metrics.chainRewinds.pipe(Metric.tagged("prefix", prefix))
  // What `readLastIntegrity` hands out; undefined when it must be read. Only ever a hint:
  // the append is fenced, so a stale value costs one rejected append, never a fork.
  let hint: Integrity | null | undefined
  // The latest head this replica has proof Redis held (a commit, a conflict reply, or a
  // fresh read that continues it: see `readFresh`): every append asks the script to
  // check the chain still holds it (free when the record is built on it), so a rewind
  // is seen however the head was learned since. Never cleared by re-reading the head.
  let seen: ChainPoint | null = null
  // The last rewind reported (counted and logged once, however many attempts meet it).
  let reported: ChainPoint | null = null

  /** A head learned from a commit or from a reply the script checked against `seen`. */
  const learn = (head: Integrity | null) => {
    hint = head
    seen = pointOf(head)
  }

  // A head read fresh is one this replica saw when the chain held `seen` with it (read at
  // one instant): then it becomes `seen`, so losing it before this replica commits on it
  // is a rewind too. One that does not continue `seen` (shorter, or `seen` gone) leaves
  // `seen` as it is, and the next append reports the rewind.
  const readFresh = (known: ChainPoint | null): Effect.Effect<Integrity | null, StoreError> =>
    known === null
      ? Effect.map(backing.readHead, (head) => {
          seen ??= pointOf(head)
          return head
        })
      : Effect.map(backing.readHeadOver(known), ({ head, holdsSeen }) => {
          if (holdsSeen && head !== null && head.sequence >= known.sequence && seen === known) seen = pointOf(head)
          return head
        })

  const readLastIntegrity: Effect.Effect<Integrity | null, StoreError> = Effect.suspend(() =>
    hint !== undefined
      ? Effect.succeed(hint === null ? null : { ...hint })
      : Effect.map(readFresh(seen), (head) => {
          hint = head
          return head === null ? null : { ...head }
        })
  )

  const prepare = (
    record: unknown,
    claim: LockClaim | undefined,
    seenNow: ChainPoint | null
  ): Effect.Effect<PreparedAppend, InvalidRecord> =>
    Effect.suspend(() => {
      const invalid = (reason: string) => Effect.fail(new InvalidRecord({ store: "audit", reason }))
      if (!isPlainObject(record)) return invalid("a record must be a plain JSON object")
      const integrity = record.auditIntegrity
      if (!isIntegrity(integrity)) {
        return invalid(
          "auditIntegrity is missing or malformed (it needs eventHash, a sequence >= 1 and previousHash)"
        )
      }
      if ((integrity.previousHash === null) !== (integrity.sequence === 1)) {
        return invalid(`sequence ${integrity.sequence} with previousHash ${JSON.stringify(integrity.previousHash)}: only sequence 1 has previousHash null`)
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
      return Effect.succeed({
        expectedPrev: integrity.previousHash ?? "",
        recordJson: JSON.stringify(record),
        integrityJson: JSON.stringify(integrity),
        integrity: { ...integrity },
        eventHash: integrity.eventHash,
        sequence: integrity.sequence,
        commitId: nextCommitId(),
        seen: seenNow,
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
          )
        )
      )
    )

  const conflict = (write: PreparedAppend, outcome: AppendOutcome) =>
    new FenceConflict({
      store: "audit",
      prefix,
      expected: write.expectedPrev,
      ...(outcome._tag === "LockHeld" ? { lockHeld: true } : outcome._tag === "Conflict" ? { actual: outcome.headHash } : {})
    })

  /** One fenced append of a prepared record, and what it teaches about the head. */
  const settle = (write: PreparedAppend, outcome: AppendOutcome): Effect.Effect<void, FenceConflict | StoreError> => {
    switch (outcome._tag) {
      case "Committed":
      case "AlreadyCommitted":
        noteClaim(write.claim, outcome)
        learn(write.integrity)
        return afterCommit
      case "LockHeld":
        noteClaim(write.claim, outcome)
        return Effect.fail(conflict(write, outcome))
      case "Conflict":
        noteClaim(write.claim, outcome)
        // The script checked the reply's head continues `seen`; "?" is a lost reply's.
        if (outcome.headHash === "?") hint = undefined
        else learn(outcome.head)
        return Effect.fail(conflict(write, outcome))
      // (Neither touched the lock: a claim this operation holds stays held and is given back by the guard.)
      case "Rewound":
        return rewound(write.seen ?? { sequence: 0, eventHash: "" }, outcome.head, write.claim)
      case "NotSuccessor": {
        const parent = { sequence: write.sequence - 1, eventHash: write.expectedPrev }
        // A parent this replica saw in Redis and that the chain no longer holds is a rewind.
        if (parent.sequence >= 1 && (samePoint(parent, seen) || samePoint(parent, pointOf(hint ?? null)))) {
          return rewound(parent, outcome.head, write.claim)
        }
        return Effect.fail(new InvalidRecord({ store: "audit", reason: notSuccessor(write, outcome.head) }))
      }
    }
  }

  /** The chain no longer holds `lost`: counted and logged once, then the `onRewind` policy. */
  const rewound = (lost: ChainPoint, current: Integrity | null, claim: LockClaim | undefined) => {
    const error = new ChainRewound({ prefix, seen: lost, current: pointOf(current) })
    const report = samePoint(lost, reported)
      ? Effect.void
      : Effect.zipRight(
          Effect.sync(() => (reported = lost)),
          Effect.zipRight(
            Metric.increment(rewindCounter),
            Effect.logError(error.message).pipe(
              Effect.annotateLogs({ "haechi.prefix": prefix, "haechi.on_rewind": onRewind })
            )
          )
        )
    hint = undefined
    return Effect.zipRight(report, onRewind === "fail" ? Effect.fail(error) : recordRewind(error, current, claim))
  }

  /**
   * `onRewind: "record"`: appends, on the current head, a record naming the lost head, so
   * the gap is part of the chain; then a fence conflict re-runs the caller's build on it.
   */
  const recordRewind = (
    error: ChainRewound,
    current: Integrity | null,
    claim: LockClaim | undefined
  ): Effect.Effect<never, FenceConflict | StoreError> =>
    Effect.gen(function* () {
      const detectedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
      const event = rewindEvent({ lost: error.seen, resumedOn: error.current, detectedAt })
      const gap = buildNextRecord(event, current as AuditIntegrity | null)
      const write = yield* prepare(gap, claim, error.current)
      const outcome = yield* committing(appendOnce(write), landed)
      if (outcome._tag === "Rewound" || outcome._tag === "NotSuccessor") return yield* Effect.fail(error)
      if (outcome._tag === "Conflict" && outcome.headHash !== "?") {
        // Not learned as `seen`: the lost head stays the one to prove, so the next attempt records it again.
        noteClaim(claim, outcome)
        hint = outcome.head
        return yield* Effect.fail(conflict(write, outcome))
      }
      yield* settle(write, outcome)
      yield* Effect.logWarning(`audit store ${prefix}: recorded the rewind at sequence ${write.sequence}`)
      // The caller's record was built on the lost head: rebuild it on the new one.
      return yield* Effect.fail(new FenceConflict({ store: "audit", prefix, expected: error.seen.eventHash, actual: write.eventHash }))
    })

  const persist = (claim: LockClaim | undefined, state: { first: "pending" | "committed" | "failed" | undefined }) =>
  (record: unknown): Effect.Effect<void, FenceConflict | StoreError> =>
    Effect.suspend(() => {
      if (state.first !== undefined) return Effect.fail(new PersistCalledTwice({ prefix, first: state.first }))
      state.first = "pending"
      return Effect.flatMap(prepare(record, claim, seen), (write) =>
        Effect.flatMap(committing(appendOnce(write), landed), (outcome) => settle(write, outcome))
      ).pipe(
        Effect.onExit((exit) => Effect.sync(() => (state.first = Exit.isSuccess(exit) ? "committed" : "failed")))
      )
    })

  /** A transaction's view: one `persist` per attempt (each re-run of `build` gets a new one). */
  const txFor = (claim: LockClaim | undefined): AuditTransaction => ({
    readLastIntegrity,
    persist: persist(claim, { first: undefined })
  })
  const observeTransaction = observed("audit", "transaction", prefix)
  const observeHead = observed("audit", "head", prefix)
  const observeLength = observed("audit", "length", prefix)
  const boundTransaction = bounded("transaction")
  const boundHead = boundedRead("head")
  const boundLength = boundedRead("length")
  const boundPage = boundedRead("chain page")
  const retryOptions = { store: "audit", prefix, operation: "transaction", schedule } as const
  const readChainJson = (opts: { readonly pageSize?: number; readonly from?: number } = {}) => {
    const pageSize = Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE))
    return Stream.paginateChunkEffect(Math.max(0, opts.from ?? 0), (start) =>
      Effect.map(boundPage(backing.readRange(start, start + pageSize - 1)), (page) => [
        Chunk.unsafeFromArray(page as Array<string>),
        page.length === pageSize ? Option.some(start + pageSize) : Option.none()
      ] as const)
    )
  }

  return {
    prefix,
    transaction: (build) =>
      withRetryBudget(retryOptions, (budget) =>
        guard({
          // A lock-free attempt of the adaptive policy: it yields to a writer holding the lock.
          attempt: (claim) => budget.attempt(build(txFor(claim))),
          retrying: (fresh) =>
            Effect.zipRight(
              fresh ? Effect.sync(() => (hint = undefined)) : Effect.void,
              budget.retrying(Effect.suspend(() => build(txFor(undefined))))
            )
        })
      ).pipe(boundTransaction, observeTransaction) as never,
    ready: backing.ready,
    head: backing.readHead.pipe(boundHead, observeHead),
    length: backing.length.pipe(boundLength, observeLength),
    headKeys: boundedRead("head keys")(backing.readHeadKeys),
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
    const invalid = checkAuditOptions(options)
    if (invalid !== undefined) return yield* Effect.fail(invalid)
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

/** What `layerConfig` reads (see `storeConfig`). */
export { storeConfig, type StoreConfig } from "./StoreOptions.js"

/**
 * The audit store on Redis with its prefix, lock policy, retry attempts, durability
 * and timeout read from `Config` (default: `storeConfig("HAECHI_AUDIT")`, i.e. the
 * environment's `HAECHI_AUDIT_KEY_PREFIX`, `HAECHI_AUDIT_LOCK`, ...); `options` gives the rest,
 * and what the config sets wins over it.
 */
export const layerConfig = (
  config: Config.Config<StoreConfig> = storeConfig("HAECHI_AUDIT"),
  options: AuditStoreOptions = {}
): Layer.Layer<AuditStore, ConfigError.ConfigError | InvalidConfig | StartupError | WitnessError, RedisClient> =>
  Layer.unwrapEffect(Effect.map(config, (c) => layer({ ...options, ...optionsFromConfig(c) })))

/** An in-memory audit store (one process only): same contract, same atomicity. */
export const layerMemory = (options: Omit<AuditStoreOptions, "guard"> = {}): Layer.Layer<AuditStore> =>
  Layer.sync(AuditStore, () => makeWith(memoryAuditBacking(options.keyPrefix), options))
