/**
 * The replica's knowledge of the chain's head, in one place with one writer.
 *
 * - `hint`: the head `readLastIntegrity` hands out without a read (`Known`), or `Unknown`
 *   when it must be read. Only ever a hint: the append is fenced, so a stale value costs
 *   one rejected append, never a fork.
 * - `seen`: the latest head this replica has proof Redis held (a commit, a conflict reply
 *   the script checked, or a fresh read that continues it). Every append asks the script
 *   to check the chain still holds it, so a rewind is seen however the head was learned
 *   since. Re-reading the head never clears it.
 * - `reported`: the last rewind counted and logged (once, however many attempts meet it).
 * - `ownCommit`: this replica's last commit, which its appends send as the witness that
 *   `commits` still holds its ids; forgotten once a rewind is met (Redis lost it then).
 */
import type { AuditIntegrity } from "../../Chain.js"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { ChainPoint } from "../../Errors.js"
import type { AuditBacking, PreparedAppend, ReadBackingError } from "./backing.js"
import type { OwnCommit } from "./commitLookup.js"
import { type HeadState, knownHead, pointOf, samePoint, unknownHead } from "./headState.js"

const copyOf = (head: AuditIntegrity | null): AuditIntegrity | null => (head === null ? null : { ...head })

export class HeadCache {
  private hintState: HeadState = unknownHead
  private seenPoint: ChainPoint | null = null
  private reportedPoint: ChainPoint | null = null
  /** The last head offered with a turn (kept when the hint moves on): a record built on it is no caller's mistake. */
  private offeredPoint: ChainPoint | null = null
  private ownCommitState: OwnCommit | null = null

  constructor(private readonly backing: AuditBacking) {}

  /** The one writer of the head's state. */
  private set(hint: HeadState, seen: ChainPoint | null): void {
    this.hintState = hint
    this.seenPoint = seen
  }

  get hint(): HeadState {
    return this.hintState
  }

  get seen(): ChainPoint | null {
    return this.seenPoint
  }

  get ownCommit(): OwnCommit | null {
    return this.ownCommitState
  }

  /** This replica's own commit of `write`: its record is the head, and its id the witness. */
  learnCommit(write: PreparedAppend): void {
    this.learn(write.integrity)
    this.ownCommitState = { sequence: write.sequence, commitId: write.commitId }
  }

  /** A head learned from a commit or from a reply the script checked against `seen`: handed out and proven. */
  learn(head: AuditIntegrity | null): void {
    this.set(knownHead(head), pointOf(head))
  }

  /** A head to hand out that is not proven to continue `seen` (which stays the one to prove). */
  hold(head: AuditIntegrity | null): void {
    this.set(knownHead(head), this.seenPoint)
  }

  /**
   * A head handed over with a turn (the writer before committed it, or the turn's script
   * read it): only what to build on. Neither `seen` nor known (`knows`): the append
   * proves it, and a parent that turns out not to be in the chain is no rewind.
   */
  offer(head: AuditIntegrity | null): void {
    this.offeredPoint = pointOf(head)
    this.set({ _tag: "Known", head, hash: head?.eventHash ?? "", offered: true }, this.seenPoint)
  }

  /** Stale or unknown: the next `read` goes to Redis. */
  forget(): void {
    this.set(unknownHead, this.seenPoint)
  }

  /** Whether `point` is the head this replica saw or hands out. */
  knows(point: ChainPoint): boolean {
    const hint = this.hintState
    return (
      samePoint(point, this.seenPoint) ||
      (hint._tag === "Known" && hint.offered !== true && samePoint(point, pointOf(hint.head)))
    )
  }

  /** Whether `point` is the last head a turn offered (unproven: a hand-off message may be forged or outrun by a rewind). */
  wasOffered(point: ChainPoint): boolean {
    return samePoint(point, this.offeredPoint)
  }

  /** True the first time a rewind of `lost` is met (then it is reported), false after. */
  firstReport(lost: ChainPoint): boolean {
    this.ownCommitState = null
    if (samePoint(lost, this.reportedPoint)) return false
    this.reportedPoint = lost
    return true
  }

  /** The head to build on, decided when it runs: the hint (a private copy), else read from Redis. */
  readonly read: Effect.Effect<AuditIntegrity | null, ReadBackingError> = Effect.suspend(() => {
    const hint = this.hintState
    return hint._tag === "Known"
      ? Effect.succeed(copyOf(hint.head))
      : Effect.map(this.readFresh(this.seenPoint), copyOf)
  })

  /**
   * The head to build on: a head known now as a ready `Exit` holding a private copy (a
   * runner settles it without starting a fiber), else `read`, decided when it runs.
   */
  current(): Effect.Effect<AuditIntegrity | null, ReadBackingError> {
    const hint = this.hintState
    return hint._tag === "Known" ? Exit.succeed(copyOf(hint.head)) : this.read
  }

  // A head read fresh is one this replica saw when the chain held `seen` with it (read at
  // one instant): then it becomes `seen`, so losing it before this replica commits on it
  // is a rewind too. One that does not continue `seen` (shorter, or `seen` gone) leaves
  // `seen` as it is, and the next append reports the rewind.
  private readFresh(known: ChainPoint | null): Effect.Effect<AuditIntegrity | null, ReadBackingError> {
    return known === null
      ? Effect.map(this.backing.readHead, (head) => {
          this.set(knownHead(head), this.seenPoint ?? pointOf(head))
          return head
        })
      : Effect.map(this.backing.readHeadOver(known), ({ head, holdsSeen }) => {
          const continues = holdsSeen && head !== null && head.sequence >= known.sequence && this.seenPoint === known
          this.set(knownHead(head), continues ? pointOf(head) : this.seenPoint)
          return head
        })
  }
}
