/**
 * The one home of "what does this thrown value say?": an `Error`'s message, else the
 * value as a string. Used wherever a caught value is worded into a typed error.
 */

/** `error.message` for an `Error`, else `String(error)`. Never throws on ordinary values. */
export const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))
