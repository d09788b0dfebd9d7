/**
 * A lock held: taken (at once or after waiting), its lease renewed, its loss signalled,
 * and the effect that gives it back. No Scope of its own: a Scope per lock cycle cost
 * more than the rest of `withLock`.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Runtime from "effect/Runtime"
import type { LockTimeout, RedisError } from "../../Errors.js"
import type { RedisClientShape } from "../../RedisClient.js"
import { randomToken } from "../commitId.js"
import { outcomeOf } from "../observe.js"
import { Acquisition } from "./acquire.js"
import { release } from "./commands.js"
import type { Lease } from "./contract.js"
import { LeaseOf, lossSignal, type LossSignal } from "./loss.js"
import { lockWaitOf } from "./metrics.js"
import type { ResolvedLockOptions } from "./options.js"
import type { ReleaseSubscriber } from "./releases.js"
import { Renewal } from "./renewal.js"

/** A lease, the effect that gives it back, and its check when the work ends. */
export interface Held {
  readonly lease: Lease
  /** Gives the lock back: true when the answer proves the lease was lost meanwhile (`commands.release`). */
  readonly release: Effect.Effect<boolean>
  /** The lease's loss signal: `check` (and `sound`) when the work ends. */
  readonly lost: LossSignal
}

/**
 * Waits for the lock and returns it held, with the effect that gives it back (stops the
 * renewal, then releases). If this fails or is interrupted after an attempt was sent,
 * it releases on its way out: a lost reply may hide a SET that landed, every attempt
 * may have queued us for a hand-off, and the release only ever deletes our own token.
 *
 * Run it uninterruptible, with the `restore` of that region: the wait runs restored
 * (interruptible), and its exit is handled where interruption cannot reach, which is
 * what an `onExit` would do at about 2.5 KB more per lock cycle.
 */
export const acquireHeld = (
  redis: RedisClientShape,
  wakeups: ReleaseSubscriber,
  key: string,
  o: ResolvedLockOptions,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<Held, LockTimeout | RedisError> =>
  Effect.withFiberRuntime<Held, LockTimeout | RedisError>((fiber) => {
    const acquisition = new Acquisition(redis, wakeups, key, randomToken(), o)
    const renewal = new Renewal()
    const releasing = release(redis, key, acquisition.token, o.ttlMs, true, () => acquisition.vouchedUntil())
    // Most holds end before the renewal started: then the release is all there is.
    const giveBack = Effect.suspend(() => {
      const fiber = renewal.halt()
      return fiber === undefined ? releasing : Effect.zipRight(Fiber.interrupt(fiber), releasing)
    })
    const held = (span: SpanAttributes) =>
      Effect.flatMap(Effect.exit(restore(hold(acquisition, renewal, giveBack, span))), (exit) => {
        acquisition.close()
        span.attribute("haechi.outcome", outcomeOf(exit))
        return Exit.isFailure(exit) && acquisition.sent ? Effect.zipRight(giveBack, exit) : exit
      })
    // A span that is not made the current one: nothing under it makes spans, and
    // providing it as the parent cost more than the rest of the span. Under Effect's
    // default tracer no one can see it, so none is made (about 5 KB of a lock cycle).
    return fiber.currentTracer === defaultTracer
      ? held(noSpan)
      : Effect.useSpan(
          "haechi.lock.acquire",
          { attributes: { "haechi.lock.key": key }, captureStackTrace: false },
          held
        )
  })

/** What `hold` records on the acquire's span. */
interface SpanAttributes {
  readonly attribute: (key: string, value: unknown) => void
}

/** The tracer Effect runs with when none is installed: it hands its spans to no one. */
const defaultTracer = Effect.runSync(Effect.tracer)
const noSpan: SpanAttributes = { attribute: () => {} }

/** Takes the lock, records the wait, and starts the lease's renewal. */
const hold = (
  acquisition: Acquisition,
  renewal: Renewal,
  giveBack: Effect.Effect<boolean>,
  span: SpanAttributes
): Effect.Effect<Held, LockTimeout | RedisError> =>
  Effect.flatMap(acquisition.take(), ({ fence, sentAt }) =>
    Effect.withFiberRuntime<Held>((fiber, status) => {
      const { key, options, redis, token } = acquisition
      // The renewal runs with this fiber's services and refs (logger, deadline budget).
      const runtime = Runtime.make({
        context: fiber.currentContext,
        runtimeFlags: status.runtimeFlags,
        fiberRefs: fiber.getFiberRefs()
      })
      const waitedMs = acquisition.waited()
      // What Metric.update does, without its two frames.
      lockWaitOf(key).unsafeUpdate(waitedMs, fiber.getFiberRef(FiberRef.currentMetricLabels))
      span.attribute("haechi.lock.fence", fence)
      span.attribute("haechi.lock.waited_ms", waitedMs)
      const lost = (acquisition.lost = lossSignal(key, sentAt + options.ttlMs))
      renewal.start(runtime, { redis, key, token, options, sentAt, lost })
      const lease: Lease = new LeaseOf(key, token, fence, lost)
      return Effect.succeed<Held>({ lease, release: giveBack, lost })
    })
  )
