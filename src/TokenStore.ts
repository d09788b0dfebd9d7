/**
 * The shared token vault, as haechi's core uses it: `mutate(f)` hands `f` a synchronous
 * mutable view; the diff `f` made commits with a compare-and-apply fenced on the vault's
 * version, so no update is lost whatever the lock does. A conflict re-runs `f` over fresh
 * state under a bounded `Schedule`; running out fails closed. If `f` fails, nothing it
 * did persists. `read(f)` gives a view of the current vault without a lock.
 *
 * Each replica keeps the vault cached at a known version and brings it up to date with
 * the diffs committed since (one round trip: the change log names the tokens, the script
 * returns their current values), reloading in pages only when the log cannot prove it
 * is complete. Cached records are frozen and views hand out private copies from `get`,
 * so an in-place edit by `f` never reaches the cache unless it commits.
 *
 * A cache is used only while Redis proves it still continues the history the cache saw
 * (the commit id logged at its version, and the token count), in the same script call:
 * a rewound Redis (a failover to a lagging replica, FLUSHALL, eviction, a restored
 * snapshot, a key deleted by hand) drops the cache, is counted and logged, and the
 * vault is read again in full, so no read or mutate is ever answered from state Redis
 * no longer holds. Only records that JSON stores exactly as given are written.
 */
import { nextCommitId } from "./internal/commitId.js"
import * as Context from "effect/Context"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { CommitOutcomeUnknown, CorruptData, FenceConflict, InvalidConfig, InvalidRecord, type ReadError, type RedisError, type StoreError } from "./Errors.js"
import { committing, unsafeTimeoutMsOf, within, withinRead } from "./internal/deadline.js"
import { DEFAULT_VAULT_PREFIX, vaultKeys } from "./internal/keys.js"
import * as Metrics from "./Metrics.js"
import { observed, spanned } from "./internal/observe.js"
import type { Readiness } from "./internal/readiness.js"
import { RedisClient } from "./RedisClient.js"
import type { PlainOptions, StartupError } from "./internal/startupChecks.js"
import { optionsFromConfig, setupRedisStore, storeConfig, type StoreConfig, type StoreOptions } from "./StoreOptions.js"
import { isJsonObject, isPlainObject, isWellFormed, jsonProblem, NotSerializable, stringifyOrProblem } from "./internal/jsonRecord.js"
import { defaultRetrySchedule, withRetryBudget } from "./Retry.js"
import { attempted, claimMoveOf, noGuard, type LockClaim } from "./internal/storeGuard.js"
import { resolveSchedule } from "./internal/schedules.js"
import {
  memoryVaultBacking,
  redisVaultBacking,
  type ApplyOutcome,
  type Changes,
  type VaultBacking,
  type VaultPoint,
  type VaultWrite,
  type Version
} from "./internal/vault/backing.js"

/** Every Redis key the token store under `prefix` may write, its lock's included (see the README's "Key layout"); the default prefix. */
export { vaultKeyList as keysOf, DEFAULT_VAULT_PREFIX as DEFAULT_PREFIX } from "./internal/keys.js"

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
  readonly stats: Effect.Effect<{ readonly version: Version; readonly size: number; readonly logLength: number }, ReadError>
}

export class TokenStore extends Context.Tag("haechi-store-effect/TokenStore")<TokenStore, TokenStoreShape>() {}

export interface TokenStoreOptions extends StoreOptions {
  /** Key prefix; default "haechi:tv:" (use a hash tag such as "{haechi:tv}:" on a cluster). */
  readonly keyPrefix?: string
}

const DELETED = Symbol("deleted")
type Staged = TokenRecord | typeof DELETED

const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/** A deep, mutable copy of a JSON value (faster than structuredClone for small records). */
const copyJson = (value: unknown): unknown => {
  if (typeof value !== "object" || value === null) return value
  if (Array.isArray(value)) return value.map(copyJson)
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key]
    if (key === "__proto__") Object.defineProperty(out, key, { value: copyJson(v), enumerable: true, writable: true, configurable: true })
    else out[key] = copyJson(v)
  }
  return out
}

