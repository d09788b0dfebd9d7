/**
 * haechi-store-effect: haechi's shared audit chain and token vault on Redis, as Effect
 * layers whose correctness comes from server-side fences, with in-memory twins.
 * The Promise facade for plain JS lives in `haechi-store-effect/haechi`.
 */
export * as AuditStore from "./AuditStore.js"
export * as TokenStore from "./TokenStore.js"
// In-memory backings several store instances can share (as replicas share one Redis).
export { memoryAuditBacking, type AuditBacking } from "./internal/audit/backing.js"
export { memoryVaultBacking, type VaultBacking } from "./internal/vault/backing.js"
export * as RedisClient from "./RedisClient.js"
export * as Retry from "./Retry.js"
export * as Keys from "./internal/keys.js"
export * as Metrics from "./Metrics.js"
export * from "./Errors.js"
export type { Readiness } from "./internal/readiness.js"
export * as AuditLog from "./AuditLog.js"
export * as Verify from "./Verify.js"
export * as Checkpoint from "./Checkpoint.js"
export * as Chain from "./Chain.js"
export * as ChainSchema from "./ChainSchema.js"
export * as RedisLock from "./RedisLock.js"
export * as LockPolicy from "./internal/lock/policy.js"
export * as Durability from "./internal/durability.js"
export * as StartupChecks from "./internal/startupChecks.js"
export { withRedisLock } from "./internal/lock/facade.js"
// A deadline on real time (Node's timer, not the Effect Clock) for a read of your own,
// failing with OperationTimeout; the stores bound their operations with their `timeout`.
export { timeoutAfter } from "./internal/deadline.js"
export * as RateLimiter from "./RateLimiter.js"
