/**
 * "Is this an ioredis client", answered in one place. Duck-typed rather than
 * `instanceof`: a consumer's ioredis (6.x beside the 5.x another package brought, or a
 * second copy in a bundle) fails `instanceof` against ours, and checking the methods
 * keeps ioredis itself off the import path of code that only receives a client.
 */
import type { Cluster, Redis } from "ioredis"

/** The methods the stores, the lock and the scripts call on a client. */
const METHODS = ["defineCommand", "evalsha", "eval", "set", "lrange", "duplicate"] as const

/** True for an ioredis `Redis` or `Cluster` instance (from any copy of ioredis). */
export const isIoredisClient = (client: unknown): client is Redis | Cluster =>
  typeof client === "object" &&
  client !== null &&
  METHODS.every((method) => typeof (client as Record<string, unknown>)[method] === "function")

/** True for an ioredis `Cluster` (ioredis sets `isCluster` on both of its client classes). */
export const isClusterClient = (client: Redis | Cluster): client is Cluster =>
  (client as { readonly isCluster?: boolean }).isCluster === true
