/**
 * One span and one latency sample per store operation, with the outcome on the span,
 * so every operation shows up the same way in traces and metrics. Built once per
 * store and operation: the hot path allocates no metric keys and captures no stack.
 * Under Effect's native tracer (no tracer installed: nothing would ever see a span) the
 * operation's span is skipped; the latency sample never is.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import type { CommitOutcomeUnknown, OperationTimeout, StoreKind } from "../Errors.js"
import * as Metrics from "../Metrics.js"
import type { within } from "./deadline.js"
import { withTags } from "./metricTags.js"

/** Effect's default tracer, which records nothing anyone can read. */
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** The latency histogram of one store operation, tags fixed once. */
export const latencyMetric = (store: StoreKind | "ratelimit", operation: string) =>
  withTags(Metrics.keys.operationLatency, { store, operation })

/** True when fibers started with `fiberRefs` trace with Effect's native tracer: no span would be seen. */
export const tracesNothing = (fiberRefs: FiberRefs.FiberRefs): boolean =>
  Context.get(FiberRefs.getOrDefault(fiberRefs, DefaultServices.currentServices), Tracer.Tracer) === nativeTracer

export const observed = (store: StoreKind | "ratelimit", operation: string, prefix: string) => {
  const latency = latencyMetric(store, operation)
  const span = {
    attributes: { "haechi.store": store, "haechi.prefix": prefix },
    captureStackTrace: false
  } as const
  const name = `haechi.${store}.${operation}`
  // The span is annotated through its handle: looking it up as the current span again
  // cost a context read per operation.
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) => {
      const started = performance.now()
      // The sample is taken as `Metric.update` would (with the fiber's metric labels), without its two steps.
      const sample = () => {
        latency.unsafeUpdate(performance.now() - started, fiber.getFiberRef(FiberRef.currentMetricLabels))
        return Effect.void
      }
      if (Context.get(fiber.getFiberRef(DefaultServices.currentServices), Tracer.Tracer) === nativeTracer) {
        return Effect.onExit(effect, sample)
      }
      return Effect.useSpan(name, span, (current) =>
        Effect.withParentSpan(effect, current).pipe(
          Effect.onExit((exit) => {
            current.attribute("haechi.outcome", outcomeOf(exit))
            return sample()
          })
        )
      )
    })
}

/**
 * `observed(store, operation, prefix)(bound(effect))` for an operation bounded by a
 * deadline (`within`): the same span and sample, but under the native tracer the latency
 * is sampled by the deadline's own exit step, not by one more of its own.
 */
export const observedWithin = (
  store: StoreKind,
  operation: string,
  prefix: string,
  bound: ReturnType<typeof within>
) => {
  const latency = latencyMetric(store, operation)
  const traced = observed(store, operation, prefix)
  return <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.withFiberRuntime<A, E | OperationTimeout | CommitOutcomeUnknown, R>((fiber) => {
      if (Context.get(fiber.getFiberRef(DefaultServices.currentServices), Tracer.Tracer) !== nativeTracer) {
        return traced(bound(effect))
      }
      const started = performance.now()
      return bound(effect, () =>
        latency.unsafeUpdate(performance.now() - started, fiber.getFiberRef(FiberRef.currentMetricLabels))
      )
    })
}

/** What `haechi.outcome` says of an exit: "ok", "interrupted", "defect" or the error's tag. */
export const outcomeOf = <A, E>(exit: Exit.Exit<A, E>): string =>
  Exit.isSuccess(exit) ? "ok" : Exit.isInterrupted(exit) ? "interrupted" : failureTag(exit.cause)

/**
 * `Effect.withSpan` that also ends the span with `haechi.outcome`, for the spans that are
 * not a store operation's (reload, durability, lock, checkpoint, verify, ...).
 */
export const spanned =
  (name: string, attributes: Record<string, unknown> = {}) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.useSpan(name, { attributes, captureStackTrace: false }, (span) =>
      Effect.withParentSpan(effect, span).pipe(
        Effect.onExit((exit) => Effect.sync(() => span.attribute("haechi.outcome", outcomeOf(exit))))
      )
    )

const failureTag = <E>(cause: Cause.Cause<E>): string =>
  Option.match(Cause.failureOption(cause), {
    onNone: () => "defect",
    onSome: (error) => (error as { _tag?: string })?._tag ?? "error"
  })
