/**
 * Every way a store operation can fail, as tagged errors a caller can match on.
 *
 * Each error carries the fields that name the situation (the key prefix, the key,
 * the attempt count, the cause) so a log line or a `catchTag` handler needs nothing
 * else. None of them ever carries a payload, a URL or a password.
 */
import * as Data from "effect/Data"
import { messageOf } from "./internal/errorMessage.js"

/** Which of the two stores an error came from. */
export type StoreKind = "audit" | "vault"

/**
 * A fenced write was rejected because another writer committed first (the chain
 * head or the vault version moved). The operation re-runs under its retry
 * `Schedule`; callers only see this error if they drive the primitives themselves.
 */
export class FenceConflict extends Data.TaggedError("FenceConflict")<{
  readonly store: StoreKind
  readonly prefix: string
  /** The head hash or version the write was built on ("" = empty / never mutated). */
  readonly expected: string
  /** What the fence found instead, when the reply said. */
  readonly actual?: string | undefined
  /** The write was a lock-free attempt that yielded to another writer holding the lock. */
  readonly lockHeld?: boolean | undefined
  /**
   * What the lock-free attempt did with the store's lock (the adaptive policy's claim):
   * "took" it, "gaveBack" (a commit on the way released it), "left" it; absent: unknown.
   */
  readonly lockClaim?: "took" | "gaveBack" | "left" | undefined
}> {
  override get message() {
    return this.lockHeld
      ? `${this.store} store ${this.prefix}: yielded to the holder of the store's lock (nothing written)`
      : `${this.store} store ${this.prefix}: fence conflict (built on "${this.expected}", found "${this.actual ?? "?"}")`
  }
}

/** Fence conflicts outlasted the retry schedule. Nothing was written (fail closed). */
export class RetriesExhausted extends Data.TaggedError("RetriesExhausted")<{
  readonly store: StoreKind
  readonly prefix: string
  readonly operation: string
  readonly attempts: number
}> {
  override get message() {
    return `${this.store} store ${this.prefix}: ${this.operation} gave up after ${this.attempts} fence conflicts; nothing was written`
  }
}

/** Redis could not be reached (connection refused or lost, timeout, client closed). */
export class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message() {
    return `redis unavailable during ${this.operation}: ${messageOf(this.cause)}`
  }
}

/** Redis answered with an error reply (READONLY, NOPERM, OOM, a script error, ...). */
export class RedisCommandFailed extends Data.TaggedError("RedisCommandFailed")<{
  readonly operation: string
  readonly reply: string
  readonly cause: unknown
}> {
  override get message() {
    return `redis refused ${this.operation}: ${this.reply}`
  }
}

/**
 * A write's outcome could not be established: the reply was lost and Redis could not
 * be asked afterwards whether the write landed, or a call answered as a conflict was too
 * old for Redis's kept commit ids to prove that an earlier send of it (ioredis re-sends
 * after a reconnect) had not committed. The caller must not assume either way.
 */
export class CommitOutcomeUnknown extends Data.TaggedError("CommitOutcomeUnknown")<{
  readonly store: StoreKind
  readonly prefix: string
  readonly cause: unknown
}> {
  override get message() {
    return `${this.store} store ${this.prefix}: the outcome of a commit is unknown (${messageOf(this.cause)})`
  }
}

/**
 * An operation did not finish within its deadline (the `timeout` option, on real time).
 * Nothing it sent can have committed; where a commit may have landed the operation fails
 * with `CommitOutcomeUnknown` instead (this error is then its `cause`).
 */
export class OperationTimeout extends Data.TaggedError("OperationTimeout")<{
  /** What did not finish, e.g. "audit transaction" or "lock acquire jobs:nightly". */
  readonly operation: string
  readonly timeoutMs: number
}> {
  override get message() {
    return `${this.operation} did not finish within ${this.timeoutMs} ms`
  }
}

/** Data found in Redis is not what the store wrote: it is reported, never overwritten. */
export class CorruptData extends Data.TaggedError("CorruptData")<{
  readonly key: string
  /** The list index, hash field or token id inside `key`, when the damage is in one element. */
  readonly element?: string | number | undefined
  readonly detail: string
}> {
  override get message() {
    const at = this.element === undefined ? "" : ` at ${JSON.stringify(this.element)}`
    return `corrupt data in ${this.key}${at}: ${this.detail}`
  }
}

