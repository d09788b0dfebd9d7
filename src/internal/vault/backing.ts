/**
 * The token vault's storage primitives, written once per backing: a compare-and-apply
 * of a diff fenced on the version (logging the changed token ids), the changes since a
 * version, and a paged full read that reports the version of each page. Each primitive
 * also carries the proof that Redis still continues the history a cache saw (the commit
 * id logged at its version, the token count), so a rewound Redis is seen with no extra
 * round trip. The contract (synchronous views, the replica cache, retries, resolving a
 * lost reply) lives once above this, in store.ts and the files it wires.
 */
import * as Effect from "effect/Effect"
import { CorruptData } from "../../Errors.js"
import { COMMIT_IDS_KEPT_SECONDS, fenceKeyOf, vaultKeys, waitersKeyOf, type VaultKeys } from "../keys.js"
import type { BackingError } from "../backingError.js"
import { probe, READY, type Readiness } from "../readiness.js"
import { type RedisClientShape } from "../../RedisClient.js"
import { toRedisError, wrongType, wrongTypeAt, wrongTypeNamed } from "../redisReply.js"
import { callScriptBySha, callScriptByShaThen, Scripts } from "../scripts.js"
import { VaultApplyReply, VaultChangesReply, type ReplyCode } from "../replyCodes.js"
import { claimArgs, type LockClaim } from "../storeGuard.js"

/** The vault's version: "" before the first commit, then "1", "2", ... (haechi-store-redis's counter). */
export type Version = string

/** Where a cache stands: a version, and the commit logged at it ("" = none). */
export interface VaultPoint {
  readonly version: Version
  /**
   * The commit id logged at `version`; "" for the never-mutated vault and for a version
   * written without a log entry (by haechi-store-redis), which no commit id can prove.
   */
  readonly commit: string
}