/** One version of the vault as the cache holds it. Views capture it; it is never edited while pinned. */
interface Snapshot {
  readonly version: Version
  /** The commit logged at `version` ("" = none), and the token count: the apply's proof. */
  readonly commit: string
  readonly size: number
  readonly records: { get(token: string): TokenRecord | undefined; has(token: string): boolean }
  /** Every frozen `[token, record]` pair of this version (shared: copy before handing out). */
  readonly pairs: () => ReadonlyArray<readonly [string, TokenRecord]>
}

type Pair = readonly [string, TokenRecord]

/**
 * The replica's cache: the pairs in an array (so `entries()` is one copy of it) and each
 * token's position in it, both updated in place per change. Updates are synchronous and
 * check the version they start from, so concurrent fibers only ever move it forward
 * along committed versions; a version pinned by a running view is copied, not edited.
 */
class VaultCache {
  version: Version | undefined = undefined
  /** The commit logged at `version` ("" = none: never mutated, or a version written without logging). */
  commit = ""
  private positions = new Map<string, number>()
  private pairs: Array<Pair> = []
  private pins = 0

  constructor(private readonly tokensKey: string) {}

  private parse(token: string, json: string): TokenRecord | CorruptData {
    try {
      const value = JSON.parse(json) as unknown
      if (isJsonObject(value)) return deepFreeze(value as TokenRecord)
    } catch {
      // reported below
    }
    return new CorruptData({ key: this.tokensKey, element: token, detail: "the record is not a JSON object" })
  }

  private put(token: string, record: TokenRecord | undefined): void {
    const at = this.positions.get(token)
    if (record !== undefined) {
      const pair: Pair = Object.freeze([token, record] as const)
      if (at === undefined) {
        this.positions.set(token, this.pairs.length)
        this.pairs.push(pair)
      } else {
        this.pairs[at] = pair
      }
    } else if (at !== undefined) {
      const last = this.pairs.pop() as Pair
      if (at < this.pairs.length) {
        this.pairs[at] = last
        this.positions.set(last[0], at)
      }
      this.positions.delete(token)
    }
  }

  get size(): number {
    return this.positions.size
  }

  /** Where the cache stands, when it holds a version. */
  point(): VaultPoint | undefined {
    return this.version === undefined ? undefined : { version: this.version, commit: this.commit }
  }

  /** Forgets everything: the next use reloads (views already running keep their version). */
  drop(): void {
    this.version = undefined
    this.commit = ""
    this.positions = new Map()
    this.pairs = []
    this.pins = 0
  }

  /**
   * Parses every change first, then applies all of them, so a corrupt value changes
   * nothing. With `size` (Redis's token count at `to`), changes that would leave the
   * cache holding another number of tokens are not applied: false.
   */
  advance(
    from: Version,
    to: { readonly version: Version; readonly commit: string; readonly size?: number },
    changes: ReadonlyArray<readonly [string, string | null]>
  ): Effect.Effect<boolean, CorruptData> {
    return Effect.suspend(() => {
      const parsed: Array<readonly [string, TokenRecord | undefined]> = []
      for (const [token, json] of changes) {
        const record = json === null ? undefined : this.parse(token, json)
        if (record instanceof CorruptData) return Effect.fail(record)
        parsed.push([token, record])
      }
      if (this.version !== from) return Effect.succeed(true)
      if (to.size !== undefined) {
        let size = this.positions.size
        for (const [token, record] of parsed) size += (record !== undefined ? 1 : 0) - (this.positions.has(token) ? 1 : 0)
        if (size !== to.size) return Effect.succeed(false)
      }
      if (this.pins > 0) {
        // Views still read the old version: leave it to them.
        this.positions = new Map(this.positions)
        this.pairs = this.pairs.slice()
        this.pins = 0
      }
      for (const [token, record] of parsed) this.put(token, record)
      this.version = to.version
      this.commit = to.commit
      return Effect.succeed(true)
    })
  }

