/** A metric with its tags fixed once, for the hot paths (see `withTags`). */
import * as Metric from "effect/Metric"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"

/**
 * The metric of `key` with fixed tags, built once. (`Metric.tagged` re-derives and hashes
 * the tagged key and looks it up in the registry on every update: a few µs on each
 * store operation.)
 */
export const withTags = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  tags: Record<string, string>
) =>
  Metric.fromMetricKey(
    MetricKey.taggedWithLabels(
      key,
      Object.entries(tags).map(([k, v]) => MetricLabel.make(k, v))
    )
  )
