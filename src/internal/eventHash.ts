/**
 * The shape of an eventHash, written once: sha256 in unpadded base64url, so always 43
 * characters of `A-Z a-z 0-9 _ -`. The head schema, the checkpoint note parser and the
 * CLI's `--from-hash` all check it with this.
 */

/** 43 base64url characters (what `Chain.computeEventHash` returns). */
export const EVENT_HASH_PATTERN = /^[A-Za-z0-9_-]{43}$/

/** The pattern, and canonical: the 43rd character carries no stray bits (the decoded 32 bytes re-encode to it). */
export const isCanonicalEventHash = (hash: string): boolean =>
  EVENT_HASH_PATTERN.test(hash) && Buffer.from(hash, "base64url").toString("base64url") === hash