  /**
   * A replacement built page by page: each page's JSON is parsed as it arrives and can
   * be collected at once, instead of the whole vault's text being held until the end.
   * Nothing changes in the cache until `commit`.
   */
  builder(): {
    readonly add: (entries: Iterable<readonly [string, string]>) => Effect.Effect<void, CorruptData>
    readonly commit: (at: VaultPoint) => void
  } {
    const positions = new Map<string, number>()
    const pairs: Array<Pair> = []
    return {
      add: (entries) =>
        Effect.suspend(() => {
          for (const [token, json] of entries) {
            const record = this.parse(token, json)
            if (record instanceof CorruptData) return Effect.fail(record)
            const at = positions.get(token)
            const pair: Pair = Object.freeze([token, record] as const)
            if (at === undefined) {
              positions.set(token, pairs.length)
              pairs.push(pair)
            } else {
              pairs[at] = pair
            }
          }
          return Effect.void
        }),
      commit: (at) => {
        this.positions = positions
        this.pairs = pairs
        this.pins = 0
        this.version = at.version
        this.commit = at.commit
      }
    }
  }

  replace(at: VaultPoint, entries: Iterable<readonly [string, string]>): Effect.Effect<void, CorruptData> {
    const next = this.builder()
    return Effect.map(next.add(entries), () => next.commit(at))
  }

  /** Pins the current version for a view; `release` unpins it. */
  pin(): { readonly snapshot: Snapshot; readonly release: () => void } {
    this.pins += 1
    const positions = this.positions
    const pairs = this.pairs
    const snapshot: Snapshot = {
      version: this.version ?? "",
      commit: this.commit,
      size: positions.size,
      records: {
        get: (token) => {
          const at = positions.get(token)
          return at === undefined ? undefined : (pairs[at] as Pair)[1]
        },
        has: (token) => positions.has(token)
      },
      pairs: () => pairs
    }
    let released = false
    return {
      snapshot,
      release: () => {
        // A copy made since the pin already freed the pinned arrays from further edits.
        if (!released && this.pairs === pairs) this.pins -= 1
        released = true
      }
    }
  }
}

const readView = (snapshot: Snapshot): ReadView => ({
  get: (token) => {
    const record = snapshot.records.get(token)
    return record === undefined ? undefined : (copyJson(record) as TokenRecord)
  },
  entries: () => snapshot.pairs().slice() as Array<[string, TokenRecord]>
})

/** A mutable view staging changes over a pinned snapshot. */
class StagingView implements MutableView {
  readonly staged = new Map<string, Staged>()
  constructor(readonly snapshot: Snapshot) {}
  get(token: string): TokenRecord | undefined {
    const staged = this.staged.get(token)
    if (staged !== undefined) return staged === DELETED ? undefined : staged
    const record = this.snapshot.records.get(token)
    if (record === undefined) return undefined
    // The same private copy on every get in this run, as a plain map would give.
    const copy = copyJson(record) as TokenRecord
    this.staged.set(token, copy)
    this.touched.add(token)
    return copy
  }
  /** Tokens only read through `get` (copies staged but not changed by `set`/`delete`). */
  readonly touched = new Set<string>()
  set(token: string, record: TokenRecord): void {
    this.staged.set(token, record)
    this.touched.delete(token)
  }
  delete(token: string): boolean {
    const existed = this.get(token) !== undefined
    this.staged.set(token, DELETED)
    this.touched.delete(token)
    return existed
  }
  entries(): Array<[string, TokenRecord]> {
    const base = this.snapshot.pairs()
    if (this.staged.size === 0) return base.slice() as Array<[string, TokenRecord]>
    const out: Array<[string, TokenRecord]> = []
    for (const pair of base) {
      const staged = this.staged.get(pair[0])
      if (staged === undefined) out.push(pair as [string, TokenRecord])
      else if (staged !== DELETED) out.push([pair[0], staged])
    }
    for (const [token, staged] of this.staged) {
      if (staged !== DELETED && !this.snapshot.records.has(token)) out.push([token, staged])
    }
    return out
  }
}