export interface VaultWrite {
  /** The version the diff was computed on. */
  readonly expected: Version
  /** The commit logged at `expected` when the snapshot was read ("" = none). */
  readonly expectedCommit: string
  /** How many tokens the snapshot held. */
  readonly expectedSize: number
  readonly commitId: string
  /** When the call was made (`resentCalls.callMadeAt`), before its first send. */
  readonly madeAt: number
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
  /**
   * `tookLock`: the attempt's claim asked for the lock and now holds it. `rewound`: the
   * version matched but Redis no longer holds the snapshot's history (nothing written).
   * `unproven`: the log no longer reaches back to the version after the expected one, so
   * that a re-sent call did not commit before cannot be told from it (see resentCalls.ts).
   * `idsLost`: Redis lost the log (now, or within its keep), so no call's age makes it proof.
   */
  | {
      readonly _tag: "Conflict"
      readonly version: Version
      readonly tookLock: boolean
      readonly rewound: boolean
      readonly unproven?: boolean
      readonly idsLost?: boolean
    }
  /** Another writer holds the lock and the attempt was asked to yield; nothing written. */
  | { readonly _tag: "LockHeld"; readonly version: Version }

/** `size` is always Redis's token count now, to check a cache against. */
export type Changes =
  | { readonly _tag: "Same"; readonly version: Version; readonly commit: string; readonly size: number }
  /**
   * The log cannot prove it is complete since the known version (a gap, a trimmed log):
   * read the vault in full. `unreadable`: the version of a log entry that does not decode.
   */
  | {
      readonly _tag: "Reload"
      readonly version: Version
      readonly size: number
      readonly unreadable?: string
      /**
       * Asked with a commit id: whether the whole log holds it after the known version
       * (`found`), and whether a miss proves nothing (`unproven`: that part is gone;
       * `idsLost`: Redis lost the log, so not on a call of any age).
       */
      readonly lookup?: { readonly found: boolean; readonly unproven: boolean; readonly idsLost?: boolean }
    }
  /**
   * Redis no longer continues the history the cache saw: a lower version, or the commit
   * the cache saw is no longer logged at its version (`commitThere`: what is, "" = none).
   */
  | { readonly _tag: "Rewound"; readonly version: Version; readonly size: number; readonly commitThere: string }
  | {
      readonly _tag: "Delta"
      readonly version: Version
      /** The commit logged at `version`. */
      readonly commit: string
      readonly size: number
      /** Whether the commit id asked about is among the changes. */
      readonly found: boolean
      /** Each changed token with its current record JSON, null when deleted. */
      readonly changes: ReadonlyArray<readonly [string, string | null]>
    }

export interface ScanPage {
  readonly version: Version
  /** The commit logged at `version` ("" = none). */
  readonly commit: string
  readonly cursor: string
  readonly entries: ReadonlyArray<readonly [string, string]>
}

export type { BackingError }

export interface VaultBacking {
  readonly keys: VaultKeys
  /** `sent`: the call `send` already sent (its reply is decoded here); otherwise the apply is sent now. */
  readonly apply: (write: VaultWrite, sent?: Promise<unknown>) => Effect.Effect<ApplyOutcome, BackingError>
  /**
   * The apply sent as a bare call, for a caller that settles a `Committed` reply itself
   * (`committedVersion`) and hands anything else to `apply(write, sent)`. Redis only.
   */
  readonly send?: (write: VaultWrite) => Promise<unknown>
  /** The changes since `known`, proved against the commit it saw; `commitId`: a commit to look for. */
  readonly changes: (known: VaultPoint, commitId: string) => Effect.Effect<Changes, BackingError>
  /**
   * `changes` for a read path that runs no fiber: `onChanges` gets the answer, `onError`
   * the same typed errors, in the one promise step the reply lands in. Optional: a
   * backing without it is read through `changes` (a wrapper that changes `changes` must
   * change or drop this too).
   */
  readonly changesThen?: <A>(
    known: VaultPoint,
    commitId: string,
    onChanges: (changes: Changes) => A,
    onError: (error: unknown) => A
  ) => Promise<A>
  /** One page of a full read; start with cursor "0", done when the returned cursor is "0". */
  readonly scan: (cursor: string) => Effect.Effect<ScanPage, BackingError>
  /** The whole vault at one version, atomically (the fallback when paged reads cannot settle). */
  readonly snapshot: Effect.Effect<
    { readonly version: Version; readonly commit: string; readonly entries: ReadonlyArray<readonly [string, string]> },
    BackingError
  >
  readonly stats: Effect.Effect<
    { readonly version: Version; readonly size: number; readonly logLength: number },
    BackingError
  >
  readonly ready: Effect.Effect<Readiness>
}

/** How many commits the log keeps at least (and any younger than COMMIT_IDS_KEPT_SECONDS); a cache further behind reloads. */
export const LOG_BOUND = 1000
/** Full-read page size (HSCAN COUNT): small enough never to block Redis for long. */
export const SCAN_PAGE = 500

/** The stored version counter as a `Version`, or `CorruptData` when it is not a non-negative integer. */
const versionOf = (raw: unknown, key: string): Version | CorruptData => {
  if (raw === null || raw === undefined) return ""
  const text = String(raw)
  return /^\d+$/.test(text) ? text : new CorruptData({ key, detail: "the version is not a non-negative integer" })
}

const parseVersion = (raw: unknown, key: string): Effect.Effect<Version, CorruptData> => {
  const version = versionOf(raw, key)
  return typeof version === "string" ? Effect.succeed(version) : Effect.fail(version)
}

/** The commit id of the log's last entry when that entry is for `version`, else "". */
const commitLoggedAt = (version: Version, last: unknown): string => {
  const match = typeof last === "string" ? /^(\d+) (\S+)/.exec(last) : null
  return match !== null && version !== "" && match[1] === version ? (match[2] as string) : ""
}

const pairs = (flat: ReadonlyArray<string>): Array<readonly [string, string]> => {
  const out: Array<readonly [string, string]> = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] as string, flat[i + 1] as string])
  return out
}

/** The version a `Committed` vault_apply reply moved the vault to; undefined for any other reply. */
export const committedVersion = (reply: unknown): Version | undefined => {
  if (!Array.isArray(reply) || reply[0] !== VaultApplyReply.Committed) return undefined
  const version = reply[1] as unknown
  return typeof version === "string" && /^\d+$/.test(version) ? version : undefined
}

/** A conflict's `rewound` and proof fields from vault_apply's status and its fourth element (0, 1 or 2). */
const proofOf = (status: ReplyCode<typeof VaultApplyReply>, unproven: number | undefined) =>
  unproven === 1 || unproven === 2
    ? { rewound: false, unproven: true, idsLost: unproven === 2 }
    : { rewound: status === VaultApplyReply.Rewound }

