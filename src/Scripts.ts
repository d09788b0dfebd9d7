/**
 * The Lua scripts, one per file in `lua/`, registered on a client with ioredis's
 * `defineCommand`: each call goes by SHA (EVALSHA) and ioredis re-sends the text
 * only after a NOSCRIPT (a restarted or failed-over server), so a hot path never
 * ships a script's source. Every key a script touches is passed in KEYS.
 */
import { readFileSync } from "node:fs"
import type { Cluster, Redis } from "ioredis"

/** A script's file, its command name on the client and how many KEYS it takes. */
export interface ScriptDefinition {
  readonly name: string
  readonly file: string
  readonly keys: number
  readonly readOnly?: boolean
}

const define = (file: string, keys: number, readOnly = false): ScriptDefinition => ({
  name: `haechi_${file}`,
  file,
  keys,
  readOnly
})

/** The scripts this package defines; locks add theirs through the same registry. */
export const Scripts = {
  auditAppend: define("audit_append", 5),
  readyProbe: define("ready_probe", 1),
  ratelimitConsume: define("ratelimit_consume", 1),
  ratelimitPeek: define("ratelimit_peek", 1, true),
  vaultApply: define("vault_apply", 4),
  vaultChanges: define("vault_changes", 3, true),
  vaultScan: define("vault_scan", 2, true),
  lockAcquire: define("lock_acquire", 3),
  lockRelease: define("lock_release", 3),
  lockExtend: define("lock_extend", 1)
} as const

const sources = new Map<string, string>()

/** The text of a script, read once from `lua/` (shipped with the package). */
export const scriptSource = (script: ScriptDefinition): string => {
  let source = sources.get(script.file)
  if (source === undefined) {
    source = readFileSync(new URL(`../lua/${script.file}.lua`, import.meta.url), "utf8")
    sources.set(script.file, source)
  }
  return source
}

const registered = new WeakMap<object, Set<string>>()

/**
 * Defines `script` on `client` the first time it is used there. A client the caller
 * owns may be shared by several stores; each script is defined on it once.
 */
const ensureScript = (client: Redis | Cluster, script: ScriptDefinition): void => {
  let names = registered.get(client)
  if (names === undefined) {
    names = new Set()
    registered.set(client, names)
  }
  if (names.has(script.name)) return
  client.defineCommand(script.name, {
    numberOfKeys: script.keys,
    lua: scriptSource(script),
    readOnly: script.readOnly ?? false
  })
  names.add(script.name)
}

type ScriptCommand = (...args: Array<string | number | Buffer>) => Promise<unknown>

/** Calls a script by SHA: `keys` then `args`. */
export const callScript = (
  client: Redis | Cluster,
  script: ScriptDefinition,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>
): Promise<unknown> => {
  ensureScript(client, script)
  const command = (client as unknown as Record<string, ScriptCommand>)[script.name] as ScriptCommand
  return command.call(client, ...keys, ...args)
}
