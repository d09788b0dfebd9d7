/**
 * A busy store's turn asked for outside any fiber (the Promise facade's lane): the
 * request, the wait for the hand-off to its token, and what comes of it (a turn lent to
 * the caller's first attempt, or its queue place handed to the guard). The same queue,
 * counts and hand-off format as `ClaimState.turn` (claimState.ts).
 */
import type { MetricLabel } from "effect/MetricLabel"
import { randomToken } from "../commitId.js"
import type { LentTurn, LockClaim, Turn, TurnWait } from "../storeGuard.js"
import {
  type Adaptive,
  BUSY_MS,
  keepingOf,
  leaveQueue,
  LentKeptTurn,
  QueuePlace,
  TURN_WAIT_MS,
  TURN_WAIT_UP_TO_MS
} from "./claimState.js"
import type { Wakeup } from "./contract.js"
import { lockWaitOf, turnsOf } from "./metrics.js"
import { handedPayload } from "./releases.js"

/**
 * A busy store's next operation asking for its turn outside any fiber, as `ClaimState.turn`
 * does (listening first, then `ask`: granted at once, or queued and woken by the hand-off
 * to its token), with the same counts and wait times. The turn comes as a kept turn of no
 * commits yet, lent to the caller's first attempt with what the writer before handed on.
 * When none came (no hand-off within the wait, a plain release) the queue place goes to the
 * guard (`QueuePlace`); when `ask` failed, what it may have taken is given back and the
 * turn is undefined: the operation goes on in the guard, which asks again.
 */
class TurnRequest implements TurnWait {
  readonly turn: Promise<LentTurn | undefined>
  private readonly asking: LockClaim
  private readonly wakeup: Wakeup
  private resolve!: (turn: LentTurn | undefined) => void
  private stopWait: (() => void) | undefined
  private over = false

  constructor(
    private readonly adaptive: Adaptive,
    private readonly ask: (claim: LockClaim) => Promise<Turn>,
    private readonly labels: ReadonlyArray<MetricLabel>
  ) {
    adaptive.busyUntil = performance.now() + BUSY_MS
    this.asking = Object.freeze({ ...adaptive.unclaimed, token: randomToken(), ask: true })
    // Listening before asking: the hand-off may come before the reply does.
    this.wakeup = adaptive.handle.releases(adaptive.lockKey, this.asking.token)
    this.turn = new Promise<LentTurn | undefined>((resolve) => (this.resolve = resolve)).finally(() =>
      this.wakeup.close()
    )
    this.askNow()
  }

  // (At the caller's deadline this gives the place back even after it went to the guard as a
  // `QueuePlace`: the transaction resumed from it is not relied on to do so in time; see
  // "a hand-off that lands after the wait was abandoned" in test/laneTurnReview.test.ts.)
  readonly abandon = (): void => {
    if (this.over) return
    this.over = true
    this.stopWait?.()
    this.wakeup.close()
    leaveQueue(this.adaptive, this.asking.token)
  }

  private askNow(): void {
    void this.ask(this.asking).then(
      (reply) => this.asked(reply),
      // (Its reply lost, the lock may be ours: given back with the queue place, unless abandoned, which did.)
      () => (this.over ? this.resolve(undefined) : this.none())
    )
  }

  private asked(reply: Turn): void {
    // (Abandoned: the queue place was given back after this call, on the same connection.)
    if (this.over) return this.resolve(undefined)
    if (reply._tag === "Granted") return this.came("granted", reply.handed)
    const started = performance.now()
    this.stopWait = this.wakeup.nextThen(TURN_WAIT_MS, TURN_WAIT_UP_TO_MS, (message) => this.woken(started, message))
  }

  private woken(started: number, message: string | undefined): void {
    lockWaitOf(this.adaptive.lockKey).unsafeUpdate(performance.now() - started, this.labels)
    const handed = message === undefined ? undefined : handedPayload(message, this.asking.token)
    if (handed !== undefined) return this.came("handed", handed)
    if (message === undefined) this.count("timedOut")
    this.resolve(new QueuePlace(this.adaptive, this.asking))
  }

  private came(how: "granted" | "handed", handed: string): void {
    this.count(how)
    const { adaptive, asking } = this
    const turn = { commits: 0, since: performance.now(), asking, keeping: keepingOf(asking, adaptive.burst) }
    this.resolve(new LentKeptTurn(adaptive, turn, handed))
  }

  private none(): void {
    leaveQueue(this.adaptive, this.asking.token)
    this.resolve(undefined)
  }

  private count(how: "granted" | "handed" | "timedOut"): void {
    turnsOf(`${this.adaptive.lockKey}\n${how}`).unsafeUpdate(1, this.labels)
  }
}

/** See `TurnRequest`. */
export const takeTurnThen = (
  adaptive: Adaptive,
  ask: (claim: LockClaim) => Promise<Turn>,
  labels: ReadonlyArray<MetricLabel>
): TurnWait => new TurnRequest(adaptive, ask, labels)
