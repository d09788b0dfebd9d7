/**
 * Progress of long work (verify, export, demo), on stderr so that stdout carries only
 * results (`--json` stays parseable). On a terminal: one bar redrawn in place, never
 * wider than the terminal (so it never wraps), with count, rate and ETA; when the work
 * ends the bar becomes one line with the count, the elapsed time and the rate, and when
 * it fails or is interrupted the bar is erased, leaving the terminal clean. Not on a
 * terminal: a plain line every few seconds, and the same final line if any was printed.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

export interface Progress {
  /** Reports `done` of `total` (total may still grow). */
  readonly update: (done: number, total: number) => Effect.Effect<void>
  /** Runs `work`, then ends the display: the final line on success, erased otherwise. */
  readonly around: <A, E, R>(work: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** `12.3 s`, `4 min 05 s`. */
export const formatDuration = (seconds: number): string => {
  if (!Number.isFinite(seconds) || seconds < 0) return "?"
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`
  const minutes = Math.floor(seconds / 60)
  return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`
}

const formatRate = (rate: number): string => (rate >= 100 ? String(Math.round(rate)) : rate.toFixed(1))

const TERMINAL_EVERY_MS = 100
const PIPED_EVERY_MS = 5000

/** The bar's line for a terminal `columns` wide: always shorter than `columns`. */
export const barLine = (
  label: string,
  unit: string,
  done: number,
  total: number,
  elapsedS: number,
  columns: number
) => {
  const of = Math.max(total, done)
  const fraction = of === 0 ? 1 : done / of
  const rate = done / Math.max(elapsedS, 0.001)
  const eta = rate > 0 ? (of - done) / rate : Number.NaN
  const tail = ` ${Math.floor(fraction * 100)}% ${done}/${of} ${unit} ${formatRate(rate)}/s ETA ${formatDuration(eta)}`
  const room = columns - 1 - label.length - tail.length - 3
  if (room < 10) return `${label}${tail}`.slice(0, Math.max(0, columns - 1))
  const width = Math.min(40, room)
  const filled = Math.round(fraction * width)
  return `${label} [${"#".repeat(filled)}${".".repeat(width - filled)}]${tail}`
}

/** The final line: count, elapsed time and rate. */
export const doneLine = (label: string, unit: string, done: number, elapsedS: number) =>
  `${label}: ${done} ${unit} in ${formatDuration(elapsedS)}, ${formatRate(done / Math.max(elapsedS, 0.001))}/s`

export const progress = (label: string, unit: string, stream: NodeJS.WriteStream = process.stderr): Progress => {
  const tty = stream.isTTY === true
  const started = performance.now()
  // On a terminal the bar shows at once; piped, the first line comes after the first period.
  let shownAt = tty ? 0 : started
  let drawn = false
  let printed = false
  let last = 0
  const elapsed = () => (performance.now() - started) / 1000
  const erase = () => {
    if (drawn) stream.write("\r\u001b[K")
    drawn = false
  }
  return {
    update: (done, total) =>
      Effect.sync(() => {
        last = done
        const now = performance.now()
        if (now - shownAt < (tty ? TERMINAL_EVERY_MS : PIPED_EVERY_MS)) return
        shownAt = now
        if (tty) {
          stream.write(`\r${barLine(label, unit, done, total, elapsed(), stream.columns || 80)}\u001b[K`)
          drawn = true
        } else {
          const of = Math.max(total, done)
          const pct = of === 0 ? 100 : Math.floor((done / of) * 100)
          stream.write(
            `${label}: ${done}/${of} ${unit} (${pct}%), ${formatRate(done / Math.max(elapsed(), 0.001))}/s\n`
          )
          printed = true
        }
      }),
    around: (work) =>
      Effect.onExit(work, (exit) =>
        Effect.sync(() => {
          const wasShown = drawn || printed
          erase()
          if (Exit.isSuccess(exit) && wasShown) stream.write(`${doneLine(label, unit, last, elapsed())}\n`)
        })
      )
  }
}
