#!/usr/bin/env node
/**
 * The `haechi-store` executable: runs the CLI (see `Cli.ts`) with Node's platform
 * services and exits with its code. Failures were already printed as one line each,
 * so the runtime's own error reporting is off.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { ExitCode, main } from "./Cli.js"

NodeRuntime.runMain(main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  teardown: (exit, onExit) => {
    const code = Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : ExitCode.failed
    process.exitCode = code
    onExit(code)
  }
})