/** A record handed to the store is not what the contract says; nothing was written. */
export class InvalidRecord extends Data.TaggedError("InvalidRecord")<{
  readonly store: StoreKind
  /** The token id, for the vault. */
  readonly token?: string | undefined
  readonly reason: string
}> {
  override get message() {
    const what = this.store === "audit" ? "audit record" : `token record ${JSON.stringify(this.token)}`
    return `invalid ${what}: ${this.reason}`
  }
}

/**
 * The chain's head keys and its list disagree (a head key lost or rewritten, the list
 * cut or replaced): appending could fork or restart the chain, so nothing is written and
 * the keys are left as they are for an operator to inspect.
 */
export class ChainBroken extends Data.TaggedError("ChainBroken")<{
  readonly prefix: string
  /** The keys that disagree, by full name. */
  readonly keys: ReadonlyArray<string>
  /** What disagrees, for example "head:hash is missing while chain holds 12 records". */
  readonly detail: string
}> {
  override get message() {
    return `audit store ${this.prefix}: chain broken (${this.detail}; keys ${this.keys.join(", ")}); nothing was written`
  }
}

/** A point of the chain a replica saw: the record at `sequence` had `eventHash`. */
export interface ChainPoint {
  readonly sequence: number
  readonly eventHash: string
}

/**
 * The chain no longer continues what this replica saw: it is shorter than the head the
 * replica last saw, empty, or holds another record at that sequence (a failover to a
 * lagging replica, FLUSHALL, eviction, a restored snapshot). `current` is null for an
 * empty chain.
 */
export class ChainRewound extends Data.TaggedError("ChainRewound")<{
  readonly prefix: string
  readonly seen: ChainPoint
  readonly current: ChainPoint | null
}> {
  override get message() {
    const now =
      this.current === null ? "an empty chain" : `sequence ${this.current.sequence} (${this.current.eventHash})`
    return `audit store ${this.prefix}: the chain was rewound: this replica saw sequence ${this.seen.sequence} (${this.seen.eventHash}), Redis now holds ${now}`
  }
}

/**
 * `persist` was called a second time in one audit transaction (haechi's core calls it
 * once): the second record was not written. `first` says what became of the first one.
 */
export class PersistCalledTwice extends Data.TaggedError("PersistCalledTwice")<{
  readonly prefix: string
  /** The first call's outcome when the second came: still running, committed, or failed. */
  readonly first: "pending" | "committed" | "failed"
}> {
  override get message() {
    const first =
      this.first === "committed" ? "was committed" : this.first === "failed" ? "failed" : "was still running"
    return `audit store ${this.prefix}: persist was called twice in one transaction (the first record ${first}); the second was not written`
  }
}

/**
 * `persist` was called once its transaction had ended (a Promise caller's `fn`, or an
 * Effect `build`, that kept its transaction and used it later): the record was not
 * written, as it would belong to no operation (no deadline, no retry).
 */
export class PersistAfterTransaction extends Data.TaggedError("PersistAfterTransaction")<{
  readonly prefix: string
}> {
  override get message() {
    return `audit store ${this.prefix}: persist was called after its transaction had ended; the record was not written`
  }
}

/**
 * A token store's mutable view was written (`set` or `delete`) after its `mutate` had
 * ended (a caller that kept the view and used it later, or whose `fn` outlived its
 * deadline): the change was not written, as it would belong to no commit. Thrown by the
 * view's method itself, to the code that made the late call.
 */
export class ViewChangedAfterMutate extends Data.TaggedError("ViewChangedAfterMutate")<{
  readonly prefix: string
  readonly token: string
}> {
  override get message() {
    return `token store ${this.prefix}: ${JSON.stringify(this.token)} was changed through a view after its mutate had ended; nothing was written`
  }
}

/** An option is unusable (for example a key prefix that cannot work on a Redis Cluster). */
export class InvalidConfig extends Data.TaggedError("InvalidConfig")<{
  readonly option: string
  readonly reason: string
}> {
  override get message() {
    return `invalid ${this.option}: ${this.reason}`
  }
}

/** The lock was not acquired within the wait bound; the guarded work did not run. */
export class LockTimeout extends Data.TaggedError("LockTimeout")<{
  readonly key: string
  readonly waitedMs: number
}> {
  override get message() {
    return `timed out after ${this.waitedMs} ms waiting for lock ${this.key}`
  }
}

/** A held lock expired or was taken by another holder; the work under it was interrupted. */
export class LockLost extends Data.TaggedError("LockLost")<{
  readonly key: string
  readonly reason: "expired" | "taken" | "unreachable"
}> {
  override get message() {
    return `lost lock ${this.key} (${this.reason})`
  }
}

