/**
 * What a replica knows of the chain's head, as plain values: nothing (read it), or a head
 * and its eventHash. The backing's replies and the head cache both speak it, so it lives
 * apart from either.
 */
import type { AuditIntegrity } from "../../Chain.js"
import type { ChainPoint } from "../../Errors.js"

/**
 * What is known of the head: nothing (read it), or the head and its eventHash ("" for the
 * empty chain); `offered` when it only came with a turn (nothing has checked it yet).
 */
export type HeadState =
  | { readonly _tag: "Unknown" }
  | { readonly _tag: "Known"; readonly head: AuditIntegrity | null; readonly hash: string; readonly offered?: true }

export const unknownHead: HeadState = Object.freeze({ _tag: "Unknown" })

export const knownHead = (head: AuditIntegrity | null): HeadState => ({
  _tag: "Known",
  head,
  hash: head?.eventHash ?? ""
})

export const pointOf = (head: AuditIntegrity | null): ChainPoint | null =>
  head === null ? null : { sequence: head.sequence, eventHash: head.eventHash }

export const samePoint = (a: ChainPoint, b: ChainPoint | null): boolean =>
  b !== null && a.sequence === b.sequence && a.eventHash === b.eventHash
