/**
 * How the CLI fails: every failure is worded as ONE line for the operator with an exit
 * code (`CliFailure`), never a stack trace; a Redis password never reaches that line
 * (`scrub`, from ./target.ts, is applied to every message).
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Option from "effect/Option"

/** Exit codes (listed in `--help`). */
export const ExitCode = {
  ok: 0,
  /** The chain is not valid. */
  invalid: 1,
  usage: 2,
  failed: 3,
  /** No chain and no head under the prefix (a mistyped prefix or the wrong database). */
  empty: 4,
  interrupted: 130,
  terminated: 143
} as const

/** A failure already worded for the operator: one line and an exit code. */
export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly line: string | undefined
  readonly code: number
}> {}

export const usage = (line: string) => new CliFailure({ line, code: ExitCode.usage })

export const identity = (text: string) => text

/** One line: no escape sequences, no line breaks. */
export const oneLine = (text: string): string =>
  text
    .replace(/\u001b\[[0-9;]*[A-Za-z]/g, "")
    .replace(/\s*\n\s*/g, " ")
    .trim()

export const messageOf = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "object" && error !== null && "message" in error)
    return String((error as { message: unknown }).message)
  return String(error)
}

/** Redis refused the credentials (a wrong password or user, or none where one is needed). */
const isAuthFailure = (text: string): boolean =>
  /\b(WRONGPASS|NOAUTH)\b|invalid (username-password|password)/i.test(text)

/** Words any failure as one line with an exit code; `scrub` removes the password. */
export const toFailure = (error: unknown, scrub: (text: string) => string, shown: string | undefined): CliFailure => {
  if (error instanceof CliFailure) return error
  const tag = (error as { _tag?: string } | null)?._tag
  const where = shown === undefined ? "" : ` at ${shown}`
  switch (tag) {
    case "RedisUnavailable":
    case "RedisCommandFailed": {
      const cause = tag === "RedisUnavailable" ? messageOf((error as { cause: unknown }).cause) : messageOf(error)
      if (isAuthFailure(cause)) {
        return new CliFailure({ line: scrub(`Redis${where} refused the credentials: ${cause}`), code: ExitCode.failed })
      }
      return new CliFailure({
        line: scrub(
          tag === "RedisUnavailable" ? `cannot reach Redis${where}: ${cause}` : `Redis${where} refused: ${cause}`
        ),
        code: ExitCode.failed
      })
    }
    case "OperationTimeout":
      return new CliFailure({ line: scrub(`no answer from Redis${where}: ${messageOf(error)}`), code: ExitCode.failed })
    case "InvalidConfig":
      return new CliFailure({ line: scrub(messageOf(error)), code: ExitCode.usage })
    default:
      return new CliFailure({ line: scrub(messageOf(error)), code: ExitCode.failed })
  }
}

/** The failure of a cause: its typed error, else an interruption, else an internal error. */
export const failureOf = <E>(
  cause: Cause.Cause<E>,
  scrub: (text: string) => string,
  shown: string | undefined
): CliFailure =>
  Option.match(Cause.failureOption(cause), {
    onSome: (error) => toFailure(error, scrub, shown),
    onNone: () =>
      Cause.isInterruptedOnly(cause)
        ? new CliFailure({ line: "interrupted", code: ExitCode.interrupted })
        : new CliFailure({ line: scrub(`internal error: ${messageOf(Cause.squash(cause))}`), code: ExitCode.failed })
  })
