/**
 * The shared Redis servers started once per run by ./globalSetup.ts, as seen from tests.
 *
 * Guarantees: the `ProvidedContext` keys below are always provided (globalSetup fails the
 * run otherwise) and stay up for the whole run. Tests must isolate their keys with
 * ./keys.ts and must not FLUSHALL/SHUTDOWN/CONFIG SET the shared servers; tests that need
 * restarts or kill -9 start their own server with startRedis().
 */
import { afterAll, inject } from "vitest"
import { Redis } from "ioredis"
import { clusterFailover } from "./redisCluster.js"

export interface SharedRedis {
  readonly host: string
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
}

export interface SharedCluster {
  /** Seed list for `new Cluster(startupNodes)` — every node of the cluster. */
  readonly startupNodes: ReadonlyArray<{ readonly host: string; readonly port: number }>
  readonly masters: number
  readonly replicasPerMaster: number
}

declare module "vitest" {
  export interface ProvidedContext {
    /** Shared standalone redis-server (no persistence). */
    redis: SharedRedis
    /** Shared 3-master cluster with 1 replica per master. */
    redisCluster: SharedCluster
  }
}

/** Connection details of the shared standalone server. */
export const sharedRedis = (): SharedRedis => inject("redis")

/** A test file's connections to the shared server: `connect()` opens one, quit after all its tests. */
export const sharedConnections = (): (() => Redis) => {
  const clients: Array<Redis> = []
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit()))
  })
  return () => {
    const client = new Redis(sharedRedis().url)
    clients.push(client)
    return client
  }
}

/**
 * Connection details of the shared cluster, plus `failover(slotOrKey)`. A failover is
 * coordinated (no acknowledged write is lost) but briefly pauses that master's slots and
 * moves them, which other test files using the cluster at the same time will observe as
 * MOVED redirects / short pauses; it leaves the cluster stable (all slots ok) again.
 */
export const sharedCluster = (): SharedCluster & { failover(slotOrKey: number | string): Promise<void> } => {
  const cluster = inject("redisCluster")
  return {
    ...cluster,
    failover: (slotOrKey) =>
      clusterFailover(
        cluster.startupNodes.map((n) => n.port),
        slotOrKey
      )
  }
}
