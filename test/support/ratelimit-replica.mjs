// A rate limiter replica in its own process (spawned by ./rateLimitFleet.ts).
//
// It drives the built package (dist/, built by the global setup) the way a gateway does:
// `RateLimiter.consume` through the Effect API, a few calls in flight, paced, on one key,
// from the start time the parent sends on stdin (after this replica has printed READY) for
// `durationMs` (both on the real clock). With `skewMs` its Date.now is
// shifted first, as on a host whose clock is off. Each call is recorded with when it was
// sent and when its answer came, on the real clock, and the lot is printed as one JSON line.
//
// argv[2]: JSON { url, prefix, key, limit, windowMs, durationMs, perSecond, inFlight, skewMs }
// stdin:   one line, the start time (ms since epoch, real clock)
import { once } from "node:events"
import { createInterface } from "node:readline"
import { Effect, Layer } from "effect"
import { RateLimiter, RedisClient } from "../../dist/index.js"

const o = JSON.parse(process.argv[2])
const realNow = () => performance.timeOrigin + performance.now()
if (o.skewMs) {
  const skewed = Date.now
  Date.now = () => skewed.call(Date) + o.skewMs
}

const Live = RateLimiter.layer({ keyPrefix: o.prefix, timeout: 5_000 }).pipe(Layer.provide(RedisClient.layer(o.url)))
const calls = []
const gapMs = (1000 / o.perSecond) * o.inFlight

const worker = (limiter) =>
  Effect.gen(function* () {
    while (realNow() < o.startAt + o.durationMs) {
      const sent = realNow()
      const r = yield* limiter.consume(o.key, { limit: o.limit, window: o.windowMs })
      calls.push([sent, realNow(), r.allowed ? 1 : 0, r.remaining, r.retryAfterMs, r.resetAfterMs])
      const wait = sent + gapMs - realNow()
      if (wait > 0) yield* Effect.sleep(wait)
    }
  })

const program = Effect.gen(function* () {
  const limiter = yield* RateLimiter.RateLimiter
  yield* limiter.peek(o.key, { window: o.windowMs }) // connected and scripts loaded before the start
  process.stdout.write("READY\n")
  const [line] = yield* Effect.promise(() => once(createInterface({ input: process.stdin }), "line"))
  o.startAt = Number(line)
  const wait = o.startAt - realNow()
  if (wait > 0) yield* Effect.sleep(wait)
  yield* Effect.all(
    Array.from({ length: o.inFlight }, () => worker(limiter)),
    { concurrency: "unbounded" }
  )
})

await Effect.runPromise(Effect.provide(program, Live))
// (Exit once written: nothing else should keep this process, but nothing may either.)
process.stdout.write(JSON.stringify({ calls }) + "\n", () => process.exit(0))
