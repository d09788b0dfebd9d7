/**
 * vitest configuration: every test runs against real Redis started by
 * test/support/globalSetup.ts (one shared standalone server + one 3x1 cluster).
 *
 * Skipped tests are not allowed:
 * - scripts/test.sh fails the run if a test file uses .skip / .todo / .skipIf / .runIf;
 * - the "verbose" reporter lists every test, so a runtime skip (ctx.skip()) is visible
 *   as "↓" and in the "skipped" count of the summary;
 * - allowOnly: false makes a forgotten .only fail the run.
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

// Tests import src/, which imports the Lua scripts embedded from lua/: embed them first.
execFileSync(process.execPath, ["scripts/gen-lua.mjs"], {
  cwd: fileURLToPath(new URL(".", import.meta.url)),
  stdio: "inherit"
})

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    // Child processes (so redis-server children are reaped via our signal/exit hooks).
    pool: "forks",
    // 2-core machine: two test files at a time; Redis servers need CPU too.
    fileParallelism: true,
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    allowOnly: false,
    passWithNoTests: false,
    reporters: ["verbose"]
  }
})
