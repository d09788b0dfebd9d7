#!/usr/bin/env bash
# The benchmark suite: ours against haechi-store-redis, on a throwaway local redis-server.
#   npm run bench              # full run, about 5-6 minutes on 2 cores
#   npm run bench -- --quick   # about a minute
#   npm run bench -- --only=tokenize,reveal --cpu-prof   # a subset; profiles ours into bench/results/prof
#   npm run bench -- --no-build                          # benchmark dist/ as it is
#   npm run bench -- --ratelimit [--quick]               # the rate limiter against the satellite's INCR+PEXPIRE (bench/ratelimit.mjs)
# Installs bench/'s own dependencies when missing, builds dist/, starts redis-server on a
# free 127.0.0.1 port with no persistence, runs bench/run.mjs, and stops the server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

script="run.mjs"
for arg in "$@"; do [ "$arg" = "--ratelimit" ] && script="ratelimit.mjs"; done

# (The rate limiter bench needs only ioredis, not the reference store.)
if [ "$script" = "run.mjs" ] && { [ ! -d "$here/node_modules/haechi-store-redis" ] || [ ! -d "$here/node_modules/redis" ]; }; then
  echo "bench: installing bench/ dependencies" >&2
  # haechi-store-redis declares a peer on haechi, which is not on the registry.
  (cd "$here" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error)
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "bench: redis-server is not installed (apt-get install redis-server)" >&2
  exit 1
fi

build=1
for arg in "$@"; do [ "$arg" = "--no-build" ] && build=0; done
if [ "$build" = 1 ]; then
  echo "bench: building dist/" >&2
  if ! (cd "$root" && npm run build --silent); then
    echo "bench: npm run build failed; not benchmarking a broken dist/ (--no-build uses the dist/ as it is)" >&2
    exit 1
  fi
else
  echo "bench: --no-build, using dist/ as it is" >&2
fi
[ -f "$root/dist/haechi.js" ] || { echo "bench: dist/haechi.js is missing" >&2; exit 1; }

data="$(mktemp -d "${TMPDIR:-/tmp}/haechi-bench-redis.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for attempt in 1 2 3; do
  port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$data" \
    --protected-mode yes --logfile "$data/redis.log" --daemonize no &
  pid=$!
  for _ in $(seq 1 50); do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then break; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  echo "bench: redis-server did not start on port $port (attempt $attempt)" >&2
done
[ -n "$pid" ] || { cat "$data/redis.log" >&2 || true; exit 1; }

echo "bench: redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$port" >&2
node "$here/$script" --port="$port" "$@"
