/**
 * The checks of `Verify`'s options, each an `InvalidConfig` naming the option: a
 * checkpoint the chain's rules accept (and whose hash is a non-empty string past
 * sequence 0), a positive integer page size.
 */
import * as Effect from "effect/Effect"
import type { Checkpoint } from "../../Chain.js"
import { InvalidConfig } from "../../Errors.js"
import { initialChainState } from "./chainFold.js"
import { DEFAULT_PAGE_SIZE } from "../chainPages.js"
import { messageOf } from "../errorMessage.js"

/**
 * Default LRANGE page: large enough to keep round trips off the critical path (the next
 * page is fetched while one is hashed), small enough that one LRANGE blocks Redis for
 * well under a millisecond.
 */
export { DEFAULT_PAGE_SIZE }

/** The checkpoint to start from (undefined for none, or for the empty chain's). */
export const checkCheckpoint = (from: Checkpoint | undefined): Effect.Effect<Checkpoint | undefined, InvalidConfig> => {
  if (from === undefined) return Effect.succeed(undefined)
  try {
    initialChainState({ from })
  } catch (error) {
    return Effect.fail(new InvalidConfig({ option: "from", reason: messageOf(error) }))
  }
  if (from.sequence > 0 && (typeof from.eventHash !== "string" || from.eventHash.length === 0)) {
    return Effect.fail(new InvalidConfig({ option: "from", reason: "checkpoint eventHash must be a non-empty string" }))
  }
  return Effect.succeed(from.sequence === 0 ? undefined : from)
}

export const checkPageSize = (pageSize: number | undefined): Effect.Effect<number, InvalidConfig> =>
  pageSize === undefined
    ? Effect.succeed(DEFAULT_PAGE_SIZE)
    : Number.isSafeInteger(pageSize) && pageSize >= 1
      ? Effect.succeed(pageSize)
      : Effect.fail(new InvalidConfig({ option: "pageSize", reason: "must be a positive integer" }))
