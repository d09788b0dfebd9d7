/**
 * The checkpoint side of verifying a chain against signed checkpoints (the fold is
 * Verify's): which checkpoint a failure falls under, and the per-record pin check.
 */
import type { SignedCheckpoint } from "./checkpoints.js"

/**
 * The checkpoints by ascending size, each (size, hash) once (notes that agree are one
 * checkpoint). Two hashes for one size both stay: no chain holds both, so it fails.
 */
export const bySize = (checkpoints: ReadonlyArray<SignedCheckpoint>): ReadonlyArray<SignedCheckpoint> => {
  const seen = new Map<string, SignedCheckpoint>()
  for (const checkpoint of checkpoints) {
    const key = `${checkpoint.size} ${checkpoint.hash}`
    if (!seen.has(key)) seen.set(key, checkpoint)
  }
  return [...seen.values()].sort((a, b) => a.size - b.size)
}

/** The first checkpoint (of `sorted`) whose size is at least `sequence`: the first a failure there breaks. */
export const firstAtOrAfter = (
  sorted: ReadonlyArray<SignedCheckpoint>,
  sequence: number
): SignedCheckpoint | undefined => sorted.find((checkpoint) => checkpoint.size >= sequence)

/** The stored eventHash of a record's JSON text; null when it has none. */
export const eventHashOf = (text: string): string | null => {
  try {
    const hash = (JSON.parse(text) as { auditIntegrity?: { eventHash?: unknown } }).auditIntegrity?.eventHash
    return typeof hash === "string" ? hash : null
  } catch {
    return null
  }
}

/**
 * A per-element check over the list from index `start`: true while every element at a
 * checkpoint's sequence carries the checkpoint's hash; on the first that does not, records
 * it in `broken` and answers false (the read stops there).
 */
export const pinCheck = (sorted: ReadonlyArray<SignedCheckpoint>, start: number) => {
  const pins = new Map<number, Array<SignedCheckpoint>>()
  for (const checkpoint of sorted) pins.set(checkpoint.size, [...(pins.get(checkpoint.size) ?? []), checkpoint])
  let sequence = start
  const state: { broken: { checkpoint: SignedCheckpoint; found: string | null } | undefined } = { broken: undefined }
  const check = (text: string): boolean => {
    const at = pins.get(++sequence)
    if (at === undefined) return true
    const found = eventHashOf(text)
    const pin = at.find((checkpoint) => checkpoint.hash !== found)
    if (pin === undefined) return true
    state.broken = { checkpoint: pin, found }
    return false
  }
  return { check, state }
}
