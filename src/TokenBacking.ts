/**
 * The token vault's storage primitives, written once per backing: a compare-and-apply
 * of a diff fenced on the version (logging the changed token ids), the changes since a
 * version, and a paged full read that reports the version of each page. The contract
 * (synchronous views, the replica cache, retries, resolving a lost reply) lives once
 * above this, in TokenStore.
 */
import * as Effect from "effect/Effect"
import { CorruptData, type RedisError } from "./Errors.js"
import { vaultKeys, type VaultKeys } from "./Keys.js"
import { probe, READY, type Readiness } from "./Readiness.js"
import { wrongType, type RedisClientShape } from "./RedisClient.js"
import { Scripts } from "./Scripts.js"
import { claimArgs, type LockClaim } from "./StoreGuard.js"

/** The vault's version: "" before the first commit, then "1", "2", ... (haechi-store-redis's counter). */
export type Version = string

export interface VaultWrite {
  /** The version the diff was computed on. */
  readonly expected: Version
  readonly commitId: string
  readonly sets: ReadonlyArray<readonly [token: string, recordJson: string]>
  readonly deletes: ReadonlyArray<string>
  /**
   * Set for a lock-free attempt: it must not write while another writer holds the
   * store's lock, and it takes or gives back the lock as the claim says.
   */
  readonly claim: LockClaim | undefined
}

export type ApplyOutcome =
  | { readonly _tag: "Committed"; readonly version: Version }
  /** This commit id is already logged: a re-sent call whose reply was lost. */
  | { readonly _tag: "AlreadyCommitted"; readonly version: Version }
  /** `tookLock`: the attempt's claim asked for the lock and now holds it. */
  | { readonly _tag: "Conflict"; readonly version: Version; readonly tookLock: boolean }
  /** Another writer holds the lock and the attempt was asked to yield; nothing written. */
  | { readonly _tag: "LockHeld"; readonly version: Version }

export type Changes =
  | { readonly _tag: "Same"; readonly version: Version }
  /** The log cannot prove it is complete since the known version: read the vault in full. */
  | { readonly _tag: "Reload"; readonly version: Version }
  | {
      readonly _tag: "Delta"
      readonly version: Version
      /** Whether the commit id asked about is among the changes. */
      readonly found: boolean
      /** Each changed token with its current record JSON, null when deleted. */
      readonly changes: ReadonlyArray<readonly [string, string | null]>
    }

export interface ScanPage {
  readonly version: Version
  readonly cursor: string
  readonly entries: ReadonlyArray<readonly [string, string]>
}

export type BackingError = RedisError | CorruptData

export interface VaultBacking {
  readonly keys: VaultKeys
  readonly apply: (write: VaultWrite) => Effect.Effect<ApplyOutcome, BackingError>
  readonly changes: (known: Version, commitId: string) => Effect.Effect<Changes, BackingError>
  /** One page of a full read; start with cursor "0", done when the returned cursor is "0". */
  readonly scan: (cursor: string) => Effect.Effect<ScanPage, BackingError>
  /** The whole vault at one version, atomically (the fallback when paged reads cannot settle). */
  readonly snapshot: Effect.Effect<{ readonly version: Version; readonly entries: ReadonlyArray<readonly [string, string]> }, BackingError>
  readonly stats: Effect.Effect<{ readonly version: Version; readonly size: number; readonly logLength: number }, BackingError>
  readonly ready: Effect.Effect<Readiness>
}

/** How many commits the log keeps; a cache further behind reloads. */
export const LOG_BOUND = 1000
/** Full-read page size (HSCAN COUNT): small enough never to block Redis for long. */
export const SCAN_PAGE = 500

const parseVersion = (raw: unknown, key: string): Effect.Effect<Version, CorruptData> => {
  if (raw === null || raw === undefined) return Effect.succeed("")
  const text = String(raw)
  return /^\d+$/.test(text)
    ? Effect.succeed(text)
    : Effect.fail(new CorruptData({ key, detail: "the version is not a non-negative integer" }))
}

const pairs = (flat: ReadonlyArray<string>): Array<readonly [string, string]> => {
  const out: Array<readonly [string, string]> = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] as string, flat[i + 1] as string])
  return out
}

