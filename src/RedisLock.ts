/**
 * A Redis lock as a scoped resource, with renewal, fencing numbers and push wake-ups.
 *
 * Guarantees:
 * - Fail closed: `acquire` either returns a lease or fails (`LockTimeout`, a Redis
 *   error, `InvalidConfig`); work guarded by `withLock` never runs without the lock.
 * - A lease is released with a compare-and-delete when its scope closes (success,
 *   failure or interruption), so a holder never frees another holder's lock.
 * - While the scope is open a fiber extends the TTL with a compare-and-extend. A lease
 *   the holder can no longer vouch for (the key is gone or someone else's, or its TTL
 *   ran out without a confirmed extension) is reported on `lease.lost` at once, and
 *   `withLock` interrupts the work and fails with `LockLost`.
 * - A loss is never silent: `lease.signal` aborts with the `LockLost`, and `withLock`
 *   (unless `onLost: "ignore"`) also checks the lease when the work ends, so a loss no
 *   renewal could see (an event loop blocked past the TTL runs no timer) is reported.
 * - Timing (waits, deadlines, renewals) runs on real time, never the caller's Effect
 *   Clock: Redis's TTL runs on real time, so a TestClock must not stretch ours.
 * - Every acquisition of a key gets a fencing number that is strictly greater than any
 *   earlier holder's (an INCR in the acquire script), for writers that fence on it.
 * - Wire compatible with haechi-store-redis: the lock key's value is a random token set
 *   with `SET key token NX PX ttl`, so holders of either library exclude each other and
 *   each one's compare-and-delete release works on the other's lock.
 *
 * Like the reference, a TTL lock cannot give perfect mutual exclusion (a paused holder
 * can outlive its TTL before it notices); the stores' server-side fences are what keep
 * data correct. The lock reduces contention and, through `lost`, stops stale work early.
 *
 * Waiting does not spin: the release script PUBLISHes on `<lock key>:released`, and
 * waiters listen on one subscriber connection per RedisLock (`client.duplicate()`,
 * opened on the first wait). A bounded poll (`retrySchedule`) covers a missed message,
 * a holder whose TTL lapsed, and haechi-store-redis holders, which never publish.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import { randomToken } from "./internal/commitId.js"
import { InvalidConfig, LockLost, LockTimeout, RedisCommandFailed, type RedisError } from "./Errors.js"
import { now, sleep } from "./internal/deadline.js"
import { fenceKeyOf, hashedPart, lockKeysOf, releaseChannelOf, waitersKeyOf } from "./internal/keys.js"
import { stepper } from "./internal/schedules.js"
import * as Metrics from "./Metrics.js"
import { outcomeOf } from "./internal/observe.js"
import { RedisClient, timerDelay, type RedisClientShape, type RedisConnection } from "./RedisClient.js"
import { Scripts } from "./internal/scripts.js"

// ---------------------------------------------------------------------------
// options

/** Options of one acquisition. Every field is optional; the defaults are below. */
export interface LockOptions {
  /**
   * How long the lock outlives a holder that stops renewing it (a crash, a partition).
   * Default 10 seconds, like haechi-store-redis. At least 1 ms.
   */
  readonly ttl?: Duration.DurationInput
  /**
   * How often the holder extends the TTL. Default a third of `ttl`. A value at or above
   * `ttl` (or `Duration.infinity`) effectively disables renewal: the lease is then
   * reported lost once `ttl` has run out.
   */
  readonly renewEvery?: Duration.DurationInput
  /**
   * How long `acquire` may wait for a held lock before failing with `LockTimeout`.
   * Default 5 seconds, like haechi-store-redis. `0` tries exactly once.
   */
  readonly waitTimeout?: Duration.DurationInput
  /**
   * The fallback poll while waiting: the delay before re-trying when no release message
   * woke the waiter. Each re-try (woken or polled) takes one step; a schedule that ends
   * fails the wait with `LockTimeout`. Default: every 50 ms, jittered (40-60 ms).
   */
  readonly retrySchedule?: Schedule.Schedule<unknown>
  /**
   * What `withLock` does when the lease is lost: `"fail"` (default) interrupts the work
   * and fails with `LockLost`; `"after"` lets the work finish (`lease.signal` tells it),
   * then fails with `LockLost`; `"ignore"` lets the work finish and succeed, for pure
   * contention-reduction use over writes that are fenced anyway. "fail" and "after" also
   * check the lease when the work ends, so a loss no renewal saw (an event loop blocked
   * past the TTL) is reported too.
   */
  readonly onLost?: "fail" | "after" | "ignore"
}

