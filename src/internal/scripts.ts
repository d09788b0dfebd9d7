/**
 * The Lua scripts, one per file in `lua/`, registered on a client with ioredis's
 * `defineCommand`: each call goes by SHA (EVALSHA) and ioredis re-sends the text
 * only after a NOSCRIPT (a restarted or failed-over server), so a hot path never
 * ships a script's source. Every key a script touches is passed in KEYS.
 *
 * The texts are embedded in the build (`internal/luaSources.ts`, generated from `lua/`),
 * so a bundled or single-file app needs no file beside it. A registered script that is
 * missing there, or whose text no longer matches its SHA-1, is a broken build:
 * `checkScripts` reports it as `InvalidConfig` when a store is made, before any call.
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import type { Cluster, Redis } from "ioredis"
import { InvalidConfig } from "../Errors.js"
import { isClusterClient } from "./client.js"
import { luaSources } from "./luaSources.js"

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
  auditAppend: define("audit_append", 8),
  auditTurn: define("audit_turn", 3),
  readyProbe: define("ready_probe", 1),
  ratelimitConsume: define("ratelimit_consume", 1),
  ratelimitPeek: define("ratelimit_peek", 1, true),
  vaultApply: define("vault_apply", 7),
  vaultChanges: define("vault_changes", 4, true),
  vaultScan: define("vault_scan", 3, true),
  lockAcquire: define("lock_acquire", 3),
  lockRelease: define("lock_release", 3),
  lockExtend: define("lock_extend", 1),
  checkpointAdvance: define("checkpoint_advance", 2)
} as const

/** What is wrong with a script's embedded text, or undefined when it is intact. */
const damageOf = (script: ScriptDefinition): string | undefined => {
  const embedded = Object.hasOwn(luaSources, script.file) ? luaSources[script.file] : undefined
  if (embedded === undefined || typeof embedded.source !== "string") {
    return `lua/${script.file}.lua is not embedded in this build`
  }
  if (embedded.source.trim() === "" || createHash("sha1").update(embedded.source).digest("hex") !== embedded.sha1) {
    return `lua/${script.file}.lua is damaged in this build (its text does not match its SHA-1)`
  }
  return undefined
}

/** The text of a script, as embedded in the build; throws if it is missing (see `checkScripts`). */
export const scriptSource = (script: ScriptDefinition): string => {
  const damage = damageOf(script)
  if (damage !== undefined) throw new InvalidConfig({ option: "scripts", reason: damage })
  return luaSources[script.file]!.source
}

let checked: InvalidConfig | null | undefined

/**
 * Fails with `InvalidConfig` when any registered script is missing from the build or
 * damaged; checked once per process (the embedded texts never change at run time).
 */
export const checkScripts: Effect.Effect<void, InvalidConfig> = Effect.suspend(() => {
  if (checked === undefined) {
    const damage = Object.values(Scripts)
      .map(damageOf)
      .filter((d) => d !== undefined)
    checked = damage.length === 0 ? null : new InvalidConfig({ option: "scripts", reason: damage.join("; ") })
  }
  return checked === null ? Effect.void : Effect.fail(checked)
})

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

const isNoScript = (error: unknown): boolean => error instanceof Error && error.message.startsWith("NOSCRIPT")

/**
 * `callScript` for a hot path: on a standalone client, EVALSHA sent as a plain command
 * (ioredis's script command adds a command subclass and a promise per call, about half
 * again a plain command's client CPU); a NOSCRIPT reply (a restarted or failed-over
 * server) is answered by the defined command, which sends the text. A Cluster client
 * goes through `callScript` (its read-only routing is the defined command's).
 */
export const callScriptBySha = (
  client: Redis | Cluster,
  script: ScriptDefinition,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>
): Promise<unknown> => callScriptByShaThen(client, script, keys, args, passReply, passError)

const passReply = (reply: unknown): unknown => reply
const passError = (error: unknown): never => {
  throw error
}

/**
 * `callScriptBySha(...).then(onReply, onError)` in one promise step. A vault read that
 * answers in the step its reply lands in (with its steps as methods) took a tenth less
 * client CPU: 47 against 41 and 44 against 39 µs in `bench/vaultops.mjs`.
 */
export const callScriptByShaThen = <A>(
  client: Redis | Cluster,
  script: ScriptDefinition,
  keys: ReadonlyArray<string>,
  args: ReadonlyArray<string | number>,
  onReply: (reply: unknown) => A,
  onError: (error: unknown) => A
): Promise<A> => {
  if (isClusterClient(client)) return callScript(client, script, keys, args).then(onReply, onError)
  ensureScript(client, script)
  return client
    .evalsha(luaSources[script.file]!.sha1, keys.length, ...keys, ...args)
    .then(onReply, (error: unknown) =>
      isNoScript(error) ? callScript(client, script, keys, args).then(onReply, onError) : onError(error)
    )
}
