/**
 * A tracer that keeps every span it is asked for (name, attributes, parent, exit), so a
 * test can read what an exporter would be handed.
 */
import { type Exit, Option, Tracer } from "effect"

export interface RecordedSpan {
  readonly name: string
  readonly attributes: Map<string, unknown>
  ended?: Exit.Exit<unknown, unknown>
  parent: string | undefined
}

export const recordingTracer = () => {
  const spans: Array<RecordedSpan> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const recorded: RecordedSpan = { name, attributes: new Map(), parent: Option.getOrUndefined(parent)?.spanId }
      spans.push(recorded)
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId: String(spans.length),
        traceId: "test",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: recorded.attributes,
        links,
        sampled: true,
        kind,
        end: (_endTime, exit) => void (recorded.ended = exit),
        attribute: (key, value) => void recorded.attributes.set(key, value),
        event: () => {},
        addLinks: () => {}
      }
      return span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}