export const DEFAULT_TTL: Duration.Duration = Duration.seconds(10)
export const DEFAULT_WAIT_TIMEOUT: Duration.Duration = Duration.seconds(5)
export const DEFAULT_RETRY_SCHEDULE: Schedule.Schedule<unknown> = Schedule.spaced(Duration.millis(50)).pipe(
  Schedule.jittered
)

/** Options after validation, in milliseconds. */
export interface ResolvedLockOptions {
  readonly ttlMs: number
  readonly renewMs: number
  readonly waitMs: number
  readonly retrySchedule: Schedule.Schedule<unknown>
  readonly onLost: "fail" | "after" | "ignore"
}

const invalid = (option: string, reason: string) => Effect.fail(new InvalidConfig({ option, reason }))

const duration = (option: string, input: unknown): Effect.Effect<number, InvalidConfig> =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => invalid(option, `must be a Duration (e.g. "5 seconds" or a number of ms), got ${String(input)}`),
    onSome: (d) => Effect.succeed(Duration.toMillis(d))
  })

/** Resolved frozen options objects (the facade's and the stores'), so a lock cycle does not re-parse them. */
const resolvedFrozen = new WeakMap<LockOptions, ResolvedLockOptions>()

/**
 * Validates options and fills in the defaults; a bad option fails with `InvalidConfig`
 * naming it. A frozen options object is resolved once.
 */
export const resolveOptions = (options: LockOptions = {}): Effect.Effect<ResolvedLockOptions, InvalidConfig> => {
  if (typeof options !== "object" || options === null || !Object.isFrozen(options)) return resolveFresh(options)
  const hit = resolvedFrozen.get(options)
  return hit !== undefined
    ? Effect.succeed(hit)
    : Effect.tap(resolveFresh(options), (resolved) => {
      resolvedFrozen.set(options, resolved)
    })
}

const resolveFresh = (options: LockOptions): Effect.Effect<ResolvedLockOptions, InvalidConfig> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null) {
      return yield* invalid("options", "must be an object")
    }
    const ttlMs = options.ttl === undefined ? Duration.toMillis(DEFAULT_TTL) : yield* duration("ttl", options.ttl)
    if (!Number.isFinite(ttlMs) || ttlMs < 1) {
      return yield* invalid("ttl", `must be a finite duration of at least 1 ms, got ${ttlMs} ms`)
    }
    const renewMs = options.renewEvery === undefined ? ttlMs / 3 : yield* duration("renewEvery", options.renewEvery)
    if (!(renewMs > 0)) {
      return yield* invalid("renewEvery", `must be a positive duration, got ${renewMs} ms`)
    }
    const waitMs = options.waitTimeout === undefined
      ? Duration.toMillis(DEFAULT_WAIT_TIMEOUT)
      : yield* duration("waitTimeout", options.waitTimeout)
    const retrySchedule = options.retrySchedule ?? DEFAULT_RETRY_SCHEDULE
    if (!Schedule.isSchedule(retrySchedule)) {
      return yield* invalid("retrySchedule", "must be a Schedule")
    }
    const onLost = options.onLost ?? "fail"
    if (onLost !== "fail" && onLost !== "after" && onLost !== "ignore") {
      return yield* invalid("onLost", `must be "fail", "after" or "ignore", got ${JSON.stringify(onLost)}`)
    }
    return { ttlMs: Math.ceil(ttlMs), renewMs, waitMs, retrySchedule, onLost }
  })

// ---------------------------------------------------------------------------
// keys

// (The lock's key names have their home in internal/keys.ts, beside the stores' keys.)
export { fenceKeyOf, releaseChannelOf, waitersKeyOf } from "./internal/keys.js"

/** The fence of a hand-off message ("<token> <fence>") addressed to `token`, else 0. */
const handedFence = (message: string, token: string): number =>
  message.length > token.length && message.startsWith(token) && message[token.length] === " "
    ? Number(message.slice(token.length + 1)) || 0
    : 0

const checkKey = (key: unknown, isCluster: boolean): Effect.Effect<string, InvalidConfig> => {
  if (typeof key !== "string" || key.length === 0) {
    return invalid("key", "must be a non-empty string")
  }
  // A key without a hash tag but with a '}' cannot get a same-slot fence key this way.
  if (isCluster && (hashedPart(fenceKeyOf(key)) !== hashedPart(key) || hashedPart(waitersKeyOf(key)) !== hashedPart(key))) {
    return invalid(
      "key",
      `"${key}" contains "}" without a valid hash tag, so its fence counter and waiter queue cannot share its cluster slot; ` +
        `put a hash tag in it, e.g. "{${key.replace(/[{}]/g, "")}}"`
    )
  }
  return Effect.succeed(key)
}

