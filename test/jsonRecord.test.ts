/**
 * The one JSON-faithfulness check (src/internal/jsonRecord.ts), against an oracle: a value
 * passes exactly when JSON gives it back as it was (same prototypes, no holes, no dropped
 * or converted values), its strings are well-formed, and it nests less than MAX_JSON_DEPTH;
 * a refusal names the path of the first offending value.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  isJsonObject,
  isPlainObject,
  isWellFormed,
  jsonProblem,
  MAX_JSON_DEPTH,
  NotSerializable,
  stringifyOrProblem
} from "../src/internal/jsonRecord.js"
import { hostile, loneSurrogate } from "./support/hostileValues.js"

/** A null-prototype object and `{}` are the same JSON object; any other prototype must match. */
const samePrototype = (a: object, b: object): boolean => {
  const plain = (p: unknown) => p === Object.prototype || p === null
  const pa = Object.getPrototypeOf(a)
  const pb = Object.getPrototypeOf(b)
  return pa === pb || (plain(pa) && plain(pb))
}

/** Strict structural equality: same kinds, prototypes, own keys, array holes and numbers (=== on numbers). */
const same = (a: unknown, b: unknown): boolean => {
  if (typeof a !== typeof b) return false
  if (typeof a !== "object" || a === null || b === null) return a === b
  if (!samePrototype(a, b as object)) return false
  if (Array.isArray(a)) {
    const other = b as Array<unknown>
    if (a.length !== other.length) return false
    for (let i = 0; i < a.length; i++) if (i in a !== i in other || !same(a[i], other[i])) return false
    return Object.keys(a).length === Object.keys(other).length
  }
  if (Object.getOwnPropertySymbols(a).length > 0 || Object.getOwnPropertySymbols(b as object).length > 0) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b as object)
  if (ka.length !== kb.length) return false
  return ka.every((k, i) => k === kb[i] && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

/** The oracle: does JSON give `value` back as it was? */
const roundTrips = (value: unknown): boolean => {
  try {
    const json = JSON.stringify(value)
    return json !== undefined && same(JSON.parse(json), value)
  } catch {
    return false
  }
}

const allStringsWellFormed = (value: unknown): boolean => {
  if (typeof value === "string") return isWellFormed(value)
  if (typeof value !== "object" || value === null) return true
  return Object.keys(value).every((k) => isWellFormed(k) && allStringsWellFormed((value as Record<string, unknown>)[k]))
}

const depthOf = (value: unknown): number =>
  typeof value !== "object" || value === null
    ? 0
    : 1 + Math.max(0, ...Object.keys(value).map((k) => depthOf((value as Record<string, unknown>)[k])))

/** A path of object keys (some not identifiers) and array indexes into a JSON value. */
const step = fc.oneof(
  fc.constantFrom("a", "headers", "x-y", "with space", "__proto__", "0").map((k) => ({ key: k })),
  fc.nat({ max: 2 }).map((i) => ({ index: i }))
)

const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/
const pathText = (steps: ReadonlyArray<{ key?: string; index?: number }>): string =>
  steps.reduce(
    (path, s) =>
      s.key === undefined
        ? `${path}[${s.index}]`
        : identifier.test(s.key)
          ? path === ""
            ? s.key
            : `${path}.${s.key}`
          : `${path}[${JSON.stringify(s.key)}]`,
    ""
  )

/** `leaf` placed at `steps` inside fresh plain containers (JSON.parse makes "__proto__" an own key). */
const placeAt = (steps: ReadonlyArray<{ key?: string; index?: number }>, leaf: unknown): unknown => {
  let value = leaf
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i]!
    if (s.key === undefined) {
      const array: Array<unknown> = Array.from({ length: s.index! + 1 }, () => null)
      array[s.index!] = value
      value = array
    } else {
      const object = JSON.parse(`{${JSON.stringify(s.key)}:null}`) as Record<string, unknown>
      object[s.key] = value
      value = object
    }
  }
  return value
}

