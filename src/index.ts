/**
 * haechi-store-effect: haechi's shared audit chain and token vault on Redis, as Effect
 * layers whose correctness comes from server-side fences, with in-memory twins.
 * The Promise facade for plain JS lives in `haechi-store-effect/haechi`.
 *
 * Exactly what the README documents; everything else is internal and may change.
 */
export * as AuditStore from "./AuditStore.js"
export * as TokenStore from "./TokenStore.js"
// In-memory backings several store instances can share (as replicas share one Redis).
export { memoryAuditBacking, type AuditBacking } from "./internal/audit/backing.js"
export { memoryVaultBacking, type VaultBacking } from "./internal/vault/backing.js"
export * as RedisClient from "./RedisClient.js"
export * as RedisLock from "./RedisLock.js"
export * as AuditLog from "./AuditLog.js"
export * as Verify from "./Verify.js"
export * as Chain from "./Chain.js"
export * as ChainSchema from "./ChainSchema.js"
export * as Checkpoint from "./Checkpoint.js"
export * as RateLimiter from "./RateLimiter.js"
export * as Retry from "./Retry.js"
export * as Metrics from "./Metrics.js"
export * from "./Errors.js"
// The options the stores share (see StoreOptions.ts).
export type { StoreConfig, StoreOptions } from "./StoreOptions.js"
export type { DurabilityOptions } from "./internal/durability.js"
export type { LockPolicy } from "./internal/lock/policy.js"
export type { StartupChecksMode } from "./internal/startupChecks.js"
export type { Readiness } from "./internal/readiness.js"
// A deadline on real time (Node's timer, not the Effect Clock) for a read of your own,
// failing with OperationTimeout; the stores bound their operations with their `timeout`.
export { timeoutAfter } from "./internal/deadline.js"
