/**
 * The synchronous views `f` is handed, over a pinned snapshot. Reads hand out private
 * copies from `get` (the cache's frozen records never leave through it); the mutable
 * view keeps every change aside, so only what `f` staged by the time it ends commits.
 */
import { ViewChangedAfterMutate } from "../../Errors.js"
import type { Snapshot } from "./cache.js"
import type { MutableView, ReadView, TokenRecord } from "./contract.js"
import { copyJson } from "./record.js"

export const DELETED = Symbol("deleted")
export type Staged = TokenRecord | typeof DELETED

export const readView = (snapshot: Snapshot): ReadView => ({
  get: (token) => {
    const record = snapshot.records.get(token)
    return record === undefined ? undefined : (copyJson(record) as TokenRecord)
  },
  entries: () => snapshot.pairs().slice() as Array<[string, TokenRecord]>
})

/**
 * A mutable view staging changes over a pinned snapshot. Once its `fn` has ended
 * (`close`), a `set` or `delete` throws `ViewChangedAfterMutate`: what it staged has been
 * taken already, and a later change would be silently lost.
 */
export class StagingView implements MutableView {
  readonly staged = new Map<string, Staged>()
  /** Tokens only read through `get` (copies staged but not changed by `set`/`delete`). */
  readonly touched = new Set<string>()
  private closed = false
  constructor(
    readonly snapshot: Snapshot,
    private readonly prefix: string
  ) {}
  /** `fn` has ended: from now on a change is refused. */
  close(): void {
    this.closed = true
  }
  private open(token: string): void {
    if (this.closed) throw new ViewChangedAfterMutate({ prefix: this.prefix, token })
  }
  get(token: string): TokenRecord | undefined {
    const staged = this.staged.get(token)
    if (staged !== undefined) return staged === DELETED ? undefined : staged
    const record = this.snapshot.records.get(token)
    if (record === undefined) return undefined
    // The same private copy on every get in this run, as a plain map would give.
    const copy = copyJson(record) as TokenRecord
    this.staged.set(token, copy)
    this.touched.add(token)
    return copy
  }
  set(token: string, record: TokenRecord): void {
    this.open(token)
    this.staged.set(token, record)
    this.touched.delete(token)
  }
  delete(token: string): boolean {
    this.open(token)
    const existed = this.get(token) !== undefined
    this.staged.set(token, DELETED)
    this.touched.delete(token)
    return existed
  }
  entries(): Array<[string, TokenRecord]> {
    const base = this.snapshot.pairs()
    if (this.staged.size === 0) return base.slice() as Array<[string, TokenRecord]>
    const out: Array<[string, TokenRecord]> = []
    for (const pair of base) {
      const staged = this.staged.get(pair[0])
      if (staged === undefined) out.push(pair as [string, TokenRecord])
      else if (staged !== DELETED) out.push([pair[0], staged])
    }
    for (const [token, staged] of this.staged) {
      if (staged !== DELETED && !this.snapshot.records.has(token)) out.push([token, staged])
    }
    return out
  }
}
