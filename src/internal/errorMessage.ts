/**
 * The one home of "what does this thrown value say?": an `Error`'s message, else the
 * value as a string. Used wherever a caught value is worded into a typed error.
 */

/**
 * `error.message` for an `Error` or an error-like object (one copied across a realm or a
 * serializer, without `Error`'s prototype), else `String(error)`. Never throws.
 */
export const messageOf = (error: unknown): string => {
  if (error instanceof Error) return error.message
  const message = typeof error === "object" && error !== null ? (error as { message?: unknown }).message : undefined
  if (typeof message === "string") return message
  try {
    return String(error)
  } catch {
    return Object.prototype.toString.call(error)
  }
}
