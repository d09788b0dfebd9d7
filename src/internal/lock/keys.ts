/**
 * The lock's keys: the lock key itself, its fence counter and its waiter queue, all in
 * the lock key's cluster slot (the acquire and release scripts touch all three), and
 * the channel its release is announced on. One home for the list, which the scripts,
 * the demo and `stats` share.
 */
import * as Effect from "effect/Effect"
import type { InvalidConfig } from "../../Errors.js"
import { hashedPart } from "../keys.js"
import { invalid } from "./options.js"

/**
 * The fence counter of a lock key, in the lock key's hash slot: `<key>:fence` when the
 * key has a hash tag, else `{<key>}:fence` (whose hashed part is the key itself).
 */
export const fenceKeyOf = (key: string): string =>
  hashedPart(key) === key ? `{${key}}:fence` : `${key}:fence`

/** The queue of waiters the release hands the lock to, in the lock key's hash slot like the fence. */
export const waitersKeyOf = (key: string): string =>
  hashedPart(key) === key ? `{${key}}:waiters` : `${key}:waiters`

/** The channel the release script publishes on. */
export const releaseChannelOf = (key: string): string => `${key}:released`

/** Every key a lock on `key` writes, in the order the acquire and release scripts take them. */
export const lockKeysOf = (key: string): [string, string, string] => [key, fenceKeyOf(key), waitersKeyOf(key)]

/** A lock key the scripts can use: non-empty, and on a cluster one whose fence and queue share its slot. */
export const checkKey = (key: unknown, isCluster: boolean): Effect.Effect<string, InvalidConfig> => {
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