/** A durable commit (WAIT / WAITAOF) was not acknowledged in time. The record is committed on the master. */
export class DurabilityTimeout extends Data.TaggedError("DurabilityTimeout")<{
  readonly prefix: string
  readonly wanted: string
  readonly acknowledged: string
}> {
  override get message() {
    return `${this.prefix}: durability not reached in time (wanted ${this.wanted}, acknowledged ${this.acknowledged})`
  }
}

/**
 * The Redis configuration can lose acknowledged records: its eviction policy can evict
 * the stores' keys, or it persists nothing (start-up checks with `onProblem: "fail"`).
 */
export class UnsafeRedisConfig extends Data.TaggedError("UnsafeRedisConfig")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message() {
    return `unsafe Redis configuration: ${this.problems.join("; ")}`
  }
}

/** Errors from talking to Redis. */
export type RedisError = RedisUnavailable | RedisCommandFailed

/**
 * What a store's reads (`head`, `length`, `headKeys`, chain pages, the vault's `read` and
 * `stats`) can fail with: Redis, data it cannot trust, the deadline. Never a write's
 * errors (`RetriesExhausted`, `LockLost`, `CommitOutcomeUnknown`, ...).
 */
export type ReadError = RedisError | CorruptData | OperationTimeout

/** What a store operation can fail with, besides the caller's own errors. */
export type StoreError =
  | RetriesExhausted
  | RedisError
  | CommitOutcomeUnknown
  | CorruptData
  | InvalidRecord
  | ChainBroken
  | ChainRewound
  | PersistCalledTwice
  | PersistAfterTransaction
  | LockTimeout
  | LockLost
  | DurabilityTimeout
  | OperationTimeout

// ---------------------------------------------------------------------------
// Checkpoints (see Checkpoint.ts)

/**
 * A checkpoint key could not be used: a key file that is missing, unreadable or not a
 * signing key, or a verifier key that is malformed. Names where the key came from and
 * what is wrong with it; never any key material.
 */
export class CheckpointKeyInvalid extends Data.TaggedError("CheckpointKeyInvalid")<{
  /** The key file's path, or "verifier key". */
  readonly source: string
  readonly reason: string
}> {
  override get message() {
    return `checkpoint key ${this.source}: ${this.reason}`
  }
}

/**
 * A signed checkpoint note was refused: it does not parse strictly as a C2SP signed note
 * with a checkpoint body, or it carries no valid signature by the trusted key, or a
 * signature by that key fails to verify (an altered note). `note` is its 1-based position
 * in the text or file it was read from.
 */
export class CheckpointNoteRejected extends Data.TaggedError("CheckpointNoteRejected")<{
  readonly note?: number | undefined
  readonly reason: string
}> {
  override get message() {
    return `checkpoint note${this.note === undefined ? "" : ` ${this.note}`} refused: ${this.reason}`
  }
}

/** A checkpoint as this package signs it: the chain had `size` records, the last with `hash`. */
export interface CheckpointPoint {
  readonly origin: string
  readonly size: number
  readonly hash: string
}

/**
 * The chain does not hold a signed checkpoint: it is shorter than the checkpoint's size,
 * or the record at that sequence is not the checkpointed one (a rewrite, a truncation, a
 * chain replaced after FLUSHALL). A witness store refuses to append to it, and the
 * checkpointer refuses to sign past it. `found` is what the chain holds at that
 * sequence (null when it is shorter).
 */
export class ChainMissesCheckpoint extends Data.TaggedError("ChainMissesCheckpoint")<{
  readonly prefix: string
  readonly checkpoint: CheckpointPoint
  readonly found: ChainPoint | null
}> {
  override get message() {
    const c = this.checkpoint
    const found =
      this.found === null ? "the chain is shorter" : `sequence ${this.found.sequence} has ${this.found.eventHash}`
    return `audit store ${this.prefix}: the chain does not hold checkpoint ${c.origin} ${c.size} ${c.hash} (${found}); nothing was written`
  }
}

/** A checkpoint sink (a file, stdout, the caller's function) failed to take a note. */
export class CheckpointSinkFailed extends Data.TaggedError("CheckpointSinkFailed")<{
  readonly sink: string
  readonly cause: unknown
}> {
  override get message() {
    return `checkpoint sink ${this.sink} failed: ${messageOf(this.cause)}`
  }
}