/** vault_apply.lua's reply as an `ApplyOutcome`. */
const applyOutcomeOf = (reply: unknown, versionKey: string): Effect.Effect<ApplyOutcome, CorruptData> => {
  const [status, version, took, unproven] = reply as [
    ReplyCode<typeof VaultApplyReply>,
    string | null,
    number | undefined,
    number | undefined
  ]
  if (status === VaultApplyReply.WrongType) {
    return Effect.fail(new CorruptData({ key: String(version), detail: "holds the wrong Redis type" }))
  }
  return Effect.map(parseVersion(version, versionKey), (v): ApplyOutcome =>
    status === VaultApplyReply.Committed
      ? { _tag: "Committed", version: v }
      : status === VaultApplyReply.AlreadyCommitted
        ? { _tag: "AlreadyCommitted", version: v }
        : status === VaultApplyReply.LockHeld
          ? { _tag: "LockHeld", version: v }
          : { _tag: "Conflict", version: v, tookLock: took === 1, ...proofOf(status, unproven) }
  )
}

/** `changesThen` over a synchronous `changes` (the in-memory backing's), answered a step later as Redis's would be. */
const changesThenOf =
  (changes: (known: VaultPoint, commitId: string) => Changes): NonNullable<VaultBacking["changesThen"]> =>
  (known, commitId, onChanges, onError) =>
    Promise.resolve().then(() => {
      let answer: Changes
      try {
        answer = changes(known, commitId)
      } catch (error) {
        return onError(error)
      }
      return onChanges(answer)
    })

/** vault_changes.lua's reply as `Changes`. */
const changesOf = (reply: unknown, versionKey: string): Changes | CorruptData => {
  // The common answer, decoded without the general path's copies.
  const short = reply as [unknown, unknown, number, string, number]
  if (
    Array.isArray(reply) &&
    short.length === 5 &&
    short[1] === VaultChangesReply.Same &&
    typeof short[0] === "string"
  ) {
    const v = versionOf(short[0], versionKey)
    if (typeof v === "string") return { _tag: "Same", version: v, commit: short[3], size: short[2] }
  }
  // (A reply this script cannot give is refused here: a throw would escape the promise step it lands in.)
  if (!Array.isArray(reply)) return new CorruptData({ key: versionKey, detail: "the change log reply is not a list" })
  const [version, status, size, detail, found, ...flat] = reply as [
    string | null,
    ReplyCode<typeof VaultChangesReply>,
    number,
    string,
    number,
    ...Array<string | null>
  ]
  // (The script names a key of the wrong type itself: the tokens hash, the version or the log.)
  if (status === VaultChangesReply.WrongType) return wrongTypeAt(detail)
  const v = versionOf(version, versionKey)
  if (typeof v !== "string") return v
  switch (status) {
    case VaultChangesReply.Same:
      return { _tag: "Same", version: v, commit: detail, size }
    case VaultChangesReply.Reload: {
      const code = Number(flat[0])
      const lookup = flat.length === 1 ? { found: found === 1, unproven: code !== 0, idsLost: code === 2 } : undefined
      return {
        _tag: "Reload",
        version: v,
        size,
        ...(detail === "" ? {} : { unreadable: detail }),
        ...(lookup === undefined ? {} : { lookup })
      }
    }
    case VaultChangesReply.Rewound:
      return { _tag: "Rewound", version: v, size, commitThere: detail }
    case VaultChangesReply.Delta:
      break
    default:
      return new CorruptData({
        key: versionKey,
        detail: `the change log reply has an unknown status (${String(status)})`
      })
  }
  const changes: Array<readonly [string, string | null]> = []
  for (let i = 0; i + 1 < flat.length; i += 2) changes.push([flat[i] as string, flat[i + 1] ?? null])
  return { _tag: "Delta", version: v, commit: detail, size, found: found === 1, changes }
}