describe("jsonProblem", () => {
  it("passes every JSON value JSON.parse can make, which round-trip unchanged", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        expect(jsonProblem(value)).toBeUndefined()
        expect(roundTrips(value)).toBe(true)
      }),
      { numRuns: 500 }
    )
  })

  it("agrees with the oracle on any mix of JSON and hostile values: passes only what round-trips, is well-formed and shallow", () => {
    const mixed = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: "small" },
        fc.jsonValue({ maxDepth: 2 }),
        hostile.map((h) => h.value),
        fc.array(tie("value"), { maxLength: 3 }),
        fc.dictionary(fc.oneof(fc.string(), fc.constant("__proto__"), loneSurrogate), tie("value"), { maxKeys: 3 })
      )
    })).value
    fc.assert(
      fc.property(mixed, (value) => {
        const problem = jsonProblem(value)
        const faithful = roundTrips(value) && allStringsWellFormed(value) && depthOf(value) <= MAX_JSON_DEPTH
        expect({ problem, faithful }).toEqual(
          faithful ? { problem: undefined, faithful } : { problem: expect.any(String), faithful }
        )
      }),
      { numRuns: 1000 }
    )
  })

  it("names the path of a hostile value placed anywhere in a record", () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 5 }), hostile, (steps, { value, says }) => {
        const problem = jsonProblem(placeAt(steps, value))
        expect(problem).toMatch(says)
        expect(problem!.endsWith(pathText(steps)) || problem!.includes(`at ${pathText(steps)} (`)).toBe(true)
      }),
      { numRuns: 500 }
    )
  })

  it('names the field, for example "undefined value at request.headers.x"', () => {
    expect(jsonProblem({ request: { headers: { x: undefined } } })).toBe("undefined value at request.headers.x")
    expect(jsonProblem({ list: [1, 2, new Date(0)] })).toMatch(/^a Date object at list\[2\]/)
    expect(jsonProblem(undefined)).toBe("undefined value at the top level")
  })

  it("refuses cycles and nesting deeper than MAX_JSON_DEPTH, but not shared (acyclic) references", () => {
    const cyclic: Record<string, unknown> = { a: { b: {} } }
    ;(cyclic.a as Record<string, Record<string, unknown>>).b!.back = cyclic
    expect(jsonProblem(cyclic)).toBe("a circular reference at a.b.back")
    const shared = { x: 1 }
    expect(jsonProblem({ one: shared, two: [shared, shared] })).toBeUndefined()
    let deep: unknown = 1
    for (let i = 0; i < MAX_JSON_DEPTH; i++) deep = [deep]
    expect(jsonProblem(deep)).toBeUndefined()
    expect(jsonProblem([deep])).toMatch(new RegExp(`^nesting deeper than ${MAX_JSON_DEPTH} levels at `))
    let veryDeep: unknown = {}
    for (let i = 0; i < 100_000; i++) veryDeep = { d: veryDeep }
    expect(jsonProblem(veryDeep)).toMatch(/^nesting deeper than/)
  })

  it("keeps a JSON-made __proto__ key (an own property JSON round-trips) and 1 MB strings", () => {
    const own = JSON.parse('{"__proto__":{"polluted":true},"ok":1}') as object
    expect(jsonProblem(own)).toBeUndefined()
    expect(roundTrips(own)).toBe(true)
    expect(jsonProblem({ big: "x".repeat(1 << 20) })).toBeUndefined()
    expect(jsonProblem({ big: "x".repeat(1 << 20) + "\uD800" })).toBe("a lone UTF-16 surrogate in the string at big")
  })
})

describe("isPlainObject and isWellFormed", () => {
  it("isPlainObject: {} and Object.create(null) only", () => {
    expect(isPlainObject({})).toBe(true)
    expect(isPlainObject(Object.create(null))).toBe(true)
    for (const value of [
      [],
      new Date(),
      new String("s"),
      new Map(),
      null,
      "s",
      1,
      Object.create({}),
      new (class A {})()
    ]) {
      expect(isPlainObject(value)).toBe(false)
    }
  })

  it("isWellFormed: exactly the strings that survive a UTF-8 round trip", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.fullUnicodeString({ maxLength: 3 }), loneSurrogate, fc.constantFrom("\uD800\uDC00"))),
        (parts) => {
          const text = parts.join("")
          const expected = Buffer.from(text, "utf8").toString("utf8") === text
          expect(isWellFormed(text)).toBe(expected)
        }
      ),
      { numRuns: 500 }
    )
  })
})

describe("isJsonObject and stringifyOrProblem", () => {
  it("isJsonObject: what JSON.parse gives back as an object, nothing else it can give", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const parsed = JSON.parse(JSON.stringify(value)) as unknown
        const expected = parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
        expect(isJsonObject(parsed)).toBe(expected)
      }),
      { numRuns: 300 }
    )
    expect(isJsonObject({})).toBe(true)
    for (const value of [null, [], [1], "{}", 1, true, undefined]) expect(isJsonObject(value)).toBe(false)
  })

  it("stringifyOrProblem: JSON.stringify's text, or what it threw, worded once", () => {
    expect(stringifyOrProblem({ a: [1, "b"] })).toBe('{"a":[1,"b"]}')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    for (const value of [
      { n: 1n },
      cyclic,
      {
        toJSON: () => {
          throw new Error("no thanks")
        }
      }
    ]) {
      const problem = stringifyOrProblem(value)
      expect(problem).toBeInstanceOf(NotSerializable)
      expect((problem as NotSerializable).reason).toMatch(/^not JSON-serializable \(.+\)$/s)
    }
    expect(
      (
        stringifyOrProblem({
          toJSON: () => {
            throw new Error("no thanks")
          }
        }) as NotSerializable
      ).reason
    ).toBe("not JSON-serializable (no thanks)")
  })
})
