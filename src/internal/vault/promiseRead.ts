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

/** A read in flight: when its deadline passes, and what ends it then. */
interface Pending {
  readonly endsAt: number
  readonly expire: () => void
  done: boolean
}

/**
 * The deadlines of one reader's reads in flight. They all have the same timeout, so
 * they end in the order they started: one timer, armed for the oldest, serves them all
 * (a timer per read cost more than the rest of the read's own work). While no read is in
 * flight the timer is left armed but does not hold the process open.
 */
class Deadlines {
  private queue: Array<Pending> = []
  private head = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined

  constructor(private readonly delay: number) {}

  add(pending: Pending): void {
    if (this.head === this.queue.length) this.timer?.ref()
    this.queue.push(pending)
    this.timer ??= setTimeout(this.fire, this.delay)
  }

  /** Marks `pending` ended; the ended reads at the front leave the queue. */
  end(pending: Pending): void {
    pending.done = true
    while (this.head < this.queue.length && this.queue[this.head]!.done) this.head += 1
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
      this.timer?.unref()
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      // (Reads always in flight never empty the queue: the ended front is dropped now and then.)
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
  }

  // Expires every read whose deadline has passed (a timer may fire early: never early
  // for a read), and re-arms for the next one.
  private readonly fire = (): void => {
    this.timer = undefined
    const now = performance.now()
    while (this.head < this.queue.length) {
      const first = this.queue[this.head]!
      if (first.done) {
        this.head += 1
        continue
      }
      if (first.endsAt > now) {
        this.timer = setTimeout(this.fire, Math.ceil(first.endsAt - now))
        return
      }
      first.expire()
    }
  }
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"

const promiseRead = (parts: PromiseReadParts, runtime: Runtime.Runtime<never>): PromiseRead => {
  const { changesNow, cache, freshness, deadline } = parts
  const latency = latencyMetric("vault", "read")
  const labels = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels)
  const runExit = Runtime.runPromiseExit(runtime)
  const delay = timerDelay(deadline.timeoutMs)
  const deadlines = new Deadlines(delay)

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
      const pending: Pending = { endsAt: started + delay, expire: () => finish(false, timedOut()), done: false }
      deadlines.add(pending)
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
        const left = Math.ceil(delay - (performance.now() - started))
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
