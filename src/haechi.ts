/**
 * The Promise facade: drop-in for haechi-store-redis, wired the same way from plain JS
 * with an ioredis client instead of a node-redis one. Same factory names, options and
 * defaults; the same keys and fences, so a fleet can switch replica by replica.
 *
 * Each factory builds its store once; a call runs one Effect on the default runtime (or
 * the one you pass) and rejects with the original error: our tagged errors keep their
 * class and `_tag`, and an error thrown by your `fn` comes back as it was thrown.
 */
import * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Runtime from "effect/Runtime"
import * as Stream from "effect/Stream"
import { Cluster, Redis } from "ioredis"
import * as AuditStore from "./AuditStore.js"
import type { AuditStoreShape, Integrity } from "./AuditStore.js"
import { InvalidConfig } from "./Errors.js"
import type { DurabilityOptions } from "./internal/durability.js"
import { auditKeys, DEFAULT_AUDIT_PREFIX, DEFAULT_VAULT_PREFIX, vaultKeys } from "./internal/keys.js"
import type { Readiness } from "./internal/readiness.js"
import { fromClient, timerDelay, type RedisClientShape } from "./RedisClient.js"
import type { RetrySchedule } from "./Retry.js"
import { memoryAuditBacking } from "./internal/audit/backing.js"
import { memoryVaultBacking } from "./internal/vault/backing.js"
import * as TokenStore from "./TokenStore.js"
import type { MutableView, ReadView, TokenStoreShape } from "./TokenStore.js"
import { RedisClient } from "./RedisClient.js"
import { linked } from "./internal/deadline.js"
import { fastPromiseRunner, promiseRunner, runSyncOrThrow } from "./internal/facade/run.js"
import type { LockPolicy } from "./internal/lock/policy.js"
import { preflight, type StartupChecksMode } from "./internal/startupChecks.js"
import * as Checkpoint from "./Checkpoint.js"
import { checkWitness } from "./internal/checkpoint/witness.js"
import { CheckpointNoteRejected } from "./Errors.js"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as RateLimiter from "./RateLimiter.js"
export type { LockPolicy } from "./internal/lock/policy.js"
export type { SignedCheckpoint, CheckpointOutcome } from "./Checkpoint.js"

export * from "./Errors.js"
export { withRedisLock } from "./internal/lock/facade.js"
export type { LockContext } from "./internal/lock/facade.js"
export type { Readiness } from "./internal/readiness.js"
export type { DurabilityOptions } from "./internal/durability.js"
export type { StartupChecksMode } from "./internal/startupChecks.js"
export type { Integrity } from "./AuditStore.js"
export type { MutableView, ReadView, TokenRecord } from "./TokenStore.js"

/** haechi's audit store contract. */
export interface HaechiAuditStore {
  transaction<T>(
    fn: (ctx: {
      readLastIntegrity(): Promise<Integrity | null>
      persist(record: Record<string, unknown>): Promise<void>
    }) => Promise<T> | T
  ): Promise<T>
  ready(): Promise<Readiness>
}

/** haechi's token store contract. */
export interface HaechiTokenStore {
  mutate<T>(fn: (view: MutableView) => Promise<T> | T): Promise<T>
  read<T>(fn: (view: ReadView) => Promise<T> | T): Promise<T>
  ready(): Promise<Readiness>
}

export interface FacadeOptions {
  /** Retry after fence conflicts (an Effect `Schedule`); default 128 attempts: four immediate, then short jittered backoff. */
  readonly retry?: RetrySchedule
  /** The Effect runtime to run on (for your tracer and metrics); default `Runtime.defaultRuntime`. */
  readonly runtime?: Runtime.Runtime<never>
}

export interface RedisStoreOptions extends FacadeOptions {
  readonly client: Redis | Cluster
  readonly keyPrefix?: string
  /** When to take the Redis lock: "adaptive" (default), "always" (the reference's way) or "never". */
  readonly lock?: LockPolicy
  /**
   * Opt-in durable commits: a commit is acknowledged only once `replicas` replicas
   * (`WAIT`) and/or the AOF (`aof`, `WAITAOF`, Redis >= 7.2) have it within `timeout`,
   * else the call rejects with `DurabilityTimeout`. See `checked()`.
   */
  readonly durability?: DurabilityOptions
  /**
   * Check the server's eviction policy and persistence before first use: "warn" logs
   * problems, "fail" rejects with `UnsafeRedisConfig`; default "off". See `checked()`.
   */
  readonly startupChecks?: StartupChecksMode
  /**
   * The deadline of every call (`transaction`, `mutate`, `read`, and the start-up checks
   * before the first one), on real time: default 10 s; a number is ms. Past it the call
   * rejects with `OperationTimeout`, or `CommitOutcomeUnknown` where a commit may have
   * landed. Pair it with the client's `commandTimeout` (see the README).
   */
  readonly timeout?: Duration.DurationInput
}

