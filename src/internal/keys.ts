/**
 * The key layout, shared with haechi-store-redis so a fleet can switch replica by
 * replica: the same keys hold the same data with the same fence semantics. Keys we
 * add (the vault's change log, the audit's commit ids) hold no record, but they are the
 * proof a re-sent call looks for (see internal/resentCalls.ts).
 *
 * On a Redis Cluster every key of one store must live in one hash slot (the scripts
 * touch several at once), which a hash tag in the prefix guarantees. A prefix that
 * cannot give that is refused when the store is made, never at the first write.
 */
import * as Effect from "effect/Effect"
import { InvalidConfig } from "../Errors.js"

export const DEFAULT_AUDIT_PREFIX = "haechi:audit:"
export const DEFAULT_VAULT_PREFIX = "haechi:tv:"

export interface AuditKeys {
  readonly prefix: string
  readonly chain: string
  readonly head: string
  readonly headHash: string
  /**
   * Ours: sequence -> "<commit id> <unix seconds>" of our appends (the last 1,000, and any
   * younger than `COMMIT_IDS_KEPT_SECONDS`), to recognise a re-sent append.
   */
  readonly commits: string
  /** Ours: "<lowest sequence kept in `commits`> <its id's stamp>"; below it a miss proves nothing. */
  readonly commitsFloor: string
  readonly lock: string
  readonly readyProbe: string
  /** Ours: "<size> <eventHash>" of the last signed checkpoint, the checkpointers' fence. */
  readonly checkpoint: string
}

export interface VaultKeys {
  readonly prefix: string
  readonly tokens: string
  readonly version: string
  /**
   * Ours: "<version> <commit id> <unix seconds> <changed ids JSON>" per commit, the last
   * `LOG_BOUND` and any younger than `COMMIT_IDS_KEPT_SECONDS` kept.
   */
  readonly log: string
  /**
   * Ours: "0" once the log exists, "<unix seconds>" when it was found lost then and
   * restarted: with the mark and no log, Redis lost the log (a miss proves nothing).
   */
  readonly logMark: string
  readonly lock: string
  readonly readyProbe: string
}

/** How many of our appends' commit ids `commits` keeps (lua/audit_append.lua trims it to the same bound, held equal by test/replyCodes). */
export const COMMITS_KEPT = 1000

/**
 * How long (Redis's seconds) the audit's `commits` and the vault's change log keep a
 * commit id at least, however many commits followed: a call re-sent after a reconnect
 * then still finds its first send's commit at thousands of commits a second. Passed to
 * the scripts (ARGV), which trim by it and by the count bound, whichever keeps more.
 */
export const COMMIT_IDS_KEPT_SECONDS = 30

export const auditKeys = (prefix: string): AuditKeys => ({
  prefix,
  chain: `${prefix}chain`,
  head: `${prefix}head`,
  headHash: `${prefix}head:hash`,
  commits: `${prefix}commits`,
  commitsFloor: `${prefix}commits:floor`,
  lock: `${prefix}lock`,
  readyProbe: `${prefix}ready:probe`,
  checkpoint: `${prefix}checkpoint`
})

export const vaultKeys = (prefix: string): VaultKeys => ({
  prefix,
  tokens: `${prefix}tokens`,
  version: `${prefix}version`,
  log: `${prefix}log`,
  logMark: `${prefix}log:mark`,
  lock: `${prefix}lock`,
  readyProbe: `${prefix}ready:probe`
})

// ---------------------------------------------------------------------------
// the lock's keys (RedisLock on any key; the stores' lock is `keys.lock`)

/**
 * The fence counter of a lock key, in the lock key's hash slot: `<key>:fence` when the
 * key has a hash tag, else `{<key>}:fence` (whose hashed part is the key itself).
 */
export const fenceKeyOf = (key: string): string => (hashedPart(key) === key ? `{${key}}:fence` : `${key}:fence`)

/** The queue of waiters the release hands the lock to, in the lock key's hash slot like the fence. */
export const waitersKeyOf = (key: string): string => (hashedPart(key) === key ? `{${key}}:waiters` : `${key}:waiters`)

/** The channel the lock's release script publishes on (a channel, not a key: nothing to delete). */
export const releaseChannelOf = (key: string): string => `${key}:released`

/** The keys of one lock, in the order its scripts take them: the lock, its fence counter, its waiters. */
export const lockKeysOf = (key: string): [string, string, string] => [key, fenceKeyOf(key), waitersKeyOf(key)]

// ---------------------------------------------------------------------------
// every key of a store

/** A store's keys (its key set less the prefix), then its lock's fence counter and waiter queue. */
const everyKey = (keys: AuditKeys | VaultKeys): ReadonlyArray<string> => [
  ...Object.entries(keys)
    .filter(([name]) => name !== "prefix")
    .map(([, key]) => key as string),
  fenceKeyOf(keys.lock),
  waitersKeyOf(keys.lock)
]