/** `changes` and `changesThen` on Redis: vault_changes.lua, decoded synchronously (this is every read's one round trip). */
const changeReadsOn = (redis: RedisClientShape, keys: VaultKeys): Pick<VaultBacking, "changes" | "changesThen"> => {
  const four = [keys.version, keys.tokens, keys.log, keys.logMark]
  const argsOf = (known: VaultPoint, commitId: string) => [
    known.version,
    known.commit,
    commitId,
    LOG_BOUND,
    COMMIT_IDS_KEPT_SECONDS
  ]
  return {
    changes: (known, commitId) =>
      redis.script(Scripts.vaultChanges, four, argsOf(known, commitId)).pipe(
        Effect.flatMap((reply) => {
          const decoded = changesOf(reply, keys.version)
          return decoded instanceof CorruptData ? Effect.fail(decoded) : Effect.succeed(decoded)
        })
      ),
    changesThen: (known, commitId, onChanges, onError) =>
      callScriptByShaThen(
        redis.client,
        Scripts.vaultChanges,
        four,
        argsOf(known, commitId),
        (reply) => {
          const decoded = changesOf(reply, keys.version)
          return decoded instanceof CorruptData ? onError(decoded) : onChanges(decoded)
        },
        (error: unknown) => onError(toRedisError(Scripts.vaultChanges.name, error))
      )
  }
}

/** vault_apply.lua's ARGV for `write` (its header lists them). */
const applyArgs = (write: VaultWrite): Array<string | number> => {
  const args: Array<string | number> = [
    write.expected,
    write.commitId,
    JSON.stringify([...write.sets.map(([token]) => token), ...write.deletes]),
    LOG_BOUND,
    write.expectedCommit,
    write.expectedSize,
    ...claimArgs(write.claim),
    COMMIT_IDS_KEPT_SECONDS,
    write.sets.length
  ]
  for (const [token, json] of write.sets) args.push(token, json)
  for (const token of write.deletes) args.push(token)
  return args
}