/**
 * The Redis stores' start-up gate. The factories are synchronous, so what `durability`
 * and `startupChecks` need from the server (see StartupChecks.ts) is checked before the
 * first operation instead: every call but `ready()` awaits `checked()` first, and nothing
 * is written until it has passed.
 */
export interface Checked {
  /**
   * Resolves once the start-up checks and durability's server checks have passed (then
   * never runs them again); rejects with `UnsafeRedisConfig`, `InvalidConfig` (for
   * example `durability.aof` on Redis < 7.2) or a Redis error, and tries again on the
   * next call. Await it at start-up to fail fast; resolves at once when nothing is asked.
   */
  checked(): Promise<void>
}

/** What the audit stores check of a chain and a record (see the README's continuity section). */
export interface AuditChecks {
  /**
   * When the chain no longer holds a head this replica saw (a failover to a lagging
   * replica, FLUSHALL, a restored snapshot): "record" (default) appends a record naming
   * the lost head and goes on; "fail" rejects every append with `ChainRewound`.
   */
  readonly onRewind?: AuditStore.OnRewind
  /** "chain" (default), or "full": also recompute each record's eventHash before persisting it. */
  readonly verifyRecords?: AuditStore.VerifyRecords
}

export interface RedisAuditStoreOptions extends RedisStoreOptions, AuditChecks {
  /**
   * Replicas as witnesses: `checked()` (and so the first call) also reads the newest
   * signed checkpoint from `latest()` (a note, or a whole checkpoints file's text;
   * undefined when there is none yet), verifies it with `verifierKey`, and rejects with
   * `ChainMissesCheckpoint` when the chain is shorter or holds another record at its
   * sequence: nothing is ever appended to such a chain.
   */
  readonly witness?: {
    readonly verifierKey: string
    readonly latest: () => Promise<string | undefined> | string | undefined
  }
}
export type RedisTokenStoreOptions = RedisStoreOptions

const runner = promiseRunner

/** A thrown value from the caller's `fn`, passed through untouched (a FenceConflict stays retryable). */
const fromCaller = <A>(fn: () => Promise<A> | A): Effect.Effect<A, unknown> =>
  Effect.tryPromise({ try: async () => fn(), catch: (error) => error })

const redisClient = (factory: string, client: unknown): RedisClientShape => {
  if (!(client instanceof Redis || client instanceof Cluster) && !looksLikeIoredis(client)) {
    throw new InvalidConfig({
      option: `${factory} client`,
      reason: "an ioredis Redis or Cluster instance is required (for example new Redis(process.env.REDIS_URL))"
    })
  }
  return fromClient(client as Redis | Cluster)
}

// Another copy of ioredis (a consumer on 6.x beside our 5.x) fails instanceof; duck-type it.
const looksLikeIoredis = (client: unknown): boolean =>
  typeof client === "object" &&
  client !== null &&
  typeof (client as Redis).defineCommand === "function" &&
  typeof (client as Redis).evalsha === "function" &&
  typeof (client as Redis).lrange === "function"

const orThrow = <A, E>(effect: Effect.Effect<A, E, RedisClient>, redis: RedisClientShape): A => {
  return runSyncOrThrow(Effect.provideService(effect, RedisClient, redis))
}

/** Wraps an Effect audit store in haechi's Promise contract. */
export const toHaechiAuditStore = (store: AuditStoreShape, options: FacadeOptions = {}): HaechiAuditStore => {
  const run = runner(options.runtime)
  return {
    transaction: (fn) =>
      run(
        store.transaction((tx) =>
          // `fn`'s calls run on the transaction's own runtime, so they count against its
          // deadline (a persist in flight then fails it with CommitOutcomeUnknown) and end with it.
          Effect.flatMap(Effect.runtime<never>(), (inside) => {
            const runInside = promiseRunner(inside)
            const runInsideFast = fastPromiseRunner(inside)
            return fromCaller(() =>
              fn({
                readLastIntegrity: () => runInsideFast(linked(tx.readLastIntegrity)),
                persist: (record) => runInside(linked(tx.persist(record)))
              })
            )
          })
        )
      ),
    ready: () => run(store.ready)
  }
}

