/**
 * `mutate` for a Promise caller (the haechi facade), with no fiber in the common case:
 * a first attempt the guard leaves free (`freeClaim`: no lock to take or wait for) over
 * a cache the change log proves, on a runtime that traces nothing (no span would be
 * seen). `fn` runs over a pinned snapshot, its diff is checked and sent as the one
 * fenced apply from the caller's own call, and a `Committed` reply is settled right
 * there, as the store's attempt would (the cache moved by the records just written).
 * Anything else is handed to Effect where it happens: the reply of an apply that did
 * not simply commit goes to the store's attempt (`settleSent`: a conflict, a yield, a
 * rewind, a lost reply, an error), and an attempt that lost goes on in the store's
 * `mutate` as its first attempt (`ResumableMutate`), inside the same deadline. So every
 * outcome, retry and count means exactly what it means on the Effect path. The deadline
 * is the operation's (`CallerDeadline`: the same failures, on the Effect path's timer),
 * and so is the latency sample.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Runtime from "effect/Runtime"
import { type FenceConflict, InvalidRecord, type StoreError } from "../../Errors.js"
import { CallerDeadline } from "../callerDeadline.js"
import type { Budget, DeadlineSpec } from "../deadline.js"
import type { DeadlineQueue } from "../deadlineQueue.js"
import { fromCaller, isThenable, originalFailure, promiseRunner } from "../facade/run.js"
import { latencyMetric, tracesNothing } from "../observe.js"
import { isFenceConflict } from "../retryBudget.js"
import type { LockClaim } from "../storeGuard.js"
import { committedVersion, type VaultWrite } from "./backing.js"
import type { Snapshot, VaultCache } from "./cache.js"
import { type CommitAttempt, endView, isEmpty, type StagedDiff, stagedDiff } from "./commit.js"
import type { MutableView, TokenStoreShape } from "./contract.js"
import type { VaultFreshness } from "./freshness.js"
import { StagingView } from "./views.js"

/** haechi's `mutate(fn)`: `fn` gets a synchronous mutable view and may return a Promise. */
export type PromiseMutate = <A>(fn: (view: MutableView) => A | PromiseLike<A>) => Promise<A>

/** The store's `mutate`; `first`: its first attempt was made already and lost with this conflict. */
export type ResumableMutate = <A, E, R>(
  f: (view: MutableView) => Effect.Effect<A, E, R>,
  first?: FenceConflict
) => Effect.Effect<A, Exclude<E, FenceConflict> | StoreError, R>

export interface PromiseMutateParts {
  readonly prefix: string
  readonly send: (write: VaultWrite) => Promise<unknown>
  readonly cache: VaultCache
  readonly freshness: VaultFreshness
  readonly freeClaim: () => LockClaim | undefined | false
  readonly settleSent: CommitAttempt["settleSent"]
  /** The store's `mutate` without its deadline and sample (the caller keeps those). */
  readonly resume: ResumableMutate
  readonly deadline: DeadlineSpec
  readonly deadlines: DeadlineQueue<Budget>
}

const mutators = new WeakMap<TokenStoreShape, (runtime: Runtime.Runtime<never>) => PromiseMutate | undefined>()

/** The fiber-free `mutate` of `store` on `runtime`, when the store has one and no tracer would miss its span. */
export const promiseMutateOf = (store: TokenStoreShape, runtime: Runtime.Runtime<never>): PromiseMutate | undefined =>
  mutators.get(store)?.(runtime)

/** Gives `store` a fiber-free `mutate` over `parts` (see `promiseMutateOf`). */
export const registerPromiseMutate = (store: TokenStoreShape, parts: PromiseMutateParts): void => {
  mutators.set(store, (runtime) =>
    tracesNothing(runtime.fiberRefs) ? promiseMutate(store, parts, runtime) : undefined
  )
}

/** `fn` as the store's `f`: its failure passed through as it was thrown (a FenceConflict stays retryable). */
export const effectOf =
  <A>(fn: (view: MutableView) => A | PromiseLike<A>) =>
  (view: MutableView): Effect.Effect<A, unknown> =>
    fromCaller(() => fn(view) as A | Promise<A>)

const promiseMutate = (
  store: TokenStoreShape,
  parts: PromiseMutateParts,
  runtime: Runtime.Runtime<never>
): PromiseMutate => {
  const run = promiseRunner(runtime)
  const latency = latencyMetric("vault", "mutate")
  const labels = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels)
  const sample = (started: number) => latency.unsafeUpdate(performance.now() - started, labels)
  return <A>(fn: (view: MutableView) => A | PromiseLike<A>): Promise<A> => {
    // A cache no commit proves is read in full first: the store's own path.
    const claim = parts.freshness.unproven() ? false : parts.freeClaim()
    if (claim === false) return run(store.mutate(effectOf(fn)))
    return new Promise<A>((resolve, reject) => {
      new LaneMutation<A>(parts, runtime, fn, sample, resolve, reject).start(claim)
    })
  }
}

