/**
 * Readiness as haechi's gateway surfaces it: a boolean and a short enum reason,
 * never a key, URL or payload. A probe always answers within its bound, on real time
 * (never the Effect Clock), even when Redis is gone (a reconnecting client would
 * otherwise hold the call forever), frozen, or paused.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { timeoutAfter } from "./deadline.js"
import type { RedisClientShape } from "../RedisClient.js"
import { Scripts } from "./scripts.js"
import { spanned } from "./observe.js"

export type Readiness =
  { readonly ok: true } | { readonly ok: false; readonly reason: "redis_unreachable" | "redis_not_writable" }

export const READY: Readiness = { ok: true }
const unreachable: Readiness = { ok: false, reason: "redis_unreachable" }
const notWritable: Readiness = { ok: false, reason: "redis_not_writable" }

/**
 * PING within `timeout`, then a write probe (a self-expiring SET in a script) on the
 * store's own probe key: an ACL user without write rights, a read-only replica or an
 * OOM-full Redis answers the PING but fails the probe. A probe that gets no answer after
 * the PING did is not writable too: that is a Redis under `CLIENT PAUSE WRITE` (or a
 * failover's pause), which answers reads and holds writes.
 */
export const probe = (
  redis: RedisClientShape,
  probeKey: string,
  timeout: Duration.DurationInput = "900 millis"
): Effect.Effect<Readiness> => {
  const timeoutMs = Duration.toMillis(timeout)
  return redis
    .run("PING", (c) => c.ping())
    .pipe(
      timeoutAfter("ready PING", timeoutMs),
      Effect.matchEffect({
        onFailure: () => Effect.succeed(unreachable),
        onSuccess: () =>
          redis.script(Scripts.readyProbe, [probeKey], []).pipe(
            timeoutAfter("ready write probe", timeoutMs),
            Effect.match({
              onFailure: (error) => (error._tag === "RedisUnavailable" ? unreachable : notWritable),
              onSuccess: () => READY
            })
          )
      }),
      spanned("haechi.ready", { "haechi.key": probeKey })
    )
}
