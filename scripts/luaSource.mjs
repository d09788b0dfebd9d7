// One Lua script's text as Redis runs it: lua/<name>.lua with each `--- @include "<part>"`
// line replaced by the text of lua/<part>.lua (BullMQ's convention), so a block that two
// scripts share has one source. Used by scripts/gen-lua.mjs (the embedded texts and their
// SHAs are of the assembled text) and by the tools that send a script themselves.
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const luaDir = fileURLToPath(new URL("../lua/", import.meta.url))
const includeLine = /^--- @include "([\w/]+)"[ \t]*$/gm

/** The assembled text of lua/<name>.lua; throws naming the script when a part is missing or includes itself. */
export const luaSource = (name, including = []) => {
  if (including.includes(name))
    throw new Error(`lua/${name}.lua includes itself (${[...including, name].join(" -> ")})`)
  let text
  try {
    text = readFileSync(`${luaDir}${name}.lua`, "utf8")
  } catch (error) {
    const by = including.length === 0 ? "" : ` (included by lua/${including.at(-1)}.lua)`
    throw new Error(`lua/${name}.lua cannot be read${by}: ${error.message}`)
  }
  return text.replace(includeLine, (_line, part) => luaSource(part, [...including, name]).replace(/\n$/, ""))
}
