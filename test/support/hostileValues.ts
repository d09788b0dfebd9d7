/**
 * Values JSON does not store as they are (fast-check arbitraries), shared by the JSON
 * check's unit tests and the audit integrity suite: each comes with what
 * `jsonProblem` must say about it.
 */
import fc from "fast-check"

export const loneSurrogate = fc.constantFrom("\uD800", "a\uDBFFb", "\uDC00", "x\uDFFF")

/** Values JSON does not keep as they are, each with what the check must say about it. */
export const hostile: fc.Arbitrary<{ readonly value: unknown; readonly says: RegExp }> = fc.oneof(
  fc.constant({ value: undefined, says: /^undefined value at / }),
  fc.constant({ value: () => 1, says: /^function value at / }),
  fc.constant({ value: Symbol("s"), says: /^symbol value at / }),
  fc.constant({ value: 10n, says: /^bigint value at / }),
  fc.constantFrom(NaN, Infinity, -Infinity).map((n) => ({ value: n, says: /\(JSON stores it as null\)$/ })),
  fc.date({ noInvalidDate: true }).map((d) => ({ value: d, says: /^a Date object at / })),
  fc
    .constantFrom(new String("boxed"), new Number(1), new Boolean(false))
    .map((v) => ({ value: v, says: /object at / })),
  fc.constant({ value: new Map([["a", 1]]), says: /^a Map object at / }),

  fc.constant({ value: [1, , 3], says: /^a sparse array or an array with extra properties at / }),
  fc.constant({
    value: Object.assign([1], { extra: 2 }),
    says: /^a sparse array or an array with extra properties at /
  }),
  fc.constant({ value: { toJSON: () => "x" }, says: /^an own toJSON method at / }),
  fc.constant({ value: { [Symbol("k")]: 1 }, says: /^a symbol-keyed property at / }),
  // An object literal's __proto__ sets the prototype: not a plain object.
  fc.constant({ value: { __proto__: { a: 1 } }, says: /object at / }),
  fc.constant({ value: Object.create({ inherited: 1 }), says: /object at / }),
  loneSurrogate.map((s) => ({ value: s, says: /^a lone UTF-16 surrogate in the string at / })),
  loneSurrogate.map((s) => ({ value: { [s]: 1 }, says: /^a lone UTF-16 surrogate in a key at / }))
)
