/**
 * What wraps a store operation from the outside: the lock policy. A guard decides when
 * the operation runs under the lock; it never decides correctness, which the fences
 * alone carry.
 */
import type * as Effect from "effect/Effect"
import type { FenceConflict, RetriesExhausted, StoreError } from "../Errors.js"

/**
 * The store's lock as one operation's lock-free attempts use it, inside the fenced
 * script itself: an attempt yields to another holder, may take the lock when its fence
 * rejects it (`ask`), and gives it back when it commits. So taking the lock costs no
 * round trip of its own, and the writer holding it goes next.
 */
export interface LockClaim {
  /** The value the lock key holds while this operation has it: random, made when first asked for ("" until then). */
  token: string
  /** How long the lock outlives a holder that neither commits nor releases it. */
  readonly ttlMs: number
  /** Where releasing the lock is announced (waiters of `RedisLock` listen there). */
  readonly channel: string
  /** Set by the guard: take the lock should the next attempt be rejected. */
  ask: boolean
  /** Set by the store: the lock is ours (a rejected attempt took it; committing gives it back). */
  held: boolean
}

/** A fenced script's lock arguments: yield, claim token, TTL to take the lock with, release channel. */
export const claimArgs = (claim: LockClaim | undefined): [string, string, string, string] =>
  claim === undefined ? ["", "", "", ""] : ["1", claim.token, claim.ask ? String(claim.ttlMs) : "", claim.channel]

/**
 * Keeps `claim.held` in step with what a fenced script did: committing (or finding the
 * commit already made) gave a claimed lock back; a rejection may have taken it; a yield
 * changed nothing.
 */
export const noteClaim = (
  claim: LockClaim | undefined,
  outcome: { readonly _tag: string; readonly tookLock?: boolean }
): void => {
  if (claim === undefined) return
  if (outcome._tag === "Conflict") claim.held ||= outcome.tookLock === true
  else if (outcome._tag !== "LockHeld") claim.held = false
}

/** An operation as a guard sees it. */
export interface GuardedOperation<A, E, R> {
  /**
   * Lock-free attempts, each yielding to a writer holding the lock, under `claim` when
   * given. `attempt` runs one; losing fails with `FenceConflict` (with `lockHeld` when
   * it yielded). Every attempt past the operation's first, from here or `retrying`, is
   * one the retry schedule allowed: when it runs out, `RetriesExhausted`.
   */
  readonly attempt: (claim: LockClaim | undefined) => Effect.Effect<A, E | FenceConflict, R>
  /**
   * The bounded retry loop (the same budget as `attempt`). With `fresh`, cached state is brought up to date first (the
   * caller just waited for a lock, so what it cached is likely stale).
   */
  readonly retrying: (fresh: boolean) => Effect.Effect<A, E | RetriesExhausted, R>
}

export type StoreGuard = <A, E, R>(operation: GuardedOperation<A, E, R>) => Effect.Effect<A, E | StoreError, R>

/** No lock: the fences alone. */
export const noGuard: StoreGuard = (operation) => operation.retrying(false)
