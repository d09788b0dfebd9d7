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
 *
 * Here: the options, the run and the summary; a replica's loop is in ./demo/replica.ts,
 * the vault driver in ./demo/vaultDriver.ts.
 */
import { randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import { AuditStore, type Chain, type InvalidConfig, type StoreError, TokenStore, Verify } from "haechi-store-effect"
import { type Connect, runReplica, storeOpener, type Tally } from "./demo/replica.js"

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
  readonly connect?: Connect | undefined
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
export const runDemo = (options: DemoOptions = {}): Effect.Effect<DemoSummary, StoreError | InvalidConfig> =>
  Effect.scoped(
    Effect.gen(function* () {
      const replicas = Math.max(1, Math.floor(options.replicas ?? 4))
      const events = Math.max(0, Math.floor(options.events ?? 200))
      const id = randomBytes(4).toString("hex")
      const onRedis = options.connect !== undefined
      const auditPrefix = onRedis ? `demo:${id}:audit:` : "memory:audit:"
      const vaultPrefix = onRedis ? `demo:${id}:tv:` : "memory:tv:"
      const openStores = storeOpener(options.connect, auditPrefix, vaultPrefix)

      const conflictsBefore = yield* counterTotal(FENCE_CONFLICTS)
      const key = randomBytes(32)
      const started = performance.now()
      const tally: Tally = { done: 0, created: 0, reused: 0, pruned: 0, lastTurn: started }
      // A demo that fails or is interrupted still deletes its keys, as well as it can; one
      // that ends deletes them below, where a failure to is the demo's failure (not hidden).
      const deleting = onRedis && !options.keep
      let deleted = false
      if (deleting) {
        yield* Effect.addFinalizer(() =>
          deleted ? Effect.void : Effect.ignore(deleteKeys(options.connect!, auditPrefix, vaultPrefix))
        )
      }

      yield* Effect.forEach(
        Array.from({ length: replicas }, (_, r) => r),
        (replica) =>
          Effect.flatMap(openStores, (stores) =>
            runReplica(stores, { replica, replicas, events, key, onProgress: options.onProgress }, tally)
          ),
        { concurrency: "unbounded", discard: true }
      )

      const check = yield* openStores
      const verify = yield* Effect.provideService(Verify.verifyStore(), AuditStore.AuditStore, check.audit)
      const stats = yield* check.vault.stats
      const elapsedMs = performance.now() - started
      if (deleting) {
        yield* deleteKeys(options.connect!, auditPrefix, vaultPrefix)
        deleted = true
      }
      const conflictsAfter = yield* counterTotal(FENCE_CONFLICTS)
      return {
        backend: onRedis ? "redis" : "memory",
        replicas,
        events,
        tokensCreated: tally.created,
        tokensReused: tally.reused,
        tokensPruned: tally.pruned,
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

/** Deletes the stores' keys (their own lists, the locks' fence counters and waiter queues included). */
const deleteKeys = (connect: Connect, auditPrefix: string, vaultPrefix: string): Effect.Effect<void, StoreError> =>
  Effect.scoped(
    Effect.flatMap(connect, (client) => {
      const keys = [...AuditStore.keysOf(auditPrefix), ...TokenStore.keysOf(vaultPrefix)]
      return Effect.asVoid(client.run("DEL demo keys", (c) => c.del(...keys)))
    })
  )
