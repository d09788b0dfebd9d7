/**
 * An operation's deadline kept by a Promise caller, outside any fiber: the budget
 * `within` installs (on its operation's timer, the same `OperationTimeout` or `CommitOutcomeUnknown`),
 * opened and closed by the caller. A commit the caller sends itself is marked in flight
 * on it (`commit`), and whatever the caller hands to Effect runs on `runtime()`, whose
 * fibers stand inside the budget as an operation's own would (their waits watch it).
 */
import * as FiberId from "effect/FiberId"
import * as FiberRefs from "effect/FiberRefs"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import type { CommitOutcomeUnknown, OperationTimeout } from "../Errors.js"
import {
  type Abandon,
  Budget,
  currentBudget,
  type DeadlineSpec,
  expiredIn,
  markAll,
  unwatch,
  watch,
  withBoth,
  withDeadlineClock
} from "./deadline.js"
import type { DeadlineQueue } from "./deadlineQueue.js"

/** A commit sent outside any fiber as part of an operation (see `commitIn`). */
export interface CommitInFlight {
  /** Its reply came: no longer in flight; `landed`: it took effect (the mark stays, as `committing`'s). */
  readonly settled: (landed: boolean) => void
  /**
   * Its reply is handed to an effect that marks the commit itself (`committing`): the
   * deadline stops watching it here, and the returned step, run when that effect ends
   * (`Effect.ensuring`), takes this mark off, so the commit is marked throughout.
   */
  readonly handOver: () => Effect.Effect<void>
}

const ignore = () => {}
const noCommit: CommitInFlight = { settled: ignore, handOver: () => Effect.void }

/**
 * Marks a commit sent outside any fiber as in flight in `budget`'s operation, as
 * `committing` would; `abandon` is called if the deadline passes meanwhile. Undefined
 * when the deadline has passed already: nothing may be sent.
 */
const commitIn = (budget: Budget | undefined, abandon: Abandon): CommitInFlight | undefined => {
  if (budget === undefined) return noCommit
  if (expiredIn(budget)) return undefined
  markAll(budget, (b) => (b.committing += 1))
  watch(budget, abandon)
  const unmark = (landed: boolean) =>
    markAll(budget, (b) => {
      b.committing -= 1
      if (landed) b.maybeCommitted = true
    })
  return {
    settled: (landed) => {
      unwatch(budget, abandon)
      unmark(landed)
    },
    handOver: () => {
      unwatch(budget, abandon)
      return Effect.sync(() => unmark(false))
    }
  }
}

/** `commitIn` for the operation whose runtime is `inside` (captured inside it, e.g. by the facade's `persist`). */
export const sendCommitIn = (inside: Runtime.Runtime<never>, abandon: Abandon): CommitInFlight | undefined =>
  commitIn(FiberRefs.getOrDefault(inside.fiberRefs, currentBudget), abandon)

/** One operation's deadline, kept by its Promise caller. */
export class CallerDeadline {
  private inside: Runtime.Runtime<never> | undefined = undefined

  private readonly budget: Budget

  /** Starts on `deadlines`, the queue of `spec`'s operation (`budgetQueue(spec)`). */
  constructor(
    spec: DeadlineSpec,
    private readonly deadlines: DeadlineQueue<Budget>,
    private readonly outside: Runtime.Runtime<never>
  ) {
    this.budget = new Budget(undefined, spec)
    deadlines.start(this.budget)
  }

  get expired(): boolean {
    return this.budget.expired
  }

  /** What the operation fails with, the deadline having passed. */
  get failure(): OperationTimeout | CommitOutcomeUnknown | undefined {
    return this.budget.failure
  }

  /** The operation has ended: the timer goes. */
  close(): void {
    this.deadlines.end(this.budget)
  }

  /** Calls `abandon` once, when the deadline passes (not after `close`). */
  onExpiry(abandon: Abandon): void {
    if (this.budget.expired) abandon()
    else watch(this.budget, abandon)
  }

  /** Marks a commit the caller sends itself (see `commitIn`). */
  commit(abandon: Abandon): CommitInFlight | undefined {
    return commitIn(this.budget, abandon)
  }

  /** The caller's runtime, inside this deadline (made once, when first needed). */
  runtime(): Runtime.Runtime<never> {
    if (this.inside !== undefined) return this.inside
    const refs = this.outside.fiberRefs
    const services = FiberRefs.getOrDefault(refs, DefaultServices.currentServices)
    this.inside = Runtime.make({
      context: this.outside.context,
      runtimeFlags: this.outside.runtimeFlags,
      fiberRefs: withBoth(refs, FiberId.none as never, this.budget, withDeadlineClock(services))
    })
    return this.inside
  }
}
