/**
 * `read` for a Promise caller (the haechi facade), with no fiber in the common case.
 * The change-log call is made as a plain Promise; when Redis answers that nothing
 * changed (the same proof `bringUpToDate` takes: the commit the cache saw is still
 * logged at its version and the token count agrees), or with a delta the cache applies
 * under that proof, `fn` runs at once over a pinned snapshot. Every other answer (a
 * reload, a rewind, a count the log does not explain) is settled by the Effect path
 * (`freshness.settle`: counted, logged, read again), then `fn` runs. Errors are the
 * same typed errors, the deadline is the operation's (one timer; a reply after it
 * reaches neither `fn` nor the cache), and the latency sample is the same. Under an
 * installed tracer the store's Effect `read` runs instead, so its span is recorded.
 */
import type * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Runtime from "effect/Runtime"
import { CorruptData, OperationTimeout } from "../../Errors.js"
import { timerDelay, within, type DeadlineSpec } from "../deadline.js"
import { originalFailure } from "../facade/run.js"
import { DeadlineQueue, type QueuedDeadline } from "../deadlineQueue.js"
import { latencyMetric, tracesNothing } from "../observe.js"
import type { VaultBacking, VaultPoint } from "./backing.js"
import type { VaultCache } from "./cache.js"
import type { ReadView, TokenStoreShape } from "./contract.js"
import { isCurrent, type VaultFreshness } from "./freshness.js"
import { readView } from "./views.js"

/** haechi's `read(fn)`: `fn` gets a synchronous view and may return a Promise. */
export type PromiseRead = <A>(fn: (view: ReadView) => A | PromiseLike<A>) => Promise<A>

export interface PromiseReadParts {
  readonly changesNow: NonNullable<VaultBacking["changesNow"]>
  readonly cache: VaultCache
  readonly freshness: VaultFreshness
  readonly deadline: DeadlineSpec
}

const readers = new WeakMap<TokenStoreShape, (runtime: Runtime.Runtime<never>) => PromiseRead | undefined>()

/** The fiber-free `read` of `store` on `runtime`, when the store has one and no tracer would miss its span. */
export const promiseReadOf = (store: TokenStoreShape, runtime: Runtime.Runtime<never>): PromiseRead | undefined =>
  readers.get(store)?.(runtime)

/** Gives `store` a fiber-free `read` over `parts` (see `promiseReadOf`). */
export const registerPromiseRead = (store: TokenStoreShape, parts: PromiseReadParts): void => {
  readers.set(store, (runtime) => (tracesNothing(runtime.fiberRefs) ? promiseRead(parts, runtime) : undefined))
}

/** A read in flight: its deadline, and what ends the read when that passes. */
interface Pending extends QueuedDeadline {
  readonly expire: () => void
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"

const promiseRead = (parts: PromiseReadParts, runtime: Runtime.Runtime<never>): PromiseRead => {
  const { changesNow, cache, freshness, deadline } = parts
  const latency = latencyMetric("vault", "read")
  const labels = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels)
  const runExit = Runtime.runPromiseExit(runtime)
  // (One timer for all of this reader's reads: a timer per read cost more than the rest of its own work.)
  const deadlines = new DeadlineQueue<Pending>(timerDelay(deadline.timeoutMs), (pending) => pending.expire())

  return <A>(fn: (view: ReadView) => A | PromiseLike<A>): Promise<A> =>
    new Promise<A>((resolve, reject) => {
      const started = performance.now()
      const finish = (ok: boolean, value: unknown) => {
        if (pending.done) return
        deadlines.end(pending)
        latency.unsafeUpdate(performance.now() - started, labels)
        if (ok) resolve(value as A)
        else reject(value)
      }
      const timedOut = () => new OperationTimeout({ operation: deadline.operation, timeoutMs: deadline.timeoutMs })
      const pending: Pending = { endsAt: 0, expire: () => finish(false, timedOut()), done: false }
      deadlines.start(pending)
      const pinned = () => {
        if (pending.done) return
        const { snapshot, release } = cache.pin()
        let out: A | PromiseLike<A>
        try {
          out = fn(readView(snapshot))
        } catch (error) {
          release()
          return finish(false, error)
        }
        if (!isThenable(out)) {
          release()
          return finish(true, out)
        }
        // (A thenable's `then` that throws rejects; a native promise is itself.)
        Promise.resolve(out).then(
          (value) => (release(), finish(true, value)),
          (error: unknown) => (release(), finish(false, error))
        )
      }
      // The rare answers go through the Effect path, within what is left of the deadline.
      const settled = (effect: Effect.Effect<void, unknown>) => {
        const left = Math.ceil(pending.endsAt - performance.now())
        if (left < 1) return
        runExit(within({ ...deadline, timeoutMs: left })(effect)).then((exit) => {
          if (Exit.isSuccess(exit)) return pinned()
          const failure = originalFailure(exit.cause)
          // (Its budget was what was left: the timeout it names is the operation's own.)
          finish(false, failure instanceof OperationTimeout ? timedOut() : failure)
        })
      }
      const from: VaultPoint | undefined = cache.point()
      if (from === undefined || freshness.unproven()) return settled(freshness.bringUpToDate)
      changesNow(from, "").then(
        (changes) => {
          if (pending.done) return
          if (isCurrent(cache, from, changes)) return pinned()
          if (changes._tag === "Delta") {
            const to = { version: changes.version, commit: changes.commit, size: changes.size }
            const applied = cache.advanceByJsonNow(from.version, to, changes.changes)
            if (applied instanceof CorruptData) return finish(false, applied)
            if (applied) return pinned()
          }
          settled(freshness.settle(from, changes))
        },
        (error: unknown) => finish(false, error)
      )
    })
}
