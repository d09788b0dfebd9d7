#!/usr/bin/env node
/**
 * The `haechi-store` executable: runs the CLI (see `Cli.ts`) with Node's platform
 * services and exits with its code. Failures were already printed as one line each,
 * so the runtime's own error reporting is off.
 *
 * Memory: verify and export stream the chain, so what they keep is small, but V8's
 * default heap sizing lets garbage pile up to ~200 MB RSS on a million records. Unless
 * the caller chose heap limits, the CLI re-runs itself once with a capped old space and
 * small semi-spaces (measured: ~110 MB peak RSS at the same speed). This launcher imports
 * nothing heavy before that decision, so the parent stays small.
 */
import { spawn } from "node:child_process"

const HEAP_FLAGS = ["--max-old-space-size=96", "--max-semi-space-size=8"]
const chosen = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((flag) =>
  /--max-old-space-size|--max-semi-space-size/.test(flag)
)

if (!chosen && process.env.HAECHI_STORE_CHILD !== "1") {
  const child = spawn(process.execPath, [...HEAP_FLAGS, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, HAECHI_STORE_CHILD: "1" }
  })
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal))
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? (signal === "SIGINT" ? 130 : signal === "SIGTERM" ? 143 : 1)
  })
} else {
  const [NodeContext, NodeRuntime, Effect, Exit, Cli] = await Promise.all([
    import("@effect/platform-node/NodeContext"),
    import("@effect/platform-node/NodeRuntime"),
    import("effect/Effect"),
    import("effect/Exit"),
    import("./Cli.js")
  ])
  NodeRuntime.runMain(Cli.main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) => {
      const code = Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : Cli.ExitCode.failed
      process.exitCode = code
      onExit(code)
    }
  })
}