const kindOf = (value: unknown): string => {
  if (value === null) return "null"
  if (Array.isArray(value)) return "an array"
  if (typeof value !== "object") return `a ${typeof value}`
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name
  return `a ${typeof name === "string" && name !== "" ? name : "non-plain"} object`
}

/** A full read whose pages saw different versions is retried this often before one atomic read. */
const PAGED_RELOAD_TRIES = 3

/** The semantics over any backing. */
export const makeWith = (backing: VaultBacking, options: TokenStoreOptions = {}): TokenStoreShape => {
  const prefix = backing.keys.prefix
  const schedule = options.retry ?? defaultRetrySchedule
  const guard = options.guard ?? noGuard
  const afterCommit = options.afterCommit ?? Effect.void
  const cache = new VaultCache(backing.keys.tokens)
  const rewinds = Metrics.vaultRewinds.pipe(Metric.tagged("prefix", prefix))
  const timeoutMs = unsafeTimeoutMsOf(options.timeout)
  const bounded = (operation: string) => within({ store: "vault", prefix, operation: `vault ${operation}`, timeoutMs })
  const boundedRead = (operation: string) => withinRead({ store: "vault", prefix, operation: `vault ${operation}`, timeoutMs })

  /** A cache Redis no longer backs: counted, logged with both points, and dropped. */
  const rewound = (seen: VaultPoint, now: Version, detail: string): Effect.Effect<void> =>
    Effect.zipRight(
      Metric.update(rewinds, 1),
      Effect.logWarning(
        `vault store ${prefix}: Redis no longer holds the vault this replica cached ` +
          `(cached version ${seen.version || "none"}${seen.commit === "" ? "" : `, commit ${seen.commit}`}; ` +
          `Redis now at version ${now || "none"}: ${detail}); the cache is dropped and the vault read again`
      ).pipe(Effect.annotateLogs({ "haechi.prefix": prefix, "haechi.cached_version": seen.version, "haechi.version": now }))
    ).pipe(Effect.zipLeft(Effect.sync(() => cache.drop())))

  const numeric = (version: Version): number => (version === "" ? 0 : Number(version))

  /** A reload that lands below, or on another commit at, where the cache stood saw a rewind. */
  const checkLanding = (before: VaultPoint | undefined): Effect.Effect<void> =>
    Effect.suspend(() => {
      const after = cache.point()
      if (before === undefined || after === undefined) return Effect.void
      if (numeric(after.version) < numeric(before.version)) {
        return rewound(before, after.version, "the version went down")
      }
      if (after.version === before.version && after.commit !== before.commit) {
        return rewound(before, after.version, `another commit at that version (${after.commit || "none logged"})`)
      }
      return Effect.void
    })

  /**
   * Applies what the change log proved (true), or says a full read is needed (false);
   * a rewind is counted and drops the cache.
   */
  const catchUp = (from: VaultPoint, changes: Changes): Effect.Effect<boolean, CorruptData> => {
    switch (changes._tag) {
      case "Same":
        return cache.version === from.version && cache.size !== changes.size
          ? Effect.as(rewound(from, changes.version, `Redis holds ${changes.size} tokens, the cache ${cache.size}`), false)
          : Effect.succeed(true)
      case "Reload":
        return changes.unreadable === undefined
          ? Effect.succeed(false)
          : Effect.as(
              Effect.logWarning(
                `vault store ${prefix}: the change log entry for version ${changes.unreadable} does not decode; reading the vault in full`
              ),
              false
            )
      case "Rewound":
        return Effect.as(
          rewound(
            from,
            changes.version,
            numeric(changes.version) < numeric(from.version)
              ? "the version went down"
              : `the commit it saw is no longer logged at version ${from.version} (${changes.commitThere || "none is"})`
          ),
          false
        )
      case "Delta":
        return Effect.flatMap(
          cache.advance(from.version, { version: changes.version, commit: changes.commit, size: changes.size }, changes.changes),
          (applied) =>
            applied
              ? Effect.succeed(true)
              : Effect.as(rewound(from, changes.version, `Redis holds ${changes.size} tokens, which the log does not explain`), false)
        )
    }
  }

  // Pages never block Redis for long; if the pages saw different versions the log
  // replays what changed in between, else the read is tried again, then done atomically.
  // `before`: where the cache stood, to tell a rewind that happened meanwhile.
  const reload = (before: VaultPoint | undefined): Effect.Effect<void, RedisError | CorruptData> =>
    Effect.gen(function* () {
      yield* Metric.update(Metrics.vaultReloads.pipe(Metric.tagged("prefix", prefix)), 1)
      for (let attempt = 0; attempt < PAGED_RELOAD_TRIES; attempt++) {
        const next = cache.builder()
        let first: VaultPoint | undefined
        let last: Version = ""
        let cursor = "0"
        do {
          const page = yield* backing.scan(cursor)
          first ??= { version: page.version, commit: page.commit }
          last = page.version
          cursor = page.cursor
          yield* next.add(page.entries)
        } while (cursor !== "0")
        const start = first ?? { version: "", commit: "" }
        next.commit(start)
        if (start.version === last) return yield* checkLanding(before)
        const changes = yield* backing.changes(start, "")
        if (changes._tag === "Rewound") continue
        if (yield* catchUp(start, changes)) return yield* checkLanding(before)
      }
      const all = yield* backing.snapshot
      yield* cache.replace({ version: all.version, commit: all.commit }, all.entries)
      yield* checkLanding(before)
    }).pipe(spanned("haechi.vault.reload", { "haechi.prefix": prefix }))

  /**
   * A cache that no commit id proves (none yet, or its version was written without
   * logging, by haechi-store-redis) is read again before each use, as that writer does.
   */
  const unproven = (): boolean => cache.version === undefined || (cache.version !== "" && cache.commit === "")

  /** Brings the cache to the current version: one round trip unless a reload is needed. */
  const sync: Effect.Effect<void, RedisError | CorruptData> = Effect.suspend(() => {
    const from = cache.point()
    if (from === undefined || unproven()) return reload(from)
    return Effect.flatMap(backing.changes(from, ""), (changes) =>
      Effect.flatMap(catchUp(from, changes), (current) =>
        current ? Effect.void : reload(changes._tag === "Reload" ? from : undefined)
      )
    )
  })

  const ensureUsable = Effect.suspend(() => (unproven() ? reload(cache.point()) : Effect.void))

  const diffOf = (view: StagingView, snapshot: Snapshot, claim: LockClaim | undefined) =>
    Effect.suspend(() => {
      const sets: Array<readonly [string, string]> = []
      const deletes: Array<string> = []
      for (const [token, staged] of view.staged) {
        if (view.touched.has(token)) continue
        const invalid = (reason: string) => Effect.fail(new InvalidRecord({ store: "vault", token, reason }))
        if (typeof token !== "string") return invalid("a token id must be a string")
        if (staged === DELETED) {
          // (Only ids read back from Redis are deleted, and those are well-formed.)
          if (view.snapshot.records.has(token)) deletes.push(token)
          continue
        }
        if (!isWellFormed(token)) {
          return invalid("a token id with a lone UTF-16 surrogate cannot be stored (Redis would hold another id)")
        }
        if (!isPlainObject(staged)) return invalid(`a record must be a plain JSON object, not ${kindOf(staged)}`)
        const problem = jsonProblem(staged)
        if (problem !== undefined) return invalid(`JSON would not store the record as it is: ${problem}`)
        const json = stringifyOrProblem(staged)
        if (json instanceof NotSerializable) return invalid(json.reason)
        sets.push([token, json])
      }
      return Effect.succeed({
        expected: snapshot.version,
        expectedCommit: snapshot.commit,
        expectedSize: snapshot.size,
        commitId: nextCommitId(),
        sets,
        deletes,
        claim
      })
    })

  // A call that got no answer may or may not have committed: the log says, by commit id.
  const applyOnce = (write: VaultWrite): Effect.Effect<ApplyOutcome, StoreError> =>
    backing.apply(write).pipe(
      Effect.catchTag("RedisUnavailable", (lost) =>
        backing.changes({ version: write.expected, commit: write.expectedCommit }, write.commitId).pipe(
          Effect.retry({ schedule: resolveSchedule, while: (e) => e._tag === "RedisUnavailable" }),
          Effect.mapError(() => new CommitOutcomeUnknown({ store: "vault", prefix, cause: lost.cause })),
          Effect.flatMap((changes): Effect.Effect<ApplyOutcome, CommitOutcomeUnknown> => {
            // (A lost call that asked for the lock may have taken it: count it as ours, so it is released.)
            const tookLock = write.claim?.ask === true
            if (changes._tag === "Same") {
              return Effect.succeed({ _tag: "Conflict", version: changes.version, tookLock, rewound: false })
            }
            // A history that cannot be replayed, or was rewound, cannot say whether the commit landed.
            if (changes._tag === "Reload" || changes._tag === "Rewound") {
              return Effect.fail(new CommitOutcomeUnknown({ store: "vault", prefix, cause: lost.cause }))
            }
            return Effect.succeed(
              changes.found
                ? { _tag: "AlreadyCommitted" as const, version: changes.version }
                : { _tag: "Conflict" as const, version: changes.version, tookLock, rewound: false }
            )
          }),
          Effect.tap(() => Metric.update(Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "vault")), 1))
        )
      )
    )

  const attempt = <A, E, R>(f: (view: MutableView) => Effect.Effect<A, E, R>, claim?: LockClaim) =>
    Effect.gen(function* () {
      yield* ensureUsable
      const { snapshot, release } = cache.pin()
      const view = new StagingView(snapshot)
      const result = yield* Effect.ensuring(f(view), Effect.sync(release))
      const write = yield* diffOf(view, snapshot, claim)
      // (An empty diff writes nothing, so a deadline during it cannot leave a commit behind.)
      const outcome = yield* (write.sets.length + write.deletes.length === 0
        ? applyOnce(write)
        : committing(applyOnce(write), (o) => o._tag === "Committed" || o._tag === "AlreadyCommitted"))
      switch (outcome._tag) {
        case "Committed": {
          if (write.sets.length + write.deletes.length === 0) return result
          const changes = write.sets.map(([t, json]) => [t, json] as const as readonly [string, string | null])
          for (const token of write.deletes) changes.push([token, null])
          yield* cache.advance(snapshot.version, { version: outcome.version, commit: write.commitId }, changes)
          yield* afterCommit
          return result
        }
        case "AlreadyCommitted":
          yield* sync
          return result
        case "LockHeld":
          return yield* Effect.fail(
            new FenceConflict({ store: "vault", prefix, expected: snapshot.version, lockHeld: true, lockClaim: "left" })
          )
        case "Conflict":
          // A rewind found by the fence drops the cache: the next attempt reads the vault again.
          if (outcome.rewound && cache.version === snapshot.version) {
            yield* rewound(snapshot, outcome.version, "the fence found another history at that version")
          } else {
            yield* sync
          }
          return yield* Effect.fail(
            new FenceConflict({ store: "vault", prefix, expected: snapshot.version, actual: outcome.version, lockClaim: claimMoveOf(outcome) })
          )
      }
    })

  const observeMutate = observed("vault", "mutate", prefix)
  const observeRead = observed("vault", "read", prefix)
  const boundMutate = bounded("mutate")
  const boundRead = boundedRead("read")
  const retryOptions = { store: "vault", prefix, operation: "mutate", schedule } as const
  return {
    prefix,
    mutate: (f) =>
      withRetryBudget(retryOptions, (budget) =>
        guard({
          // A lock-free attempt of the adaptive policy: it yields to a writer holding the lock.
          // (Every successful attempt ran the fenced script, which gives a claimed lock back.)
          attempt: (claim) => Effect.map(budget.attempt(attempt(f, claim)), (a) => attempted(a, true)),
          retrying: (fresh) =>
            Effect.zipRight(fresh ? sync : Effect.void, budget.retrying(Effect.suspend(() => attempt(f))))
        })
      ).pipe(boundMutate, observeMutate) as never,
    read: (f) =>
      Effect.gen(function* () {
        yield* sync
        const { snapshot, release } = cache.pin()
        return yield* Effect.ensuring(f(readView(snapshot)), Effect.sync(release))
      }).pipe(boundRead, observeRead),
    ready: backing.ready,
    stats: backing.stats.pipe(boundedRead("stats"), observed("vault", "stats", prefix))
  }
}

