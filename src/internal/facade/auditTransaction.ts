/**
 * The Promise facade's audit `transaction`. The caller's `fn` gets haechi's context
 * (`readLastIntegrity`, `persist`) over one attempt of the store's transaction, and its
 * calls run inside the operation's deadline.
 *
 * The fast lane: an operation whose first attempt is plain (the guard's `freeClaim`: no
 * lock to take or wait for, nobody queued) or goes on with the turn the last one kept
 * (`lendTurn`: back-to-back writes holding the lock), on a runtime that traces nothing
 * (no span would be seen), runs that attempt with no fiber at all. Its deadline is kept by the
 * caller (`CallerDeadline`: the same kind of timer, the same failures), its persist settles a plain
 * commit itself (`persistFromCaller`), and its latency is sampled as `observedWithin`
 * would. Anything else the attempt meets is handed to Effect where it happens: a persist
 * that did not simply commit goes to the store's pipeline, and an attempt that lost (a
 * `FenceConflict`) goes on in the store's transaction, as its first attempt
 * (`GuardedOperation.first`), inside the same deadline. So every outcome, retry and
 * count means exactly what it means on the Effect path.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Runtime from "effect/Runtime"
import type { Integrity } from "../../AuditStore.js"
import type { AuditStoreShape } from "../../AuditStore.js"
import type { FenceConflict } from "../../Errors.js"
import type { AuditTransaction } from "../audit/shape.js"
import type { AppendLane } from "../audit/store.js"
import { Attempt, offerHanded, refusedLate } from "../audit/transaction.js"
import { CallerDeadline, type CommitInFlight, sendCommitIn } from "../callerDeadline.js"
import { currentBudget, linked } from "../deadline.js"
import { tracesNothing } from "../observe.js"
import { isFenceConflict } from "../retryBudget.js"
import type { LentTurn, TurnWait } from "../storeGuard.js"
import { persistFromCaller } from "./persist.js"
import { fastPromiseRunner, fromCaller, isThenable, originalFailure, promiseRunner, settleExit } from "./run.js"

/** haechi's transaction context. */
export interface CallerTransaction {
  readLastIntegrity(): Promise<Integrity | null>
  persist(record: Record<string, unknown>): Promise<void>
}

export type CallerFn<T> = (ctx: CallerTransaction) => Promise<T> | T

/** Marks `tx`'s attempt over (its `fn` settled): from now on its persist is refused (`refusedLate`). */
const closeOf = (tx: AuditTransaction) => (): void => {
  if (tx instanceof Attempt) tx.closed = true
}

/** haechi's context over `tx`: `inside` runs effects inside the operation, `commitIn` marks a persist sent. */
const callerContext = (
  tx: AuditTransaction,
  inside: () => Runtime.Runtime<never>,
  commitIn: (abandon: () => void) => CommitInFlight | undefined
): CallerTransaction => ({
  // A cached head is a ready Exit: settled with no runner at all.
  readLastIntegrity: () => {
    const read = linked(tx.readLastIntegrity)
    return Exit.isExit(read)
      ? settleExit(read as Exit.Exit<Integrity | null, unknown>)
      : fastPromiseRunner(inside())(read)
  },
  persist: (record) => {
    // (Refused here, not by a run inside an operation that may have passed its deadline.)
    const late = tx instanceof Attempt ? refusedLate(tx) : undefined
    return late !== undefined
      ? Promise.reject(late)
      : persistFromCaller(tx, record, commitIn, (effect) => promiseRunner(inside())(effect)).catch((error: unknown) => {
          // Cut off by the operation's deadline: the deadline's own failure, not Effect's interruption.
          const budget = FiberRefs.getOrDefault(inside().fiberRefs, currentBudget)
          throw Cause.isInterruptedException(error) && budget?.failure !== undefined ? budget.failure : error
        })
  }
})

/**
 * `fn` as the store's `build`: its calls run on the transaction's own runtime, so they
 * count against its deadline (a persist in flight then fails it with
 * CommitOutcomeUnknown) and end with it. The attempt is closed once `fn` has settled,
 * where the lane closes it (not when this fiber resumes, some ticks later); the store's
 * transaction closes it when the operation ends without waiting for `fn`.
 */
const buildOf =
  <T>(fn: CallerFn<T>) =>
  (tx: AuditTransaction): Effect.Effect<T, unknown> =>
    Effect.flatMap(Effect.runtime<never>(), (inside) => {
      const context = callerContext(
        tx,
        () => inside,
        (abandon) => sendCommitIn(inside, abandon)
      )
      const close = closeOf(tx)
      return fromCaller(() => {
        const out = fn(context)
        if (!isThenable(out)) return out
        // (One promise for a thenable: its `then` is called once.)
        const settles = Promise.resolve(out)
        settles.then(close, close)
        return settles
      })
    })

