/**
 * The demo behind `haechi-store demo`: several replicas share one audit chain and one
 * token vault, each through its own store instance (its own cached head and vault
 * version, and on Redis its own connection), the way haechi replicas behind a load
 * balancer do. Each replica appends audit events through its own `AuditLog` and
 * tokenizes values through a small vault driver that mutates the vault the way haechi's
 * core does (prune expired records over the whole vault on every mutation, then set).
 * At the end the chain is verified in place.
 *
 * What it shows: concurrent writers never fork the chain or lose a token, because every
 * commit is fenced (conflicts are counted in the summary), and the chain verifies.
 * It never touches haechi's own keys: on Redis it writes under a fresh `demo:<id>:`
 * prefix, deleted at the end unless kept.
 */
import { createCipheriv, createHash, randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import type * as Scope from "effect/Scope"
import {
  AuditLog,
  AuditStore,
  type Chain,
  type InvalidConfig,
  Keys,
  memoryAuditBacking,
  memoryVaultBacking,
  RedisClient,
  type StoreError,
  TokenStore,
  Verify
} from "haechi-store-effect"

type TokenRecord = TokenStore.TokenRecord
type MutableView = TokenStore.MutableView
type VerifyResult = Chain.VerifyResult

export interface DemoOptions {
  /** Concurrent replicas; default 4. */
  readonly replicas?: number
  /** Audit events in all (each also tokenizes one value), spread over the replicas; default 200. */
  readonly events?: number
  /**
   * Opens one Redis connection per replica (and one for the final verification).
   * Absent: every replica runs on one shared in-memory backing.
   */
  readonly connect?: Effect.Effect<RedisClient.RedisClientShape, StoreError, Scope.Scope> | undefined
  /** Keep the demo's keys on Redis instead of deleting them at the end. */
  readonly keep?: boolean
  /** Called after each event with the number done and the total. */
  readonly onProgress?: ((done: number, total: number) => Effect.Effect<void>) | undefined
}

export interface DemoSummary {
  readonly backend: "memory" | "redis"
  readonly replicas: number
  readonly events: number
  /** Tokenize calls that created a token / reused a live one. */
  readonly tokensCreated: number
  readonly tokensReused: number
  /** Expired tokens deleted by the prune that precedes each mutation. */
  readonly tokensPruned: number
  /** Tokens in the vault at the end, and its version. */
  readonly vaultSize: number
  readonly vaultVersion: string
  /** Fenced commits rejected because another replica committed first (then retried). */
  readonly fenceConflicts: number
  readonly verify: VerifyResult
  readonly elapsedMs: number
  readonly auditPrefix: string
  readonly vaultPrefix: string
  readonly kept: boolean
}

/** Runs the demo and returns its summary; fails only with a store error. */
export const runDemo = (
  options: DemoOptions = {}
): Effect.Effect<DemoSummary, StoreError | InvalidConfig> =>
  Effect.scoped(
    Effect.gen(function* () {
      const replicas = Math.max(1, Math.floor(options.replicas ?? 4))
      const events = Math.max(0, Math.floor(options.events ?? 200))
      const id = randomBytes(4).toString("hex")
      const onRedis = options.connect !== undefined
      const auditPrefix = onRedis ? `demo:${id}:audit:` : "memory:audit:"
      const vaultPrefix = onRedis ? `demo:${id}:tv:` : "memory:tv:"

      // Each replica gets its own store instances; on memory they share one backing.
      const sharedAudit = onRedis ? undefined : memoryAuditBacking(auditPrefix)
      const sharedVault = onRedis ? undefined : memoryVaultBacking(vaultPrefix)
      const openStores = (connect: DemoOptions["connect"]) =>
        connect === undefined
          ? Effect.succeed({
              audit: AuditStore.makeWith(sharedAudit!),
              vault: TokenStore.fromBacking(sharedVault!)
            })
          : Effect.flatMap(connect, (client) =>
              Effect.provideService(
                Effect.all({
                  audit: AuditStore.make({ keyPrefix: auditPrefix }),
                  vault: TokenStore.make({ keyPrefix: vaultPrefix })
                }),
                RedisClient.RedisClient,
                client
              )
            )

      const conflictsBefore = yield* counterTotal(FENCE_CONFLICTS)
      const key = randomBytes(32)
      const started = performance.now()
      let done = 0
      let created = 0
      let reused = 0
      let pruned = 0
      let lastTurn = started

      const cleanup = onRedis && !options.keep ? deleteKeys(options.connect!, auditPrefix, vaultPrefix) : Effect.void
      yield* Effect.addFinalizer(() => Effect.ignore(cleanup))

      yield* Effect.forEach(
        Array.from({ length: replicas }, (_, r) => r),
        (r) =>
          Effect.gen(function* () {
            const stores = yield* openStores(options.connect)
            const log = yield* AuditLog.makeWith(stores.audit)
            const vault = yield* makeVaultDriver(stores.vault, key)
            for (let i = r; i < events; i += replicas) {
              const value = `user${i % Math.max(1, Math.ceil((events * 3) / 4))}@example.com`
              const ttlMs = i % 10 === 9 ? 1 : 60 * 60 * 1000
              const outcome = yield* vault.tokenize(value, "email", ttlMs)
              if (outcome.reused) reused++
              else created++
              pruned += outcome.pruned
              yield* log.record({
                type: "demo.tokenize",
                at: new Date().toISOString(),
                replica: `replica-${r + 1}`,
                request: i + 1,
                token: outcome.token,
                reused: outcome.reused
              })
              done++
              if (options.onProgress) yield* options.onProgress(done, events)
              // The next request may reach another replica first (on memory nothing
              // else would make the replicas interleave). A yield is a microtask, so on
              // memory, where nothing waits on I/O, the event loop (signals, timers) also
              // gets a turn every few milliseconds.
              yield* Effect.yieldNow()
              if (performance.now() - lastTurn > EVENT_LOOP_TURN_MS) {
                yield* Effect.sleep(0)
                lastTurn = performance.now()
              }
            }
          }),
        { concurrency: "unbounded", discard: true }
      )

      const check = yield* openStores(options.connect)
      const verify = yield* Effect.provideService(Verify.verifyStore(), AuditStore.AuditStore, check.audit)
      const stats = yield* check.vault.stats
      const elapsedMs = performance.now() - started
      const conflictsAfter = yield* counterTotal(FENCE_CONFLICTS)
      return {
        backend: onRedis ? "redis" : "memory",
        replicas,
        events,
        tokensCreated: created,
        tokensReused: reused,
        tokensPruned: pruned,
        vaultSize: stats.size,
        vaultVersion: stats.version === "" ? "0" : stats.version,
        fenceConflicts: conflictsAfter - conflictsBefore,
        verify,
        elapsedMs,
        auditPrefix,
        vaultPrefix,
        kept: onRedis && options.keep === true
      } satisfies DemoSummary
    }).pipe(Effect.withSpan("haechi.demo"))
  )

/** The sum of a counter over all its tag sets (the stores tag it by store and operation). */
const counterTotal = (name: string): Effect.Effect<number> =>
  Effect.map(Metric.snapshot, (pairs) => {
    let total = 0
    for (const pair of pairs) {
      if (pair.metricKey.name === name && MetricState.isCounterState(pair.metricState)) {
        total += Number(pair.metricState.count)
      }
    }
    return total
  })

const FENCE_CONFLICTS = "haechi_store_fence_conflicts_total"
const EVENT_LOOP_TURN_MS = 20

const deleteKeys = (
  connect: NonNullable<DemoOptions["connect"]>,
  auditPrefix: string,
  vaultPrefix: string
): Effect.Effect<void, StoreError> =>
  Effect.scoped(
    Effect.flatMap(connect, (client) => {
      const keys = [...keyList(Keys.auditKeys(auditPrefix)), ...keyList(Keys.vaultKeys(vaultPrefix))]
      return Effect.asVoid(client.run("DEL demo keys", (c) => c.del(...keys)))
    })
  )

/** Every key of a store: its key set (Keys.ts) less the prefix itself. */
const keyList = (keys: { readonly prefix: string }): Array<string> =>
  Object.entries(keys)
    .filter(([name]) => name !== "prefix")
    .map(([, key]) => key as string)

// ---------------------------------------------------------------------------
// A small vault driver, mutating the vault the way haechi's core does.

interface TokenizeOutcome {
  readonly token: string
  readonly reused: boolean
  readonly pruned: number
}

const isExpired = (record: TokenRecord, now: number): boolean =>
  typeof record.expiresAt === "string" && Date.parse(record.expiresAt) <= now

const makeVaultDriver = (store: TokenStore.TokenStoreShape, key: Buffer) =>
  Effect.map(Effect.makeSemaphore(1), (semaphore) => ({
    /**
     * haechi's tokenize: prune expired records over the whole vault, then reuse the live
     * token of the same value (extending its expiry in place, then `set`) or create one.
     */
    tokenize: (value: string, type: string, ttlMs: number): Effect.Effect<TokenizeOutcome, StoreError> =>
      store
        .mutate((view: MutableView) =>
          Effect.sync((): TokenizeOutcome => {
            const now = Date.now()
            let prunedHere = 0
            for (const [token, record] of view.entries()) {
              if (isExpired(record, now)) {
                view.delete(token)
                prunedHere++
              }
            }
            const fingerprint = createHash("sha256").update(`${type}:${value}`).digest("hex").slice(0, 32)
            const expiresAt = new Date(now + ttlMs).toISOString()
            const live = view
              .entries()
              .find(([, record]) => (record.metadata as { fingerprint?: string } | undefined)?.fingerprint === fingerprint)
            if (live !== undefined) {
              const existing = view.get(live[0])!
              existing.expiresAt = expiresAt
              view.set(live[0], existing)
              return { token: live[0], reused: true, pruned: prunedHere }
            }
            const token = `tok_${type}_${randomBytes(8).toString("hex")}`
            const iv = randomBytes(12)
            const aad = `${token}:${type}`
            const cipher = createCipheriv("aes-256-gcm", key, iv)
            cipher.setAAD(Buffer.from(aad))
            const ciphertext = Buffer.concat([cipher.update(value, "utf8"), cipher.final()])
            view.set(token, {
              type,
              createdAt: new Date(now).toISOString(),
              expiresAt,
              metadata: { fingerprint },
              envelope: {
                alg: "aes-256-gcm",
                iv: iv.toString("base64url"),
                tag: cipher.getAuthTag().toString("base64url"),
                ciphertext: ciphertext.toString("base64url")
              },
              aad
            })
            return { token, reused: false, pruned: prunedHere }
          })
        )
        .pipe(semaphore.withPermits(1))
  }))
