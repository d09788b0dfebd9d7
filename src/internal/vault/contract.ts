/**
 * The token store's contract as types: the views `f` is handed, the store's shape and
 * its options. Declared here so the vault's internals can use them; `TokenStore`
 * re-exports them as the public API.
 */
import type * as Effect from "effect/Effect"
import type { FenceConflict, ReadError, StoreError } from "../../Errors.js"
import type { StoreOptions } from "../../StoreOptions.js"
import type { Readiness } from "../readiness.js"
import type { Version } from "./backing.js"

/** A token record: a JSON object `{ type, createdAt, expiresAt, metadata, envelope, aad }`. */
export type TokenRecord = Record<string, unknown>

/** The read view: synchronous, over one version of the vault. */
export interface ReadView {
  /** A private copy of the record (edit it freely), or undefined. */
  get(token: string): TokenRecord | undefined
  /** Every `[token, record]`, as a fresh Array; its records are frozen (use `get` for a copy to edit). */
  entries(): Array<[string, TokenRecord]>
}

/** The mutable view: changes are kept aside and committed together when `f` succeeds. */
export interface MutableView extends ReadView {
  /** Stages `record` for `token`; what it holds when `f` ends is what commits. */
  set(token: string, record: TokenRecord): void
  /** Stages the deletion of `token`; true if it existed. */
  delete(token: string): boolean
}

/** What `stats` reports: the stored version, size and change-log length. */
export interface VaultStats {
  readonly version: Version
  readonly size: number
  /**
   * Entries in the change log. On Redis: the last LOG_BOUND (1,000) and any younger than
   * 30 s (a re-sent call proves itself there); in memory, where nothing is re-sent, the
   * last LOG_BOUND only. Not a measure of the vault, only of what a replica can replay.
   */
  readonly logLength: number
}

export interface TokenStoreShape {
  readonly prefix: string
  /** Runs `f` until its diff commits on the current version; returns `f`'s value. */
  readonly mutate: <A, E, R>(
    f: (view: MutableView) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, Exclude<E, FenceConflict> | StoreError, R>
  /** Runs `f` over the current vault (as fresh as a full read), without a lock. */
  readonly read: <A, E, R>(f: (view: ReadView) => Effect.Effect<A, E, R>) => Effect.Effect<A, E | ReadError, R>
  readonly ready: Effect.Effect<Readiness>
  /** The stored version, size and change-log length. */
  readonly stats: Effect.Effect<VaultStats, ReadError>
}

export interface TokenStoreOptions extends StoreOptions {
  /** Key prefix; default "haechi:tv:" (use a hash tag such as "{haechi:tv}:" on a cluster). */
  readonly keyPrefix?: string
}
