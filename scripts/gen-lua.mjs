// Embeds every lua/*.lua script in src/internal/luaSources.ts, so the build carries the
// scripts itself (a bundle or a single-file deploy has no lua/ folder beside it). Run by
// `npm run build`, `npm run typecheck`, `npm test` and every vitest run: a script added or
// edited in lua/ reaches the build with no manual step. (Not an npm lifecycle script: a
// package whose manifest has one counts as running install scripts.) A script's shared
// parts (lua/include/, `--- @include "include/<part>"`) are spliced in first
// (scripts/luaSource.mjs), so each embedded text, and its SHA-1, is what Redis runs. The
// file is generated, never committed (see .gitignore), and rewritten only when its content
// changes.
import { createHash } from "node:crypto"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { luaSource } from "./luaSource.mjs"

const root = fileURLToPath(new URL("..", import.meta.url))
const out = `${root}src/internal/luaSources.ts`
const names = readdirSync(`${root}lua`)
  .filter((file) => file.endsWith(".lua"))
  .map((file) => file.slice(0, -".lua".length))
  .sort()

const entries = names.map((name) => {
  const source = luaSource(name)
  const sha1 = createHash("sha1").update(source).digest("hex")
  return `  ${JSON.stringify(name)}: {\n    sha1: ${JSON.stringify(sha1)},\n    source: ${JSON.stringify(source)}\n  }`
})

const text = `// Generated from lua/*.lua by scripts/gen-lua.mjs: do not edit, edit the .lua file.
/** Each script's text by file name (without .lua), its shared parts spliced in, with the SHA-1 of that text. */
export const luaSources: Readonly<Record<string, { readonly sha1: string; readonly source: string }>> = {
${entries.join(",\n")}
}
`

let current
try {
  current = readFileSync(out, "utf8")
} catch {
  current = undefined
}
if (current !== text) writeFileSync(out, text)
