/**
 * One span and one latency sample per store operation, with the outcome on the span,
 * so every operation shows up the same way in traces and metrics.
 */
import { Cause, Effect, Exit, Metric, Option } from "effect"
import type { StoreKind } from "./Errors.js"
import * as Metrics from "./Metrics.js"

export const observed =
  (store: StoreKind, operation: string, prefix: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      const started = performance.now()
      return effect.pipe(
        Effect.onExit((exit) =>
          Effect.zipRight(
            Metric.update(
              Metrics.operationLatency.pipe(Metric.tagged("store", store), Metric.tagged("operation", operation)),
              performance.now() - started
            ),
            Effect.annotateCurrentSpan(
              "haechi.outcome",
              Exit.isSuccess(exit) ? "ok" : Exit.isInterrupted(exit) ? "interrupted" : failureTag(exit.cause)
            )
          )
        ),
        Effect.withSpan(`haechi.${store}.${operation}`, {
          attributes: { "haechi.store": store, "haechi.prefix": prefix }
        })
      )
    })

const failureTag = <E>(cause: Cause.Cause<E>): string =>
  Option.match(Cause.failureOption(cause), {
    onNone: () => "defect",
    onSome: (error) => (error as { _tag?: string })?._tag ?? "error"
  })