// ---------------------------------------------------------------------------
// loss

/**
 * A lease's state: until when it is vouched for, and its loss, set once (by its renewal,
 * or by `check` when the work ends), awaited by the work it guards.
 */
interface LossSignal {
  /** Real time until which the last confirmed acquire or extension keeps the lock ours. */
  validUntil: number
  /** Sets the loss (once: it is logged, counted and announced). */
  readonly fail: (reason: LockLost["reason"]) => Effect.Effect<void>
  /** Fails with the loss once it is set; never succeeds. */
  readonly await: Effect.Effect<never, LockLost>
  /** Aborted with the `LockLost` when the loss is set (made on first use). */
  readonly signal: AbortSignal
  /**
   * Fails with the loss if it is set or the lease is past `validUntil` now: the renewal
   * cannot have vouched for it (an event loop blocked past the TTL runs no timer).
   */
  readonly check: Effect.Effect<void, LockLost>
}

/** A plain callback list: a Deferred per lease cost about 14 µs of a 300 µs lock cycle. */
const lossSignal = (key: string, validUntil: number): LossSignal => {
  let loss: LockLost | undefined
  let controller: AbortController | undefined
  const waiters = new Set<(loss: Effect.Effect<never, LockLost>) => void>()
  const set = (reason: LockLost["reason"]) => {
    if (loss !== undefined) return false
    loss = new LockLost({ key, reason })
    const failed = Effect.fail(loss)
    waiters.forEach((resume) => resume(failed))
    waiters.clear()
    controller?.abort(loss)
    return true
  }
  const announce = (reason: LockLost["reason"]) =>
    Effect.zipRight(Effect.logWarning(`lock ${key} lost (${reason})`), Metric.increment(Metric.tagged(Metrics.locksLost, "key", key)))
  const state: LossSignal = {
    validUntil,
    fail: (reason) => Effect.suspend(() => (set(reason) ? announce(reason) : Effect.void)),
    await: Effect.async<never, LockLost>((resume) => {
      if (loss !== undefined) return resume(Effect.fail(loss))
      waiters.add(resume)
      return Effect.sync(() => {
        waiters.delete(resume)
      })
    }),
    get signal() {
      if (controller === undefined) {
        controller = new AbortController()
        if (loss !== undefined) controller.abort(loss)
      }
      return controller.signal
    },
    check: Effect.suspend(() => {
      if (loss === undefined && now() >= state.validUntil) return Effect.zipRight(state.fail("expired"), Effect.fail(loss!))
      return loss === undefined ? Effect.void : Effect.fail(loss)
    })
  }
  return state
}

// ---------------------------------------------------------------------------
// the service

const realClock = { unsafeCurrentTimeMillis: now }

/** An acquire attempt's fence (0: held by someone else) and when it was sent. */
interface Attempt {
  readonly fence: number
  readonly sentAt: number
}

/** A lease, the effect that gives it back, and its check when the work ends. */
interface Held {
  readonly lease: Lease
  readonly release: Effect.Effect<void>
  readonly check: Effect.Effect<void, LockLost>
}

/** A held lock. It lasts as long as the scope `acquire` ran in. */
export interface Lease {
  readonly key: string
  /** Our random token, the lock key's value while we hold it. */
  readonly token: string
  /** Strictly greater than the fence of every earlier holder of `key`. */
  readonly fence: number
  /** Never succeeds; fails with `LockLost` as soon as the lease is known to be lost. */
  readonly lost: Effect.Effect<never, LockLost>
  /** Aborted (its `reason` the `LockLost`) as soon as the lease is known to be lost, for work that can stop early. */
  readonly signal: AbortSignal
}

