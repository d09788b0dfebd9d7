/**
 * The schedules the stores share, each defined once.
 */
import * as Schedule from "effect/Schedule"

/**
 * Resolving a lost reply (did the commit whose answer never came land?): ask again every
 * 100 ms, 16 times in all, for Redis may be reconnecting. Both stores use it.
 */
export const resolveSchedule = Schedule.intersect(Schedule.spaced("100 millis"), Schedule.recurs(15))
