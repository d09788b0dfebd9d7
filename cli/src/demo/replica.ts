/**
 * One demo replica: its own store instances (on Redis its own connection, on memory the
 * shared backing), appending an audit event per tokenized value, the way one haechi
 * replica behind a load balancer serves its share of the requests.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import {
  AuditLog,
  AuditStore,
  type InvalidConfig,
  memoryAuditBacking,
  memoryVaultBacking,
  RedisClient,
  type StoreError,
  TokenStore
} from "haechi-store-effect"
import { makeVaultDriver } from "./vaultDriver.js"

/** Opens one Redis connection for a scope's life (absent: the in-memory backings). */
export type Connect = Effect.Effect<RedisClient.RedisClientShape, StoreError, Scope.Scope>

export interface ReplicaStores {
  readonly audit: AuditStore.AuditStoreShape
  readonly vault: TokenStore.TokenStoreShape
}

/**
 * Opens a replica's stores: on Redis under the prefixes, each call on a connection of its
 * own; on memory over one backing per store that every call shares.
 */
export const storeOpener = (
  connect: Connect | undefined,
  auditPrefix: string,
  vaultPrefix: string
): Effect.Effect<ReplicaStores, StoreError | InvalidConfig, Scope.Scope> => {
  if (connect === undefined) {
    const audit = memoryAuditBacking(auditPrefix)
    const vault = memoryVaultBacking(vaultPrefix)
    return Effect.sync(() => ({ audit: AuditStore.fromBacking(audit), vault: TokenStore.fromBacking(vault) }))
  }
  return Effect.flatMap(connect, (client) =>
    Effect.provideService(
      Effect.all({
        audit: AuditStore.make({ keyPrefix: auditPrefix }),
        vault: TokenStore.make({ keyPrefix: vaultPrefix })
      }),
      RedisClient.RedisClient,
      client
    )
  )
}

/** What the replicas share as they go: what they did, and when the event loop last had a turn. */
export interface Tally {
  done: number
  created: number
  reused: number
  pruned: number
  lastTurn: number
}

export interface ReplicaPlan {
  /** This replica's number (0-based) and how many there are: it serves events r, r + n, … */
  readonly replica: number
  readonly replicas: number
  readonly events: number
  /** The vault's encryption key, shared by the replicas as haechi's are. */
  readonly key: Buffer
  readonly onProgress?: ((done: number, total: number) => Effect.Effect<void>) | undefined
}

/** A memory replica yields to the event loop (signals, timers) at least this often. */
const EVENT_LOOP_TURN_MS = 20

/** Runs one replica's share of the events on `stores`, counting into `tally`. */
export const runReplica = (stores: ReplicaStores, plan: ReplicaPlan, tally: Tally): Effect.Effect<void, StoreError> =>
  Effect.gen(function* () {
    const log = yield* AuditLog.fromStore(stores.audit)
    const vault = yield* makeVaultDriver(stores.vault, plan.key)
    const distinct = Math.max(1, Math.ceil((plan.events * 3) / 4))
    for (let i = plan.replica; i < plan.events; i += plan.replicas) {
      // One value in ten expires at once, so the next mutation's prune finds it.
      const ttlMs = i % 10 === 9 ? 1 : 60 * 60 * 1000
      const outcome = yield* vault.tokenize(`user${i % distinct}@example.com`, "email", ttlMs)
      if (outcome.reused) tally.reused++
      else tally.created++
      tally.pruned += outcome.pruned
      yield* log.record({
        type: "demo.tokenize",
        at: new Date().toISOString(),
        replica: `replica-${plan.replica + 1}`,
        request: i + 1,
        token: outcome.token,
        reused: outcome.reused
      })
      tally.done++
      if (plan.onProgress) yield* plan.onProgress(tally.done, plan.events)
      // The next request may reach another replica first (on memory nothing else would
      // make the replicas interleave). A yield is a microtask, so on memory, where nothing
      // waits on I/O, the event loop (signals, timers) also gets a turn every few ms.
      yield* Effect.yieldNow()
      if (performance.now() - tally.lastTurn > EVENT_LOOP_TURN_MS) {
        yield* Effect.sleep(0)
        tally.lastTurn = performance.now()
      }
    }
  })