/** Wraps an Effect token store in haechi's Promise contract. */
export const toHaechiTokenStore = (store: TokenStoreShape, options: FacadeOptions = {}): HaechiTokenStore => {
  const run = runner(options.runtime)
  return {
    mutate: (fn) => run(store.mutate((view) => fromCaller(() => fn(view)))),
    read: (fn) => run(store.read((view) => fromCaller(() => fn(view)))),
    ready: () => run(store.ready)
  }
}

/** `check` run before first use, until it passes once; concurrent first calls share one run. */
const startupGate = (run: <A>(effect: Effect.Effect<A, unknown>) => Promise<A>, check: Effect.Effect<void, unknown> | undefined) => {
  let passed = check === undefined
  let pending: Promise<void> | undefined
  const checked = (): Promise<void> => {
    if (passed || check === undefined) return Promise.resolve()
    pending ??= run(check).then(
      () => void (passed = true),
      (error: unknown) => {
        pending = undefined
        throw error
      }
    )
    return pending
  }
  return { checked, gated: <A>(f: () => Promise<A>): Promise<A> => (passed ? f() : checked().then(f)) }
}

/**
 * What both Redis factories do: check the client, validate the options (synchronously:
 * bad ones throw), build the store once, and gate first use behind the server checks.
 */
const redisStore = <S>(
  factory: string,
  options: RedisStoreOptions,
  defaultPrefix: string,
  probeKeyOf: (prefix: string) => string,
  make: (o: AuditStore.AuditStoreOptions & TokenStore.TokenStoreOptions) => Effect.Effect<S, unknown, RedisClient>,
  extra: AuditChecks = {}
) => {
  const { client, keyPrefix = defaultPrefix } = options ?? ({} as RedisStoreOptions)
  const redis = redisClient(factory, client)
  // (A keyPrefix that is not a string is refused by make, just below.)
  const target = typeof keyPrefix === "string" ? { prefix: keyPrefix, probeKey: probeKeyOf(keyPrefix) } : { prefix: "", probeKey: "" }
  const pre = orThrow(preflight(redis, options, target), redis)
  const store = orThrow(
    make({ keyPrefix, retry: options.retry, lock: options.lock, afterCommit: pre.afterCommit, timeout: options.timeout, ...extra }),
    redis
  )
  return { store, ...startupGate(runner(options.runtime), pre.run) }
}

/** The shared audit store on Redis: `{ transaction(fn), ready(), checked() }`, keys under `keyPrefix`. */
export const createRedisAuditStore = (options: RedisAuditStoreOptions): HaechiAuditStore & Checked => {
  const { store, checked, gated } = redisStore(
    "createRedisAuditStore",
    options,
    DEFAULT_AUDIT_PREFIX,
    (prefix) => auditKeys(prefix).readyProbe,
    AuditStore.make,
    { onRewind: options?.onRewind, verifyRecords: options?.verifyRecords }
  )
  const inner = toHaechiAuditStore(store, options)
  const witness = options.witness
  if (witness === undefined) return { transaction: (fn) => gated(() => inner.transaction(fn)), ready: inner.ready, checked }
  // The witness check joins the start-up gate: nothing is written before it has passed.
  const latest = Effect.tryPromise({
    try: async () => witness.latest(),
    catch: (cause) => new CheckpointNoteRejected({ reason: `the witness's latest() failed: ${cause instanceof Error ? cause.message : String(cause)}` })
  })
  const witnessed = startupGate(
    runner(options.runtime),
    checkWitness(redisClient("createRedisAuditStore", options.client), auditKeys(store.prefix), { verifierKey: witness.verifierKey, latest })
  )
  return {
    transaction: (fn) => gated(() => witnessed.gated(() => inner.transaction(fn))),
    ready: inner.ready,
    checked: () => checked().then(witnessed.checked)
  }
}

/** The shared token store on Redis: `{ mutate(fn), read(fn), ready(), checked() }`, keys under `keyPrefix`. */
export const createRedisTokenStore = (options: RedisTokenStoreOptions): HaechiTokenStore & Checked => {
  const { store, checked, gated } = redisStore(
    "createRedisTokenStore",
    options,
    DEFAULT_VAULT_PREFIX,
    (prefix) => vaultKeys(prefix).readyProbe,
    TokenStore.make
  )
  const inner = toHaechiTokenStore(store, options)
  return {
    mutate: (fn) => gated(() => inner.mutate(fn)),
    read: (fn) => gated(() => inner.read(fn)),
    ready: inner.ready,
    checked
  }
}

