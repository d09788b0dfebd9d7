/**
 * What wraps a store operation from the outside: the lock policy. A guard decides when
 * the operation runs under the lock; it never decides correctness, which the fences
 * alone carry.
 */
import type * as Effect from "effect/Effect"
import type { FenceConflict, RetriesExhausted, StoreError } from "./Errors.js"

/** An operation as a guard sees it. */
export interface GuardedOperation<A, E, R> {
  /**
   * Up to `attempts` immediate lock-free attempts that yield to a writer holding the
   * lock: losing them all, or finding the lock held, fails with `FenceConflict`
   * (with `lockHeld` for the latter).
   */
  readonly lockFree: (attempts: number) => Effect.Effect<A, E | FenceConflict, R>
  /**
   * The bounded retry loop. With `fresh`, cached state is brought up to date first (the
   * caller just waited for a lock, so what it cached is likely stale).
   */
  readonly retrying: (fresh: boolean) => Effect.Effect<A, E | RetriesExhausted, R>
}

export type StoreGuard = <A, E, R>(operation: GuardedOperation<A, E, R>) => Effect.Effect<A, E | StoreError, R>

/** No lock: the fences alone. */
export const noGuard: StoreGuard = (operation) => operation.retrying(false)
