/**
 * The reply-code table (src/internal/replyCodes.ts) against the Lua scripts' headers, and
 * the scripts' shape: each header names its table and lists exactly the table's codes by
 * the same names; KEYS and ARGV are read by position only in locals at the top of a script; a shared
 * part (lua/include/) is spliced in wherever a script includes it.
 */
import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { replyTables } from "../src/internal/replyCodes.js"
import { luaSources } from "../src/internal/luaSources.js"
import { COMMITS_KEPT } from "../src/internal/keys.js"

const luaDir = fileURLToPath(new URL("../lua/", import.meta.url))
const scripts = readdirSync(luaDir)
  .filter((file) => file.endsWith(".lua"))
  .map((file) => file.slice(0, -".lua".length))
  .sort()
const fileOf = (name: string) => readFileSync(`${luaDir}${name}.lua`, "utf8")

/** The leading comment lines of a script. */
const headerOf = (text: string): Array<string> => {
  const lines = text.split("\n")
  const end = lines.findIndex((line) => !line.startsWith("--"))
  return end === -1 ? lines : lines.slice(0, end)
}

const tableLine = /^-- (?:Reply|status) \((\w+) in src\/internal\/replyCodes\.ts\), by code:$/
// A code line is indented at most four spaces (a description's continuation, far more).
const codeLine = /^-- {1,4}(-?\d+|'[a-z]+') +([A-Z]\w*)\b/

/** The table a header names and the codes it lists (code -> name), or undefined when it names none. */
const codesOf = (
  header: ReadonlyArray<string>
): { readonly table: string; readonly codes: Map<string, string> } | undefined => {
  const at = header.findIndex((line) => tableLine.test(line))
  if (at === -1) return undefined
  const codes = new Map<string, string>()
  for (const line of header.slice(at + 1)) {
    const match = codeLine.exec(line)
    if (match === null) continue
    const code = match[1]!.replace(/^'(.*)'$/, "$1")
    expect(codes.has(code), `code ${code} listed twice`).toBe(false)
    codes.set(code, match[2]!)
  }
  return { table: tableLine.exec(header[at]!)![1]!, codes }
}

describe("reply codes", () => {
  it("each table's script header names the table and lists exactly its codes by the same names", () => {
    for (const [script, { codes, name }] of Object.entries(replyTables)) {
      expect(scripts, `lua/${script}.lua exists`).toContain(script)
      const listed = codesOf(headerOf(fileOf(script)))
      expect(listed, `lua/${script}.lua names its reply table`).toBeDefined()
      expect(listed!.table).toBe(name)
      const expected = new Map(Object.entries(codes).map(([codeName, code]) => [String(code), codeName]))
      expect(Object.fromEntries(listed!.codes)).toEqual(Object.fromEntries(expected))
    }
  })

  it("no script header names a table that replyCodes.ts lacks", () => {
    const named = scripts.filter((script) => codesOf(headerOf(fileOf(script))) !== undefined)
    expect(named.sort()).toEqual(Object.keys(replyTables).sort())
  })

  it("the parser sees a wrong or missing name", () => {
    const header = [
      "-- Reply (AuditAppendReply in src/internal/replyCodes.ts), by code:",
      "--   1 Committed  {1}: committed",
      "--                2 Continued is a description, not a code",
      "--   -1 Taken     taken"
    ]
    const listed = codesOf(header)!
    expect(Object.fromEntries(listed.codes)).toEqual({ "1": "Committed", "-1": "Taken" })
    expect(Object.fromEntries(listed.codes)).not.toEqual({ "1": "Committed", "-1": "Taken", "2": "Continued" })
  })
})

describe("Lua scripts", () => {
  it("every script's header says KEYS, ARGV and the reply", () => {
    for (const script of scripts) {
      const header = headerOf(fileOf(script)).join("\n")
      expect(header, script).toMatch(/^-- KEYS/m)
      expect(header, script).toMatch(/^-- ARGV/m)
      expect(header, script).toMatch(/^-- Reply/m)
    }
  })

  // (A variable-length tail, such as vault_apply's sets and deletes, is read by a computed index.)
  it("KEYS and ARGV are read by position only in locals at the top of a script", () => {
    for (const script of scripts) {
      const code = fileOf(script)
        .split("\n")
        .filter((line) => !line.trimStart().startsWith("--"))
      const firstOther = code.findIndex((line) => line.trim() !== "" && !line.startsWith("local "))
      const top = firstOther === -1 ? code : code.slice(0, firstOther)
      const rest = firstOther === -1 ? [] : code.slice(firstOther)
      expect(
        top.some((line) => /\bKEYS\[/.test(line)),
        `${script} names its KEYS at the top`
      ).toBe(true)
      expect(
        rest.filter((line) => /\b(KEYS|ARGV)\[\d/.test(line)),
        `${script} reads KEYS/ARGV past its locals`
      ).toEqual([])
    }
  })

  it("a shared part reaches every script that includes it, and the scripts no longer carry a copy", () => {
    const claim = readFileSync(`${luaDir}include/claim.lua`, "utf8").replace(/\n$/, "")
    for (const script of ["audit_append", "vault_apply"]) {
      expect(fileOf(script)).toContain('--- @include "include/claim"')
      expect(fileOf(script)).not.toContain("redis.call('DEL', lockKey)")
      const embedded = luaSources[script]!.source
      expect(embedded).toContain(claim)
      expect(embedded).not.toContain("@include")
    }
    const includers = scripts.filter((script) => luaSources[script]!.source.includes(claim))
    expect(includers).toEqual(["audit_append", "vault_apply"])
  })

  it("the lock's waiter queue is written once: every script that takes, queues for or hands on a lock includes it", () => {
    const waiters = readFileSync(`${luaDir}include/waiters.lua`, "utf8").replace(/\n$/, "")
    const users = ["audit_append", "audit_turn", "lock_acquire", "lock_release", "vault_apply"]
    for (const script of users) {
      expect(fileOf(script)).toContain('--- @include "include/waiters"')
      expect(fileOf(script)).not.toContain("redis.call('ZADD'")
      expect(fileOf(script)).not.toContain("redis.call('ZREMRANGEBYSCORE'")
    }
    expect(scripts.filter((script) => luaSources[script]!.source.includes(waiters))).toEqual(users)
    expect(readFileSync(`${luaDir}include/claim.lua`, "utf8")).not.toContain("redis.call('ZADD'")
  })

  it("the append keeps the commit ids of the last COMMITS_KEPT records, the bound the in-memory backing and the lookups use", () => {
    const kept = [...fileOf("audit_append").matchAll(/local COMMITS_KEPT, TRIM_MOST = (\d+), \d+\n/g)]
    expect(kept.map((m) => Number(m[1]))).toEqual([COMMITS_KEPT])
    expect(fileOf("audit_append")).toContain("local last, drop, at = sequence - COMMITS_KEPT, {}, floor")
    expect(headerOf(fileOf("audit_append")).join("\n")).toContain(`among the last ${COMMITS_KEPT} records`)
  })
})