/** The whole chain, parsed, in order (read in pages, not one LRANGE 0 -1). */
export const readChain = async (
  client: Redis | Cluster,
  keyPrefix: string = DEFAULT_AUDIT_PREFIX
): Promise<Array<Record<string, unknown>>> => {
  const redis = redisClient("readChain", client)
  const store = orThrow(AuditStore.make({ keyPrefix }), redis)
  return runner()(Effect.map(Stream.runCollect(store.readChain()), Chunk.toArray))
}

/** An in-memory audit store (one process; tests and single-instance use). `_records()` returns the chain. */
export const createMemoryAuditStore = (options: FacadeOptions & AuditChecks = {}) => {
  const backing = memoryAuditBacking()
  const store = AuditStore.makeWith(backing, options)
  const run = runner(options.runtime)
  return {
    ...toHaechiAuditStore(store, options),
    _records: (): Promise<Array<Record<string, unknown>>> => run(Effect.map(Stream.runCollect(store.readChain()), Chunk.toArray))
  }
}

/** An in-memory token store (one process; tests and single-instance use). */
export const createMemoryTokenStore = (options: FacadeOptions = {}): HaechiTokenStore =>
  toHaechiTokenStore(TokenStore.fromBacking(memoryVaultBacking(), options), options)

export interface CheckpointerOptions extends FacadeOptions {
  readonly client: Redis | Cluster
  readonly keyPrefix?: string
  /** The path of a key file written by `haechi-store keygen` (mode 0600), or a private key text. */
  readonly key: string
  /** Where notes go: "stdout", `{ file }` (appended, fsynced) or your function (object storage, a witness, git). */
  readonly sink: "stdout" | { readonly file: string } | ((checkpoint: Checkpoint.SignedCheckpoint) => Promise<void> | void)
  /** Sign when the chain has grown by this many records. */
  readonly everyRecords?: number
  /** Sign every this many seconds when the chain has grown. */
  readonly everySeconds?: number
  /** The newest checkpoint note known outside Redis, to start from; default the file sink's last note. */
  readonly trusted?: string
}

export interface Checkpointer {
  /** The signing key's verifier key, for verifiers and witnesses. */
  readonly verifierKey: string
  /** Signs the current head now if it is new (see `Checkpoint.CheckpointShape.checkpoint`). */
  checkpoint(): Promise<Checkpoint.CheckpointOutcome>
  /** The newest checkpoint this checkpointer holds. */
  latest(): Promise<Checkpoint.SignedCheckpoint | undefined>
  /** Stops the schedule. */
  close(): Promise<void>
}

/**
 * A checkpointer on the audit chain under `keyPrefix`: signs the head every
 * `everyRecords` records and/or `everySeconds` seconds into `sink`, fenced in Redis so
 * that checkpointers on several replicas never sign two heads for one size. Rejects with
 * `CheckpointKeyInvalid` for a missing, unreadable or wrong key, `CheckpointNoteRejected`
 * when the sink's newest note does not verify with the key.
 */
export const startCheckpointer = async (options: CheckpointerOptions): Promise<Checkpointer> => {
  const redis = redisClient("startCheckpointer", options.client)
  const run = runner(options.runtime)
  const sink =
    options.sink === "stdout"
      ? Checkpoint.stdoutSink
      : typeof options.sink === "function"
        ? Checkpoint.functionSink(options.sink)
        : Checkpoint.fileSink(options.sink.file)
  const key = options.key.startsWith("PRIVATE+KEY+") ? await run(Checkpoint.signerFromKey(options.key)) : options.key
  const scope = await run(Scope.make())
  const made = await run(
    Checkpoint.make({ key, sink, everyRecords: options.everyRecords, everySeconds: options.everySeconds, trusted: options.trusted }).pipe(
      Effect.provideServiceEffect(AuditStore.AuditStore, AuditStore.make({ keyPrefix: options.keyPrefix ?? DEFAULT_AUDIT_PREFIX })),
      Effect.provideService(RedisClient, redis),
      Effect.provideService(Scope.Scope, scope),
      Effect.exit
    )
  )
  if (Exit.isFailure(made)) {
    await run(Scope.close(scope, Exit.void))
    return run(Effect.failCause(made.cause))
  }
  const checkpointer = made.value
  return {
    verifierKey: checkpointer.verifierKey,
    checkpoint: () => run(checkpointer.checkpoint),
    latest: () => run(checkpointer.latest),
    close: () => run(Scope.close(scope, Exit.void))
  }
}
// ---------------------------------------------------------------------------
// rate limiter (haechi's providers.rateLimiter)