/**
 * Every key the audit store under `prefix` may write: the chain, its head keys, the
 * commit ids, the checkpoint fence, the readiness and durability probe, and the lock with
 * its fence counter and waiter queue. What a cleanup must delete to leave nothing behind.
 */
export const auditKeyList = (prefix: string): ReadonlyArray<string> => everyKey(auditKeys(prefix))

/** Every key the token vault under `prefix` may write, its lock's keys included (see `auditKeyList`). */
export const vaultKeyList = (prefix: string): ReadonlyArray<string> => everyKey(vaultKeys(prefix))

/**
 * The part of a key Redis Cluster hashes: the first `{...}` with something inside,
 * else the whole key (the cluster specification's rule).
 */
export const hashedPart = (key: string): string => {
  const open = key.indexOf("{")
  if (open === -1) return key
  const close = key.indexOf("}", open + 1)
  if (close === -1 || close === open + 1) return key
  return key.slice(open + 1, close)
}

/** True when every key hashes to the same slot by construction (same hash tag). */
export const sameSlot = (keys: ReadonlyArray<string>): boolean =>
  keys.every((key) => hashedPart(key) === hashedPart(keys[0] ?? ""))

/** Refuses a prefix that is not a string, or that would scatter a store's keys over a cluster. */
export const checkPrefix = (
  option: string,
  prefix: unknown,
  keys: (prefix: string) => object,
  isCluster: boolean
): Effect.Effect<string, InvalidConfig> => {
  if (typeof prefix !== "string") {
    return Effect.fail(new InvalidConfig({ option, reason: `must be a string, got ${typeof prefix}` }))
  }
  if (isCluster) {
    const all = Object.entries(keys(prefix))
      .filter(([name]) => name !== "prefix")
      .map(([, key]) => String(key))
    if (!sameSlot(all)) {
      const tagged = `{${prefix.replace(/[{}]/g, "").replace(/:$/, "")}}:`
      return Effect.fail(
        new InvalidConfig({
          option,
          reason:
            `"${prefix}" spreads the store's keys over several hash slots of a Redis Cluster, ` +
            `where its scripts would fail with CROSSSLOT; put a hash tag in it, e.g. "${tagged}"`
        })
      )
    }
  }
  return Effect.succeed(prefix)
}

/** The rate limiter's default prefix (haechi's satellite uses the same one). */
export const DEFAULT_RATELIMIT_PREFIX = "haechi:rl:"

/** The window whose logs keep the plain layout (haechi's: requests per minute). */
export const RATELIMIT_PLAIN_WINDOW_MS = 60_000
/** Starts a log key that names its window (no plain-window log key starts with it). */
const WINDOW_MARK = "\u001f"

/**
 * The one key of a rate limit, a sorted set of the allowed requests' times: one per key
 * and window, so a per-second rule never trims a per-minute log. A one-minute log is
 * `${prefix}${key}`; any other window's, or one of a key that starts with U+001F, is
 * `${prefix}\x1f${windowMs}\x1f${key}`: no two (key, window) pairs share a log. Its
 * scripts touch only it, so any prefix works on a Redis Cluster.
 */
export const rateLimitKey = (prefix: string, key: string, windowMs: number): string =>
  windowMs === RATELIMIT_PLAIN_WINDOW_MS && !key.startsWith(WINDOW_MARK)
    ? `${prefix}${key}`
    : `${prefix}${WINDOW_MARK}${windowMs}${WINDOW_MARK}${key}`

/**
 * Refuses a rate limiter prefix that is not a string, or under which some caller's key
 * would name a store's key: "" or "haechi:" put `audit:chain` on the audit chain.
 */
export const checkRateLimitPrefix = (prefix: unknown): Effect.Effect<string, InvalidConfig> =>
  Effect.flatMap(
    checkPrefix("keyPrefix", prefix, (p) => ({ log: rateLimitKey(p, "", RATELIMIT_PLAIN_WINDOW_MS) }), false),
    (p) => {
      // A key names a store key when the prefix is a start of one (the prefix is shorter) or
      // starts with a store prefix (the key completes it); the lock's fence and waiter keys
      // put a "{" before the store prefix.
      const store = [DEFAULT_AUDIT_PREFIX, DEFAULT_VAULT_PREFIX].find((storePrefix) =>
        [storePrefix, `{${storePrefix}`].some((start) => start.startsWith(p) || p.startsWith(start))
      )
      return store === undefined
        ? Effect.succeed(p)
        : Effect.fail(
            new InvalidConfig({
              option: "keyPrefix",
              reason: `"${p}" would let a rate limit key name a key of the store under "${store}"; use a prefix of its own, e.g. "${DEFAULT_RATELIMIT_PREFIX}"`
            })
          )
    }
  )
