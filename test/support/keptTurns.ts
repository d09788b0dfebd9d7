/**
 * Kept turns in the facade's fast lane, as the tests drive them: a facade transaction
 * over a store with the adaptive policy and a burst with no time bound, that counts what
 * ran where, and the steps that give it a turn to keep.
 */
import { Effect, Metric, type Runtime } from "effect"
import type { Redis } from "ioredis"
import { expect } from "vitest"
import type { HaechiAuditStore } from "../../src/haechi.js"
import { redisAuditBacking } from "../../src/internal/audit/backing.js"
import type { OnRewind } from "../../src/internal/audit/options.js"
import { type AppendLane, appendStoreOnBacking } from "../../src/internal/audit/store.js"
import { callerTransactions } from "../../src/internal/facade/auditTransaction.js"
import { waitersKeyOf } from "../../src/internal/keys.js"
import { guardFor } from "../../src/internal/lock/policy.js"
import { withTags } from "../../src/internal/metricTags.js"
import type * as Metrics from "../../src/Metrics.js"
import { fromClient } from "../../src/RedisClient.js"
import { append, chainOf } from "./facadePaths.js"

export type Transactions = Pick<HaechiAuditStore, "transaction">

/** Turns lent to a lane's first attempt so far, by every `laneStore` of the test file. */
export const lentTurns = { count: 0 }

export interface LaneStoreOptions {
  /** The burst: commits a turn is kept for (default 8); no time bound. */
  readonly commits?: number
  /** The kept lock's lease (default the stores' 10 ms). */
  readonly keepMs?: number
  readonly timeout?: number
  /** The facade's runtime (a traced one takes the Effect path). */
  readonly runtime?: Runtime.Runtime<never>
  readonly onRewind?: OnRewind
}

/**
 * The facade's transaction over a Redis store under `prefix`, counting the operations
 * that enter the store's Effect transaction (`entered`) and the lane's attempts that go
 * on there (`resumed`).
 */
export const laneStore = (client: Redis, prefix: string, options: LaneStoreOptions = {}) => {
  const redis = fromClient(client)
  const { lane, store } = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
    guard: guardFor("adaptive", redis, `${prefix}lock`, {
      burst: { commits: options.commits ?? 8, ms: 60_000, keepMs: options.keepMs }
    }),
    timeout: options.timeout ?? 2000,
    ...(options.onRewind !== undefined ? { onRewind: options.onRewind } : {})
  })
  expect(lane).toBeDefined()
  const counts = { entered: 0, resumed: 0 }
  const counting: AppendLane = {
    ...lane!,
    lendTurn: () => {
      const turn = lane!.lendTurn()
      if (turn !== undefined) lentTurns.count += 1
      return turn
    },
    resume: (build, first, lent) => {
      counts.resumed += 1
      return lane!.resume(build, first, lent)
    }
  }
  const entering: Pick<typeof store, "transaction"> = {
    transaction: (build) => {
      counts.entered += 1
      return store.transaction(build)
    }
  }
  return { transaction: callerTransactions(entering, counting, options.runtime), counts }
}

/** The store made busy, then granted a turn that it keeps: a foreign lock it waits out, then a write that asks first. */
export const takeATurn = async (client: Redis, prefix: string, store: Transactions) => {
  await append(store, { warm: true })
  await client.set(`${prefix}lock`, "held-by-a-reference-replica", "PX", 40)
  await append(store, { waited: true }) // yields, waits the foreign lock out: the store is busy
  await append(store, { granted: true }) // asks first: granted, and keeps the lock
}

/** Each record's event, by its one key besides auditIntegrity. */
export const eventsOf = async (client: Redis, prefix: string) =>
  (await chainOf(client, prefix)).map((r) => Object.keys(r).find((k) => k !== "auditIntegrity"))

/** The audit transaction's count of `key` so far. */
export const transactionCount = (key: typeof Metrics.keys.fenceConflicts) =>
  Effect.runSync(Metric.value(withTags(key, { store: "audit", operation: "transaction" }))).count

/** An error's tag (or its text). */
export const tagOf = (error: unknown) => (error as { _tag?: string })._tag ?? String(error)

/** How a call settled: "ok", or its error's tag. */
export const settled = <T>(p: Promise<T>) =>
  p.then(
    () => "ok",
    (error: unknown) => tagOf(error)
  )

/** What is left of the store's lock: its holder, and the waiter queue's size. */
export const lockLeft = async (client: Redis, prefix: string) => ({
  holder: await client.get(`${prefix}lock`),
  waiters: await client.zcard(waitersKeyOf(`${prefix}lock`))
})
