/**
 * The audit store's contract as types, declared here for the internals and re-exported by
 * `AuditStore` (which documents them): what `build` gets inside a transaction, and the
 * store's operations.
 */
import type { AuditIntegrity } from "../../Chain.js"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { FenceConflict, ReadError, StoreError } from "../../Errors.js"
import type { Readiness } from "../readiness.js"
import type { HeadKeys } from "./chainHead.js"

/** What `build` gets inside a transaction. */
export interface AuditTransaction {
  /**
   * The last record's `auditIntegrity`, or null for the empty chain. A head the replica
   * has cached when this property is read is a ready value (an `Exit`); else it is read
   * from Redis when the effect runs.
   */
  readonly readLastIntegrity: Effect.Effect<AuditIntegrity | null, StoreError>
  /**
   * Appends `record` if the head is still the one named by its `previousHash`;
   * fails with `FenceConflict` (and `build` re-runs) if another writer got there first.
   */
  readonly persist: (record: unknown) => Effect.Effect<void, FenceConflict | StoreError>
}

/** Where `readChainJson` and `readChain` start and how much each read takes. */
export interface ChainReadOptions {
  readonly pageSize?: number
  readonly from?: number
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
  readonly head: Effect.Effect<AuditIntegrity | null, ReadError>
  /** The number of records in the chain. */
  readonly length: Effect.Effect<number, ReadError>
  /** The head keys and the list's end, read at one instant (see `internal/chainHead`). */
  readonly headKeys: Effect.Effect<HeadKeys, ReadError>
  /** The chain's stored JSON in order, read in pages of `pageSize`, from list index `from`. */
  readonly readChainJson: (options?: ChainReadOptions) => Stream.Stream<string, ReadError>
  /** The chain's records in order, parsed, read in pages. */
  readonly readChain: (options?: ChainReadOptions) => Stream.Stream<Record<string, unknown>, ReadError>
}