export interface RedisLockShape {
  /**
   * Waits for the lock on `key` (at most `waitTimeout`) and holds it until the scope
   * closes, renewing it meanwhile. Fails with `LockTimeout` when the wait runs out (fail
   * closed), with a Redis error if Redis fails, with `InvalidConfig` for bad options.
   */
  readonly acquire: (
    key: string,
    options?: LockOptions
  ) => Effect.Effect<Lease, LockTimeout | RedisError | InvalidConfig, Scope.Scope>
  /**
   * Runs `effect` holding the lock on `key` and releases it afterwards. If the lease is
   * lost, `effect` is interrupted and the whole fails with `LockLost` (unless
   * `onLost: "ignore"`). The work never runs if the lock was not acquired.
   */
  readonly withLock: {
    <A, E, R>(
      key: string,
      effect: Effect.Effect<A, E, R>,
      options?: LockOptions
    ): Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
    /** Pipeable: `work.pipe(lock.withLock(key, options))`. */
    (key: string, options?: LockOptions): <A, E, R>(
      effect: Effect.Effect<A, E, R>
    ) => Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
  }
  /**
   * Runs `effect` holding the lock on `key` if it is free now: `Some` of its result, or
   * `None` without running it when another holder has the lock (no waiting, no
   * `LockTimeout`). Held, it behaves as `withLock`.
   */
  readonly withLockIfAvailable: <A, E, R>(
    key: string,
    effect: Effect.Effect<A, E, R>,
    options?: Omit<LockOptions, "waitTimeout">
  ) => Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R>
  /**
   * Like `withLock`, handing the lease to `use` (its `fence` for writes fenced on it, its
   * `signal` for work that can stop early).
   */
  readonly withLease: <A, E, R>(
    key: string,
    use: (lease: Lease) => Effect.Effect<A, E, R>,
    options?: LockOptions
  ) => Effect.Effect<A, E | LockLost | LockTimeout | RedisError | InvalidConfig, R>
}

export class RedisLock extends Context.Tag("haechi-store-effect/RedisLock")<RedisLock, RedisLockShape>() {}

/** Longest time one acquire attempt may take when the wait bound is shorter. */
const ATTEMPT_FLOOR_MS = 1000
/** Longest time a release may take (or the TTL if shorter) before it is abandoned. */
const RELEASE_BOUND_MS = 1000

/** A RedisLock over a client, plus `close` for its subscriber connection. */
export interface RedisLockHandle {
  readonly lock: RedisLockShape
  /** Closes the subscriber connection; later waits only poll. */
  readonly close: Effect.Effect<void>
  /** Wake-ups at each release of the lock `key` (by this library's release, commit or script). */
  readonly releases: (key: string) => Wakeup
  /**
   * Releases `key` if it still holds `token` (compare-and-delete, or hand-off to the next
   * waiter), for a lock taken outside `acquire` (a store's fenced script). Never fails.
   */
  readonly releaseToken: (key: string, token: string) => Effect.Effect<void>
}

export interface MakeWithOptions {
  /**
   * Close the subscriber connection once no one has waited for this long (it reopens on
   * the next wait). Default: keep it until `close` (what `make`/`layer` do).
   */
  readonly subscriberIdleMs?: number
}

/**
 * Builds a RedisLock directly over a `RedisClientShape`, without a layer (the Promise
 * facade caches one per client). Never fails; the subscriber opens on the first wait.
 */
