/**
 * One contended operation's claim on the store's lock, kept by the adaptive policy alone:
 * the request its attempts get, the bounds it has used, its turn, and whether the lock
 * or a queue entry may be ours, from what each attempt reported. So the lock only ever
 * decides who goes next (the fences decide what commits), and an operation that ends
 * any way at all gives back what may be its own: a compare-and-delete of its token that
 * also leaves the queue, harmless where nothing was.
 *
 * Turns: an attempt that asks and meets another holder joins the lock's waiter queue in
 * the same script; the holder's commit hands the lock to the first waiter with the head
 * it just wrote ("<token> <fence> <head JSON>" on the release channel), so the next
 * writer builds once, on the right head, and commits on its next attempt.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { FenceConflict, StoreError } from "../../Errors.js"
import { randomToken } from "../commitId.js"
import type { ClaimMove, LentTurn, LockClaim, StoreGuard, Turn } from "../storeGuard.js"
import type { RedisLockHandle, Wakeup } from "./contract.js"
import { lockWaitOf, turnsOf } from "./metrics.js"
import { handedPayload } from "./releases.js"

/** Lost races in a row after which an adaptive attempt asks to take the lock (or queue) if rejected again. */
export const CLAIM_AFTER = 1
/** Times an adaptive operation yields to another holder before it waits for the lock instead. */
export const ADAPTIVE_YIELDS = 64
/**
 * A queued attempt waits this long for its turn (a hand-off addressed to it) before it
 * tries again: its place in the queue is kept. Covers a missed message and a holder that
 * hands nothing on (a haechi-store-redis replica, or a holder that died: its lock's TTL).
 */
export const TURN_WAIT_MS = 15
/**
 * While the queue moves (a hand-off to another waiter came), our turn is coming: the
 * wait starts again, up to this long in all, so a waiter further back does not try
 * again (and yield again) every `TURN_WAIT_MS` while the writers ahead of it go.
 */
export const TURN_WAIT_UP_TO_MS = 60
/**
 * How long a queue entry lives, past which a release skips it (its waiter is gone or gave
 * up). The queue is ordered by this deadline, so it is the stores' "always" wait
 * (`storeLockOptions.waitTimeout`): a turn queued after a waiting "always" writer goes
 * after it, instead of jumping ahead with a shorter deadline every time it comes back.
 */
export const QUEUE_MS = 5000
/** A claimed lock outlives a holder that neither commits nor releases it by this much. */
export const CLAIM_TTL_MS = 1000
/** After an operation of this store waited (a lost race, a yield, a queued turn), the next ones start by asking for a turn, for this long. */
export const BUSY_MS = 100

/**
 * A holder keeps its turn for the operation after its commit (back-to-back writes in one
 * process: no hand-off, no turn to ask for) up to this many commits in a row, or this
 * long since its turn came, and then hands it on: so a writer that is on the CPU goes on
 * writing, and the queue still moves every few milliseconds. The time bound is the one
 * that binds: a hand-off costs the replicas far more than a commit (about 1.4 ms of
 * client CPU in all against 0.2 ms, 4 replicas on 2 cores), so 6-8 ms turns carried
 * 1.4-1.7x the appends of 4 ms ones; 6 ms keeps a waiter's wait (the turns ahead of it)
 * further under 50 ms at the same rate (README).
 */
export const BURST_COMMITS = 64
export const BURST_MS = 6
/** How long a kept turn's lock lives until the next operation's commit renews or hands it on. */
export const KEEP_MS = 10

/** A turn kept after a commit, for the store's next operation in this process. */
export interface KeptTurn {
  /** Commits in this turn so far, and when (performance.now()) it came. */
  readonly commits: number
  readonly since: number
  /** The turn's requests, made once: asking with its token (the lock's value), and the same keeping the lock at its commit. */
  readonly asking: LockClaim
  readonly keeping: LockClaim
}

/**
 * How long a holder keeps its turn: up to this many commits in a row, or this long (ms)
 * since the turn came; `keepMs`, the kept lock's lease (default `KEEP_MS`).
 */
export interface Burst {
  readonly commits: number
  readonly ms: number
  readonly keepMs?: number
}

export const DEFAULT_BURST: Burst = Object.freeze({ commits: BURST_COMMITS, ms: BURST_MS })

/** Whether a turn with this many commits since `since` keeps the lock at its next commit. */
const burstGoesOn = (bound: Burst, turn: { readonly commits: number; readonly since: number }): boolean =>
  turn.commits + 1 < bound.commits && performance.now() - turn.since < bound.ms

/** `claim`, its commit keeping the lock it holds (for the burst's lease). */
export const keepingOf = (claim: LockClaim, bound: Burst): LockClaim =>
  Object.freeze({ ...claim, keepMs: bound.keepMs ?? KEEP_MS })

