/** `demo`: replicas appending and tokenizing concurrently, then the chain verified. */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { runDemo, type DemoSummary } from "../Demo.js"
import { CliFailure, ExitCode, failureOf, identity, usage } from "../shared/failure.js"
import { urlOption } from "../shared/options.js"
import { describeResult } from "../shared/output.js"
import { progress } from "../shared/progress.js"
import { connectTo, resolveUrl, target } from "../shared/target.js"

/** The demo's summary, as printed. */
export const describeDemo = (s: DemoSummary): ReadonlyArray<string> => {
  const seconds = s.elapsedMs / 1000
  const where =
    s.backend === "memory"
      ? "on the in-memory stores (pass --url or set REDIS_URL to run on Redis)"
      : s.kept
        ? `on Redis under ${s.auditPrefix} and ${s.vaultPrefix} (kept)`
        : "on Redis (demo keys deleted)"
  return [
    `demo: ${s.replicas} ${s.replicas === 1 ? "replica" : "replicas"}, ${s.events} events ${where}`,
    `tokens: ${s.tokensCreated} created, ${s.tokensReused} reused, ${s.tokensPruned} expired and pruned; ` +
      `vault holds ${s.vaultSize} at version ${s.vaultVersion}`,
    `fence conflicts: ${s.fenceConflicts} (each retried on the new head or version: nothing forked, nothing lost)`,
    `chain ${describeResult(s.verify, undefined)}`,
    `elapsed ${seconds.toFixed(2)} s, ${Math.round(s.events / Math.max(seconds, 0.001))} events/s`
  ]
}

export const demoCommand = Command.make(
  "demo",
  {
    replicas: Options.integer("replicas").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("concurrent replicas, each with its own stores (default 4)"),
      Options.withDefault(4)
    ),
    events: Options.integer("events").pipe(
      Options.withPseudoName("M"),
      Options.withDescription("audit events in all, each also tokenizing a value (default 200)"),
      Options.withDefault(200)
    ),
    url: urlOption,
    keep: Options.boolean("keep").pipe(Options.withDescription("keep the demo's keys on Redis (default: deleted)"))
  },
  ({ replicas, events, url, keep }) =>
    Effect.gen(function* () {
      if (replicas < 1 || replicas > 256) return yield* Effect.fail(usage("--replicas must be between 1 and 256"))
      if (events < 0 || events > 1_000_000) return yield* Effect.fail(usage("--events must be between 0 and 1000000"))
      const resolved = yield* resolveUrl(url)
      const t = Option.isSome(resolved) ? yield* target(resolved.value) : undefined
      const bar = progress("demo", "events")
      const summary = yield* runDemo({
        replicas,
        events,
        keep,
        connect: t === undefined ? undefined : connectTo(t),
        onProgress: bar.update
      }).pipe(
        bar.around,
        Effect.catchAllCause((cause) => Effect.fail(failureOf(cause, t?.scrub ?? identity, t?.shown)))
      )
      for (const line of describeDemo(summary)) yield* Console.log(line)
      if (!summary.verify.valid) return yield* Effect.fail(new CliFailure({ line: undefined, code: ExitCode.invalid }))
    })
).pipe(Command.withDescription("replicas appending audit events and tokenizing concurrently, then a verification"))
