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
import type { MetricLabel } from "effect/MetricLabel"
import * as Runtime from "effect/Runtime"
import { CorruptData, OperationTimeout } from "../../Errors.js"
import { timerDelay, within, type DeadlineSpec } from "../deadline.js"
import { isThenable, originalFailure } from "../facade/run.js"
import { DeadlineQueue, type QueuedDeadline } from "../deadlineQueue.js"
import { latencyMetric, tracesNothing } from "../observe.js"
import type { Changes, VaultBacking, VaultPoint } from "./backing.js"
import type { VaultCache } from "./cache.js"
import type { ReadView, TokenStoreShape } from "./contract.js"
import { isCurrent, type VaultFreshness } from "./freshness.js"
import { readView } from "./views.js"

/** haechi's `read(fn)`: `fn` gets a synchronous view and may return a Promise. */
export type PromiseRead = <A>(fn: (view: ReadView) => A | PromiseLike<A>) => Promise<A>

export interface PromiseReadParts {
  readonly changesThen: NonNullable<VaultBacking["changesThen"]>
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

/** What all of one reader's reads share. */
interface Reader extends PromiseReadParts {
  readonly latency: ReturnType<typeof latencyMetric>
  readonly labels: ReadonlyArray<MetricLabel>
  readonly runExit: (effect: Effect.Effect<void, unknown>) => Promise<Exit.Exit<void, unknown>>
  readonly deadlines: DeadlineQueue<Pending>
}

/** One read, from its round trip to its answer; its steps are methods, not closures made per read. */
class ReadCall<A> implements Pending {
  endsAt = 0
  done = false
  private readonly started = performance.now()
  constructor(
    private readonly reader: Reader,
    private readonly fn: (view: ReadView) => A | PromiseLike<A>,
    private readonly resolve: (value: A) => void,
    private readonly reject: (error: unknown) => void
  ) {}

  expire(): void {
    this.finish(false, this.timedOut())
  }

  private timedOut(): OperationTimeout {
    const { operation, timeoutMs } = this.reader.deadline
    return new OperationTimeout({ operation, timeoutMs })
  }

  finish(ok: boolean, value: unknown): void {
    if (this.done) return
    const { deadlines, latency, labels } = this.reader
    deadlines.end(this)
    latency.unsafeUpdate(performance.now() - this.started, labels)
    if (ok) this.resolve(value as A)
    else this.reject(value)
  }

  /** Runs `fn` over a pinned snapshot of the cache, unpinned once its answer settles. */
  pinned(): void {
    if (this.done) return
    const { snapshot, release } = this.reader.cache.pin()
    let out: A | PromiseLike<A>
    let thenable: boolean
    try {
      out = this.fn(readView(snapshot))
      // (Inside the try: a `then` getter that throws is fn's failure, not this step's.)
      thenable = isThenable(out)
    } catch (error) {
      release()
      return this.finish(false, error)
    }
    if (!thenable) {
      release()
      return this.finish(true, out)
    }
    // (A thenable's `then` that throws rejects; a native promise is itself.)
    Promise.resolve(out).then(
      (value) => (release(), this.finish(true, value)),
      (error: unknown) => (release(), this.finish(false, error))
    )
  }

  /** The rare answers go through the Effect path, within what is left of the deadline. */
  settled(effect: Effect.Effect<void, unknown>): void {
    const left = Math.ceil(this.endsAt - performance.now())
    if (left < 1) return
    this.reader.runExit(within({ ...this.reader.deadline, timeoutMs: left })(effect)).then((exit) => {
      if (Exit.isSuccess(exit)) return this.pinned()
      const failure = originalFailure(exit.cause)
      // (Its budget was what was left: the timeout it names is the operation's own.)
      this.finish(false, failure instanceof OperationTimeout ? this.timedOut() : failure)
    })
  }

  /** What the change log answered for a cache that stood at `from`. */
  answered(from: VaultPoint, changes: Changes): void {
    if (this.done) return
    const { cache, freshness } = this.reader
    if (isCurrent(cache, from, changes)) return this.pinned()
    if (changes._tag === "Delta") {
      const to = { version: changes.version, commit: changes.commit, size: changes.size }
      const applied = cache.advanceByJsonNow(from.version, to, changes.changes)
      if (applied instanceof CorruptData) return this.finish(false, applied)
      if (applied) return this.pinned()
    }
    this.settled(freshness.settle(from, changes))
  }

  start(): void {
    const { cache, freshness, changesThen } = this.reader
    this.reader.deadlines.start(this)
    const from: VaultPoint | undefined = cache.point()
    if (from === undefined || freshness.unproven()) return this.settled(freshness.bringUpToDate)
    void changesThen(
      from,
      "",
      (changes) => this.answered(from, changes),
      (error: unknown) => this.finish(false, error)
    )
  }
}

const promiseRead = (parts: PromiseReadParts, runtime: Runtime.Runtime<never>): PromiseRead => {
  const reader: Reader = {
    ...parts,
    latency: latencyMetric("vault", "read"),
    labels: FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels),
    runExit: Runtime.runPromiseExit(runtime),
    // (One timer for all of this reader's reads: a timer per read cost more than the rest of its own work.)
    deadlines: new DeadlineQueue<Pending>(timerDelay(parts.deadline.timeoutMs), (pending) => pending.expire())
  }
  return <A>(fn: (view: ReadView) => A | PromiseLike<A>): Promise<A> =>
    new Promise<A>((resolve, reject) => new ReadCall(reader, fn, resolve, reject).start())
}
