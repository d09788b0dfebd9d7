import { createHash } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Option, Schema, Stream } from "effect"
import fc from "fast-check"
import {
  type AuditIntegrity,
  type AuditRecord,
  buildNextRecord,
  canonicalize,
  chainResult,
  computeEventHash,
  describeFailure,
  initialChainState,
  isOpen,
  stepChain,
  stepJson,
  type VerifyResult,
  verifyChain,
  verifyJsonChain,
  verifyJsonRecords,
  verifyRecords
} from "../src/Chain.js"
import { AuditIntegrity as AuditIntegritySchema, AuditIntegrityFromJson } from "../src/ChainSchema.js"
import { createAuditSink, createTokenVault, type TokenMutableView, verifyAuditChain } from "./support/haechiCore.js"

// A failing property on a 200-record chain can shrink for a long time, synchronously:
// bound it so a regression reports instead of hanging the worker.
// (A run cut short without a counterexample passes: the time limit only bounds shrinking
// and slow machines, it never hides a failure found.)
fc.configureGlobal({ interruptAfterTimeLimit: 15_000 })

// ---------------------------------------------------------------------------
// An independent oracle: the contract page's rules written the naive way (the copy
// with the spread, template strings, map/join), sharing no code with src/Chain.ts.
// ---------------------------------------------------------------------------

