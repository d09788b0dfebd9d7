/**
 * The rate limiter's Promise calls. Each call starts a plain timer of `timeoutMs` when it
 * is made: if no decision has come when the timer fires, the fail mode answers from the
 * timer itself, so a busy Effect scheduler cannot make the answer late. Each fail-mode
 * answer is counted once; a bad key or limit (`InvalidConfig`) rejects.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Runtime from "effect/Runtime"
import { InvalidConfig } from "../../Errors.js"
import { timerDelay } from "../deadline.js"
import { promiseRunner } from "./run.js"

/** What the fail mode answers, and how it counts an answer (`undefined`: no reply within the timeout). */
export interface FailModeAnswer<A, E> {
  readonly answer: A
  readonly count: (error: E | undefined) => Effect.Effect<void>
}

/** `consume` as a Promise that settles within `timeoutMs` (when given), answering with the fail mode past it. */
export const promiseConsume = <A, E>(
  consume: (key: string, limit: number) => Effect.Effect<A, E | InvalidConfig>,
  failMode: FailModeAnswer<A, E>,
  timeoutMs: number | undefined,
  runtime?: Runtime.Runtime<never>
) => {
  const run = promiseRunner(runtime)
  const answer = (error: E | undefined): A => {
    Effect.runSync(failMode.count(error))
    return failMode.answer
  }
  return (key: string, limit: number): Promise<A> =>
    new Promise<A>((resolve, reject) => {
      let settled = false
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(guard)
        return true
      }
      const guard =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              settled = true
              resolve(answer(undefined))
            }, timerDelay(timeoutMs))
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
