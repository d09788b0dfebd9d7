/**
 * The audit store's semantics over any backing, wired once per store: the head cache,
 * the append pipeline (prepare, fenced append, lost-reply resolution, rewinds), the
 * transaction under the lock policy and the retry schedule, and the reads, each bounded
 * by the operation's deadline and observed (a span and a latency sample).
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { CorruptData } from "../../Errors.js"
import * as Metrics from "../../Metrics.js"
import { defaultRetrySchedule } from "../../Retry.js"
import { unsafeTimeoutMsOf, within, withinRead } from "../deadline.js"
import { observed } from "../observe.js"
import { noGuard } from "../storeGuard.js"
import type { AppendContext } from "./append.js"
import type { AuditBacking } from "./backing.js"
import { HeadCache } from "./headCache.js"
import { type AuditStoreOptions, checkAuditOptions } from "./options.js"
import type { AuditStoreShape, ChainReadOptions } from "./shape.js"
import { transactions } from "./transaction.js"
import { DEFAULT_PAGE_SIZE } from "../chainPages.js"

/**
 * The store over `backing` (each call its own replica: its own cached head). Throws
 * `InvalidConfig` for an unusable `onRewind`, `verifyRecords` or `timeout`.
 */
export const storeOnBacking = (backing: AuditBacking, options: AuditStoreOptions = {}): AuditStoreShape => {
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
  const transaction = transactions(ctx, options.guard ?? noGuard, options.retry ?? defaultRetrySchedule)
  const boundTransaction = within({ store: "audit", prefix, operation: "audit transaction", timeoutMs })
  const observeTransaction = observed("audit", "transaction", prefix)
  const boundedRead = (operation: string) => withinRead({ store: "audit", prefix, operation: `audit ${operation}`, timeoutMs })
  const readChainJson = chainPages(backing, boundedRead("chain page"))
  return {
    prefix,
    transaction: (build) => observeTransaction(boundTransaction(transaction(build))),
    ready: backing.ready,
    head: backing.readHead.pipe(boundedRead("head"), observed("audit", "head", prefix)),
    length: backing.length.pipe(boundedRead("length"), observed("audit", "length", prefix)),
    headKeys: boundedRead("head keys")(backing.readHeadKeys),
    readChainJson,
    readChain: (opts) =>
      readChainJson(opts).pipe(
        Stream.zipWithIndex,
        Stream.mapEffect(([json, index]) =>
          Effect.try({
            try: () => JSON.parse(json) as Record<string, unknown>,
            catch: () => new CorruptData({ key: backing.keys.chain, element: (opts?.from ?? 0) + index, detail: "not JSON" })
          })
        )
      )
  }
}

/** The chain's stored JSON in order, a page per bounded read. */
const chainPages = (
  backing: AuditBacking,
  bound: ReturnType<typeof withinRead>
): AuditStoreShape["readChainJson"] => (opts: ChainReadOptions = {}) => {
  const pageSize = Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE))
  return Stream.paginateChunkEffect(Math.max(0, opts.from ?? 0), (start) =>
    Effect.map(bound(backing.readRange(start, start + pageSize - 1)), (page) => [
      Chunk.unsafeFromArray(page as Array<string>),
      page.length === pageSize ? Option.some(start + pageSize) : Option.none()
    ] as const)
  )
}
