/**
 * The lock's keys: the lock key itself, its fence counter and its waiter queue, all in
 * the lock key's cluster slot (the acquire and release scripts touch all three), and
 * the channel its release is announced on. Their layout has its one home in `../keys.ts`
 * (beside the stores' key lists, which the demo and `stats` share); this adds the check.
 */
import * as Effect from "effect/Effect"
import type { InvalidConfig } from "../../Errors.js"
import { fenceKeyOf, hashedPart, waitersKeyOf } from "../keys.js"
import { invalid } from "./options.js"

export { fenceKeyOf, lockKeysOf, releaseChannelOf, waitersKeyOf } from "../keys.js"

/** What is wrong with a lock key for the scripts, or undefined: non-empty, and on a cluster one whose fence and queue share its slot. */
export const keyProblem = (key: unknown, isCluster: boolean): string | undefined => {
  if (typeof key !== "string" || key.length === 0) return "must be a non-empty string"
  // A key without a hash tag but with a '}' cannot get a same-slot fence key this way.
  if (
    isCluster &&
    (hashedPart(fenceKeyOf(key)) !== hashedPart(key) || hashedPart(waitersKeyOf(key)) !== hashedPart(key))
  ) {
    return (
      `"${key}" contains "}" without a valid hash tag, so its fence counter and waiter queue cannot share its cluster slot; ` +
      `put a hash tag in it, e.g. "{${key.replace(/[{}]/g, "")}}"`
    )
  }
  return undefined
}

/** A lock key the scripts can use (see `keyProblem`), else `InvalidConfig` naming the problem. */
export const checkKey = (key: unknown, isCluster: boolean): Effect.Effect<string, InvalidConfig> => {
  const problem = keyProblem(key, isCluster)
  return problem === undefined ? Effect.succeed(key as string) : invalid("key", problem)
}