export const makeWith = (redis: RedisClientShape, config: MakeWithOptions = {}): RedisLockHandle => {
  const lockKeys = lockKeysOf
  const wakeups = subscriber(redis.client, config.subscriberIdleMs)

  /** `queued`: our waiter entry's TTL, when we may have queued (the release also leaves the queue). */
  const release = (key: string, token: string, ttlMs: number, queued = true) =>
    // The release only frees the lock early; the TTL frees it regardless. So a release
    // that gets no answer in time is abandoned rather than holding up the scope.
    redis.scriptWithin(
      Scripts.lockRelease,
      lockKeys(key),
      [token, releaseChannelOf(key), queued ? `${token} ${ttlMs}` : ""],
      Math.min(ttlMs, RELEASE_BOUND_MS)
    ).pipe(
      Effect.tapBoth({
        onFailure: (error) => Effect.logDebug(`lock ${key}: release failed; the TTL frees it`, error),
        onSuccess: (answered) => Option.isNone(answered) ? Effect.logDebug(`lock ${key}: release unanswered; the TTL frees it`) : Effect.void
      }),
      Effect.ignore
    )

  const reply = (operation: string, value: unknown): Effect.Effect<number, RedisCommandFailed> =>
    typeof value === "number" && Number.isSafeInteger(value)
      ? Effect.succeed(value)
      : Effect.fail(new RedisCommandFailed({ operation, reply: `unexpected reply ${String(value)}`, cause: value }))

  /** Extends the TTL for as long as the scope is open; reports a loss on `lost`. */
  const keepAlive = (
    key: string,
    token: string,
    o: ResolvedLockOptions,
    sentAt: number,
    lost: LossSignal
  ) =>
    Effect.gen(function*() {
      const errorRetryMs = Math.min(o.renewMs, Math.max(o.ttlMs / 10, 10))
      let nextRenewAt = sentAt + o.renewMs
      let unreachable = false
      const lose = lost.fail
      for (;;) {
        const at = now()
        const validUntil = lost.validUntil
        if (at >= validUntil) return yield* lose(unreachable ? "unreachable" : "expired")
        if (at < nextRenewAt) {
          yield* sleep(Math.min(nextRenewAt, validUntil) - at)
          continue
        }
        const result = yield* redis.scriptWithin(Scripts.lockExtend, [key], [token, o.ttlMs], validUntil - at).pipe(
          Effect.flatMap((value): Effect.Effect<number, RedisCommandFailed | "timeout"> =>
            Option.isNone(value) ? Effect.fail("timeout" as const) : reply("lock extend", value.value)
          ),
          Effect.either
        )
        if (result._tag === "Right") {
          if (result.right === 0) return yield* lose("expired")
          if (result.right !== 1) return yield* lose("taken")
          lost.validUntil = at + o.ttlMs
          nextRenewAt = at + o.renewMs
          unreachable = false
        } else {
          unreachable = true
          nextRenewAt = now() + errorRetryMs
        }
      }
    })

  /**
   * Waits for the lock and returns it held, with the effect that gives it back (stops the
   * renewal, then releases). If this fails or is interrupted after an attempt was sent,
   * it releases on its way out: a lost reply may hide a SET that landed, every attempt
   * may have queued us for a hand-off, and the release only ever deletes our own token.
   * No Scope of its own: a Scope per lock cycle cost more than the rest of `withLock`.
   */
  const acquireHeld = (key: string, o: ResolvedLockOptions): Effect.Effect<Held, LockTimeout | RedisError> =>
    Effect.suspend(() => {
      const token = randomToken()
      let sent = false
      let renewalStart: ReturnType<typeof setTimeout> | undefined
      let renewal: Fiber.RuntimeFiber<void> | undefined
      const stopRenewal = Effect.suspend(() => {
        clearTimeout(renewalStart)
        return renewal === undefined ? Effect.void : Fiber.interrupt(renewal)
      })
      const giveBack = Effect.zipRight(stopRenewal, release(key, token, o.ttlMs))

      const held = (span: Tracer.Span) => Effect.gen(function*() {
        // Real time, never the caller's Clock: Redis's TTL runs on real time, so waits,
        // deadlines and renewals measured on a TestClock would let two holders overlap.
        const clock = realClock
        const start = clock.unsafeCurrentTimeMillis()
        const deadline = start + o.waitMs
        const timedOut = Effect.suspend(() => {
          const waitedMs = clock.unsafeCurrentTimeMillis() - start
          return Effect.zipRight(Metric.update(Metric.tagged(Metrics.lockWait, "key", key), waitedMs), new LockTimeout({ key, waitedMs }))
        })

        // One acquire attempt: 0 when someone else holds the lock (then we are queued).
        const attempt = Effect.suspend((): Effect.Effect<Attempt, LockTimeout | RedisError> => {
          const sentAt = clock.unsafeCurrentTimeMillis()
          const bound = Math.max(deadline - sentAt, ATTEMPT_FLOOR_MS)
          // Queue up for a hand-off for as long as we may wait (capped at a day).
          const queueMs = Math.ceil(Math.min(deadline - sentAt, 86_400_000))
          sent = true
          return redis.scriptWithin(
            Scripts.lockAcquire,
            lockKeys(key),
            [token, o.ttlMs, queueMs > 0 ? queueMs : ""],
            bound
          ).pipe(
            Effect.flatMap((value): Effect.Effect<Attempt, LockTimeout | RedisCommandFailed> =>
              Option.isNone(value)
                ? timedOut
                : Effect.map(reply("lock acquire", value.value), (fence) => ({ fence, sentAt }))
            )
          )
        })

        // Waits for a release message, or the poll schedule's next step, or the deadline,
        // whichever comes first: one timer and one callback per wait, no fibers.
        const wait = (early: Wakeup | undefined) => Effect.gen(function*() {
          if (clock.unsafeCurrentTimeMillis() >= deadline) return yield* timedOut // e.g. waitTimeout 0
          const wakeup = early ?? wakeups.open(releaseChannelOf(key), token)
          return yield* Effect.gen(function*() {
            const polls = stepper(o.retrySchedule)
            for (;;) {
              const now = clock.unsafeCurrentTimeMillis()
              if (now >= deadline) return yield* timedOut
              const pollAt = yield* polls.next(now, undefined)
              if (pollAt === undefined) return yield* timedOut
              const woken = yield* wakeup.next(Math.min(pollAt, deadline) - now)
              // Handed to us by the release: ours already, no round trip.
              const handed = woken === undefined ? 0 : handedFence(woken, token)
              if (handed > 0) return { fence: handed, sentAt: clock.unsafeCurrentTimeMillis() }
              const got = yield* attempt
              if (got.fence > 0) return got
            }
          }).pipe(Effect.ensuring(Effect.sync(wakeup.close)))
        })

        // On a channel already subscribed, listen before the first attempt, so a hand-off
        // that comes right after it is not missed. (On a new one, the subscription becoming
        // active wakes the waiter, which then tries again: nothing is missed either.)
        const early = wakeups.isLive(releaseChannelOf(key)) ? wakeups.open(releaseChannelOf(key), token) : undefined
        const first = yield* Effect.onExit(attempt, (exit) =>
          Exit.isSuccess(exit) && exit.value.fence === 0 ? Effect.void : Effect.sync(() => early?.close())
        )
        const { fence, sentAt } = first.fence > 0 ? first : yield* wait(early)
        const waitedMs = clock.unsafeCurrentTimeMillis() - start
        yield* Metric.update(Metric.tagged(Metrics.lockWait, "key", key), waitedMs)
        span.attribute("haechi.lock.fence", fence)
        span.attribute("haechi.lock.waited_ms", waitedMs)

        // The renewal starts when the first extension is due: most holds end long before,
        // and a fiber forked per lease cost more than a timer. Interruptible even when
        // acquired in an uninterruptible region (acquireRelease), whose flags the runtime
        // carries and where it would otherwise keep `stopRenewal` from finishing.
        const runtime = yield* Effect.runtime<never>()
        const lost = lossSignal(key, sentAt + o.ttlMs)
        // (A renewal due beyond Node's longest timer starts early and sleeps on from there.)
        renewalStart = setTimeout(() => {
          renewal = Runtime.runFork(runtime, Effect.interruptible(keepAlive(key, token, o, sentAt, lost)))
        }, timerDelay(sentAt + Math.min(o.renewMs, o.ttlMs) - clock.unsafeCurrentTimeMillis()))
        const lease: Lease = {
          key,
          token,
          fence,
          lost: lost.await,
          get signal() {
            return lost.signal
          }
        }
        return { lease, release: giveBack, check: lost.check }
      })
      // A span that is not made the current one: nothing under it makes spans, and
      // providing it as the parent cost more than the rest of the span.
      return Effect.useSpan(
        "haechi.lock.acquire",
        { attributes: { "haechi.lock.key": key }, captureStackTrace: false },
        (span) =>
          Effect.onExit(held(span), (exit) => {
            span.attribute("haechi.outcome", outcomeOf(exit))
            return Exit.isFailure(exit) && sent ? giveBack : Effect.void
          })
      )
    })

  const checked = (key: string, options: LockOptions | undefined) =>
    Effect.zip(checkKey(key, redis.isCluster), resolveOptions(options))

  // "fail" and "after" also check the lease when the work ends: a loss the renewal had no
  // chance to see (no timer runs while the event loop is blocked) is never silent.
  const guarded = <A, E, R>(o: ResolvedLockOptions, held: Held, work: Effect.Effect<A, E, R>) =>
    o.onLost === "ignore"
      ? work
      : Effect.flatMap(Effect.exit(o.onLost === "fail" ? Effect.raceFirst(work, held.lease.lost) : work), (exit) =>
          Effect.zipRight(held.check, exit)
        )

  const withLease: RedisLockShape["withLease"] = (key, use, options) =>
    Effect.flatMap(checked(key, options), ([key, o]) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquireHeld(key, o)), (held) =>
          Effect.ensuring(restore(guarded(o, held, Effect.suspend(() => use(held.lease)))), held.release)
        )
      )
    )

  const lock: RedisLockShape = {
    acquire: (key, options) =>
      Effect.flatMap(checked(key, options), ([key, o]) =>
        Effect.flatMap(Effect.scope, (scope) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.flatMap(
              restore(acquireHeld(key, o)),
              (held) => Effect.as(Scope.addFinalizer(scope, held.release), held.lease)
            )
          ))),
    withLock: ((key: string, effectOrOptions?: Effect.Effect<unknown, unknown, unknown> | LockOptions, options?: LockOptions) =>
      Effect.isEffect(effectOrOptions)
        ? withLease(key, () => effectOrOptions, options)
        : (effect: Effect.Effect<unknown, unknown, unknown>) => withLease(key, () => effect, effectOrOptions)) as RedisLockShape["withLock"],
    withLockIfAvailable: (key, effect, options) =>
      Effect.suspend(() => {
        // Only the acquire's own timeout means "held by someone else": one from the work is the work's.
        let started = false
        return withLease(key, () => Effect.suspend(() => ((started = true), effect)), { ...options, waitTimeout: 0 }).pipe(
          Effect.map(Option.some),
          Effect.catchIf(
            (error): error is LockTimeout => !started && (error as { _tag?: string })._tag === "LockTimeout",
            () => Effect.succeed(Option.none())
          )
        )
      }) as never,
    withLease
  }
  return {
    lock,
    close: wakeups.close,
    releases: (key) => wakeups.open(releaseChannelOf(key), undefined),
    releaseToken: (key, token) => release(key, token, RELEASE_BOUND_MS, false)
  }
}