/** One mutate in the lane: its first attempt here, the rest (if it lost) in the store's `mutate`. */
class LaneMutation<A> {
  private ended = false
  private readonly started = performance.now()
  private readonly deadline: CallerDeadline

  constructor(
    private readonly parts: PromiseMutateParts,
    runtime: Runtime.Runtime<never>,
    private readonly fn: (view: MutableView) => A | PromiseLike<A>,
    private readonly sample: (started: number) => void,
    private readonly resolve: (value: A) => void,
    private readonly reject: (error: unknown) => void
  ) {
    this.deadline = new CallerDeadline(parts.deadline, parts.deadlines, runtime)
  }

  /** Runs `fn` over a pinned snapshot; past the deadline its view is closed and nothing is sent. */
  start(claim: LockClaim | undefined): void {
    const { snapshot, release } = this.parts.cache.pin()
    const view = new StagingView(snapshot, this.parts.prefix)
    this.deadline.onExpiry(() => {
      endView(view, release)
      this.end(Exit.void as Exit.Exit<never>)
    })
    const returned = (result: A) => {
      endView(view, release)
      if (this.ended) return
      const staged = stagedDiff(view, snapshot, claim)
      if (staged instanceof InvalidRecord) this.end(Exit.fail(staged))
      else this.send(snapshot, staged, result)
    }
    const threw = (error: unknown) => {
      endView(view, release)
      if (this.ended) return
      // (A conflict `fn` threw is retried, as the store's attempt retries it.)
      if (isFenceConflict(error)) this.effectPath(Effect.fail(error))
      else this.end(Exit.fail(error))
    }
    let out: A | PromiseLike<A>
    let pending: Promise<A> | undefined
    try {
      out = this.fn(view)
      // (A thenable's `then` that throws rejects; a native promise is itself; a `then`
      // that cannot even be read throws here, and ends the attempt as `fn` throwing.)
      if (isThenable(out)) pending = Promise.resolve(out)
    } catch (error) {
      return threw(error)
    }
    if (pending !== undefined) pending.then(returned, threw)
    else returned(out as A)
  }

  /** Sends the apply; a `Committed` reply is settled here, anything else by the store's attempt. */
  private send(snapshot: Snapshot, staged: StagedDiff, result: A): void {
    // (An empty diff writes nothing: not a commit in flight, as on the Effect path.)
    const empty = isEmpty(staged)
    const inFlight = empty ? undefined : this.deadline.commit(ignore)
    // (Past the deadline already: the operation has ended, nothing is sent.)
    if (!empty && inFlight === undefined) return
    let sent: Promise<unknown>
    try {
      sent = this.parts.send(staged.write)
    } catch (error) {
      sent = Promise.reject(error)
    }
    // (The mark comes off once the apply's outcome is known, under the apply's own mark:
    // a deadline while a conflict is settled then says, as `within` does, that nothing committed.)
    const handOver = () => {
      const unmark = inFlight?.handOver() ?? Effect.void
      this.effectPath(this.parts.settleSent(snapshot, staged, result, sent, unmark))
    }
    sent.then(
      (reply) => {
        if (this.ended) return
        const version = committedVersion(reply)
        if (version === undefined) return handOver()
        inFlight?.settled(true)
        if (!empty) {
          this.parts.cache.advance(snapshot.version, { version, commit: staged.write.commitId }, staged.records)
        }
        this.end(Exit.succeed(result))
      },
      () => {
        if (!this.ended) handOver()
      }
    )
  }

  /** The rest in Effect, inside this deadline: `effect`, then, if the attempt lost, the store's further attempts. */
  private effectPath(effect: Effect.Effect<A, unknown>): void {
    const rest = Effect.catchIf(effect, isFenceConflict, (conflict) =>
      this.parts.resume(effectOf(this.fn), conflict)
    ) as Effect.Effect<A, unknown>
    void Runtime.runPromiseExit(this.deadline.runtime())(rest).then((exit) => this.end(exit))
  }

  // However it ended: past the deadline, the deadline's failure (as `within`), at once.
  private end(exit: Exit.Exit<A, unknown>): void {
    if (this.ended) return
    this.ended = true
    this.deadline.close()
    this.sample(this.started)
    if (this.deadline.expired) this.reject(this.deadline.failure)
    else if (Exit.isSuccess(exit)) this.resolve(exit.value)
    else this.reject(originalFailure(exit.cause))
  }
}

const ignore = (): void => {}