/** What an adaptive guard's operations share. */
export interface Adaptive {
  readonly handle: RedisLockHandle
  readonly lockKey: string
  readonly tries: number
  readonly burst: Burst
  /** Where an operation that keeps losing or yielding ends up: waiting for the lock. */
  readonly underLock: StoreGuard
  /** An attempt that has not asked for the lock: it yields to a holder and takes nothing. */
  readonly unclaimed: LockClaim
  /** Until when (performance.now()) the store counts as busy: operations start by asking for a turn. */
  busyUntil: number
  /** A turn the last operation kept; the next one takes it (else it is handed on once the event loop moves on). */
  kept: KeptTurn | undefined
}

const proceed = Effect.succeed(true)
const giveUp = Effect.succeed(false)

/**
 * An attempt that ends without saying (another error, an interruption) may have taken the
 * lock if it asked, so it counts as held until the end.
 */
export class ClaimState {
  request: LockClaim
  private readonly asking: LockClaim
  private lost = 0
  private yields = 0
  private held = false
  private queued = false
  private unreported = false
  /** When the turn became ours and how many commits it has had (undefined: not our turn). */
  private burst: { commits: number; since: number } | undefined
  /** The last attempt committed keeping the lock: the end hands it to the store's next operation. */
  private keptTurn = false
  /** Listening for releases and hand-offs to our token starts at the first wait and lasts the operation. */
  private wakeup: Wakeup | undefined

  /**
   * `ask`: the operation asks from its first attempt (the store is busy); `kept`: it goes
   * on with the last one's turn; `place`: with its place in the queue, waited on in vain
   * (`QueuePlace`).
   */
  constructor(
    private readonly adaptive: Adaptive,
    ask: boolean,
    kept?: KeptTurn,
    place?: LockClaim
  ) {
    this.asking = kept?.asking ?? place ?? Object.freeze({ ...adaptive.unclaimed, token: randomToken(), ask: true })
    this.request = ask || kept !== undefined ? this.asking : adaptive.unclaimed
    if (kept !== undefined) {
      this.held = true
      this.burst = { commits: kept.commits, since: kept.since }
    }
    if (place !== undefined) this.queued = true
    if (ask) this.busy()
  }

  /** Asks for a turn before anything is built: granted (build on what it hands over) or queued (wait for it). */
  turn(ask: (claim: LockClaim) => Effect.Effect<Turn, StoreError>): Effect.Effect<void, StoreError> {
    return Effect.suspend(() => {
      this.unreported = true
      // Listening before asking: the hand-off may come before the reply does.
      this.listen()
      return Effect.flatMap(ask(this.request), (turn) => {
        this.unreported = false
        if (turn._tag === "Granted") {
          this.ours()
          this.request = Object.freeze({ ...this.asking, handed: turn.handed })
          return this.count("granted")
        }
        this.queued = true
        return this.awaitTurn()
      })
    })
  }

  /** Before the next attempt, after `error`: waits for a holder or a turn, or asks for the lock; false past a bound. */
  before(
    error: FenceConflict,
    turn: ((claim: LockClaim) => Effect.Effect<Turn, StoreError>) | undefined
  ): Effect.Effect<boolean, StoreError> {
    this.busy()
    if (error.lockHeld) {
      if (++this.yields > ADAPTIVE_YIELDS) return giveUp
      if (this.request.ask) {
        this.queued = true
        return Effect.as(this.awaitTurn(), true)
      }
      // Yielded without asking: from now on it asks, and takes its place in the queue at
      // once (the turn, where the store has one; else its next attempt queues).
      this.request = this.asking
      return turn === undefined ? proceed : Effect.as(this.turn(turn), true)
    }
    if (++this.lost >= this.adaptive.tries) return giveUp
    if (this.lost >= CLAIM_AFTER) this.request = this.asking
    return proceed
  }

  /** Marks an attempt under way: until it reports, an asking one may have taken the lock. */
  attempting(): void {
    this.unreported = this.request.ask
    // An asking attempt may queue: listening before it is sent, as the hand-off may come before its reply.
    if (this.request.ask) this.listen()
    if (this.held && this.burst !== undefined && burstGoesOn(this.adaptive.burst, this.burst))
      this.request = keepingOf(this.request, this.adaptive.burst)
  }

  /** What the attempt reported doing with the lock (undefined: it did not say). */
  noted(move: ClaimMove | undefined): void {
    if (move === "took") this.ours()
    else if (move === "kept") this.keptTurn = true
    else if (move === "gaveBack") this.held = this.queued = false
    else if (move === undefined) this.held ||= this.request.ask
    this.unreported = false
    // What a turn handed over is for one attempt: a later one builds on what it learns.
    if (this.request.handed !== undefined || this.request.keepMs !== undefined) this.request = this.asking
  }

