/**
 * The one home of "can this value be stored as JSON exactly as it is?".
 *
 * A value passes only if `JSON.parse(JSON.stringify(value))` gives back the same value,
 * so what Redis holds is what haechi's core hashed (audit) or handed to `set` (vault),
 * and every Lua script can decode it (Redis's cjson refuses lone surrogates and deep
 * nesting). Anything else is named with its path, for `InvalidRecord`.
 */
import { messageOf } from "./errorMessage.js"

/** Deeper nesting is refused: Redis's cjson stops decoding at 1000 levels, and no haechi record is near. */
export const MAX_JSON_DEPTH = 128

const objectProto = Object.prototype

/** A plain object: `{}` or `Object.create(null)`, not an array, Date, Map, boxed value or class instance. */
export const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === objectProto || proto === null
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

// Node 20's own `String.prototype.isWellFormed` (the same rule, natively), else the pattern.
const nativeWellFormed = (String.prototype as { isWellFormed?: (this: string) => boolean }).isWellFormed

/** A string every JSON parser (and Redis's cjson) reads back unchanged: no lone surrogate. */
export const isWellFormed: (text: string) => boolean =
  typeof nativeWellFormed === "function" ? (text) => nativeWellFormed.call(text) : (text) => !LONE_SURROGATE.test(text)

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const child = (path: string, key: string): string =>
  IDENTIFIER.test(key) ? (path === "" ? key : `${path}.${key}`) : `${path}[${JSON.stringify(key)}]`

const at = (path: string): string => (path === "" ? "the top level" : path)

/**
 * Why `value` would not survive a JSON round trip unchanged, naming the path
 * (for example "undefined value at request.headers.x"), or `undefined` when it would.
 */
export const jsonProblem = (value: unknown): string | undefined =>
  survives(value, 0) ? undefined : problemAt(value, "", 0, new Set())

/**
 * The fast path: the same rules as `problemAt`, without building paths or tracking
 * ancestors (a cycle runs into the depth bound). Only a value it refuses is walked again,
 * by `problemAt`, to name what is wrong and where: a record that passes is walked once,
 * with no string built.
 */
const survives = (value: unknown, depth: number): boolean => {
  switch (typeof value) {
    case "string":
      return isWellFormed(value)
    case "boolean":
      return true
    case "number":
      return Number.isFinite(value)
    case "object":
      break
    default:
      return false
  }
  if (value === null) return true
  if (depth >= MAX_JSON_DEPTH) return false
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype || Object.keys(value).length !== value.length) return false
    for (let i = 0; i < value.length; i++) if (!survives(value[i], depth + 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== objectProto && proto !== null) return false
  if (Object.getOwnPropertySymbols(value).length > 0) return false
  const record = value as Record<string, unknown>
  if (typeof record.toJSON === "function") return false
  for (const key of Object.keys(record)) {
    if (!isWellFormed(key) || !survives(record[key], depth + 1)) return false
  }
  return true
}

const problemAt = (value: unknown, path: string, depth: number, ancestors: Set<object>): string | undefined => {
  switch (typeof value) {
    case "string":
      return isWellFormed(value) ? undefined : `a lone UTF-16 surrogate in the string at ${at(path)}`
    case "boolean":
      return undefined
    case "number":
      return Number.isFinite(value) ? undefined : `${value} at ${at(path)} (JSON stores it as null)`
    case "undefined":
    case "function":
    case "symbol":
    case "bigint":
      return `${typeof value} value at ${at(path)}`
  }
  if (value === null) return undefined
  const object = value as object
  if (depth >= MAX_JSON_DEPTH) return `nesting deeper than ${MAX_JSON_DEPTH} levels at ${at(path)}`
  if (ancestors.has(object)) return `a circular reference at ${at(path)}`
  ancestors.add(object)
  try {
    return Array.isArray(object)
      ? arrayProblem(object, path, depth, ancestors)
      : objectProblem(object, path, depth, ancestors)
  } finally {
    ancestors.delete(object)
  }
}

const arrayProblem = (
  array: Array<unknown>,
  path: string,
  depth: number,
  ancestors: Set<object>
): string | undefined => {
  if (Object.getPrototypeOf(array) !== Array.prototype) return `a non-plain array at ${at(path)}`
  if (Object.keys(array).length !== array.length) {
    return `a sparse array or an array with extra properties at ${at(path)}`
  }
  for (let i = 0; i < array.length; i++) {
    const problem = problemAt(array[i], `${path}[${i}]`, depth + 1, ancestors)
    if (problem !== undefined) return problem
  }
  return undefined
}

const objectProblem = (object: object, path: string, depth: number, ancestors: Set<object>): string | undefined => {
  if (!isPlainObject(object)) {
    const name = (object as { constructor?: { name?: unknown } }).constructor?.name
    return `a ${typeof name === "string" && name !== "" ? name : "non-plain"} object at ${at(path)} (only plain objects are stored as they are)`
  }
  if (Object.getOwnPropertySymbols(object).length > 0) return `a symbol-keyed property at ${at(path)}`
  const record = object as Record<string, unknown>
  if (typeof record.toJSON === "function") return `an own toJSON method at ${at(path)}`
  for (const key of Object.keys(record)) {
    if (!isWellFormed(key)) return `a lone UTF-16 surrogate in a key at ${at(path)}`
    const problem = problemAt(record[key], child(path, key), depth + 1, ancestors)
    if (problem !== undefined) return problem
  }
  return undefined
}

// ---------------------------------------------------------------------------
// The checks every reader and writer of a record shares

/**
 * A JSON object as `JSON.parse` gives one back: an object, neither null nor an array.
 * (What a caller hands in to be stored must also be plain: see `isPlainObject`.)
 */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Why `JSON.stringify` refused a value (a bigint, a cycle, a throwing `toJSON`), for `InvalidRecord`. */
export class NotSerializable {
  constructor(readonly reason: string) {}
}

/** `JSON.stringify(value)`, or `NotSerializable` ("not JSON-serializable (…)") when it throws. */
export const stringifyOrProblem = (value: unknown): string | NotSerializable => {
  try {
    return JSON.stringify(value)
  } catch (error) {
    return new NotSerializable(`not JSON-serializable (${messageOf(error)})`)
  }
}
