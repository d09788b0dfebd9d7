/**
 * Commit ids: unique per write call across every replica, cheap to make. A random
 * per-process part (so two processes never collide) and a counter (so no call in this
 * process repeats one), instead of fresh random bytes per call.
 */
import { randomBytes } from "node:crypto"

const processPart = randomBytes(9).toString("base64url")
let counter = 0

/** A new id with no spaces (it is stored in space-separated log entries). */
export const nextCommitId = (): string => `${processPart}${(counter++).toString(36)}`