/** The vault on Redis, in haechi-store-redis's layout plus our change log. */
export const redisVaultBacking = (redis: RedisClientShape, prefix: string): VaultBacking => {
  const keys = vaultKeys(prefix)
  const three = [keys.version, keys.tokens, keys.log]
  const applyKeys = [...three, keys.lock]
  return {
    keys,
    apply: (write) => {
      const args: Array<string | number> = [
        write.expected,
        write.commitId,
        JSON.stringify([...write.sets.map(([token]) => token), ...write.deletes]),
        LOG_BOUND,
        ...claimArgs(write.claim),
        write.sets.length
      ]
      for (const [token, json] of write.sets) args.push(token, json)
      for (const token of write.deletes) args.push(token)
      return redis.script(Scripts.vaultApply, applyKeys, args).pipe(
        wrongType(keys.tokens),
        Effect.flatMap((reply) => {
          const [status, version, took] = reply as [number, string | null, number | undefined]
          if (status === 3) {
            return Effect.fail(new CorruptData({ key: String(version), detail: "holds the wrong Redis type" }))
          }
          return Effect.map(parseVersion(version, keys.version), (v): ApplyOutcome =>
            status === 1
              ? { _tag: "Committed", version: v }
              : status === 2
                ? { _tag: "AlreadyCommitted", version: v }
                : status === 4
                  ? { _tag: "LockHeld", version: v }
                  : { _tag: "Conflict", version: v, tookLock: took === 1 }
          )
        })
      )
    },
    changes: (known, commitId) =>
      redis.script(Scripts.vaultChanges, three, [known, commitId, LOG_BOUND]).pipe(
        wrongType(keys.log),
        Effect.flatMap((reply) => {
          const [version, status, found, ...flat] = reply as [string | null, string, number, ...Array<string | null>]
          if (status === "reload" && version !== null && !/^\d+$/.test(version)) {
            return Effect.fail(new CorruptData({ key: keys.version, detail: "the version is not a non-negative integer" }))
          }
          return Effect.map(parseVersion(version, keys.version), (v): Changes => {
            if (status === "same") return { _tag: "Same", version: v }
            if (status === "reload") return { _tag: "Reload", version: v }
            const changes: Array<readonly [string, string | null]> = []
            for (let i = 0; i + 1 < flat.length; i += 2) changes.push([flat[i] as string, flat[i + 1] ?? null])
            return { _tag: "Delta", version: v, found: found === 1, changes }
          })
        })
      ),
    scan: (cursor) =>
      redis.script(Scripts.vaultScan, [keys.version, keys.tokens], [cursor, SCAN_PAGE]).pipe(
        wrongType(keys.tokens),
        Effect.flatMap((reply) => {
          const [version, next, flat] = reply as [string | null, string, Array<string>]
          return Effect.map(parseVersion(version, keys.version), (v) => ({
            version: v,
            cursor: String(next),
            entries: pairs(flat)
          }))
        })
      ),
    snapshot: redis
      .run("MULTI GET version HGETALL tokens", (c) => c.multi().get(keys.version).hgetall(keys.tokens).exec())
      .pipe(
        Effect.flatMap((results) => {
          const [[versionError, version] = [null, null], [tokensError, tokens] = [null, {}]] = (results ?? []) as Array<
            [Error | null, unknown]
          >
          if (versionError || tokensError) {
            return Effect.fail(new CorruptData({ key: keys.tokens, detail: "a vault key holds the wrong Redis type" }))
          }
          return Effect.map(parseVersion(version, keys.version), (v) => ({
            version: v,
            entries: Object.entries(tokens as Record<string, string>)
          }))
        })
      ),
    stats: redis
      .run("stats", (c) => Promise.all([c.get(keys.version), c.hlen(keys.tokens), c.llen(keys.log)]))
      .pipe(
        wrongType(keys.tokens),
        Effect.flatMap(([version, size, logLength]) =>
          Effect.map(parseVersion(version, keys.version), (v) => ({ version: v, size, logLength }))
        )
      ),
    ready: probe(redis, keys.readyProbe)
  }
}

/**
 * The vault in this process's memory: the same primitives and log, atomic because each
 * runs synchronously, so the store above behaves exactly as it does on Redis.
 */
export const memoryVaultBacking = (prefix = "memory:tv:"): VaultBacking => {
  const keys = vaultKeys(prefix)
  const tokens = new Map<string, string>()
  const log: Array<{ readonly version: number; readonly commitId: string; readonly ids: ReadonlyArray<string> }> = []
  let version = 0
  const current = (): Version => (version === 0 ? "" : String(version))
  const changes = (known: Version, commitId: string): Changes => {
    const since = known === "" ? 0 : Number(known)
    if (since === version) return { _tag: "Same", version: current() }
    const entries = log.slice(log.length - (version - since))
    if (since > version || version - since > LOG_BOUND || entries.length !== version - since) {
      return { _tag: "Reload", version: current() }
    }
    const seen = new Set<string>()
    const out: Array<readonly [string, string | null]> = []
    let found = false
    for (const entry of entries) {
      if (entry.commitId === commitId) found = true
      for (const id of entry.ids) {
        if (seen.has(id)) continue
        seen.add(id)
        out.push([id, tokens.get(id) ?? null])
      }
    }
    return { _tag: "Delta", version: current(), found, changes: out }
  }
  return {
    keys,
    apply: (write) =>
      Effect.sync((): ApplyOutcome => {
        if (write.expected !== current()) {
          const seen = changes(write.expected, write.commitId)
          return seen._tag === "Delta" && seen.found
            ? { _tag: "AlreadyCommitted", version: current() }
            : { _tag: "Conflict", version: current(), tookLock: false }
        }
        if (write.sets.length === 0 && write.deletes.length === 0) return { _tag: "Committed", version: current() }
        for (const [token, json] of write.sets) tokens.set(token, json)
        for (const token of write.deletes) tokens.delete(token)
        version += 1
        log.push({ version, commitId: write.commitId, ids: [...write.sets.map(([t]) => t), ...write.deletes] })
        if (log.length > LOG_BOUND) log.splice(0, log.length - LOG_BOUND)
        return { _tag: "Committed", version: current() }
      }),
    changes: (known, commitId) => Effect.sync(() => changes(known, commitId)),
    scan: () => Effect.sync(() => ({ version: current(), cursor: "0", entries: [...tokens] })),
    snapshot: Effect.sync(() => ({ version: current(), entries: [...tokens] })),
    stats: Effect.sync(() => ({ version: current(), size: tokens.size, logLength: log.length })),
    ready: Effect.succeed(READY)
  }
}
