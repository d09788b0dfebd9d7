/**
 * The Promise facade: drop-in for haechi-store-redis, wired the same way from plain JS
 * with an ioredis client instead of a node-redis one. Same factory names, options and
 * defaults; the same keys and fences, so a fleet can switch replica by replica.
 *
 * Each factory builds its store once, on the same setup path as the Effect layers
 * (StoreOptions.ts): bad options throw at the factory. A call runs one Effect on the
 * default runtime (or the one you pass) and rejects with the original error: our tagged
 * errors keep their class and `_tag`, and an error thrown by your `fn` comes back as it
 * was thrown. The implementation lives in internal/facade/.
 */
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import type { Cluster, Redis } from "ioredis"
import type * as AuditStore from "./AuditStore.js"
import type { AuditStoreShape, Integrity } from "./AuditStore.js"
import { type AppendLane, appendStoreOnBacking } from "./internal/audit/store.js"
import type * as Checkpoint from "./Checkpoint.js"
import { CheckpointNoteRejected } from "./Errors.js"
import { unsafeTimeoutMsOf } from "./internal/deadline.js"
import { memoryAuditBacking, redisAuditBacking } from "./internal/audit/backing.js"
import { clientOf } from "./internal/facade/client.js"
import { promiseConsume } from "./internal/facade/rateLimiter.js"
import { facadeStoreSetup } from "./internal/facade/redisStore.js"
import { fromCaller, promiseRunner, runSyncOrThrow } from "./internal/facade/run.js"
import { callerTransactions } from "./internal/facade/auditTransaction.js"
import { openScoped } from "./internal/facade/scoped.js"
import { auditKeys, DEFAULT_AUDIT_PREFIX, DEFAULT_VAULT_PREFIX, vaultKeys } from "./internal/keys.js"
import type { Readiness } from "./internal/readiness.js"
import { memoryVaultBacking, redisVaultBacking } from "./internal/vault/backing.js"
import { effectOf, promiseMutateOf } from "./internal/vault/promiseMutate.js"
import { promiseReadOf } from "./internal/vault/promiseRead.js"
import * as RateLimiter from "./RateLimiter.js"
import { RedisClient, type RedisClientShape } from "./RedisClient.js"
import type { StoreOptions } from "./StoreOptions.js"
import * as TokenStore from "./TokenStore.js"
import type { MutableView, ReadView, TokenStoreShape } from "./TokenStore.js"
import { messageOf } from "./internal/errorMessage.js"

export * from "./Errors.js"
export { withRedisLock } from "./internal/lock/facade.js"
export type { LockContext } from "./internal/lock/facade.js"
export type { Readiness } from "./internal/readiness.js"
export type { DurabilityOptions } from "./internal/durability.js"
export type { StartupChecksMode } from "./internal/startupChecks.js"
export type { LockPolicy } from "./internal/lock/policy.js"
export type { Integrity } from "./AuditStore.js"
export type { MutableView, ReadView, TokenRecord } from "./TokenStore.js"
export type { SignedCheckpoint, CheckpointOutcome } from "./Checkpoint.js"
export type { RateLimitResult, FailMode } from "./RateLimiter.js"

// ---------------------------------------------------------------------------
// haechi's contracts

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

/** haechi's rate limiter seam (`createRuntime(config, { rateLimiter })`), plus the full answer. */
export interface HaechiRateLimiter {
  /** The drop-in for `providers.rateLimiter.allow(key, limit)`: `limit` requests per minute. */
  allow(key: string, limit: number): Promise<boolean>
  /** The same decision with what a caller can tell the client (remaining, Retry-After). */
  consume(key: string, limit: number): Promise<RateLimiter.RateLimitResult>
}

/**
 * The Redis stores' start-up gate. The factories are synchronous, so what `durability`,
 * `startupChecks` and `witness` need from the server is checked before the first
 * operation instead: every call but `ready()` awaits `checked()` first, and nothing is
 * written until it has passed.
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

// ---------------------------------------------------------------------------
// options (the stores' own, see StoreOptions.ts and AuditStore.ts: declared there once)

export interface FacadeOptions extends Pick<StoreOptions, "retry"> {
  /** The Effect runtime to run on (for your tracer and metrics); default `Runtime.defaultRuntime`. */
  readonly runtime?: Runtime.Runtime<never>
}

