#!/usr/bin/env bash
# The full test gate: ensures redis-server/redis-cli exist, embeds lua/ (scripts/gen-lua.mjs), typechecks (when
# tsconfig.json exists), lints and checks the formatting, refuses skipped tests, then runs vitest against real Redis.
# Extra arguments are passed to `vitest run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# (The Sentinel tests run redis-server in --sentinel mode; redis-sentinel is installed too,
# as the README promises, for operators who start sentinels by that name.)
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
  || ! command -v redis-sentinel >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server redis-sentinel
fi

# The Lua scripts embedded in the build (src/internal/luaSources.ts, generated from lua/).
node scripts/gen-lua.mjs

if [ -f tsconfig.json ]; then
  npx tsc -p tsconfig.json --noEmit
fi

# Lint (eslint.config.js) and formatting (.prettierrc.json): fix with `npm run lint:fix` and
# `npm run format`. Both cache what they checked, so a re-run looks only at changed files.
npm run --silent lint
npm run --silent format:check

# No test may be skipped: fail on statically skipped / conditional / todo tests.
skip_re='\b(it|test|describe|suite)(\.[A-Za-z]+)*\.(skip|todo|skipIf|runIf)\b'
if grep -rnE --include='*.ts' "$skip_re" test; then
  echo "error: skipped/todo/conditional tests found (see above); no test may be skipped" >&2
  exit 1
fi

# The verbose reporter for people, a JSON one for the plain closing line CI reads.
report="$(mktemp -t vitest-report.XXXXXX.json)"
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=verbose --reporter=json --outputFile.json="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
  const skipped = r.numPendingTests + r.numTodoTests
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""))
  if (skipped > 0) { console.error("error: tests were skipped at run time; no test may be skipped"); process.exit(1) }
' "$report" || status=1
exit "$status"
