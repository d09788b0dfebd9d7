/**
 * What a backing's round trip to Redis can fail with, defined once for every backing
 * (audit, vault, rate limiter): no answer or a refusal (`RedisError`), or a key that does
 * not hold what this package writes (`CorruptData`).
 */
import type { CorruptData, RedisError } from "../Errors.js"

export type BackingError = RedisError | CorruptData
