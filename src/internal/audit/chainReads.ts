/**
 * The audit store whole: its append store (store.ts) plus the chain's stored records as
 * paged `Stream`s, each page one bounded read (LRANGE), never one `LRANGE 0 -1`.
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { CorruptData } from "../../Errors.js"
import { DEFAULT_PAGE_SIZE } from "../chainPages.js"
import type { AuditBacking } from "./backing.js"
import type { AuditStoreOptions } from "./options.js"
import type { AuditStoreShape, ChainReadOptions } from "./shape.js"
import { appendStoreOnBacking, type BoundedRead } from "./store.js"

/**
 * The store over `backing` (each call its own replica: its own cached head). Throws
 * `InvalidConfig` for an unusable `onRewind`, `verifyRecords` or `timeout`.
 */
export const storeOnBacking = (backing: AuditBacking, options: AuditStoreOptions = {}): AuditStoreShape => {
  const { store, boundedRead } = appendStoreOnBacking(backing, options)
  const readChainJson = chainPages(backing, boundedRead)
  return {
    ...store,
    readChainJson,
    readChain: (opts) =>
      readChainJson(opts).pipe(
        Stream.zipWithIndex,
        Stream.mapEffect(([json, index]) =>
          Effect.try({
            try: () => JSON.parse(json) as Record<string, unknown>,
            catch: () =>
              new CorruptData({ key: backing.keys.chain, element: (opts?.from ?? 0) + index, detail: "not JSON" })
          })
        )
      )
  }
}

/** The chain's stored JSON in order, a page per bounded read. */
const chainPages = (backing: AuditBacking, boundedRead: BoundedRead): AuditStoreShape["readChainJson"] => {
  const bound = boundedRead("chain page")
  return (opts: ChainReadOptions = {}) => {
    const pageSize = Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE))
    return Stream.paginateChunkEffect(Math.max(0, opts.from ?? 0), (start) =>
      Effect.map(
        bound(backing.readRange(start, start + pageSize - 1)),
        (page) =>
          [
            Chunk.unsafeFromArray(page as Array<string>),
            page.length === pageSize ? Option.some(start + pageSize) : Option.none()
          ] as const
      )
    )
  }
}