/** A RedisLock whose subscriber connection is closed with the scope. */
export const make: Effect.Effect<RedisLockShape, never, RedisClient | Scope.Scope> = Effect.gen(function*() {
  const redis = yield* RedisClient
  const { lock } = yield* Effect.acquireRelease(Effect.sync(() => makeWith(redis)), (handle) => handle.close)
  return lock
})

type LockErrors = LockLost | LockTimeout | RedisError | InvalidConfig

/**
 * `withLock` on the `RedisLock` service, dual: `withLock(work, key, options?)` or
 * `work.pipe(withLock(key, options?))`.
 */
export const withLock: {
  (key: string, options?: LockOptions): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | LockErrors, R | RedisLock>
  <A, E, R>(effect: Effect.Effect<A, E, R>, key: string, options?: LockOptions): Effect.Effect<A, E | LockErrors, R | RedisLock>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, key: string, options?: LockOptions) =>
    Effect.flatMap(RedisLock, (lock) => lock.withLock(key, effect, options))
)

/**
 * `withLockIfAvailable` on the `RedisLock` service, dual: `Some` of the work's result,
 * `None` (the work not run) when the lock is held elsewhere.
 */
export const withLockIfAvailable: {
  (key: string, options?: Omit<LockOptions, "waitTimeout">): <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R | RedisLock>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    key: string,
    options?: Omit<LockOptions, "waitTimeout">
  ): Effect.Effect<Option.Option<A>, E | LockLost | RedisError | InvalidConfig, R | RedisLock>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, key: string, options?: Omit<LockOptions, "waitTimeout">) =>
    Effect.flatMap(RedisLock, (lock) => lock.withLockIfAvailable(key, effect, options))
)

