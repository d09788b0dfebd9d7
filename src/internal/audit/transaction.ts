/**
 * The append attempt: what `build` gets in one run (`readLastIntegrity`, one `persist`),
 * and the transaction that re-runs it under the lock policy and the retry schedule.
 *
 * The pipeline is built once per store; an attempt allocates only its own small state
 * (its claim and whether `persist` ran), and an uncontended append is: prepare the
 * record (checked and serialized once), one fenced append, learn the new head.
 */
import type { AuditIntegrity } from "../../Chain.js"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import {
  type FenceConflict,
  InvalidRecord,
  PersistAfterTransaction,
  PersistCalledTwice,
  type StoreError
} from "../../Errors.js"
import type { RetrySchedule } from "../../Retry.js"
import { isFenceConflict, withRetryBudget } from "../retryBudget.js"
import { attempted, type LentTurn, type LockClaim, type StoreGuard } from "../storeGuard.js"
import { type AppendContext, appendOnce, settleAppended } from "./append.js"
import { type AppendOutcome, isIntegrity, type PreparedAppend } from "./backing.js"
import { prepare, notSuccessor } from "./prepare.js"
import { rewound } from "./rewind.js"
import type { AuditTransaction } from "./shape.js"

type FirstPersist = "pending" | "committed" | "failed" | undefined

/** What one fenced append of a prepared record means for the caller. */
const settle = (
  ctx: AppendContext,
  write: PreparedAppend,
  outcome: AppendOutcome
): Effect.Effect<void, FenceConflict | StoreError> => {
  switch (outcome._tag) {
    // (Neither touched the lock: a claim this operation holds stays held and is given back by the guard.)
    case "Rewound":
      return rewound(ctx, write.seen ?? { sequence: 0, eventHash: "" }, outcome.head, write.claim)
    case "NotSuccessor": {
      const parent = { sequence: write.sequence - 1, eventHash: write.expectedPrev }
      // A parent this replica saw in Redis and that the chain no longer holds is a rewind. So
      // is one a turn offered: `readLastIntegrity` handed it to the caller, as a read would
      // (a hand-off's head is written before `durability` waits, so a failover can lose it).
      // A forged hand-off needs the access that could rewrite the chain: it is reported too.
      if (parent.sequence >= 1 && (ctx.cache.knows(parent) || ctx.cache.wasOffered(parent)))
        return rewound(ctx, parent, outcome.head, write.claim)
      return Effect.fail(new InvalidRecord({ store: "audit", reason: notSuccessor(write, outcome.head) }))
    }
    default:
      return settleAppended(ctx, write, outcome)
  }
}

/** One run of `build`: its claim (lock-free attempts of the adaptive policy) and its one `persist`. */
export class Attempt implements AuditTransaction {
  first: FirstPersist = undefined
  /** Its commit kept the store's lock (the claim asked to). */
  kept = false
  /**
   * Its run of `build` has ended (or, for a Promise caller, its `fn` settled): a `persist`
   * from now on belongs to no operation and is refused.
   */
  closed = false
  readonly persist: (record: unknown) => Effect.Effect<void, FenceConflict | StoreError>
  constructor(
    readonly pipeline: Pipeline,
    readonly claim: LockClaim | undefined
  ) {
    this.persist = (record) => pipeline.persist(this, record)
  }
  // Read when it is used: a head cached by then is handed out as a ready value.
  get readLastIntegrity(): Effect.Effect<AuditIntegrity | null, StoreError> {
    return this.pipeline.ctx.cache.current()
  }
  readonly ended = (exit: Exit.Exit<unknown, unknown>) =>
    Effect.sync(() => (this.first = Exit.isSuccess(exit) ? "committed" : "failed"))
  private readonly close = Effect.sync(() => void (this.closed = true))
  /** `build`'s run over this attempt, which closes it however it ends (a `tx` it leaked persists nothing). */
  running<A, E, R>(build: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    // A conflict `build` fails with once its record committed is not retried: a re-run would append a second record.
    const once = Effect.catchIf(
      build,
      (e) => this.first === "committed" && isFenceConflict(e),
      (e) => Effect.die(e)
    )
    return Effect.ensuring(once, this.close)
  }
}

