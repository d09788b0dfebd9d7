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
import { Attempt, refusedLate } from "../audit/transaction.js"
import { CallerDeadline, type CommitInFlight, sendCommitIn } from "../callerDeadline.js"
import { linked } from "../deadline.js"
import { tracesNothing } from "../observe.js"
import { isFenceConflict } from "../retryBudget.js"
import type { LentTurn } from "../storeGuard.js"
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
      : persistFromCaller(tx, record, commitIn, (effect) => promiseRunner(inside())(effect))
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
  return <T>(fn: CallerFn<T>): Promise<T> => {
    const turn = lane.lendTurn()
    if (turn !== undefined) return laneOperation(lane, runtime, turn.claim, fn, sample, turn)
    const claim = lane.freeClaim()
    return claim === false ? slow(fn) : laneOperation(lane, runtime, claim, fn, sample)
  }
}

/**
 * One operation in the fast lane: its first attempt here (in `turn`, where the guard lent
 * one), the rest (if it lost) in the store's transaction, which goes on with the turn.
 */
const laneOperation = <T>(
  lane: AppendLane,
  runtime: Runtime.Runtime<never>,
  claim: Attempt["claim"],
  fn: CallerFn<T>,
  sample: (started: number) => void,
  turn?: LentTurn
): Promise<T> => {
  const started = performance.now()
  const deadline = new CallerDeadline(lane.deadline, lane.deadlines, runtime)
  const attempt = new Attempt(lane.pipeline, claim)
  const inside = () => deadline.runtime()
  return new Promise<T>((resolve, reject) => {
    let ended = false
    let resumed = false
    // However it ended: past the deadline, the deadline's failure (as `within`), at once,
    // without waiting for `fn` (its later calls send nothing).
    const end = (exit: Exit.Exit<T, unknown>) => {
      if (ended) return
      ended = attempt.closed = true
      // (A turn handed to the store's transaction is its own to end.)
      if (turn !== undefined && !resumed) endTurn(turn, attempt, Exit.isSuccess(exit) && !deadline.expired)
      deadline.close()
      sample(started)
      if (deadline.expired) reject(deadline.failure)
      else if (Exit.isSuccess(exit)) resolve(exit.value)
      else reject(originalFailure(exit.cause))
    }
    const lost = (conflict: FenceConflict) => {
      resumed = true
      return Runtime.runPromiseExit(inside())(lane.resume(buildOf(fn), conflict, turn)).then(end)
    }
    deadline.onExpiry(() => end(Exit.void as Exit.Exit<never>))
    let result: Promise<T> | T
    // A `fn` that returned a value or threw has settled already: from now on a persist is refused.
    try {
      result = fn(callerContext(attempt, inside, (abandon) => deadline.commit(abandon)))
      if (!isThenable(result)) attempt.closed = true
    } catch (error) {
      attempt.closed = true
      result = Promise.reject(error)
    }
    // (Once the operation has ended at its deadline, what `fn` settles with counts for nothing.)
    Promise.resolve(result).then(
      (value) => end(Exit.succeed(value)),
      (error: unknown) => {
        attempt.closed = true
        if (ended) return
        if (isFenceConflict(error)) void lost(error)
        else end(Exit.fail(error))
      }
    )
  })
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
