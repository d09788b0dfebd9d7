/**
 * One JSONL line per stored record, for `Verify.exportJsonl`: stored text passes through
 * unchanged; an element spread over several lines (never written by a store) is
 * re-serialized onto one, and one that is not JSON is `CorruptData` (it cannot be a
 * JSONL line).
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import { CorruptData } from "../../Errors.js"

const lineBreak = /[\r\n]/

/** The page (elements of the list `key` from index `start`) with every element on one line. */
export const oneLineEach = (
  page: Chunk.Chunk<string>,
  start: number,
  key: string
): Effect.Effect<Chunk.Chunk<string>, CorruptData> => {
  const lines = Chunk.toReadonlyArray(page)
  let out: Array<string> | undefined
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    if (!lineBreak.test(line)) continue
    try {
      ;(out ??= lines.slice())[i] = JSON.stringify(JSON.parse(line))
    } catch {
      return Effect.fail(
        new CorruptData({ key, element: start + i, detail: "not JSON, and spread over several lines" })
      )
    }
  }
  return Effect.succeed(out === undefined ? page : Chunk.unsafeFromArray(out))
}
