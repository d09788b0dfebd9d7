/**
 * The audit store's own options (beside the ones both stores share), declared here for
 * the internals and re-exported by `AuditStore`, and the one check of their values.
 */
import { InvalidConfig } from "../../Errors.js"
import type { StoreOptions } from "../../StoreOptions.js"
import type { WitnessOptions } from "../checkpoint/witness.js"

/**
 * What a replica does when the chain no longer holds a head it saw (`ChainRewound`):
 * "record" appends, on the current head, a record naming the lost head and when it was
 * detected, then goes on; "fail" fails every append with `ChainRewound` until the chain
 * holds that head again (or the process restarts).
 */
export type OnRewind = "record" | "fail"

/**
 * What is checked of a record before it is persisted: "chain" (default) its place in
 * the chain (inside the fenced script) and that JSON stores it as it is; "full" also
 * recomputes its eventHash (json-stable-v1) and refuses a mismatch.
 */
export type VerifyRecords = "chain" | "full"

export interface AuditStoreOptions extends StoreOptions {
  /** Key prefix; default "haechi:audit:" (use a hash tag such as "{haechi:audit}:" on a cluster). */
  readonly keyPrefix?: string
  /** On a rewound chain: "record" (default) or "fail"; see `OnRewind`. */
  readonly onRewind?: OnRewind
  /** "chain" (default) or "full"; see `VerifyRecords`. */
  readonly verifyRecords?: VerifyRecords
  /** Redis only: refuse (before the store is handed out) a chain that does not hold the newest signed checkpoint; see Checkpoint.ts. */
  readonly witness?: WitnessOptions
}

/** `InvalidConfig` for an `onRewind` or `verifyRecords` the store does not know, else undefined. */
export const checkAuditOptions = (options: AuditStoreOptions): InvalidConfig | undefined => {
  const { onRewind, verifyRecords } = options
  if (onRewind !== undefined && onRewind !== "record" && onRewind !== "fail") {
    return new InvalidConfig({
      option: "onRewind",
      reason: `must be "record" or "fail", got ${JSON.stringify(onRewind) ?? typeof onRewind}`
    })
  }
  if (verifyRecords !== undefined && verifyRecords !== "chain" && verifyRecords !== "full") {
    return new InvalidConfig({
      option: "verifyRecords",
      reason: `must be "chain" or "full", got ${JSON.stringify(verifyRecords) ?? typeof verifyRecords}`
    })
  }
  return undefined
}