/** The vault on Redis, in haechi-store-redis's layout plus our change log. */
export const redisVaultBacking = (redis: RedisClientShape, prefix: string): VaultBacking => {
  const keys = vaultKeys(prefix)
  const three = [keys.version, keys.tokens, keys.log]
  const applyKeys = [...three, keys.lock, fenceKeyOf(keys.lock), waitersKeyOf(keys.lock), keys.logMark]
  // By SHA as a plain command (a NOSCRIPT means it did not run: resent with the text).
  const send = (write: VaultWrite) => callScriptBySha(redis.client, Scripts.vaultApply, applyKeys, applyArgs(write))
  return {
    keys,
    apply: (write, sent) =>
      redis
        .run(
          Scripts.vaultApply.name,
          (c) => sent ?? callScriptBySha(c, Scripts.vaultApply, applyKeys, applyArgs(write))
        )
        .pipe(
          wrongType(keys.tokens),
          Effect.flatMap((reply) => applyOutcomeOf(reply, keys.version))
        ),
    send,
    ...changeReadsOn(redis, keys),
    scan: (cursor) =>
      redis.script(Scripts.vaultScan, three, [cursor, SCAN_PAGE]).pipe(
        wrongTypeNamed(keys.tokens),
        Effect.flatMap((reply) => {
          const [version, next, flat, commit] = reply as [string | null, string, Array<string>, string]
          return Effect.map(parseVersion(version, keys.version), (v) => ({
            version: v,
            commit: String(commit ?? ""),
            cursor: String(next),
            entries: pairs(flat)
          }))
        })
      ),
    snapshot: redis
      .run("MULTI GET version HGETALL tokens LINDEX log", (c) =>
        c.multi().get(keys.version).hgetall(keys.tokens).lindex(keys.log, -1).exec()
      )
      .pipe(
        Effect.flatMap((results) => {
          const [
            [versionError, version] = [null, null],
            [tokensError, tokens] = [null, {}],
            [logError, last] = [null, null]
          ] = (results ?? []) as Array<[Error | null, unknown]>
          if (versionError || tokensError || logError) {
            return Effect.fail(new CorruptData({ key: keys.tokens, detail: "a vault key holds the wrong Redis type" }))
          }
          return Effect.map(parseVersion(version, keys.version), (v) => ({
            version: v,
            commit: commitLoggedAt(v, last),
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

/** The log entries' tokens (each once, as the vault holds it now), and whether `commitId` is among them. */
const deltaOf = (
  entries: ReadonlyArray<{ readonly commitId: string; readonly ids: ReadonlyArray<string> }>,
  commitId: string,
  tokens: ReadonlyMap<string, string>
): { readonly found: boolean; readonly out: Array<readonly [string, string | null]> } => {
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
  return { found, out }
}

/**
 * The vault in this process's memory: the same primitives and log, atomic because each
 * runs synchronously, so the store above behaves exactly as it does on Redis.
 */
// (No call is ever re-sent here, so the log keeps LOG_BOUND entries, with no time rule.)
export const memoryVaultBacking = (prefix = "memory:tv:"): VaultBacking => {
  const keys = vaultKeys(prefix)
  const tokens = new Map<string, string>()
  const log: Array<{ readonly version: number; readonly commitId: string; readonly ids: ReadonlyArray<string> }> = []
  let version = 0
  const current = (): Version => (version === 0 ? "" : String(version))
  const lastCommit = (): string => {
    const last = log[log.length - 1]
    return last !== undefined && last.version === version ? last.commitId : ""
  }
  // The same proof as vault_changes.lua (see there for why each case means what it does).
  const changes = (known: VaultPoint, commitId: string): Changes => {
    const since = known.version === "" ? 0 : Number(known.version)
    const size = tokens.size
    if (version < since) return { _tag: "Rewound", version: current(), size, commitThere: "" }
    if (version - since >= LOG_BOUND) return { _tag: "Reload", version: current(), size }
    const proving = known.commit !== "" && since > 0
    const window = log.slice(Math.max(0, log.length - (version - since + (proving ? 1 : 0))))
    let start = 0
    if (proving) {
      let at = window.length - 1
      while (at >= 0 && window[at]!.version !== since) at--
      if (at === -1) return { _tag: "Rewound", version: current(), size, commitThere: "" }
      const entry = window[at]!
      if (entry.commitId !== known.commit)
        return { _tag: "Rewound", version: current(), size, commitThere: entry.commitId }
      start = at + 1
    }
    const entries = window.slice(start)
    if (entries.length !== version - since || entries.some((entry, i) => entry.version !== since + i + 1)) {
      return { _tag: "Reload", version: current(), size }
    }
    const { found, out } = deltaOf(entries, commitId, tokens)
    const commit = proving || entries.length > 0 ? lastCommit() : ""
    return version === since
      ? { _tag: "Same", version: current(), commit, size }
      : { _tag: "Delta", version: current(), commit, size, found, changes: out }
  }
  const continues = (write: VaultWrite): boolean => {
    if (tokens.size !== write.expectedSize) return false
    if (write.expected === "") return true
    const last = log[log.length - 1]
    return write.expectedCommit === ""
      ? last?.version !== version
      : last?.version === version && last.commitId === write.expectedCommit
  }
  return {
    keys,
    apply: (write) =>
      Effect.sync((): ApplyOutcome => {
        if (write.expected !== current()) {
          const seen = changes({ version: write.expected, commit: write.expectedCommit }, write.commitId)
          return seen._tag === "Delta" && seen.found
            ? { _tag: "AlreadyCommitted", version: current() }
            : { _tag: "Conflict", version: current(), tookLock: false, rewound: false }
        }
        if (!continues(write)) return { _tag: "Conflict", version: current(), tookLock: false, rewound: true }
        if (write.sets.length === 0 && write.deletes.length === 0) return { _tag: "Committed", version: current() }
        for (const [token, json] of write.sets) tokens.set(token, json)
        for (const token of write.deletes) tokens.delete(token)
        version += 1
        log.push({ version, commitId: write.commitId, ids: [...write.sets.map(([t]) => t), ...write.deletes] })
        if (log.length > LOG_BOUND) log.splice(0, log.length - LOG_BOUND)
        return { _tag: "Committed", version: current() }
      }),
    changes: (known, commitId) => Effect.sync(() => changes(known, commitId)),
    changesThen: changesThenOf(changes),
    scan: () => Effect.sync(() => ({ version: current(), commit: lastCommit(), cursor: "0", entries: [...tokens] })),
    snapshot: Effect.sync(() => ({ version: current(), commit: lastCommit(), entries: [...tokens] })),
    stats: Effect.sync(() => ({ version: current(), size: tokens.size, logLength: log.length })),
    ready: Effect.succeed(READY)
  }
}
