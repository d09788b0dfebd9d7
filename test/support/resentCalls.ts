/**
 * The fenced scripts called as the stores call them, for the tests of re-sent calls and
 * kept commit ids (test/resentCalls.test.ts, test/resentAttacks.test.ts): an audit append
 * with the kept seconds (ARGV[14]) of the caller's choosing, the other writers of a mixed
 * fleet, the kept ids read back, and a vault apply or write.
 */
import type { Redis } from "ioredis"
import { buildNextRecord } from "../../src/Chain.js"
import type { Integrity } from "../../src/haechi.js"
import { now } from "../../src/internal/deadline.js"
import { appendKeysOf } from "../../src/internal/audit/backing.js"
import { auditKeys, fenceKeyOf, vaultKeys, waitersKeyOf } from "../../src/internal/keys.js"
import { callScriptBySha, Scripts } from "../../src/internal/scripts.js"
import { LOG_BOUND, type VaultWrite } from "../../src/internal/vault/backing.js"

/**
 * One audit_append call building on `previous`, keeping ids `keptSeconds` (undefined: no
 * ARGV[14]), lock-free with `claim` (its token and TTL), else ignoring the lock; `witness`:
 * the caller's own last commit (ARGV[15..16]).
 */
export const appendCall = async (
  client: Redis,
  prefix: string,
  previous: Integrity | null,
  commitId: string,
  keptSeconds?: number,
  claim?: { readonly token: string; readonly ttl: number },
  witness?: { readonly sequence: number; readonly commitId: string }
) => {
  const record = buildNextRecord({ commitId }, previous)
  const integrity = record.auditIntegrity as Integrity
  const lockArgs = claim ? ["1", claim.token, claim.ttl, `${prefix}release`, ""] : ["", "", "", "", ""]
  const args = [
    ...[previous?.eventHash ?? "", JSON.stringify(record), JSON.stringify(integrity), integrity.eventHash],
    ...[integrity.sequence, commitId, ...lockArgs, "", ""],
    ...(keptSeconds === undefined && witness === undefined ? [] : [keptSeconds ?? 0]),
    ...(witness === undefined ? [] : [witness.sequence, witness.commitId])
  ]
  const keys = appendKeysOf(auditKeys(prefix))
  const reply = (await callScriptBySha(client, Scripts.auditAppend, keys, args)) as Array<unknown>
  return { reply, integrity }
}

/** `n` appends in a row (ids `id-1..n`), each call remembered so it can be re-sent. */
export const appendMany = async (client: Redis, prefix: string, n: number, keptSeconds?: number) => {
  let head: Integrity | null = null
  const calls: Array<{ previous: Integrity | null; id: string }> = []
  for (let i = 1; i <= n; i++) {
    const id = `id-${i}`
    calls.push({ previous: head, id })
    const { reply, integrity } = await appendCall(client, prefix, head, id, keptSeconds)
    if (reply[0] !== 1) throw new Error(`append ${i}: ${JSON.stringify(reply)}`)
    head = integrity
  }
  return { calls, head }
}

/** haechi-store-redis's append: the record, then the head keys; no commit id. */
export const referenceAppend = async (client: Redis, prefix: string, previous: Integrity | null, event: object) => {
  const record = buildNextRecord(event, previous)
  const head = record.auditIntegrity as Integrity
  await client
    .multi()
    .rpush(`${prefix}chain`, JSON.stringify(record))
    .set(`${prefix}head`, JSON.stringify(head))
    .set(`${prefix}head:hash`, head.eventHash)
    .exec()
  return head
}

/** The sequences `commits` keeps, and its floor (`commits:floor` is "<floor> <its id's stamp>"). */
export const keptIds = async (client: Redis, prefix: string) => {
  const sequences = (await client.hkeys(`${prefix}commits`)).map(Number).sort((a, b) => a - b)
  const floor = await client.get(`${prefix}commits:floor`)
  return { sequences, floor: floor === null ? undefined : Number(floor.split(" ")[0]) }
}

/** vault_apply's KEYS, in its header's order. */
const vaultApplyKeys = (prefix: string): Array<string> => {
  const keys = vaultKeys(prefix)
  return [keys.version, keys.tokens, keys.log, keys.lock, fenceKeyOf(keys.lock), waitersKeyOf(keys.lock), keys.logMark]
}

/** vault_apply called raw: one token set on `expected`, the log keeping entries `keptSeconds`. */
export const vaultApplyCall = (
  client: Redis,
  prefix: string,
  change: { readonly expected: string; readonly seen: string; readonly size: number; readonly id: string },
  keptSeconds = 0
) =>
  callScriptBySha(client, Scripts.vaultApply, vaultApplyKeys(prefix), [
    ...[change.expected, change.id, JSON.stringify([`tok-${change.id}`]), LOG_BOUND, change.seen, change.size],
    ...["", "", "", "", "", keptSeconds, 1, `tok-${change.id}`, '{"type":"t"}']
  ]) as Promise<Array<unknown>>

/** A hand-built vault write of one token (`tok-<id>`), fenced on `expected`, made now. */
export const vaultWrite = (expected: string, expectedCommit: string, size: number, commitId: string): VaultWrite => ({
  expected,
  expectedCommit,
  expectedSize: size,
  commitId,
  madeAt: now(),
  sets: [[`tok-${commitId}`, '{"type":"t"}']],
  deletes: [],
  claim: undefined
})

/** haechi-store-redis's apply: a token and the version bumped, nothing logged. */
export const referenceApply = async (client: Redis, prefix: string, token: string) => {
  await client.multi().hset(`${prefix}tokens`, token, '{"type":"t"}').incr(`${prefix}version`).exec()
}

/** `n` raw vault applies in a row (ids c0, c1, ...), each checked committed; `after(v)` runs after the v-th; the log keeping entries `keptSeconds`. */
export const vaultCommits = async (
  client: Redis,
  prefix: string,
  n: number,
  after: (v: number) => Promise<unknown> = async () => undefined,
  keptSeconds = 0
) => {
  let seen = ""
  for (let v = 0; v < n; v++) {
    const id = `c${v}`
    const change = { expected: v === 0 ? "" : String(v), seen, size: v, id }
    const reply = await vaultApplyCall(client, prefix, change, keptSeconds)
    if (reply[0] !== 1 || reply[1] !== String(v + 1)) throw new Error(`apply ${v}: ${JSON.stringify(reply)}`)
    seen = id
    await after(v)
  }
}
