/**
 * What wraps each attempt of a store operation from the outside: the lock policy. A
 * guard may reduce contention; it never decides correctness, which the fences alone carry.
 */
import type { Effect } from "effect"
import type { StoreError, StoreKind } from "./Errors.js"

/** Wraps attempt number `attempt` (1-based) of an operation on `store`. */
export type StoreGuard = <A, E, R>(
  store: StoreKind,
  attempt: number,
  operation: Effect.Effect<A, E, R>
) => Effect.Effect<A, E | StoreError, R>

/** No lock: the fences alone. */
export const noGuard: StoreGuard = (_store, _attempt, operation) => operation
