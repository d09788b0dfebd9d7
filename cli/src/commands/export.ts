/**
 * `export`: the audit chain as JSONL (one stored record per line) for haechi's file
 * verifier. It streams (a few pages in memory) into a temporary file beside FILE,
 * renamed over FILE only once complete, so FILE is never a partial chain; and it never
 * replaces an existing FILE with an empty export or with fewer records than the head
 * names (a truncated chain): that fails and FILE is left as it was.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { AuditStore, Verify } from "haechi-store-effect"
import { CliFailure, ExitCode } from "../shared/failure.js"
import { allowEmptyOption, pageSizeOption, prefixOption, timeoutOption, urlOption } from "../shared/options.js"
import { progress } from "../shared/progress.js"
import { requireChain } from "../shared/store.js"
import { withRedis } from "../shared/target.js"

/**
 * Writes lines (each followed by "\n") to a new file at `path`: each chunk of lines is
 * encoded into one reused buffer, written whenever it fills and at the chunk's end, so
 * a long export leaves no trail of strings or byte arrays behind for the GC.
 */
const writeLines =
  (fs: FileSystem.FileSystem, path: string) =>
  <E, R>(lines: Stream.Stream<string, E, R>) =>
    Effect.scoped(
      Effect.gen(function* () {
        const file = yield* fs.open(path, { flag: "wx" })
        const size = 1 << 20
        const scratch = Buffer.allocUnsafe(size)
        yield* Stream.runForEachChunk(lines, (chunk) =>
          Effect.gen(function* () {
            let used = 0
            for (const line of chunk) {
              const needed = Buffer.byteLength(line, "utf8") + 1
              if (used + needed > size) {
                if (used > 0) yield* file.writeAll(scratch.subarray(0, used))
                used = 0
              }
              if (needed > size) {
                yield* file.writeAll(Buffer.from(line + "\n", "utf8"))
                continue
              }
              used += scratch.write(line, used, "utf8")
              scratch[used++] = 0x0a
            }
            if (used > 0) yield* file.writeAll(scratch.subarray(0, used))
          })
        )
        yield* file.sync
      })
    )

/** Refuses to put `count` records over an existing `out` when that would lose records. */
const checkReplace = (fs: FileSystem.FileSystem, out: string, count: number, headSequence: number | null) =>
  Effect.gen(function* () {
    const truncated = headSequence !== null && count < headSequence
    if (!truncated && count > 0) return
    if (!truncated && !(yield* fs.exists(out))) return
    const why = truncated
      ? `the chain holds ${count} records but its head is at sequence ${headSequence} (truncated: run verify)`
      : "the export is empty"
    return yield* Effect.fail(
      new CliFailure({
        line: `not replacing ${out}: ${why}; ${out} is unchanged`,
        code: truncated ? ExitCode.invalid : ExitCode.empty
      })
    )
  })

export const exportCommand = Command.make(
  "export",
  {
    out: Options.file("out").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription(
        "the JSONL file to write (replaced only once complete, never by an empty or truncated export)"
      )
    ),
    url: urlOption,
    prefix: prefixOption("prefix", AuditStore.DEFAULT_PREFIX, "audit store"),
    pageSize: pageSizeOption,
    allowEmpty: allowEmptyOption,
    timeout: timeoutOption
  },
  ({ out, url, prefix, pageSize, allowEmpty, timeout }) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const temporary = `${out}.tmp-${process.pid}`
      const bar = progress("export", "records")
      let count = 0
      yield* withRedis(url, (t) =>
        Effect.gen(function* () {
          const presence = yield* requireChain(t, prefix, allowEmpty)
          yield* Verify.exportJsonl({
            pageSize,
            onProgress: (n, total) => {
              count = n
              return bar.update(n, total)
            }
          }).pipe(writeLines(fs, temporary), bar.around)
          yield* checkReplace(fs, out, count, presence.headSequence)
          yield* fs.rename(temporary, out)
        }).pipe(
          Effect.onExit(() => Effect.ignore(fs.remove(temporary))),
          Effect.provide(AuditStore.layer({ keyPrefix: prefix, timeout })),
          Effect.withSpan("haechi.cli.export")
        )
      )
      yield* Console.log(`exported ${count} records to ${out}`)
    })
).pipe(
  Command.withDescription("write the audit chain as JSONL (one stored record per line) for haechi's file verifier")
)
