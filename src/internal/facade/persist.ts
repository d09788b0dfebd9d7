/**
 * The Promise facade's `persist`, settled without a fiber when nothing happens: the
 * record is prepared and the fenced append sent from the caller's own call, and a
 * `Committed` reply is settled right there, as the store's pipeline would (the head
 * learned, the attempt committed and whether it kept the lock, the deadline told the
 * commit landed). Anything else (a record refused, a conflict, a yield, a rewind, a lost
 * reply, an error reply, a durable-commit step, the deadline passing) goes to that
 * pipeline, with the call already sent handed over, so every outcome means exactly what
 * it means there.
 */
import * as Effect from "effect/Effect"
import { InvalidRecord } from "../../Errors.js"
import { committedReply } from "../audit/backing.js"
import { prepare } from "../audit/prepare.js"
import type { AuditTransaction } from "../audit/shape.js"
import { Attempt } from "../audit/transaction.js"
import type { CommitInFlight } from "../callerDeadline.js"
import { linked } from "../deadline.js"

type Run = <A>(effect: Effect.Effect<A, unknown>) => Promise<A>

/**
 * `tx.persist(record)` for a Promise caller: `run` runs effects inside the transaction's
 * deadline, and `commitIn` marks the call sent in flight on it (`CommitInFlight`).
 */
export const persistFromCaller = (
  tx: AuditTransaction,
  record: unknown,
  commitIn: (abandon: () => void) => CommitInFlight | undefined,
  run: Run
): Promise<void> => {
  const slow = () => run(linked(tx.persist(record)))
  if (!(tx instanceof Attempt) || tx.first !== undefined) return slow()
  const pipeline = tx.pipeline
  const { backing, cache, fullCheck, afterCommit } = pipeline.ctx
  if (backing.send === undefined || afterCommit !== Effect.void) return slow()
  const write = prepare(record, tx.claim, cache.seen, fullCheck, cache.ownCommit)
  if (write instanceof InvalidRecord) return slow()
  return new Promise<void>((resolve, reject) => {
    let settled = false
    // The deadline passed with the call in flight: the pipeline's answer to that (its
    // persist interrupted, the operation failing with CommitOutcomeUnknown).
    const abandon = () => {
      if (settled) return
      settled = true
      tx.first = "failed"
      inFlight?.settled(false)
      run(linked(Effect.suspend(() => Effect.void))).then(resolve, reject)
    }
    const inFlight = commitIn(abandon)
    if (inFlight === undefined) return void slow().then(resolve, reject)
    tx.first = "pending"
    let sent: Promise<unknown>
    try {
      sent = backing.send!(write)
    } catch (error) {
      sent = Promise.reject(error)
    }
    // (The mark comes off once the append's outcome is known, under the append's own mark:
    // a deadline while a conflict or a rewind is settled then says that nothing committed.)
    const handOver = () => {
      settled = true
      const unmark = inFlight.handOver()
      run(linked(pipeline.append(tx, write, sent, unmark))).then(resolve, reject)
    }
    sent.then(
      (reply) => {
        if (settled) return
        const committed = committedReply(reply)
        if (committed === undefined) return handOver()
        settled = true
        inFlight.settled(true)
        cache.learnCommit(write)
        tx.first = "committed"
        if (committed === "kept") tx.kept = true
        resolve()
      },
      () => {
        if (!settled) handOver()
      }
    )
  })
}
