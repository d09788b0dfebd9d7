/**
 * What wraps a store operation from the outside: the lock policy. A guard decides when
 * the operation runs under the lock; it never decides correctness, which the fences
 * alone carry.
 */
import type * as Effect from "effect/Effect"
import type { MetricLabel } from "effect/MetricLabel"
import type { FenceConflict, RetriesExhausted, StoreError } from "../Errors.js"

/**
 * The store's lock as one operation's lock-free attempts use it, inside the fenced
 * script itself: an attempt yields to another holder, may take the lock when its fence
 * rejects it (`ask`), and gives it back when it commits. So taking the lock costs no
 * round trip of its own, and the writer holding it goes next.
 *
 * The protocol passes values: the guard hands each attempt an immutable request, the
 * attempt reports what it did with the lock (`ClaimMove`: in its result, or in the
 * `FenceConflict` it fails with), and the guard alone keeps whether the lock is ours.
 */
export interface LockClaim {
  /** The value the lock key holds while this operation has it: random, made when first asked for ("" until then). */
  readonly token: string
  /** How long the lock outlives a holder that neither commits nor releases it. */
  readonly ttlMs: number
  /** Where releasing the lock is announced (waiters of `RedisLock` listen there). */
  readonly channel: string
  /**
   * Take the lock should this attempt's fence reject it, and when it yields, queue for a
   * hand-off (the lock's waiter queue) for `queueMs`.
   */
  readonly ask: boolean
  readonly queueMs: number
  /**
   * Committing keeps a lock this attempt holds, for this long (the operation after it, in
   * this process, goes on with it; a short lease, so a writer that stops there holds no
   * one up for long).
   */
  readonly keepMs?: number
  /**
   * What the writer before handed on with this attempt's turn (audit: the head JSON it
   * committed, `"null"` for the empty chain; "" or undefined: nothing). Only a hint of
   * what to build on: the fenced script proves it.
   */
  readonly handed?: string | undefined
}

/** A turn asked for before the record is built: the lock is ours now (with what to build on), or we wait in the queue. */
export type Turn = { readonly _tag: "Granted"; readonly handed: string } | { readonly _tag: "Queued" }

/**
 * What one attempt did with the store's lock: took it (its fence rejected it and the
 * claim asked), gave it back (it committed, which releases a lock it held), kept it (it
 * committed holding the lock and asked to keep it), or left it as it was (it yielded, or
 * lost without asking, or wrote nothing).
 */
export type ClaimMove = "took" | "gaveBack" | "kept" | "left"

const noClaim: [string, string, string, string, string] = ["", "", "", "", ""]

/** A fenced script's lock arguments: yield, claim token, TTL to take the lock with, release channel, queue time. */
export const claimArgs = (claim: LockClaim | undefined): [string, string, string, string, string] =>
  claim === undefined
    ? noClaim
    : [
        claim.keepMs !== undefined ? `keep ${claim.keepMs}` : "1",
        claim.token,
        claim.ask ? String(claim.ttlMs) : "",
        claim.channel,
        claim.ask && claim.queueMs > 0 ? String(claim.queueMs) : ""
      ]

/**
 * What a fenced script's outcome did with the lock: committing (or finding the commit
 * already made) gave a claimed lock back; a rejection may have taken it; a yield left it.
 */
export const claimMoveOf = (outcome: {
  readonly _tag: string
  readonly tookLock?: boolean
}): Exclude<ClaimMove, "kept"> =>
  outcome._tag === "Conflict"
    ? outcome.tookLock === true
      ? "took"
      : "left"
    : outcome._tag === "LockHeld"
      ? "left"
      : "gaveBack"

/** A successful attempt's value and what it did with the lock. */
export interface Attempted<A> {
  readonly value: A
  readonly claim: ClaimMove
}

/** Reports a successful attempt: `committed` when its fenced script committed (giving a held lock back, or keeping it: `kept`). */
export const attempted = <A>(value: A, committed: boolean, kept = false): Attempted<A> => ({
  value,
  claim: committed ? (kept ? "kept" : "gaveBack") : "left"
})