const refCanonical = (value: unknown): string | undefined => {
  if (Array.isArray(value)) return `[${value.map((item) => refCanonical(item)).join(",")}]`
  if (value && typeof value === "object") {
    const object = value as Record<string, unknown>
    return `{${Object.keys(object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${refCanonical(object[key])}`)
      .join(",")}}`
  }
  return JSON.stringify(value)
}

const refSha = (text: string) => createHash("sha256").update(text).digest("base64url")

const refBuild = (event: object, previous: AuditIntegrity | null) => {
  const unsigned = {
    ...event,
    auditIntegrity: {
      alg: "sha256",
      canonicalization: "json-stable-v1",
      sequence: previous ? previous.sequence + 1 : 1,
      previousHash: previous?.eventHash ?? null
    }
  }
  return { ...unsigned, auditIntegrity: { ...unsigned.auditIntegrity, eventHash: refSha(refCanonical(unsigned)!) } }
}

/** haechi's verifier, over records that are objects. */
const refVerify = (records: ReadonlyArray<any>) => {
  let expectedPreviousHash: string | null = null
  let expectedSequence = 1
  let count = 0
  for (const record of records) {
    const integrity = record.auditIntegrity
    if (!integrity) return { valid: false, records: count, reason: "missing auditIntegrity" }
    if (integrity.sequence !== expectedSequence) return { valid: false, records: count, reason: "sequence mismatch" }
    if ((integrity.previousHash ?? null) !== expectedPreviousHash) {
      return { valid: false, records: count, reason: "previous hash mismatch" }
    }
    const { eventHash, ...unsignedIntegrity } = integrity
    if (eventHash !== refSha(refCanonical({ ...record, auditIntegrity: unsignedIntegrity })!)) {
      return { valid: false, records: count, reason: "event hash mismatch" }
    }
    expectedPreviousHash = eventHash
    expectedSequence += 1
    count += 1
  }
  return { valid: true, records: count, headHash: expectedPreviousHash }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const key = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 8 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 6 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "timestamp",
      "event",
      "__proto__",
      "constructor",
      "auditIntegrity",
      "10",
      "9",
      "",
      "é",
      "\u2028"
    )
  }
)

const leaf = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.string({ unit: "grapheme" }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(1e21, -0, 5e-7, 2 ** 53 + 2, 0.1 + 0.2, Number.MAX_VALUE, Number.MIN_VALUE),
  fc.boolean(),
  fc.constant(null)
)

const { json } = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    fc.array(tie("json"), { maxLength: 4 }),
    fc.dictionary(key, tie("json"), { maxKeys: 4 })
  )
}))

const event = fc.dictionary(key, json, { maxKeys: 6 })

/** Fewer runs for the properties that build up to two 200-record chains per run. */
const heavy = { fastCheck: { numRuns: 50 } }

/** 1..maxLength events: half the runs short chains, half spread up to maxLength. */
const events = (maxLength = 200) =>
  fc.oneof(fc.array(event, { minLength: 1, maxLength }), fc.array(event, { minLength: 1, maxLength, size: "max" }))

interface Chain {
  readonly records: ReadonlyArray<AuditRecord>
  /** The records as stored (one JSON text each, as in a Redis list). */
  readonly texts: ReadonlyArray<string>
}

const buildChain = (input: ReadonlyArray<object>, previous: AuditIntegrity | null = null): Chain => {
  const records: Array<AuditRecord> = []
  for (const e of input) {
    const record = buildNextRecord(e, previous)
    records.push(record)
    previous = record.auditIntegrity
  }
  return { records, texts: records.map((r) => JSON.stringify(r)) }
}

const parse = (texts: ReadonlyArray<string>): Array<any> => texts.map((t) => JSON.parse(t))

/** LRANGE-style pages of `pageSize` texts, pulled lazily; `pulls` counts pages pulled. */
const pagedTexts = (texts: ReadonlyArray<string>, pageSize: number, pulls = { count: 0 }) =>
  Stream.paginateChunkEffect(0, (start: number) =>
    Effect.sync(() => {
      pulls.count++
      const end = start + pageSize
      return [
        Chunk.fromIterable(texts.slice(start, end)),
        end < texts.length ? Option.some(end) : Option.none()
      ] as const
    })
  )

const expectFailure = (result: VerifyResult, index: number, tag?: string) => {
  expect(result.valid).toBe(false)
  if (result.valid) return
  expect(result.index).toBe(index)
  expect(result.records).toBe(index)
  expect(result.failedSequence).toBe(index + 1)
  expect(result.headSequence).toBe(index)
  if (tag !== undefined) expect(result.reason._tag).toBe(tag)
}

/** Our result reduced to haechi's `{ valid, records, reason }` words, for the oracle. */
const asHaechi = (result: VerifyResult) =>
  result.valid
    ? { valid: true, records: result.records, headHash: result.headHash }
    : { valid: false, records: result.records, reason: describeFailure(result.reason) }

// Every node of a JSON value, as a path of keys/indices (the root excluded).
type Path = ReadonlyArray<string | number>
const pathsOf = (value: unknown, prefix: Path = []): Array<Path> => {
  if (Array.isArray(value)) return value.flatMap((item, i) => [[...prefix, i], ...pathsOf(item, [...prefix, i])])
  if (value !== null && typeof value === "object") {
    return Object.keys(value).flatMap((k) => [[...prefix, k], ...pathsOf((value as any)[k], [...prefix, k])])
  }
  return []
}
const parentOf = (root: any, path: Path) => path.slice(0, -1).reduce((node, k) => node[k], root)
const getAt = (root: any, path: Path) => path.reduce((node, k) => node[k], root)

type TamperOp =
  | { readonly kind: "replace"; readonly value: unknown }
  | { readonly kind: "delete" }
  | { readonly kind: "add"; readonly key: string; readonly value: unknown }

const tamperOp: fc.Arbitrary<TamperOp> = fc.oneof(
  fc.record({ kind: fc.constant("replace" as const), value: json }),
  fc.record({ kind: fc.constant("delete" as const) }),
  fc.record({ kind: fc.constant("add" as const), key, value: json })
)

/** Applies `op` at `path` inside a record (a parsed copy); false if it changes nothing. */
const applyTamper = (record: any, path: Path, op: TamperOp): boolean => {
  const before = refCanonical(record)
  const parent = parentOf(record, path)
  const last = path[path.length - 1]!
  switch (op.kind) {
    case "replace":
      parent[last] = op.value
      break
    case "delete":
      if (Array.isArray(parent)) parent.splice(last as number, 1)
      else delete parent[last]
      break
    case "add": {
      const target = getAt(record, path)
      if (target === null || typeof target !== "object") return false
      if (Array.isArray(target)) target.push(op.value)
      else {
        if (Object.prototype.hasOwnProperty.call(target, op.key)) return false
        Object.defineProperty(target, op.key, { value: op.value, enumerable: true, writable: true, configurable: true })
      }
    }
  }
  // Compare what is stored: the JSON text of the record.
  return refCanonical(JSON.parse(JSON.stringify(record))) !== before
}

// ---------------------------------------------------------------------------
// canonicalize
// ---------------------------------------------------------------------------

describe("canonicalize", () => {
  it("sorts keys with JS default sort (UTF-16 code units), recursively", () => {
    expect(canonicalize({ b: 1, a: 2, A: 3, "10": 4, "9": 5, é: 6, "": 7 })).toBe(
      '{"":7,"10":4,"9":5,"A":3,"a":2,"b":1,"é":6}'
    )
    expect(canonicalize({ z: { y: 1, x: [{ b: 2, a: 1 }] }, a: null })).toBe(
      '{"a":null,"z":{"x":[{"a":1,"b":2}],"y":1}}'
    )
    // code-unit order: an astral char (surrogates D83D..) sorts before U+FFFF
    expect(canonicalize({ "\uffff": 1, "😀": 2 })).toBe('{"😀":2,"\uffff":1}')
  })

  it("keeps array order and nests arrays", () => {
    expect(canonicalize([3, [2, [1, []]], {}, "x"])).toBe('[3,[2,[1,[]]],{},"x"]')
    expect(canonicalize([])).toBe("[]")
    expect(canonicalize({})).toBe("{}")
  })

  it("writes strings as JSON.stringify does (unicode kept, escapes, lone surrogates)", () => {
    expect(canonicalize("héllo 😀 한글")).toBe('"héllo 😀 한글"')
    expect(canonicalize('a"b\\c\n\t\u0001\u001f')).toBe('"a\\"b\\\\c\\n\\t\\u0001\\u001f"')
    expect(canonicalize("\u2028\u2029\u007f")).toBe('"\u2028\u2029\u007f"')
    expect(canonicalize("\ud800x\udfff")).toBe('"\\ud800x\\udfff"')
    expect(canonicalize("\ud83d\ude00")).toBe('"😀"')
  })

  it("writes numbers as JSON does", () => {
    expect(canonicalize(1e21)).toBe("1e+21")
    expect(canonicalize(1e20)).toBe("100000000000000000000")
    expect(canonicalize(-0)).toBe("0")
    expect(canonicalize({ n: -0 })).toBe('{"n":0}')
    expect(canonicalize(5e-7)).toBe("5e-7")
    expect(canonicalize(0.1 + 0.2)).toBe("0.30000000000000004")
    expect(canonicalize(-1.5)).toBe("-1.5")
    expect(canonicalize([NaN, Infinity, -Infinity])).toBe("[null,null,null]")
    expect(canonicalize([true, false, null])).toBe("[true,false,null]")
  })

  it("mirrors haechi's rule for values JSON cannot represent", () => {
    // object property: haechi's template string renders the undefined from JSON.stringify
    expect(canonicalize({ a: undefined, b: 1 })).toBe('{"a":undefined,"b":1}')
    expect(canonicalize({ f: () => 1 })).toBe('{"f":undefined}')
    // array item / hole: join renders undefined as nothing
    expect(canonicalize([undefined, 1, () => 1])).toBe("[,1,]")

    expect(canonicalize([1, , 2])).toBe("[1,,2]")
    // objects are walked by keys, never by toJSON
    expect(canonicalize({ d: new Date(0) })).toBe('{"d":{}}')
    // top level: whatever JSON.stringify returns
    expect(canonicalize(undefined)).toBeUndefined()
    expect(() => canonicalize(1n as unknown)).toThrow(TypeError)
    // the consequence: such a record does not survive the JSON round-trip a store makes
    const record = buildNextRecord({ a: undefined }, null)
    expect(verifyRecords([record]).valid).toBe(true)
    expect(verifyJsonRecords([JSON.stringify(record)]).valid).toBe(false)
  })

  it.prop("equals the naive rule on any JSON-like value", [json], ([value]) => {
    expect(canonicalize(value)).toBe(refCanonical(value))
  })

  it.prop("quotes every string exactly as JSON.stringify", [fc.string({ unit: "binary" })], ([text]) => {
    expect(canonicalize(text)).toBe(JSON.stringify(text))
  })

  it.prop("is valid JSON for the same value, independent of key insertion order", [json], ([value]) => {
    const text = canonicalize(value)
    expect(canonicalize(JSON.parse(text))).toBe(text)
    const reversed = JSON.parse(text, (_k, v) =>
      v !== null && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v
    )
    expect(canonicalize(reversed)).toBe(text)
  })

  it("stays exact while shapes churn (memoized key plans reset and bypass)", () => {
    // 30k objects of never-repeating shapes overflow and bypass the plan memo; objects of
    // a recurring shape are interleaved and must come out right before, during and after.
    const wrong: Array<number> = []
    for (let i = 0; i < 30_000; i++) {
      const churn = { [`k${i}`]: i, [`j${i % 7}`]: [i], z: { [`n${i}`]: null } }
      if (canonicalize(churn) !== refCanonical(churn)) wrong.push(i)
      if (i % 1000 === 0) {
        const stable = { b: i, a: { y: [i], x: "s" }, [`k${i - 1}`]: 0 }
        if (canonicalize(stable) !== refCanonical(stable)) wrong.push(-i)
      }
    }
    expect(wrong).toEqual([])
  })

  it("handles __proto__ as an ordinary own key", () => {
    const record = JSON.parse('{"__proto__":{"x":1},"a":1}')
    expect(canonicalize(record)).toBe('{"__proto__":{"x":1},"a":1}')
  })
})

// ---------------------------------------------------------------------------
// computeEventHash / buildNextRecord / schema
// ---------------------------------------------------------------------------

describe("computeEventHash", () => {
  it("matches a hand-computed known answer", () => {
    const record = {
      event: "demo",
      n: 1,
      nested: { b: [1, "é"], a: true },
      auditIntegrity: {
        alg: "sha256",
        canonicalization: "json-stable-v1",
        sequence: 1,
        previousHash: null,
        eventHash: "ignored"
      }
    }
    // Written by hand from the rule: keys sorted, eventHash left out, no whitespace.
    const canonicalText =
      '{"auditIntegrity":{"alg":"sha256","canonicalization":"json-stable-v1",' +
      '"previousHash":null,"sequence":1},"event":"demo","n":1,"nested":{"a":true,"b":[1,"é"]}}'
    const expected = createHash("sha256").update(Buffer.from(canonicalText, "utf8")).digest("base64url")
    expect(expected).toBe("ibuQNNlLLPcyR8lBM2E6Naeh-2Ll5CWBD-v5vYRYVvk")
    expect(computeEventHash(record)).toBe(expected)
  })

  it("builds the first and next records as haechi's core does", () => {
    const first = buildNextRecord({ event: "demo" }, null)
    expect(first).toEqual({
      event: "demo",
      auditIntegrity: {
        alg: "sha256",
        canonicalization: "json-stable-v1",
        sequence: 1,
        previousHash: null,
        eventHash: computeEventHash(first)
      }
    })
    const second = buildNextRecord({ event: "next", auditIntegrity: "overwritten" }, first.auditIntegrity)
    expect(second.auditIntegrity.sequence).toBe(2)
    expect(second.auditIntegrity.previousHash).toBe(first.auditIntegrity.eventHash)
    expect(second.auditIntegrity.eventHash).toMatch(/^[A-Za-z0-9_-]{43}$/)
  })

  it.prop("buildNextRecord is byte-identical to the naive builder", [events(20)], ([input]) => {
    let ours: AuditIntegrity | null = null
    let theirs: AuditIntegrity | null = null
    for (const e of input) {
      const a = buildNextRecord(e, ours)
      const b = refBuild(e, theirs)
      expect(JSON.stringify(a)).toBe(JSON.stringify(b))
      ours = a.auditIntegrity
      theirs = b.auditIntegrity as AuditIntegrity
    }
  })

  it("decodes stored heads with the AuditIntegrity schema", () => {
    const head = buildNextRecord({ e: 1 }, null).auditIntegrity
    expect(Schema.decodeUnknownSync(AuditIntegritySchema)(head)).toEqual(head)
    expect(Schema.decodeUnknownSync(AuditIntegrityFromJson)(JSON.stringify(head))).toEqual(head)
    const decode = Schema.decodeUnknownEither(AuditIntegritySchema)
    expect(Either.isLeft(decode({ ...head, sequence: 0 }))).toBe(true)
    expect(Either.isLeft(decode({ ...head, sequence: 1.5 }))).toBe(true)
    expect(Either.isLeft(decode({ ...head, alg: "sha1" }))).toBe(true)
    expect(Either.isLeft(decode({ ...head, eventHash: "short" }))).toBe(true)
    expect(Either.isLeft(decode({ ...head, previousHash: undefined }))).toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(AuditIntegrityFromJson)("{not json"))).toBe(true)
  })
})

// ---------------------------------------------------------------------------
// Verification: untampered chains
// ---------------------------------------------------------------------------

describe("verification of untampered chains", () => {
  it.prop(
    "every generated chain verifies, pure and via the oracle",
    [events()],
    ([input]) => {
      const { records, texts } = buildChain(input)
      const last = records[records.length - 1]!.auditIntegrity
      const expected = { valid: true, records: records.length, headHash: last.eventHash, headSequence: records.length }
      expect(verifyJsonRecords(texts)).toEqual(expected)
      expect(verifyRecords(parse(texts))).toEqual(expected)
      expect(verifyRecords(records)).toEqual(expected)
      expect(refVerify(parse(texts))).toEqual({ valid: true, records: records.length, headHash: last.eventHash })
      expect(verifyAuditChain(parse(texts))).toEqual({ valid: true, records: records.length, headHash: last.eventHash })
    },
    { fastCheck: { numRuns: 60 } }
  )

  it.effect.prop(
    "every generated chain verifies via the Stream API in pages",
    [events(), fc.integer({ min: 1, max: 64 })],
    ([input, pageSize]) =>
      Effect.gen(function* () {
        const { records, texts } = buildChain(input)
        const expected = verifyJsonRecords(texts)
        expect(expected.valid).toBe(true)
        expect(yield* verifyJsonChain(pagedTexts(texts, pageSize))).toEqual(expected)
        const parsed = Stream.fromIterable(parse(texts)).pipe(Stream.rechunk(pageSize))
        expect(yield* verifyChain(parsed)).toEqual(expected)
        expect(expected).toMatchObject({ records: records.length })
      }),
    { fastCheck: { numRuns: 60 } }
  )

  it("the empty chain is valid with a null head", () => {
    expect(verifyJsonRecords([])).toEqual({ valid: true, records: 0, headHash: null, headSequence: 0 })
    expect(Effect.runSync(verifyChain(Stream.empty))).toEqual({
      valid: true,
      records: 0,
      headHash: null,
      headSequence: 0
    })
  })
})

// ---------------------------------------------------------------------------
// Verification: tampering is caught at the right sequence
// ---------------------------------------------------------------------------

describe("tampering is caught at the right sequence", () => {
  it.prop(
    "changing, deleting or adding any field of any record (nested and auditIntegrity included)",
    [events(60), fc.nat(), fc.nat(), tamperOp],
    ([input, at, pick, op]) => {
      const { texts } = buildChain(input)
      const i = at % texts.length
      const records = parse(texts)
      const paths = pathsOf(records[i])
      const path = paths[pick % paths.length]!
      fc.pre(applyTamper(records[i], path, op))
      const tampered = records.map((r) => JSON.stringify(r))
      const result = verifyJsonRecords(tampered)
      expectFailure(result, i)
      expect(asHaechi(result)).toEqual(refVerify(parse(tampered)))
    },
    { fastCheck: { numRuns: 250 } }
  )

  const integrityField = (field: keyof AuditIntegrity, value: unknown, tag: string) =>
    it.prop(`changing auditIntegrity.${field} fails with ${tag}`, [events(40), fc.nat()], ([input, at]) => {
      const { texts } = buildChain(input)
      const i = at % texts.length
      const records = parse(texts)
      fc.pre(records[i].auditIntegrity[field] !== value)
      records[i].auditIntegrity[field] = value
      const result = verifyJsonRecords(records.map((r) => JSON.stringify(r)))
      expectFailure(result, i, tag)
    })

  integrityField("sequence", 0, "SequenceMismatch")
  integrityField("sequence", 1, "SequenceMismatch")
  integrityField("previousHash", "A".repeat(43), "PreviousHashMismatch")
  integrityField("eventHash", "B".repeat(43), "EventHashMismatch")
  integrityField("alg", "sha512", "EventHashMismatch")
  integrityField("canonicalization", "json-stable-v2", "EventHashMismatch")

  it.prop(
    "previousHash set to null past the first record",
    [events(40).filter((e) => e.length > 1), fc.nat()],
    ([input, at]) => {
      const { texts } = buildChain(input)
      const i = 1 + (at % (texts.length - 1))
      const records = parse(texts)
      records[i].auditIntegrity.previousHash = null
      expectFailure(verifyJsonRecords(records.map((r) => JSON.stringify(r))), i, "PreviousHashMismatch")
    }
  )

  it.prop(
    "dropping a record",
    [events(), fc.nat()],
    ([input, at]) => {
      const { texts } = buildChain(input)
      const j = at % texts.length
      const dropped = texts.filter((_, k) => k !== j)
      const result = verifyJsonRecords(dropped)
      if (j === texts.length - 1) {
        // Dropping the tail is a shorter valid chain: only a trusted head catches it.
        expect(result).toMatchObject({ valid: true, headSequence: texts.length - 1 })
      } else {
        expectFailure(result, j, "SequenceMismatch")
        expect(result.valid === false && result.reason).toEqual(
          expect.objectContaining({ expected: j + 1, actual: j + 2 })
        )
      }
    },
    heavy
  )

  it.prop(
    "swapping two records",
    [events().filter((e) => e.length > 1), fc.nat(), fc.nat()],
    ([input, a, b]) => {
      const { texts } = buildChain(input)
      const j = a % texts.length
      const k = b % texts.length
      fc.pre(j !== k)
      const [lo, hi] = j < k ? [j, k] : [k, j]
      const swapped = [...texts]
      swapped[lo] = texts[hi]!
      swapped[hi] = texts[lo]!
      const result = verifyJsonRecords(swapped)
      expectFailure(result, lo, "SequenceMismatch")
      expect(result.valid === false && result.reason).toEqual(
        expect.objectContaining({ expected: lo + 1, actual: hi + 1 })
      )
    },
    heavy
  )

  it.prop(
    "duplicating a record",
    [events(), fc.nat()],
    ([input, at]) => {
      const { texts } = buildChain(input)
      const j = at % texts.length
      const duplicated = [...texts.slice(0, j + 1), texts[j]!, ...texts.slice(j + 1)]
      const result = verifyJsonRecords(duplicated)
      expectFailure(result, j + 1, "SequenceMismatch")
      expect(result.valid === false && result.reason).toEqual(
        expect.objectContaining({ expected: j + 2, actual: j + 1 })
      )
    },
    heavy
  )

  it.prop(
    "truncating then appending a foreign chain's records",
    [events().filter((e) => e.length > 1), events(), fc.nat()],
    ([input, foreignInput, at]) => {
      const { texts } = buildChain(input)
      const t = 1 + (at % (texts.length - 1))
      // The foreign chain has different content, so its hashes differ from ours.
      const foreign = buildChain([
        ...input.slice(0, t).map((e) => ({ ...e, __foreign_marker__: true })),
        ...foreignInput
      ])
      const spliced = [...texts.slice(0, t), ...foreign.texts.slice(t)]
      const result = verifyJsonRecords(spliced)
      expectFailure(result, t, "PreviousHashMismatch")
    },
    heavy
  )

  it.prop(
    "re-hashing a changed record moves the failure to the next record",
    [events().filter((e) => e.length > 1), fc.nat(), json],
    ([input, at, value]) => {
      const { texts } = buildChain(input)
      const j = at % (texts.length - 1)
      const records = parse(texts)
      records[j]["__injected_marker__"] = value
      records[j].auditIntegrity.eventHash = computeEventHash(records[j])
      const result = verifyJsonRecords(records.map((r) => JSON.stringify(r)))
      expectFailure(result, j + 1, "PreviousHashMismatch")
    },
    heavy
  )

  it.prop(
    "stored text that is not JSON, or not an object",
    [
      events(50),
      fc.nat(),
      fc.constantFrom(
        "{not json",
        "",
        '{"a":1',
        "undefined",
        "5",
        "null",
        "[]",
        '"s"',
        '{"a":1}',
        '{"auditIntegrity":0}'
      )
    ],
    ([input, at, bad]) => {
      const { texts } = buildChain(input)
      const j = at % texts.length
      const corrupted = texts.map((t, k) => (k === j ? bad : t))
      const tag =
        bad.startsWith('{"a":1}') || bad.includes("auditIntegrity")
          ? "MissingAuditIntegrity"
          : ["5", "null", "[]", '"s"'].includes(bad)
            ? "NotAnObject"
            : "Unparseable"
      expectFailure(verifyJsonRecords(corrupted), j, tag)
    }
  )

  it("values that cannot be canonicalized fail instead of throwing", () => {
    const [first] = buildChain([{ e: 1 }]).records
    expectFailure(verifyRecords([{ ...first!, big: 1n }]), 0, "Uncanonicalizable")
    const cyclic: any = { ...first! }
    cyclic.self = cyclic
    expectFailure(verifyRecords([cyclic]), 0, "Uncanonicalizable")
    expectFailure(verifyRecords([null]), 0, "NotAnObject")
    expectFailure(Effect.runSync(verifyJsonChain(Stream.make("{", "x"))), 0, "Unparseable")
  })

  it.effect.prop(
    "the Stream API agrees with the pure fold on tampered chains, and stops pulling at the failure",
    [events(), fc.nat(), fc.integer({ min: 1, max: 16 })],
    ([input, at, pageSize]) =>
      Effect.gen(function* () {
        const { texts } = buildChain(input)
        const j = at % texts.length
        const records = parse(texts)
        records[j].auditIntegrity.sequence += 10
        const tampered = records.map((r) => JSON.stringify(r))
        const expected = verifyJsonRecords(tampered)
        expectFailure(expected, j, "SequenceMismatch")
        const pulls = { count: 0 }
        expect(yield* verifyJsonChain(pagedTexts(tampered, pageSize, pulls))).toEqual(expected)
        // never pulls a page past the one holding the failing record
        expect(pulls.count).toBeLessThanOrEqual(Math.floor(j / pageSize) + 1)
      }),
    heavy
  )
})

// ---------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------

describe("verification from a trusted checkpoint", () => {
  it.effect.prop(
    "accepts the untampered suffix after any checkpoint",
    [events(), fc.nat(), fc.integer({ min: 1, max: 32 })],
    ([input, at, pageSize]) =>
      Effect.gen(function* () {
        const { records, texts } = buildChain(input)
        const c = at % (texts.length + 1)
        const from = c === 0 ? { sequence: 0, eventHash: null } : records[c - 1]!.auditIntegrity
        const expected = {
          valid: true,
          records: texts.length - c,
          headHash: records[texts.length - 1]!.auditIntegrity.eventHash,
          headSequence: texts.length
        }
        expect(verifyJsonRecords(texts.slice(c), { from })).toEqual(expected)
        expect(yield* verifyJsonChain(pagedTexts(texts.slice(c), pageSize), { from })).toEqual(expected)
      }),
    heavy
  )

  it.prop(
    "rejects a suffix whose first previousHash is not the checkpoint's hash",
    [events().filter((e) => e.length > 1), fc.nat()],
    ([input, at]) => {
      const { records, texts } = buildChain(input)
      const c = 1 + (at % (texts.length - 1))
      const other = buildChain(input.slice(0, c).map((e) => ({ ...e, __other_marker__: 1 })))
      // the right suffix against a wrong checkpoint hash
      const wrongFrom = { sequence: c, eventHash: other.records[c - 1]!.auditIntegrity.eventHash }
      const result = verifyJsonRecords(texts.slice(c), { from: wrongFrom })
      expect(result).toMatchObject({ valid: false, index: 0, records: 0, failedSequence: c + 1, headSequence: c })
      expect(result.valid === false && result.reason._tag).toBe("PreviousHashMismatch")
      // a suffix whose first record was re-linked, against the right checkpoint
      const relinked = parse(texts.slice(c))
      relinked[0].auditIntegrity.previousHash = wrongFrom.eventHash
      relinked[0].auditIntegrity.eventHash = computeEventHash(relinked[0])
      const right = records[c - 1]!.auditIntegrity
      const result2 = verifyRecords(relinked, { from: right })
      expect(result2).toMatchObject({ valid: false, index: 0, failedSequence: c + 1, headHash: right.eventHash })
      expect(result2.valid === false && result2.reason._tag).toBe("PreviousHashMismatch")
      // a suffix that starts at the wrong sequence
      const result3 = verifyJsonRecords(texts.slice(c - 1), { from: right })
      expect(result3.valid === false && result3.reason._tag).toBe("SequenceMismatch")
    }
  )

  it("rejects malformed checkpoints as programming errors", () => {
    expect(() => verifyRecords([], { from: { sequence: -1, eventHash: "x" } })).toThrow(RangeError)
    expect(() => verifyRecords([], { from: { sequence: 1.5, eventHash: "x" } })).toThrow(RangeError)
    expect(() => verifyRecords([], { from: { sequence: 2, eventHash: null } })).toThrow(RangeError)
    expect(() => verifyRecords([], { from: { sequence: 0, eventHash: "x" } })).toThrow(RangeError)
  })

  it("the fold state can be driven record by record (incremental verification)", () => {
    const { texts } = buildChain([{ a: 1 }, { b: 2 }, { c: 3 }])
    let state = initialChainState()
    for (const text of texts) state = stepJson(state, text)
    expect(chainResult(state)).toEqual(verifyJsonRecords(texts))
    // a closed state absorbs every further record, valid or not
    const closed = stepJson(initialChainState(), texts[1]!)
    expect(isOpen(closed)).toBe(false)
    expect(stepJson(closed, texts[0]!)).toBe(closed)
    expect(stepChain(closed, JSON.parse(texts[0]!))).toBe(closed)
    expect(stepJson(closed, "{")).toBe(closed)
  })
})

// ---------------------------------------------------------------------------
// The haechi core test double drives stores as the contract says
// ---------------------------------------------------------------------------

describe("support/haechiCore", () => {
  /** A minimal single-process store honoring the contracts (for checking the double). */
  const memoryAuditStore = () => {
    const chain: Array<string> = []
    let lock: Promise<unknown> = Promise.resolve()
    return {
      chain,
      transaction: <A>(fn: (tx: any) => Promise<A>): Promise<A> => {
        const run = lock.then(() =>
          fn({
            readLastIntegrity: async () =>
              chain.length === 0 ? null : JSON.parse(chain[chain.length - 1]!).auditIntegrity,
            persist: async (record: AuditRecord) => {
              chain.push(JSON.stringify(record))
            }
          })
        )
        lock = run.catch(() => {})
        return run
      }
    }
  }

  it.effect("several sinks on one store build one valid chain", () =>
    Effect.gen(function* () {
      const store = memoryAuditStore()
      const sinks = [createAuditSink({ store }), createAuditSink({ store }), createAuditSink({ store })]
      const written = yield* Effect.promise(() =>
        Promise.all(Array.from({ length: 60 }, (_, i) => sinks[i % 3]!.record({ event: "e", i, nested: { i: [i] } })))
      )
      expect(written.map((r) => r.auditIntegrity.sequence).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 60 }, (_, i) => i + 1)
      )
      expect(verifyAuditChain(parse(store.chain))).toMatchObject({ valid: true, records: 60 })
      expect(yield* verifyJsonChain(pagedTexts(store.chain, 7))).toMatchObject({ valid: true, records: 60 })
    })
  )

  it("verifyAuditChain reports haechi's words", () => {
    const { records } = buildChain([{ a: 1 }, { b: 2 }])
    expect(verifyAuditChain([records[1]])).toEqual({ valid: false, records: 0, reason: "sequence mismatch" })
    expect(verifyAuditChain([records[0], { x: 1 }])).toEqual({
      valid: false,
      records: 1,
      reason: "missing auditIntegrity"
    })
  })

  it("the token vault round-trips through a snapshot store", async () => {
    let committed = new Map<string, string>()
    const calls: Array<string> = []
    const view = (snapshot: Map<string, string>, writable: boolean): TokenMutableView => ({
      get: (t) => {
        calls.push("get")
        const text = snapshot.get(t)
        return text === undefined ? undefined : JSON.parse(text)
      },
      entries: () => {
        calls.push("entries")
        return [...snapshot].map(([t, text]) => [t, JSON.parse(text)])
      },
      set: (t, r) => {
        if (!writable) throw new Error("read view")
        snapshot.set(t, JSON.stringify(r))
      },
      delete: (t) => {
        if (!writable) throw new Error("read view")
        snapshot.delete(t)
      }
    })
    const store = {
      mutate: async <A>(fn: (v: TokenMutableView) => Promise<A>) => {
        const draft = new Map(committed)
        const result = await fn(view(draft, true))
        committed = draft
        return result
      },
      read: async <A>(fn: (v: any) => A | Promise<A>) => fn(view(new Map(committed), false))
    }
    let clock = Date.UTC(2026, 0, 1)
    const vault = createTokenVault({ store, now: () => clock })
    const a = await vault.tokenize("alice@example.com", { type: "email", ttlMs: 1000 })
    expect(a.token).toMatch(/^tok_email_[0-9a-f]{16}$/)
    expect(await vault.reveal(a.token)).toMatchObject({ plaintext: "alice@example.com", type: "email" })
    clock += 500
    const again = await vault.tokenize("alice@example.com", { type: "email", ttlMs: 1000 })
    expect(again).toEqual({ token: a.token, type: "email", reused: true })
    const b = await vault.tokenize("010-1234", { type: "phone", ttlMs: 100 })
    expect((await vault.exportMetadata()).map((m) => m.token).sort()).toEqual([a.token, b.token].sort())
    expect(await vault.exportMetadata({ type: "phone" })).toHaveLength(1)
    clock += 700 // alice extended to +1500, phone expired
    expect(await vault.detokenize([a.token, b.token, "tok_x_00"])).toEqual(new Map([[a.token, "alice@example.com"]]))
    await expect(vault.reveal(b.token)).rejects.toThrow("Token expired")
    expect(await vault.purgeExpired()).toEqual({ purged: 1 })
    expect(await vault.purge(a.token)).toEqual({ token: a.token, purged: true })
    await expect(vault.reveal(a.token)).rejects.toThrow("Unknown token")
    expect(committed.size).toBe(0)
    expect(calls).toContain("entries")
  })
})
