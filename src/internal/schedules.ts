/**
 * The schedules the stores share, each defined once, and the one way this package steps
 * a schedule by hand (`stepper`).
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"

/**
 * Resolving a lost reply (did the commit whose answer never came land?): ask again every
 * 100 ms, 16 times in all, for Redis may be reconnecting. Both stores use it.
 */
export const resolveSchedule = Schedule.intersect(Schedule.spaced("100 millis"), Schedule.recurs(15))

/**
 * A schedule stepped by hand, for a loop that waits its own way (a sleep, a timer racing
 * a release message): the one driver of a `Schedule` in this package, so each loop needs
 * no copy of `initial`/`step`/`isDone`/`intervals`. Its state is the stepper's own: one
 * per loop, never shared between fibers.
 */
export interface ScheduleStepper<In, R = never> {
  /**
   * Steps the schedule at `now` (ms) with `input`: when the next try may start (ms, at
   * least `now`), or `undefined` once the schedule is done (then its state is kept).
   */
  readonly next: (now: number, input: In) => Effect.Effect<number | undefined, never, R>
}

/** A fresh stepper over `schedule`, at its initial state. */
export const stepper = <Out, In, R>(schedule: Schedule.Schedule<Out, In, R>): ScheduleStepper<In, R> => {
  let state = schedule.initial
  return {
    next: (now, input) =>
      Effect.map(
        Effect.suspend(() => schedule.step(now, input, state)),
        ([next, , decision]) => {
          if (ScheduleDecision.isDone(decision)) return undefined
          state = next
          return Math.max(ScheduleIntervals.start(decision.intervals), now)
        }
      )
  }
}

/**
 * What `Schedule.driver(schedule).next(input)` does, on a stepper: waits (on the Effect
 * clock) until the schedule allows the next try, or fails with `undefined` once it is done.
 */
export const sleepUntilNext = <In, R>(steps: ScheduleStepper<In, R>, input: In): Effect.Effect<void, undefined, R> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.flatMap(steps.next(now, input), (at) =>
      at === undefined ? Effect.fail(undefined) : at > now ? Effect.sleep(Duration.millis(at - now)) : Effect.void
    )
  )
