#!/usr/bin/env node
/**
 * The `haechi-store` executable: runs the CLI (see `Cli.ts`) with Node's platform
 * services and exits with its code. Failures were already printed as one line each,
 * so the runtime's own error reporting is off.
 *
 * Signals: SIGINT and SIGTERM interrupt the work (its finalizers run: the progress bar
 * is erased, a partial export removed), then the process prints one line on stderr and
 * exits 130 or 143, whichever signal came first; a repeated signal (a terminal's Ctrl-C
 * reaches this process and its relaunched child both) changes nothing. Should the
 * interruption not finish within a few seconds, the process exits all the same.
 *
 * Memory: verify and export stream the chain, so what they keep is small, but V8's
 * default heap sizing lets garbage pile up to ~200 MB RSS on a million records. Unless
 * the caller chose heap limits, the CLI re-runs itself once with a capped old space and
 * small semi-spaces (measured: ~110 MB peak RSS at the same speed). This launcher imports
 * nothing heavy before that decision, so the parent stays small.
 */
import { spawn } from "node:child_process"

const HEAP_FLAGS = ["--max-old-space-size=96", "--max-semi-space-size=8"]
const SIGNAL_CODES = { SIGINT: 130, SIGTERM: 143 } as const
type Signal = keyof typeof SIGNAL_CODES
const SIGNALS = Object.keys(SIGNAL_CODES) as Array<Signal>
const INTERRUPT_GRACE_MS = 3000

const chosen = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((flag) =>
  /--max-old-space-size|--max-semi-space-size/.test(flag)
)

if (!chosen && process.env.HAECHI_STORE_CHILD !== "1") {
  const child = spawn(process.execPath, [...HEAP_FLAGS, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, HAECHI_STORE_CHILD: "1" }
  })
  for (const signal of SIGNALS) process.on(signal, () => child.kill(signal))
  child.on("exit", (code, signal) => {
    // A child killed before it could handle the signal (still starting) said nothing.
    if (code === null && signal !== null && signal in SIGNAL_CODES)
      process.stderr.write(`haechi-store: interrupted by ${signal}\n`)
    process.exitCode = code ?? (signal !== null && signal in SIGNAL_CODES ? SIGNAL_CODES[signal as Signal] : 1)
  })
} else {
  // Registered first and kept: the first signal decides the exit code, later ones are ignored.
  let received: Signal | undefined
  let running = false
  const exitOnSignal = (signal: Signal) => {
    process.stderr.write(`haechi-store: interrupted by ${signal}\n`)
    process.exit(SIGNAL_CODES[signal])
  }
  for (const signal of SIGNALS) {
    process.on(signal, () => {
      if (received !== undefined) return
      received = signal
      // Before the work runs there is nothing to interrupt.
      if (!running) return exitOnSignal(signal)
      setTimeout(() => exitOnSignal(signal), INTERRUPT_GRACE_MS).unref()
    })
  }
  const [NodeContext, NodeRuntime, Effect, Exit, Cli] = await Promise.all([
    import("@effect/platform-node/NodeContext"),
    import("@effect/platform-node/NodeRuntime"),
    import("effect/Effect"),
    import("effect/Exit"),
    import("./Cli.js")
  ])
  running = true
  NodeRuntime.runMain(Cli.main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) => {
      if (received !== undefined) return exitOnSignal(received)
      const code = Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : Cli.ExitCode.failed
      process.exitCode = code
      onExit(code)
    }
  })
}