/** The result of one `consume`: see `RateLimiter.RateLimitResult`. */
export type { RateLimitResult, FailMode } from "./RateLimiter.js"

/** haechi's rate limiter seam (`createRuntime(config, { rateLimiter })`), plus the full answer. */
export interface HaechiRateLimiter {
  /** The drop-in for `providers.rateLimiter.allow(key, limit)`: `limit` requests per minute. */
  allow(key: string, limit: number): Promise<boolean>
  /** The same decision with what a caller can tell the client (remaining, Retry-After). */
  consume(key: string, limit: number): Promise<RateLimiter.RateLimitResult>
}

export interface RedisRateLimiterOptions {
  readonly client: Redis | Cluster
  /** Default "haechi:rl:" (the satellite's); a prefix under which a key could name a store's key is refused. */
  readonly keyPrefix?: string
  /** What to answer when Redis cannot decide within `timeout`: "deny" (default) or "allow". Counted either way. */
  readonly onUnavailable?: RateLimiter.FailMode
  /** Milliseconds to wait for Redis before the fail mode answers (default 1000). */
  readonly timeout?: number
  /** The window in milliseconds (default 60,000: haechi's limits are per minute). */
  readonly window?: number
  /** The Effect runtime to run on (for your tracer and metrics); default `Runtime.defaultRuntime`. */
  readonly runtime?: Runtime.Runtime<never>
}

/**
 * The facade's calls. Each call also starts a plain timer of `timeoutMs` when it is made: if
 * no decision has come when the timer fires, the fail mode answers from the timer itself, so
 * a busy Effect scheduler cannot make the answer late. Each fail-mode answer is counted once.
 */
const rateLimiterFacade = (
  limiter: RateLimiter.RateLimiterShape,
  options: { onUnavailable?: unknown; window?: number; runtime?: Runtime.Runtime<never> },
  timeoutMs: number | undefined
): HaechiRateLimiter => {
  const failMode = RateLimiter.failModeOf(runSyncOrThrow(RateLimiter.checkFailMode(options.onUnavailable)), limiter.prefix)
  const window = runSyncOrThrow(RateLimiter.checkWindow(options.window ?? 60_000))
  const run = runner(options.runtime)
  const answer = (error: Parameters<typeof failMode.count>[0]) => {
    Effect.runSync(failMode.count(error))
    return failMode.answer
  }
  const consume = (key: string, limit: number) =>
    new Promise<RateLimiter.RateLimitResult>((resolve, reject) => {
      let settled = false
      const guard =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              settled = true
              resolve(answer(undefined))
            }, timerDelay(timeoutMs))
      run(Effect.either(limiter.consume(key, { limit, window }))).then(
        (decided) => {
          if (settled) return
          settled = true
          clearTimeout(guard)
          if (Either.isRight(decided)) resolve(decided.right)
          else if (decided.left._tag === "InvalidConfig") reject(decided.left)
          else resolve(answer(decided.left))
        },
        (defect: unknown) => {
          if (settled) return
          settled = true
          clearTimeout(guard)
          reject(defect)
        }
      )
    })
  return { allow: (key, limit) => consume(key, limit).then((result) => result.allowed), consume }
}

/**
 * The shared rate limiter on Redis: `{ allow(key, limit), consume(key, limit) }`. Exact over
 * any rolling minute across every replica, decided on Redis's clock. Bad options throw
 * here; a bad key or limit rejects with `InvalidConfig`; Redis unreachable or slow answers
 * with `onUnavailable` within `timeout` (never rejects, never hangs).
 */
export const createRedisRateLimiter = (options: RedisRateLimiterOptions): HaechiRateLimiter => {
  const { client, keyPrefix, timeout } = options ?? ({} as RedisRateLimiterOptions)
  const redis = redisClient("createRedisRateLimiter", client)
  const timeoutMs = runSyncOrThrow(RateLimiter.checkTimeout(timeout))
  const limiter = orThrow(RateLimiter.make({ ...(keyPrefix === undefined ? {} : { keyPrefix }), timeout: timeoutMs }), redis)
  return rateLimiterFacade(limiter, options, timeoutMs)
}

/** An in-memory rate limiter with the same rule (one process; tests and single-instance use). */
export const createMemoryRateLimiter = (options: { readonly keyPrefix?: string; readonly window?: number; readonly runtime?: Runtime.Runtime<never> } = {}): HaechiRateLimiter =>
  rateLimiterFacade(runSyncOrThrow(RateLimiter.makeMemory(options)), options, undefined)
