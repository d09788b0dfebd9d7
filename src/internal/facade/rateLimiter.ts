/**
 * The rate limiter's Promise calls. Each call starts a deadline of `timeoutMs` on a plain
 * timer when it is made (one timer for all the limiter's calls: `DeadlineQueue`): if no
 * decision has come when it passes, the fail mode answers from the timer itself, so a
 * busy Effect scheduler cannot make the answer late. Each fail-mode
 * answer is counted once; a bad key or limit (`InvalidConfig`) rejects.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Runtime from "effect/Runtime"
import { InvalidConfig } from "../../Errors.js"
import { timerDelay } from "../deadline.js"
import { DeadlineQueue, type QueuedDeadline } from "../deadlineQueue.js"
import { promiseRunner } from "./run.js"

/** The fail mode's answer to one call, counted (`undefined`: no reply within the timeout). */
export type FailModeAnswer<A, E> = (error: E | undefined) => Effect.Effect<A>

/** A call in flight: its deadline, and the fail mode's answer when that passes. */
interface Call extends QueuedDeadline {
  readonly timedOut: () => void
}

/** `consume` as a Promise that settles within `timeoutMs` (when given), answering with the fail mode past it. */
export const promiseConsume = <A, E>(
  consume: (key: string, limit: number) => Effect.Effect<A, E | InvalidConfig>,
  failMode: FailModeAnswer<A, E>,
  timeoutMs: number | undefined,
  runtime?: Runtime.Runtime<never>
) => {
  const run = promiseRunner(runtime)
  const answer = (error: E | undefined): A => Effect.runSync(failMode(error))
  const deadlines =
    timeoutMs === undefined ? undefined : new DeadlineQueue<Call>(timerDelay(timeoutMs), (call) => call.timedOut())
  return (key: string, limit: number): Promise<A> =>
    new Promise<A>((resolve, reject) => {
      let settled = false
      const call: Call = {
        endsAt: 0,
        done: false,
        timedOut: () => {
          settled = true
          resolve(answer(undefined))
        }
      }
      deadlines?.start(call)
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        deadlines?.end(call)
        return true
      }
      run(Effect.either(consume(key, limit))).then(
        (decided) => {
          if (!settle()) return
          if (Either.isRight(decided)) resolve(decided.right)
          else if (decided.left instanceof InvalidConfig) reject(decided.left)
          else resolve(answer(decided.left))
        },
        (defect: unknown) => {
          if (settle()) reject(defect)
        }
      )
    })
}