  /** Stops listening, and gives back a lock or a queue entry that may still be ours. */
  readonly end: Effect.Effect<void> = Effect.suspend(() => {
    this.wakeup?.close()
    if (this.keptTurn && this.held && this.burst !== undefined) {
      const { commits, since } = this.burst
      keepTurn(this.adaptive, {
        commits: commits + 1,
        since,
        asking: this.asking,
        keeping: keepingOf(this.asking, this.adaptive.burst)
      })
      return Effect.void
    }
    if (!this.held && !this.unreported && !this.queued) return Effect.void
    const queued = this.queued || this.request.ask
    this.held = this.unreported = this.queued = false
    const { handle, lockKey } = this.adaptive
    return handle.releaseToken(lockKey, this.asking.token, queued ? this.asking.ttlMs : undefined)
  })

  /** The lock is ours now: a turn starts. */
  private ours(): void {
    if (!this.held || this.burst === undefined) this.burst = { commits: 0, since: performance.now() }
    this.held = true
  }

  private busy(): void {
    this.adaptive.busyUntil = performance.now() + BUSY_MS
  }

  private listen(): Wakeup {
    this.wakeup ??= this.adaptive.handle.releases(this.adaptive.lockKey, this.asking.token)
    return this.wakeup
  }

  /**
   * Waits for our turn: a hand-off to our token (the lock is ours now, with what to build
   * on), a plain release, or `TURN_WAIT_MS` with no hand-off at all (up to
   * `TURN_WAIT_UP_TO_MS` while others get theirs); the next attempt finds out which (our
   * queue place is kept meanwhile).
   */
  private awaitTurn(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const started = performance.now()
      return Effect.flatMap(this.listen().next(TURN_WAIT_MS, TURN_WAIT_UP_TO_MS), (message) => {
        const waited = Metric.update(lockWaitOf(this.adaptive.lockKey), performance.now() - started)
        const handed = message === undefined ? undefined : handedPayload(message, this.asking.token)
        if (handed === undefined)
          return Effect.zipRight(waited, message === undefined ? this.count("timedOut") : Effect.void)
        this.ours()
        this.queued = false
        this.request = handed === "" ? this.asking : Object.freeze({ ...this.asking, handed })
        return Effect.zipRight(waited, this.count("handed"))
      })
    })
  }

  private count(how: "granted" | "handed" | "timedOut"): Effect.Effect<void> {
    return Metric.update(turnsOf(`${this.adaptive.lockKey}\n${how}`), 1)
  }
}

/**
 * The kept `turn` lent to a caller's first attempt (`StoreGuard.lendTurn`): the same
 * request a `ClaimState` would make with it, and the same end (a commit that kept the
 * lock keeps the turn; anything else but a lost race gives it back). `handed`: what the
 * writer before handed on with a turn that has just come (`takeTurnThen`).
 */
export class LentKeptTurn implements LentTurn {
  readonly claim: LockClaim
  constructor(
    private readonly adaptive: Adaptive,
    readonly turn: KeptTurn,
    handed?: string
  ) {
    const claim = burstGoesOn(adaptive.burst, turn) ? turn.keeping : turn.asking
    this.claim = handed === undefined || handed === "" ? claim : Object.freeze({ ...claim, handed })
  }

  committed(kept: boolean): void {
    if (kept) keepTurn(this.adaptive, { ...this.turn, commits: this.turn.commits + 1 })
  }

  ended(): void {
    giveBack(this.adaptive, this.turn)
  }
}

/**
 * A queue place that brought no turn within `takeTurnThen`'s wait (no hand-off, or a plain
 * release), handed to the guard, which goes on from it as `ClaimState.turn` does after its
 * wait: its next attempt asks with the same token, so the place is kept (a place given
 * back and asked for again goes behind every writer that queued meanwhile).
 */
export class QueuePlace implements LentTurn {
  readonly queued = true
  constructor(
    private readonly adaptive: Adaptive,
    readonly claim: LockClaim
  ) {}

  committed(): void {}

  ended(): void {
    leaveQueue(this.adaptive, this.claim.token)
  }
}

/** Gives a kept turn's lock back: to the first waiter, or freed (our token only). */
const giveBack = (adaptive: Adaptive, turn: KeptTurn): void => {
  Effect.runFork(adaptive.handle.releaseToken(adaptive.lockKey, turn.asking.token, adaptive.unclaimed.ttlMs))
}

/**
 * Leaves `turn` for the store's next operation in this process. If none has taken it by
 * the time the event loop moves on (no write follows at once), it is handed on.
 */
const keepTurn = (adaptive: Adaptive, turn: KeptTurn): void => {
  adaptive.kept = turn
  setImmediate(() => {
    if (adaptive.kept !== turn) return
    adaptive.kept = undefined
    giveBack(adaptive, turn)
  })
}

/** What ends a turn wait that brought no turn: our queue place is given back (and a lock handed to us whose message was lost). */
export const leaveQueue = (adaptive: Adaptive, token: string): void => {
  Effect.runFork(adaptive.handle.releaseToken(adaptive.lockKey, token, adaptive.unclaimed.ttlMs))
}