/** An operation as a guard sees it. */
export interface GuardedOperation<A, E, R> {
  /**
   * Lock-free attempts, each yielding to a writer holding the lock, under `claim`.
   * `attempt` runs one and reports what it did with the lock: succeeding, in its
   * `Attempted`; losing, in the `FenceConflict` it fails with (`lockClaim`; `lockHeld`
   * when it yielded). Every attempt past the operation's first, from here or `retrying`,
   * is one the retry schedule allowed: when it runs out, `RetriesExhausted`.
   */
  readonly attempt: (claim: LockClaim) => Effect.Effect<Attempted<A>, E | FenceConflict, R>
  /**
   * Asks for a turn without building anything (the audit store's: `audit_turn`), for an
   * operation that expects contention; absent where the store has none.
   */
  readonly turn?: ((claim: LockClaim) => Effect.Effect<Turn, StoreError>) | undefined
  /**
   * The bounded retry loop (the same budget as `attempt`). With `fresh`, cached state is brought up to date first (the
   * caller just waited for a lock, so what it cached is likely stale).
   */
  readonly retrying: (fresh: boolean) => Effect.Effect<A, E | RetriesExhausted, R>
  /**
   * The operation's first attempt was made already, by its caller, lock-free under the
   * guard's `freeClaim`, and lost with this conflict (its retry budget counts it): the
   * guard goes on from there, as after a first attempt of its own.
   */
  readonly first?: FenceConflict | undefined
  /**
   * That first attempt ran in a turn the guard lent (`StoreGuard.lendTurn`): the guard goes
   * on with the turn. With no `first`, a queue place (`LentTurn.queued`) that brought no
   * turn: the guard goes on from there, as after a wait of its own, the place kept.
   */
  readonly lent?: LentTurn | undefined
}

/**
 * A turn the guard kept after a commit (the adaptive policy's back-to-back writes of one
 * process), lent to the next operation's first attempt, made by its caller under
 * `claim` (which holds the lock). The caller reports how that attempt ended: it
 * committed, or it ended any other way than losing (what may be the operation's is
 * given back); an attempt that lost goes on in the guard (`GuardedOperation.lent`).
 */
export interface LentTurn {
  readonly claim: LockClaim
  /** The attempt committed; `kept`: its commit kept the lock (for the operation after it). */
  readonly committed: (kept: boolean) => void
  /** The attempt failed, wrote nothing, or its deadline passed: the lock is given back. */
  readonly ended: () => void
  /**
   * No turn came (`StoreGuard.takeTurn`'s wait ran out, or a plain release): `claim` is the
   * operation's place in the queue, kept for the guard's next attempt (no attempt is made
   * in it here); `ended` gives it back.
   */
  readonly queued?: true
}

/**
 * A turn asked for outside any fiber (`StoreGuard.takeTurn`): `turn` settles with the
 * turn, lent to the caller's first attempt; with the queue place (`LentTurn.queued`) when
 * none came within the wait, for the guard to go on with; or undefined when the request
 * failed (what it may have taken is given back; the operation goes on in the guard,
 * which asks again); `abandon` ends the wait (the caller's deadline passed): what
 * may be the operation's is given back, and a turn that comes after is the caller's to end.
 */
export interface TurnWait {
  readonly turn: Promise<LentTurn | undefined>
  readonly abandon: () => void
}

export interface StoreGuard {
  <A, E, R>(operation: GuardedOperation<A, E, R>): Effect.Effect<A, E | StoreError, R>
  /**
   * The claim an operation starting now would make its first attempt under, when that
   * attempt is plain (lock-free, touching the lock only to yield to a holder): so a
   * caller can make it without entering the guard, and enter it only if it loses
   * (`GuardedOperation.first`). `undefined`: no claim at all; `false` (or no
   * `freeClaim`): the guard decides the first attempt itself.
   */
  readonly freeClaim?: () => LockClaim | undefined | false
  /**
   * A turn kept for the operation starting now, lent to a caller that makes its first
   * attempt itself (asked before `freeClaim`); undefined: none is kept.
   */
  readonly lendTurn?: () => LentTurn | undefined
  /**
   * For an operation starting while the store is busy (`freeClaim` said false and no turn
   * is kept): asks for its turn with `ask` (the store's turn request, sent by the caller)
   * and waits for it, with no fiber. Absent: the guard asks itself.
   */
  readonly takeTurn?: (ask: (claim: LockClaim) => Promise<Turn>, labels: ReadonlyArray<MetricLabel>) => TurnWait
}

const alwaysFree = (): undefined => undefined

/** No lock: the fences alone. */
export const noGuard: StoreGuard = Object.assign(
  <A, E, R>(operation: GuardedOperation<A, E, R>) => operation.retrying(false),
  { freeClaim: alwaysFree }
)
