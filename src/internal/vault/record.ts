/**
 * A token record at the vault's edges: what `set` may stage (a plain JSON object that
 * JSON stores exactly as given, under a well-formed id), the frozen form the cache
 * holds, and the private copies views hand out. Cached records are frozen so an edit
 * through a view can never reach the cache without a commit.
 */
import { CorruptData, InvalidRecord } from "../../Errors.js"
import {
  isJsonObject,
  isPlainObject,
  isWellFormed,
  jsonProblem,
  NotSerializable,
  stringifyOrProblem
} from "../jsonRecord.js"
import type { TokenRecord } from "./contract.js"

export const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/** A deep, mutable copy of a JSON value (faster than structuredClone for small records). */
export const copyJson = (value: unknown): unknown => {
  if (typeof value !== "object" || value === null) return value
  if (Array.isArray(value)) return value.map(copyJson)
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key]
    if (key === "__proto__")
      Object.defineProperty(out, key, { value: copyJson(v), enumerable: true, writable: true, configurable: true })
    else out[key] = copyJson(v)
  }
  return out
}

/**
 * A deep, frozen copy of a value `encodeRecord` accepted: what parsing its JSON would
 * give (plain objects and arrays, the same keys in the same order, -0 as 0), about three times
 * cheaper than re-parsing it, and never the caller's own object (which stays theirs to edit).
 */
export const frozenCopy = <A>(value: A): A => {
  if (typeof value !== "object" || value === null) return (Object.is(value, -0) ? 0 : value) as A
  if (Array.isArray(value)) return Object.freeze(value.map(frozenCopy)) as A
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const v = frozenCopy((value as Record<string, unknown>)[key])
    if (key === "__proto__")
      Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true })
    else out[key] = v
  }
  return Object.freeze(out) as A
}

/** A stored record's JSON, parsed and frozen, or `CorruptData` naming the token when it is not a JSON object. */
export const decodeRecord = (tokensKey: string, token: string, json: string): TokenRecord | CorruptData => {
  try {
    const value = JSON.parse(json) as unknown
    if (isJsonObject(value)) return deepFreeze(value as TokenRecord)
  } catch {
    // reported below
  }
  return new CorruptData({ key: tokensKey, element: token, detail: "the record is not a JSON object" })
}

const kindOf = (value: unknown): string => {
  if (value === null) return "null"
  if (Array.isArray(value)) return "an array"
  if (typeof value !== "object") return `a ${typeof value}`
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name
  return `a ${typeof name === "string" && name !== "" ? name : "non-plain"} object`
}

/**
 * The JSON a staged record is stored as, or `InvalidRecord` saying why it cannot be:
 * an id Redis would hold as another id, a value that is not a plain object, or one JSON
 * would not give back as it is.
 */
export const encodeRecord = (token: string, record: unknown): string | InvalidRecord => {
  const invalid = (reason: string) => new InvalidRecord({ store: "vault", token, reason })
  if (!isWellFormed(token)) {
    return invalid("a token id with a lone UTF-16 surrogate cannot be stored (Redis would hold another id)")
  }
  if (!isPlainObject(record)) return invalid(`a record must be a plain JSON object, not ${kindOf(record)}`)
  const problem = jsonProblem(record)
  if (problem !== undefined) return invalid(`JSON would not store the record as it is: ${problem}`)
  const json = stringifyOrProblem(record)
  return json instanceof NotSerializable ? invalid(json.reason) : json
}