/** The facade's `transaction` over `store`, with the fast lane where `lane` is given and `runtime` traces nothing. */
export const callerTransactions = (
  store: Pick<AuditStoreShape, "transaction">,
  lane: AppendLane | undefined,
  runtime: Runtime.Runtime<never> = Runtime.defaultRuntime
): (<T>(fn: CallerFn<T>) => Promise<T>) => {
  const run = promiseRunner(runtime)
  const slow = <T>(fn: CallerFn<T>): Promise<T> => run(store.transaction(buildOf(fn)))
  if (lane === undefined || !tracesNothing(runtime.fiberRefs)) return slow
  const labels = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels)
  const sample = (started: number) => lane.latency.unsafeUpdate(performance.now() - started, labels)
  const takeTurn = lane.takeTurn
  return <T>(fn: CallerFn<T>): Promise<T> => {
    const turn = lane.lendTurn()
    if (turn !== undefined) return new LaneCall(lane, runtime, fn, sample).first(turn.claim, turn)
    const claim = lane.freeClaim()
    if (claim !== false) return new LaneCall(lane, runtime, fn, sample).first(claim)
    // The store is busy: its turn first, then the first attempt in it.
    return takeTurn === undefined ? slow(fn) : new LaneCall(lane, runtime, fn, sample).afterTurn(takeTurn(labels))
  }
}

/**
 * One operation in the fast lane, within one deadline: its first attempt here (in `turn`,
 * where the guard lent one or the operation waited for its turn), the rest (if it lost,
 * or no turn came) in the store's transaction, which goes on with the turn.
 */
class LaneCall<T> {
  private readonly started = performance.now()
  private readonly deadline: CallerDeadline
  private ended = false
  private resolve!: (value: T) => void
  private reject!: (error: unknown) => void
  readonly settled = new Promise<T>((resolve, reject) => {
    this.resolve = resolve
    this.reject = reject
  })

  constructor(
    private readonly lane: AppendLane,
    runtime: Runtime.Runtime<never>,
    private readonly fn: CallerFn<T>,
    private readonly sample: (started: number) => void
  ) {
    this.deadline = new CallerDeadline(lane.deadline, lane.deadlines, runtime)
    // However it ended: past the deadline, the deadline's failure (as `within`), at once,
    // without waiting for `fn` (its later calls send nothing).
    this.deadline.onExpiry(() => this.end(Exit.void as Exit.Exit<never>))
  }

  /** Ends the operation once, with `exit` (or the deadline's failure, past it); `onEnd` first. */
  private end(exit: Exit.Exit<T, unknown>, onEnd?: (succeeded: boolean) => void): void {
    if (this.ended) return
    this.ended = true
    onEnd?.(Exit.isSuccess(exit) && !this.deadline.expired)
    this.deadline.close()
    this.sample(this.started)
    if (this.deadline.expired) this.reject(this.deadline.failure)
    else if (Exit.isSuccess(exit)) this.resolve(exit.value)
    else this.reject(originalFailure(exit.cause))
  }

  /** The rest of the operation in the store's transaction, inside this deadline. */
  private resume(conflict?: FenceConflict, turn?: LentTurn): void {
    const inside = this.deadline.runtime()
    void Runtime.runPromiseExit(inside)(this.lane.resume(buildOf(this.fn), conflict, turn)).then((exit) =>
      this.end(exit)
    )
  }

  /**
   * Waits for the turn (`wait`), then makes the first attempt in it; with none, the
   * transaction goes on from the queue place (or asks again, the request having failed).
   */
  afterTurn(wait: TurnWait): Promise<T> {
    this.deadline.onExpiry(wait.abandon)
    void wait.turn.then((turn) => {
      // (Past the deadline the wait was abandoned: a turn that came anyway is given back.)
      if (this.ended) return turn?.ended()
      if (turn === undefined || turn.queued) this.resume(undefined, turn)
      else this.first(turn.claim, turn)
    })
    return this.settled
  }

  /** The operation's first attempt, under `claim` (in `turn`, where it has one). */
  first(claim: Attempt["claim"], turn?: LentTurn): Promise<T> {
    const { lane, deadline } = this
    offerHanded(lane.ctx, claim?.handed)
    const attempt = new Attempt(lane.pipeline, claim)
    let resumed = false
    // (A turn handed to the store's transaction is its own to end.)
    const onEnd = (succeeded: boolean) => {
      attempt.closed = true
      if (turn !== undefined && !resumed) endTurn(turn, attempt, succeeded)
    }
    deadline.onExpiry(() => onEnd(false))
    let result: Promise<T> | T
    // A `fn` that returned a value or threw has settled already: from now on a persist is refused.
    try {
      result = this.fn(
        callerContext(
          attempt,
          () => deadline.runtime(),
          (abandon) => deadline.commit(abandon)
        )
      )
      if (!isThenable(result)) attempt.closed = true
    } catch (error) {
      attempt.closed = true
      result = Promise.reject(error)
    }
    // (Once the operation has ended at its deadline, what `fn` settles with counts for nothing.)
    Promise.resolve(result).then(
      (value) => this.end(Exit.succeed(value), onEnd),
      (error: unknown) => {
        attempt.closed = true
        if (this.ended) return
        if (!isFenceConflict(error) || attempt.first === "committed") return this.end(Exit.fail(error), onEnd)
        resumed = true
        this.resume(error, turn)
      }
    )
    return this.settled
  }
}

/**
 * Tells a lent turn how the lane's operation ended: its attempt committed and `fn`
 * returned in time (keeping the lock or not), or not (given back), as the store's
 * transaction ends a turn: a commit whose `fn` then failed keeps no turn.
 */
const endTurn = (turn: LentTurn, attempt: Attempt, succeeded: boolean): void => {
  if (succeeded && attempt.first === "committed") turn.committed(attempt.kept)
  else turn.ended()
}