/**
 * A Redis store's options: the stores' `lock`, `durability`, `startupChecks` and
 * `timeout`. The facade runs the server checks `durability` and `startupChecks` ask for
 * before the first call (see `checked()`); `timeout` bounds those too.
 */
export interface RedisStoreOptions
  extends FacadeOptions, Pick<StoreOptions, "lock" | "durability" | "startupChecks" | "timeout"> {
  readonly client: Redis | Cluster
  readonly keyPrefix?: string
}

/** What the audit stores check of a chain and a record (see the README's continuity section). */
export type AuditChecks = Pick<AuditStore.AuditStoreOptions, "onRewind" | "verifyRecords">

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

export interface CheckpointerOptions extends FacadeOptions {
  readonly client: Redis | Cluster
  readonly keyPrefix?: string
  /** The path of a key file written by `haechi-store keygen` (mode 0600), or a private key text. */
  readonly key: string
  /** Where notes go: "stdout", `{ file }` (appended, fsynced) or your function (object storage, a witness, git). */
  readonly sink:
    "stdout" | { readonly file: string } | ((checkpoint: Checkpoint.SignedCheckpoint) => Promise<void> | void)
  /** Sign when the chain has grown by this many records. */
  readonly everyRecords?: number
  /** Sign every this many seconds when the chain has grown. */
  readonly everySeconds?: number
  /** The newest checkpoint note known outside Redis, to start from; default the file sink's newest note. */
  readonly trusted?: string
  /** Sign only once the fence is on these replicas / the AOF (see `Checkpoint.CheckpointOptions.durability`). */
  readonly durability?: Checkpoint.CheckpointOptions["durability"]
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

export type MemoryRateLimiterOptions = Pick<RedisRateLimiterOptions, "keyPrefix" | "window" | "runtime">

// ---------------------------------------------------------------------------
// Effect stores in haechi's contracts

/** Wraps an Effect audit store in haechi's Promise contract. */
export const toHaechiAuditStore = (
  store: Pick<AuditStoreShape, "transaction" | "ready">,
  options: FacadeOptions = {}
): HaechiAuditStore => auditFacade(store, undefined, options)

// Our own Redis store also hands over its fast lane (see internal/facade/auditTransaction).
const auditFacade = (
  store: Pick<AuditStoreShape, "transaction" | "ready">,
  lane: AppendLane | undefined,
  options: FacadeOptions
): HaechiAuditStore => {
  const run = promiseRunner(options.runtime)
  return { transaction: callerTransactions(store, lane, options.runtime), ready: () => run(store.ready) }
}

/** Wraps an Effect token store in haechi's Promise contract. */
export const toHaechiTokenStore = (store: TokenStoreShape, options: FacadeOptions = {}): HaechiTokenStore => {
  const run = promiseRunner(options.runtime)
  // Our own stores read and mutate with no fiber when no tracer would see the operation's span.
  const readNow = promiseReadOf(store, options.runtime ?? Runtime.defaultRuntime)
  const mutateNow = promiseMutateOf(store, options.runtime ?? Runtime.defaultRuntime)
  return {
    mutate: mutateNow ?? ((fn) => run(store.mutate(effectOf(fn)))),
    read: readNow ?? ((fn) => run(store.read((view) => fromCaller(() => fn(view))))),
    ready: () => run(store.ready)
  }
}

// ---------------------------------------------------------------------------
// the stores

/** The shared audit store on Redis: `{ transaction(fn), ready(), checked() }`, keys under `keyPrefix`. */
export const createRedisAuditStore = (options: RedisAuditStoreOptions): HaechiAuditStore & Checked => {
  const setup = facadeStoreSetup(
    "createRedisAuditStore",
    options,
    DEFAULT_AUDIT_PREFIX,
    auditKeys,
    witnessCheck(options?.witness, options?.timeout)
  )
  const { retry, timeout, onRewind, verifyRecords } = options
  const { store, lane } = appendStoreOnBacking(redisAuditBacking(setup.redis, setup.prefix), {
    retry,
    timeout,
    onRewind,
    verifyRecords,
    guard: setup.guard,
    afterCommit: setup.afterCommit
  })
  const inner = auditFacade(store, lane, options)
  return { transaction: (fn) => setup.gated(() => inner.transaction(fn)), ready: inner.ready, checked: setup.checked }
}

/** The witness check of `createRedisAuditStore`'s `witness` option, run by its start-up gate. */
const witnessCheck = (witness: RedisAuditStoreOptions["witness"], timeout: RedisAuditStoreOptions["timeout"]) =>
  witness === undefined
    ? undefined
    : (redis: RedisClientShape, prefix: string) =>
        // Loaded here: the note parser and ed25519 stay off the facade's import path.
        Effect.flatMap(
          Effect.promise(() => import("./internal/checkpoint/witness.js")),
          ({ checkWitness }) =>
            checkWitness(
              redis,
              auditKeys(prefix),
              {
                verifierKey: witness.verifierKey,
                latest: Effect.tryPromise({
                  try: async () => witness.latest(),
                  catch: (cause) =>
                    new CheckpointNoteRejected({ reason: `the witness's latest() failed: ${messageOf(cause)}` })
                })
              },
              unsafeTimeoutMsOf(timeout)
            )
        )

/** The shared token store on Redis: `{ mutate(fn), read(fn), ready(), checked() }`, keys under `keyPrefix`. */
export const createRedisTokenStore = (options: RedisTokenStoreOptions): HaechiTokenStore & Checked => {
  const setup = facadeStoreSetup("createRedisTokenStore", options, DEFAULT_VAULT_PREFIX, vaultKeys)
  const { retry, timeout } = options
  const store = TokenStore.fromBacking(redisVaultBacking(setup.redis, setup.prefix), {
    retry,
    timeout,
    guard: setup.guard,
    afterCommit: setup.afterCommit
  })
  const inner = toHaechiTokenStore(store, options)
  return {
    mutate: (fn) => setup.gated(() => inner.mutate(fn)),
    read: (fn) => setup.gated(() => inner.read(fn)),
    ready: inner.ready,
    checked: setup.checked
  }
}

/** The whole chain, parsed, in order (read in pages, not one LRANGE 0 -1). */
export const readChain = async (
  client: Redis | Cluster,
  keyPrefix: string = DEFAULT_AUDIT_PREFIX
): Promise<Array<Record<string, unknown>>> => {
  const redis = clientOf("readChain", client)
  // Loaded here, with the chain pages' Stream: off the facade's import path.
  const { make } = await import("./AuditStore.js")
  const store = runSyncOrThrow(Effect.provideService(make({ keyPrefix }), RedisClient, redis))
  return collectChain(store, promiseRunner())
}

/** The chain's records as an Array (the Stream module is loaded here, off the facade's import path). */
const collectChain = async (store: AuditStoreShape, run: <A>(effect: Effect.Effect<A, unknown>) => Promise<A>) => {
  const Stream = await import("effect/Stream")
  return run(Effect.map(Stream.runCollect(store.readChain()), (chunk) => Array.from(chunk)))
}

/** The whole store over `backing`, for its chain pages (loaded with them, when first read). */
const chainReader = async (backing: ReturnType<typeof memoryAuditBacking>): Promise<AuditStoreShape> =>
  (await import("./internal/audit/chainReads.js")).storeOnBacking(backing)

/** An in-memory audit store (one process; tests and single-instance use). `_records()` returns the chain. */
export const createMemoryAuditStore = (options: FacadeOptions & AuditChecks = {}) => {
  const backing = memoryAuditBacking()
  const { store } = appendStoreOnBacking(backing, options)
  return {
    ...toHaechiAuditStore(store, options),
    _records: async (): Promise<Array<Record<string, unknown>>> =>
      collectChain(await chainReader(backing), promiseRunner(options.runtime))
  }
}

/** An in-memory token store (one process; tests and single-instance use). */
export const createMemoryTokenStore = (options: FacadeOptions = {}): HaechiTokenStore =>
  toHaechiTokenStore(TokenStore.fromBacking(memoryVaultBacking(), options), options)

// ---------------------------------------------------------------------------
// checkpoints

/**
 * A checkpointer on the audit chain under `keyPrefix`: signs the head every
 * `everyRecords` records and/or `everySeconds` seconds into `sink`, fenced in Redis so
 * that checkpointers on several replicas never sign two heads for one size. Rejects with
 * `CheckpointKeyInvalid` for a missing, unreadable or wrong key, `CheckpointNoteRejected`
 * when the sink's newest note does not verify with the key.
 */
export const startCheckpointer = async (options: CheckpointerOptions): Promise<Checkpointer> => {
  const redis = clientOf("startCheckpointer", options.client)
  const run = promiseRunner(options.runtime)
  // Loaded here: signing, sinks and verification stay off the facade's import path.
  const Checkpoint = await import("./Checkpoint.js")
  const AuditStore = await import("./AuditStore.js")
  const sink =
    options.sink === "stdout"
      ? Checkpoint.stdoutSink
      : typeof options.sink === "function"
        ? Checkpoint.functionSink(options.sink)
        : Checkpoint.fileSink(options.sink.file)
  const key = options.key.startsWith("PRIVATE+KEY+") ? await run(Checkpoint.signerFromKey(options.key)) : options.key
  const { value: checkpointer, close } = await openScoped(
    run,
    Checkpoint.make({
      key,
      sink,
      everyRecords: options.everyRecords,
      everySeconds: options.everySeconds,
      trusted: options.trusted,
      durability: options.durability
    }).pipe(
      Effect.provideServiceEffect(
        AuditStore.AuditStore,
        AuditStore.make({ keyPrefix: options.keyPrefix ?? DEFAULT_AUDIT_PREFIX })
      ),
      Effect.provideService(RedisClient, redis)
    )
  )
  return {
    verifierKey: checkpointer.verifierKey,
    checkpoint: () => run(checkpointer.checkpoint),
    latest: () => run(checkpointer.latest),
    close
  }
}

// ---------------------------------------------------------------------------
// rate limiter (haechi's providers.rateLimiter)

/**
 * The shared rate limiter on Redis: `{ allow(key, limit), consume(key, limit) }`. Exact over
 * any rolling minute across every replica, decided on Redis's clock. Bad options throw
 * here; a bad key or limit rejects with `InvalidConfig`; Redis unreachable or slow answers
 * with `onUnavailable` within `timeout` (never rejects, never hangs).
 */
export const createRedisRateLimiter = (options: RedisRateLimiterOptions): HaechiRateLimiter => {
  const { client, keyPrefix, timeout } = options ?? ({} as RedisRateLimiterOptions)
  const redis = clientOf("createRedisRateLimiter", client)
  const timeoutMs = runSyncOrThrow(RateLimiter.checkTimeout(timeout))
  const limiter = runSyncOrThrow(
    Effect.provideService(
      RateLimiter.make({ ...(keyPrefix === undefined ? {} : { keyPrefix }), timeout: timeoutMs }),
      RedisClient,
      redis
    )
  )
  return haechiRateLimiter(limiter, options, timeoutMs)
}

/** An in-memory rate limiter with the same rule (one process; tests and single-instance use). */
export const createMemoryRateLimiter = (options: MemoryRateLimiterOptions = {}): HaechiRateLimiter =>
  haechiRateLimiter(runSyncOrThrow(RateLimiter.makeMemory(options)), options, undefined)

/** A limiter in haechi's seam: its fail mode and window checked here (bad ones throw). */
const haechiRateLimiter = (
  limiter: RateLimiter.RateLimiterShape,
  options: Pick<RedisRateLimiterOptions, "onUnavailable" | "window" | "runtime">,
  timeoutMs: number | undefined
): HaechiRateLimiter => {
  const failMode = RateLimiter.failModeOf(
    runSyncOrThrow(RateLimiter.checkFailMode(options.onUnavailable)),
    limiter.prefix
  )
  const window = runSyncOrThrow(RateLimiter.checkWindow(options.window ?? 60_000))
  const consume = promiseConsume(
    (key, limit) => limiter.consume(key, { limit, window }),
    failMode,
    timeoutMs,
    options.runtime
  )
  return { allow: (key, limit) => consume(key, limit).then((result) => result.allowed), consume }
}
