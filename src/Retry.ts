/**
 * Bounded retry after fence conflicts, written once for both stores. A conflict means
 * another writer committed, so every retry follows real progress; the schedule only
 * bounds how long a writer keeps losing. When it runs out the operation fails closed
 * with `RetriesExhausted` (nothing was written) and never falls back to an unfenced write.
 * The loop that spends the schedule is `internal/retryBudget.ts`.
 */
import * as Duration from "effect/Duration"
import * as Schedule from "effect/Schedule"

/** A retry schedule over fence conflicts. */
export type RetrySchedule = Schedule.Schedule<unknown, unknown>

/**
 * The default: up to 128 attempts. The first four retries are immediate, because the
 * conflict's reply carried the current state and waiting would only make it stale (and
 * hand the race to the writer that just won); then short exponential backoff from
 * 0.2 ms capped at 2 ms, jittered so that losing writers do not collide in lockstep.
 */
const retryDelays = Schedule.recurs(4).pipe(
  Schedule.andThen(
    Schedule.exponential(Duration.micros(200n), 2).pipe(
      Schedule.union(Schedule.spaced("2 millis")),
      Schedule.jitteredWith({ min: 0.5, max: 1.5 })
    )
  )
)

/** The default schedule's delays, bounded at `attempts` attempts in all (at least 1: no retry). */
export const retryScheduleFor = (attempts: number): RetrySchedule =>
  retryDelays.pipe(Schedule.intersect(Schedule.recurs(Math.max(0, Math.floor(attempts) - 1))))

export const defaultRetrySchedule: RetrySchedule = retryScheduleFor(128)
