/**
 * The audit store's semantics over any backing, wired once per store: the head cache,
 * the append pipeline (prepare, fenced append, lost-reply resolution, rewinds), the
 * transaction under the lock policy and the retry schedule, and the reads, each bounded
 * by the operation's deadline and observed (a span and a latency sample). The chain's
 * paged reads (`readChain`, `readChainJson`) are added by `chainReads.ts`, so the Promise
 * facade, which needs none, loads no `effect/Stream`.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Metrics from "../../Metrics.js"
import { defaultRetrySchedule } from "../../Retry.js"
import { type Budget, budgetQueue, unsafeTimeoutMsOf, within, withinRead } from "../deadline.js"
import type { DeadlineQueue } from "../deadlineQueue.js"
import { observed, observedWithin } from "../observe.js"
import { noGuard } from "../storeGuard.js"
import type { AppendContext } from "./append.js"
import type { AuditBacking } from "./backing.js"
import { HeadCache } from "./headCache.js"
import { type AuditStoreOptions, checkAuditOptions } from "./options.js"
import type { AuditStoreShape } from "./shape.js"
import { Pipeline, type ResumableTransaction, transactions } from "./transaction.js"
import type { DeadlineSpec } from "../deadline.js"
import type { LentTurn, LockClaim, StoreGuard, TurnWait } from "../storeGuard.js"
import type { MetricLabel } from "effect/MetricLabel"
import { latencyMetric } from "../observe.js"

/** The store without its chain pages: what the Promise facade runs. */
export type AppendStore = Omit<AuditStoreShape, "readChain" | "readChainJson">

/** A bounded read of the store (its deadline, named for the operation). */
export type BoundedRead = (operation: string) => ReturnType<typeof withinRead>

/**
 * What a Promise caller needs to run a transaction's first attempt with no fiber (the
 * facade's fast lane): the store's append path, its guard's `freeClaim` and kept turns
 * (`lendTurn`), the operation's deadline and latency sample, and the transaction to go on with when that
 * attempt loses (`first`). Only where an attempt can be sent and settled by the caller:
 * a backing that `send`s, no durable-commit step, a guard with a `freeClaim`.
 */
export interface AppendLane {
  readonly ctx: AppendContext
  readonly pipeline: Pipeline
  readonly freeClaim: () => LockClaim | undefined | false
  readonly lendTurn: () => LentTurn | undefined
  /** A busy store's turn, asked for and waited for with no fiber (absent: the guard asks in the transaction). */
  readonly takeTurn: ((labels: ReadonlyArray<MetricLabel>) => TurnWait) | undefined
  readonly resume: ResumableTransaction
  readonly deadline: DeadlineSpec
  /** The lane's deadlines, on one timer. */
  readonly deadlines: DeadlineQueue<Budget>
  readonly latency: ReturnType<typeof latencyMetric>
}

const noTurn = (): undefined => undefined

/** The guard's fiber-free turn over the backing's bare turn request, where both have one. */
const turnTakerOf = (guard: StoreGuard, backing: AuditBacking): AppendLane["takeTurn"] => {
  const { takeTurn } = guard
  const { sendTurn } = backing
  return takeTurn === undefined || sendTurn === undefined ? undefined : (labels) => takeTurn(sendTurn, labels)
}

/**
 * The store over `backing` (each call its own replica: its own cached head), without its
 * chain pages, its bounded read for them, and its fast lane where it has one. Throws
 * `InvalidConfig` for an unusable `onRewind`, `verifyRecords` or `timeout`.
 */
export const appendStoreOnBacking = (
  backing: AuditBacking,
  options: AuditStoreOptions = {}
): { readonly store: AppendStore; readonly boundedRead: BoundedRead; readonly lane: AppendLane | undefined } => {
  const invalidOption = checkAuditOptions(options)
  if (invalidOption !== undefined) throw invalidOption
  const prefix = backing.keys.prefix
  const timeoutMs = unsafeTimeoutMsOf(options.timeout)
  const ctx: AppendContext = {
    backing,
    prefix,
    cache: new HeadCache(backing),
    fullCheck: options.verifyRecords === "full",
    onRewind: options.onRewind ?? "record",
    afterCommit: options.afterCommit ?? Effect.void,
    rewindCounter: Metrics.chainRewinds.pipe(Metric.tagged("prefix", prefix))
  }
  const guard = options.guard ?? noGuard
  const pipeline = new Pipeline(ctx)
  const transaction = transactions(ctx, guard, options.retry ?? defaultRetrySchedule, pipeline)
  const deadline: DeadlineSpec = { store: "audit", prefix, operation: "audit transaction", timeoutMs }
  // (The lane's deadlines and the transaction's share one timer.)
  const deadlines = budgetQueue(deadline)
  const observeTransaction = observedWithin("audit", "transaction", prefix, within(deadline, deadlines))
  const boundedRead: BoundedRead = (operation) =>
    withinRead({ store: "audit", prefix, operation: `audit ${operation}`, timeoutMs })
  const store: AppendStore = {
    prefix,
    transaction: (build) => observeTransaction(transaction(build)),
    ready: backing.ready,
    head: backing.readHead.pipe(boundedRead("head"), observed("audit", "head", prefix)),
    length: backing.length.pipe(boundedRead("length"), observed("audit", "length", prefix)),
    headKeys: boundedRead("head keys")(backing.readHeadKeys)
  }
  const freeClaim = guard.freeClaim
  const lane: AppendLane | undefined =
    backing.send !== undefined && ctx.afterCommit === Effect.void && freeClaim !== undefined
      ? {
          ctx,
          pipeline,
          freeClaim,
          lendTurn: guard.lendTurn ?? noTurn,
          takeTurn: turnTakerOf(guard, backing),
          resume: transaction,
          deadline,
          deadlines,
          latency: latencyMetric("audit", "transaction")
        }
      : undefined
  return { store, boundedRead, lane }
}
