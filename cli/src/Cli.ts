/**
 * `haechi-store`: verify, export and inspect the shared stores from a shell, and a demo.
 * The commands live in ./commands/ (one file each), what they share in ./shared/.
 *
 * Guarantees:
 * - Exit codes (also in `--help`): 0 done (and the chain is valid); 1 the chain is NOT
 *   valid (tampered, truncated or forked), with the failing sequence and reason on the
 *   last line of stdout; 2 bad arguments; 3 the work could not be done (Redis
 *   unreachable or refusing, wrong credentials, a file that cannot be written, corrupt
 *   keys); 4 nothing there (no chain and no head under the prefix; `--allow-empty`
 *   accepts it); 130 / 143 interrupted by SIGINT / SIGTERM.
 * - Every failure is ONE line on stderr (`haechi-store: …`), never a stack trace.
 * - A Redis password is never printed: URLs are shown with it replaced by `***`, and
 *   every message is scrubbed of it before it is printed. `--url` defaults to
 *   `REDIS_URL`, read as a redacted Config.
 * - An unreachable Redis fails fast: one connection attempt with a short connect
 *   timeout, awaited before any work; no reconnection; one try per request. A Redis that
 *   stops answering (a frozen link, a paused or sleeping server) fails each read within
 *   `--timeout` (default 10 s).
 * - Long work shows progress on stderr (see ./shared/progress.ts); stdout has results.
 * - Help has no escape sequences unless stdout is a terminal and NO_COLOR is unset; no
 *   prompt waits on a stdin that is not a terminal (`--wizard` there is a usage error).
 */
import { readFileSync } from "node:fs"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Span from "@effect/cli/HelpDoc/Span"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { demoCommand } from "./commands/demo.js"
import { exportCommand } from "./commands/export.js"
import { statsCommand } from "./commands/stats.js"
import { checkpointCommand, keygenCommand } from "./commands/checkpoint.js"
import { verifyCommand } from "./commands/verify.js"
import { type CliFailure, ExitCode, failureOf, identity, oneLine, usage } from "./shared/failure.js"

export { ExitCode } from "./shared/failure.js"

export const NAME = "haechi-store"
export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version

const exitCodes: ReadonlyArray<[string, string]> = [
  [String(ExitCode.ok), "done (and the chain is valid)"],
  [String(ExitCode.invalid), "the chain is not valid: the failing sequence and reason on the last line"],
  [String(ExitCode.usage), "bad arguments"],
  [String(ExitCode.failed), "could not run: Redis unreachable or refusing, wrong credentials, a file not written"],
  [String(ExitCode.empty), "nothing there: no chain and no head under the prefix (see --allow-empty)"],
  [`${ExitCode.interrupted} / ${ExitCode.terminated}`, "interrupted by SIGINT / SIGTERM"]
]

const description = HelpDoc.blocks([
  HelpDoc.p("verify, export and inspect haechi's shared stores on Redis"),
  HelpDoc.h2("EXIT CODES"),
  HelpDoc.descriptionList(
    exitCodes.map(([code, meaning]) => [Span.text(code), HelpDoc.p(meaning)]) as [
      [Span.Span, HelpDoc.HelpDoc],
      ...Array<[Span.Span, HelpDoc.HelpDoc]>
    ]
  )
])

const root = Command.make("haechi-store", {}, () =>
  Effect.fail(usage("a command is required: verify, export, stats, demo, keygen or checkpoint (see --help)"))
).pipe(
  Command.withDescription(description),
  Command.withSubcommands([verifyCommand, exportCommand, statsCommand, demoCommand, keygenCommand, checkpointCommand])
)

const cli = Command.run(root, { name: NAME, version: VERSION })

const ansi = /\u001b\[[0-9;]*[A-Za-z]/g

/** Whether stdout may carry escape sequences (colours in help). */
const colours = (): boolean => process.stdout.isTTY === true && (process.env.NO_COLOR ?? "") === ""

/**
 * Runs the CLI on `argv` (`process.argv`: node, script, then arguments) and returns the
 * exit code. Never fails: every failure has been printed as one line on stderr.
 */
export const main = (argv: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    // @effect/cli prints a parse error as a help document on stderr; collect it instead
    // and print it as one line. Help goes to stdout, plain unless colours are wanted.
    const console = yield* Effect.console
    const parseErrors: Array<string> = []
    const plain = !colours()
    const quiet: Console.Console = {
      ...console,
      log: (...args: ReadonlyArray<unknown>) =>
        plain
          ? console.log(...args.map((a) => (typeof a === "string" ? a.replace(ansi, "") : a)))
          : console.log(...args),
      error: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void parseErrors.push(args.map(String).join(" ")))
    }
    const args = argv.slice(2)
    const run =
      args.includes("--wizard") && process.stdin.isTTY !== true
        ? Effect.fail(usage("--wizard needs an interactive terminal (stdin is not a TTY)"))
        : cli(argv)
    const exit = yield* Effect.exit(Effect.withConsole(run, quiet))
    if (exit._tag === "Success") return ExitCode.ok
    const error = Cause.failureOption(exit.cause)
    let failure: CliFailure
    if (Option.isSome(error) && ValidationError.isValidationError(error.value)) {
      const text = parseErrors.length > 0 ? parseErrors.join(" ") : HelpDoc.toAnsiText(error.value.error)
      failure = usage(oneLine(text) || "invalid arguments (see --help)")
    } else {
      failure = failureOf(exit.cause, identity, undefined)
    }
    if (failure.line !== undefined)
      yield* Effect.sync(() => process.stderr.write(`${NAME}: ${oneLine(failure.line!)}\n`))
    return failure.code
  })