/** The RedisLock service over the RedisClient; its subscriber lives as long as the layer. */
export const layer: Layer.Layer<RedisLock, never, RedisClient> = Layer.scoped(RedisLock, make)

// ---------------------------------------------------------------------------
// release notifications

/** One waiter's wake-ups on one channel, for as long as it waits. */
export interface Wakeup {
  /**
   * Completes at the first wake-up since the previous `next` (at once if one came
   * meanwhile), or after `ms`, whichever is first. A wake-up is a release that freed the
   * lock, a hand-off to this waiter (the message, "<token> <fence>"; it wins over a
   * plain one), or the subscription becoming active (a release may have come before);
   * hand-offs to others do not wake. Yields the message ("" for a plain wake-up), or
   * undefined when `ms` ran out.
   */
  readonly next: (ms: number) => Effect.Effect<string | undefined>
  /** Stops listening (idempotent). */
  readonly close: () => void
}

interface Listener {
  /** The waiter's token, whose hand-offs wake it (others' do not). */
  readonly token: string | undefined
  /** A wake-up that arrived while nobody was waiting on it; the next `next` returns it at once. */
  pending: string | undefined
  wake: ((message: string) => void) | undefined
}

interface Channel {
  readonly listeners: Set<Listener>
  ready: boolean
  /** Set while the channel has no listeners and stays subscribed a little longer. */
  linger?: ReturnType<typeof setTimeout> | undefined
}