/** The vault on Redis; `RedisClient` supplies the connection. */
export function make(options?: TokenStoreOptions & PlainOptions): Effect.Effect<TokenStoreShape, InvalidConfig, RedisClient>
export function make(options?: TokenStoreOptions): Effect.Effect<TokenStoreShape, InvalidConfig | StartupError, RedisClient>
export function make(options: TokenStoreOptions = {}): Effect.Effect<TokenStoreShape, InvalidConfig | StartupError, RedisClient> {
  return Effect.gen(function* () {
    const redis = yield* RedisClient
    const setup = yield* setupRedisStore(redis, options, DEFAULT_VAULT_PREFIX, vaultKeys)
    return makeWith(redisVaultBacking(redis, setup.prefix), { ...options, guard: setup.guard, afterCommit: setup.afterCommit })
  })
}

/** The token store on Redis, as a layer. */
export function layer(options?: TokenStoreOptions & PlainOptions): Layer.Layer<TokenStore, InvalidConfig, RedisClient>
export function layer(options?: TokenStoreOptions): Layer.Layer<TokenStore, InvalidConfig | StartupError, RedisClient>
export function layer(options: TokenStoreOptions = {}): Layer.Layer<TokenStore, InvalidConfig | StartupError, RedisClient> {
  return Layer.effect(TokenStore, make(options))
}

/** What `layerConfig` reads (see `storeConfig`). */
export { storeConfig, type StoreConfig } from "./StoreOptions.js"

/**
 * The token store on Redis with its prefix, lock policy, retry attempts, durability
 * and timeout read from `Config` (default: `storeConfig("HAECHI_VAULT")`, i.e. the
 * environment's `HAECHI_VAULT_KEY_PREFIX`, `HAECHI_VAULT_LOCK`, ...); `options` gives the rest,
 * and what the config sets wins over it.
 */
export const layerConfig = (
  config: Config.Config<StoreConfig> = storeConfig("HAECHI_VAULT"),
  options: TokenStoreOptions = {}
): Layer.Layer<TokenStore, ConfigError.ConfigError | InvalidConfig | StartupError, RedisClient> =>
  Layer.unwrapEffect(Effect.map(config, (c) => layer({ ...options, ...optionsFromConfig(c) })))

/** An in-memory token store (one process only): same contract, same atomicity. */
export const layerMemory = (options: Omit<TokenStoreOptions, "guard"> = {}): Layer.Layer<TokenStore> =>
  Layer.sync(TokenStore, () => makeWith(memoryVaultBacking(options.keyPrefix), options))