/** The refusal of a persist made once `attempt`'s run has ended; undefined while it runs. */
export const refusedLate = (attempt: Attempt): PersistAfterTransaction | undefined =>
  attempt.closed ? new PersistAfterTransaction({ prefix: attempt.pipeline.ctx.prefix }) : undefined

/** The persist path of one store. */
export class Pipeline {
  constructor(readonly ctx: AppendContext) {}

  persist(attempt: Attempt, record: unknown): Effect.Effect<void, FenceConflict | StoreError> {
    return Effect.suspend(() => {
      const late = refusedLate(attempt)
      if (late !== undefined) return Effect.fail(late)
      if (attempt.first !== undefined)
        return Effect.fail(new PersistCalledTwice({ prefix: this.ctx.prefix, first: attempt.first }))
      const write = prepare(record, attempt.claim, this.ctx.cache.seen, this.ctx.fullCheck, this.ctx.cache.ownCommit)
      if (write instanceof InvalidRecord) {
        attempt.first = "failed"
        return Effect.fail(write)
      }
      attempt.first = "pending"
      return this.append(attempt, write)
    })
  }

  /**
   * The fenced append of `write` for `attempt` (its persist pending); `sent`: the call
   * already sent, `replied`: run once its outcome is known (see `appendOnce`).
   */
  append(
    attempt: Attempt,
    write: PreparedAppend,
    sent?: Promise<unknown>,
    replied?: Effect.Effect<void>
  ): Effect.Effect<void, FenceConflict | StoreError> {
    return Effect.onExit(
      Effect.flatMap(appendOnce(this.ctx, write, sent, replied), (outcome) => {
        if (outcome._tag === "Committed" && outcome.kept === true) attempt.kept = true
        return settle(this.ctx, write, outcome)
      }),
      attempt.ended
    )
  }
}

/** A turn's head (JSON) offered to build on: a head that does not parse as one is ignored (the append proves what it uses). */
export const offerHanded = (ctx: AppendContext, handed: string | undefined): void => {
  if (handed === undefined || handed === "") return
  let head: unknown
  try {
    head = JSON.parse(handed)
  } catch {
    return
  }
  if (head === null || isIntegrity(head)) ctx.cache.offer(head)
}

/**
 * The store's `transaction`: `build` re-run under `guard` and `schedule` until its record
 * commits. `first`: the operation's first attempt was made already and lost with this
 * conflict (the Promise facade's fast lane, see `GuardedOperation.first`), in the turn
 * `lent` if the guard lent one; it goes on from there.
 */
export type ResumableTransaction = <A, E, R>(
  build: (tx: AuditTransaction) => Effect.Effect<A, E, R>,
  first?: FenceConflict,
  lent?: LentTurn
) => Effect.Effect<A, Exclude<E, FenceConflict> | StoreError, R>

export const transactions = (
  ctx: AppendContext,
  guard: StoreGuard,
  schedule: RetrySchedule,
  pipeline: Pipeline
): ResumableTransaction => {
  const retryOptions = { store: "audit", prefix: ctx.prefix, operation: "transaction", schedule } as const
  const forgetHead = Effect.sync(() => ctx.cache.forget())
  const requestTurn = ctx.backing.requestTurn
  return (build, first, lent) =>
    withRetryBudget(
      retryOptions,
      (budget) =>
        guard({
          first,
          lent,
          // A lock-free attempt of the adaptive policy: it yields to a writer holding the lock.
          attempt: (claim) =>
            Effect.suspend(() => {
              offerHanded(ctx, claim.handed)
              const attempt = new Attempt(pipeline, claim)
              return Effect.map(budget.attempt(attempt.running(build(attempt))), (a) =>
                attempted(a, attempt.first === "committed", attempt.kept)
              )
            }),
          turn: requestTurn,
          retrying: (fresh) =>
            Effect.zipRight(
              fresh ? forgetHead : Effect.void,
              budget.retrying(
                Effect.suspend(() => {
                  const attempt = new Attempt(pipeline, undefined)
                  return attempt.running(build(attempt))
                })
              )
            )
        }),
      first
    ) as never
}