/**
 * How long a channel stays subscribed after its last listener left: under contention the
 * same lock is waited for again at once, and a warm subscription saves a SUBSCRIBE and
 * an UNSUBSCRIBE per wait.
 */
const CHANNEL_LINGER_MS = 1000

const notify = (listener: Listener, message: string) => {
  if (message !== "" && (listener.token === undefined || handedFence(message, listener.token) === 0)) return
  const wake = listener.wake
  if (wake !== undefined) wake(message)
  else if (!listener.pending) listener.pending = message
}

/**
 * Release notifications over one dedicated subscriber connection, opened on the first
 * `open`. A listener is woken by a message on its channel and, once, when its
 * subscription becomes active (a release may have happened just before). Any failure
 * here only costs latency: the waiters' poll covers it.
 */
const subscriber = (client: RedisConnection, idleMs: number | undefined) => {
  const channels = new Map<string, Channel>()
  let connection: RedisConnection | undefined
  let closed = false
  let idleTimer: ReturnType<typeof setTimeout> | undefined

  const disconnect = () => {
    const c = connection
    connection = undefined
    channels.forEach((entry) => (entry.ready = false))
    c?.disconnect()
  }

  const connect = (): RedisConnection | undefined => {
    if (closed) return undefined
    if (connection === undefined) {
      const c = client.duplicate()
      c.on("error", () => {})
      c.on("message", (channel: string, message: string) => {
        channels.get(channel)?.listeners.forEach((listener) => notify(listener, message))
      })
      connection = c
    }
    return connection
  }

  const add = (name: string, listener: Listener) => {
    if (idleTimer !== undefined) {
      clearTimeout(idleTimer)
      idleTimer = undefined
    }
    const existing = channels.get(name)
    if (existing !== undefined) {
      if (existing.linger !== undefined) {
        clearTimeout(existing.linger)
        existing.linger = undefined
      }
      existing.listeners.add(listener)
      return
    }
    const entry: Channel = { listeners: new Set([listener]), ready: false }
    channels.set(name, entry)
    const c = connect()
    c?.subscribe(name).then(
      () => {
        if (channels.get(name) === entry && connection === c) {
          entry.ready = true
          entry.listeners.forEach((listener) => notify(listener, ""))
        }
      },
      () => {}
    )
  }

  const remove = (name: string, listener: Listener) => {
    const entry = channels.get(name)
    if (entry === undefined || !entry.listeners.delete(listener) || entry.listeners.size > 0) return
    entry.linger = setTimeout(() => {
      entry.linger = undefined
      if (entry.listeners.size > 0 || channels.get(name) !== entry) return
      channels.delete(name)
      connection?.unsubscribe(name).catch(() => {})
      idleAfterLastChannel()
    }, CHANNEL_LINGER_MS)
    entry.linger.unref?.()
  }

  const idleAfterLastChannel = () => {
    if (channels.size === 0 && idleMs !== undefined && connection !== undefined) {
      idleTimer = setTimeout(() => {
        idleTimer = undefined
        if (channels.size === 0) disconnect()
      }, idleMs)
      idleTimer.unref?.()
    }
  }

  /** Starts listening on `name` for the waiter with `token`; `close` the result when done. */
  const open = (name: string, token: string | undefined): Wakeup => {
    const listener: Listener = { token, pending: undefined, wake: undefined }
    let open = true
    add(name, listener)
    return {
      next: (ms) =>
        Effect.async<string | undefined>((resume) => {
          if (listener.pending !== undefined || !open) {
            const message = listener.pending ?? ""
            listener.pending = undefined
            return resume(Effect.succeed(message))
          }
          const timer = setTimeout(() => {
            listener.wake = undefined
            resume(Effect.succeed(undefined))
          }, Math.max(0, ms))
          listener.wake = (message) => {
            listener.wake = undefined
            clearTimeout(timer)
            resume(Effect.succeed(message))
          }
          return Effect.sync(() => {
            listener.wake = undefined
            clearTimeout(timer)
          })
        }),
      close: () => {
        if (!open) return
        open = false
        listener.wake = undefined
        remove(name, listener)
      }
    }
  }

  /** Whether `name` is subscribed already (a listener opened now misses nothing from here on). */
  const isLive = (name: string): boolean => channels.get(name)?.ready === true

  const close = Effect.sync(() => {
    closed = true
    if (idleTimer !== undefined) clearTimeout(idleTimer)
    channels.forEach((entry) => entry.linger !== undefined && clearTimeout(entry.linger))
    disconnect()
  })

  return { open, isLive, close }
}
