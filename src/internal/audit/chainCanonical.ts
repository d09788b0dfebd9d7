/**
 * The `json-stable-v1` canonical form and its hash, exactly as haechi's core computes
 * them (the quirks are listed on `Chain.canonicalize`), written for the hot path: a
 * record is walked in place rather than copied, and key orders are memoized by shape.
 * The memo only caches a pure function of an object's key list, so no output ever
 * depends on it.
 */
import * as NodeCrypto from "node:crypto"

/** `Chain.canonicalize`. */
export const canonical = (value: unknown): string | undefined => {
  switch (typeof value) {
    case "string":
      return quote(value)
    case "number":
      // Number::toString is what JSON.stringify uses for finite numbers (-0 -> "0").
      return Number.isFinite(value) ? String(value) : "null"
    case "boolean":
      return value ? "true" : "false"
    case "object":
      if (value === null) return "null"
      return Array.isArray(value) ? canonicalArray(value) : canonicalObject(value, undefined)
    default:
      // undefined, function, symbol -> undefined; bigint -> throws (as JSON.stringify)
      return JSON.stringify(value)
  }
}

/** Characters JSON.stringify may escape: `"`, `\`, C0 controls, any surrogate half. */
const mayNeedEscape = /["\\\u0000-\u001f\ud800-\udfff]/

/** `JSON.stringify(text)`, skipping the native call when nothing needs escaping. */
const quote = (text: string): string => (mayNeedEscape.test(text) ? JSON.stringify(text) : '"' + text + '"')

const canonicalArray = (array: ReadonlyArray<unknown>): string => {
  let out = "["
  for (let i = 0; i < array.length; i++) {
    if (i > 0) out += ","
    const item = canonical(array[i])
    if (item !== undefined) out += item
  }
  return out + "]"
}

/** Canonical form of a non-array object, leaving out the key `skip` when given. */
const canonicalObject = (object: object, skip: string | undefined): string => {
  const plan = planFor(Object.keys(object))
  const keys = plan.keys
  const labels = plan.labels
  const fields = object as Record<string, unknown>
  let out = "{"
  let first = true
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (key === skip) continue
    if (first) first = false
    else out += ","
    // `+ undefined` renders "undefined", exactly as haechi's template string does.
    out += labels[i]! + canonical(fields[key])
  }
  return out + "}"
}

/**
 * Canonical form of `record` with `auditIntegrity` replaced by `auditIntegrity` minus
 * `eventHash`: what haechi hashes. Walks the record in place instead of building the
 * copy haechi builds (`{ ...record, auditIntegrity: rest }`); the output is the same
 * because both see the same own enumerable keys in the same sorted order (the rest of a
 * destructuring is a plain object, so `auditIntegrity` is always walked as an object).
 */
const canonicalUnsigned = (record: object, integrity: object): string => {
  const plan = planFor(Object.keys(record))
  const keys = plan.keys
  const labels = plan.labels
  const fields = record as Record<string, unknown>
  let out = "{"
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (i > 0) out += ","
    out += labels[i]! + (key === "auditIntegrity" ? canonicalObject(integrity, "eventHash") : canonical(fields[key]))
  }
  return out + "}"
}

/**
 * Key plans: for an object's own keys (in their enumeration order), the keys sorted by
 * JS default sort and each one's label `JSON.stringify(key) + ":"`. Audit records share
 * a handful of shapes, so plans are memoized in a trie over the exact key sequence; a
 * hit skips a sort and a `JSON.stringify` per key. This only memoizes a pure function
 * of the key list, so outputs never depend on it. Bounds: past `maxPlanNodes` nodes the
 * trie is dropped and rebuilt; objects with more than `maxPlanKeys` keys bypass it; and
 * when more than a quarter of a window of lookups miss (shapes that never repeat, e.g.
 * random keys) the trie is bypassed for the next `planBypassWindows` windows, so such
 * input costs what it would cost without a cache.
 */
interface KeyPlan {
  readonly keys: ReadonlyArray<string>
  readonly labels: ReadonlyArray<string>
}

interface PlanNode {
  next: Map<string, PlanNode> | undefined
  plan: KeyPlan | undefined
}

const maxPlanNodes = 8192
const maxPlanKeys = 64
const planWindow = 1024
const planBypassWindows = 8

let planRoot: PlanNode = { next: undefined, plan: undefined }
let planNodes = 0
let windowLookups = 0
let windowMisses = 0
let bypassLeft = 0

const makePlan = (keys: ReadonlyArray<string>): KeyPlan => {
  const sorted = keys.slice().sort()
  return { keys: sorted, labels: sorted.map((key) => JSON.stringify(key) + ":") }
}

const planFor = (keys: ReadonlyArray<string>): KeyPlan => {
  if (keys.length > maxPlanKeys) return makePlan(keys)
  if (bypassLeft > 0) {
    bypassLeft--
    return makePlan(keys)
  }
  if (++windowLookups === planWindow) {
    if (windowMisses * 4 > planWindow) bypassLeft = planBypassWindows * planWindow
    windowLookups = 0
    windowMisses = 0
  }
  let node = planRoot
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    let next = node.next?.get(key)
    if (next === undefined) {
      if (planNodes >= maxPlanNodes) {
        planRoot = { next: undefined, plan: undefined }
        planNodes = 0
        windowMisses++
        return makePlan(keys)
      }
      next = { next: undefined, plan: undefined }
      planNodes++
      ;(node.next ??= new Map()).set(key, next)
    }
    node = next
  }
  if (node.plan === undefined) {
    windowMisses++
    node.plan = makePlan(keys)
  }
  return node.plan
}

const sha256Base64Url: (text: string) => string =
  typeof NodeCrypto.hash === "function"
    ? (text) => NodeCrypto.hash("sha256", text, "base64url")
    : (text) => NodeCrypto.createHash("sha256").update(text).digest("base64url")

/** The `eventHash` of `record` whose `auditIntegrity` is `integrity`: sha256 base64url of its canonical form without `eventHash`. */
export const unsignedHash = (record: object, integrity: object): string =>
  sha256Base64Url(canonicalUnsigned(record, integrity))
