/**
 * The replica's copy of the vault at one known version, and the snapshots views read.
 * It only ever moves forward along committed versions: every update is synchronous and
 * checks the version it starts from, so concurrent fibers cannot interleave one; a
 * version a running view has pinned is copied, never edited under it.
 */
import * as Effect from "effect/Effect"
import { CorruptData } from "../../Errors.js"
import type { VaultPoint, Version } from "./backing.js"
import type { TokenRecord } from "./contract.js"
import { decodeRecord } from "./record.js"

/** One version of the vault as the cache holds it. Views capture it; it is never edited while pinned. */
export interface Snapshot {
  readonly version: Version
  /** The commit logged at `version` ("" = none), and the token count: the apply's proof. */
  readonly commit: string
  readonly size: number
  readonly records: { get(token: string): TokenRecord | undefined; has(token: string): boolean }
  /** Every frozen `[token, record]` pair of this version (shared: copy before handing out). */
  readonly pairs: () => ReadonlyArray<readonly [string, TokenRecord]>
}

type Pair = readonly [string, TokenRecord]

/** A change to one token: its frozen record, or undefined when deleted. */
export type RecordChange = readonly [token: string, record: TokenRecord | undefined]

/** Where the cache moves to: the new version, its logged commit and (when known) Redis's token count there. */
export interface Target {
  readonly version: Version
  readonly commit: string
  readonly size?: number
}

/**
 * The pairs in an array (so `entries()` is one copy of it) and each token's position in
 * it, both updated in place per change.
 */
export class VaultCache {
  version: Version | undefined = undefined
  /** The commit logged at `version` ("" = none: never mutated, or a version written without logging). */
  commit = ""
  private positions = new Map<string, number>()
  private pairs: Array<Pair> = []
  private pins = 0

  constructor(private readonly tokensKey: string) {}

  private put(token: string, record: TokenRecord | undefined): void {
    const at = this.positions.get(token)
    if (record !== undefined) {
      const pair: Pair = Object.freeze([token, record] as const)
      if (at === undefined) {
        this.positions.set(token, this.pairs.length)
        this.pairs.push(pair)
      } else {
        this.pairs[at] = pair
      }
    } else if (at !== undefined) {
      const last = this.pairs.pop() as Pair
      if (at < this.pairs.length) {
        this.pairs[at] = last
        this.positions.set(last[0], at)
      }
      this.positions.delete(token)
    }
  }

  get size(): number {
    return this.positions.size
  }

  /** Where the cache stands, when it holds a version. */
  point(): VaultPoint | undefined {
    return this.version === undefined ? undefined : { version: this.version, commit: this.commit }
  }

  /** Forgets everything: the next use reloads (views already running keep their version). */
  drop(): void {
    this.version = undefined
    this.commit = ""
    this.positions = new Map()
    this.pairs = []
    this.pins = 0
  }

  /**
   * Moves the cache from `from` to `to` by records already decoded and frozen (true),
   * unless it no longer stands at `from` (true: a newer state is already there; false
   * when it was dropped). With
   * `to.size`, changes that would leave another number of tokens are not applied: false.
   */
  advance(from: Version, to: Target, changes: ReadonlyArray<RecordChange>): boolean {
    // (Dropped meanwhile: nothing newer is there, and the caller reads in full.)
    if (this.version !== from) return this.version !== undefined
    if (to.size !== undefined) {
      let size = this.positions.size
      for (const [token, record] of changes)
        size += (record !== undefined ? 1 : 0) - (this.positions.has(token) ? 1 : 0)
      if (size !== to.size) return false
    }
    if (this.pins > 0) {
      // Views still read the old version: leave it to them.
      this.positions = new Map(this.positions)
      this.pairs = this.pairs.slice()
      this.pins = 0
    }
    for (const [token, record] of changes) this.put(token, record)
    this.version = to.version
    this.commit = to.commit
    return true
  }

  /**
   * `advance` by stored JSON (null = deleted): every change is decoded first, so a corrupt
   * value changes nothing. Synchronous, for the read path that runs no fiber.
   */
  advanceByJsonNow(
    from: Version,
    to: Target,
    changes: ReadonlyArray<readonly [string, string | null]>
  ): boolean | CorruptData {
    const decoded: Array<RecordChange> = []
    for (const [token, json] of changes) {
      const record = json === null ? undefined : decodeRecord(this.tokensKey, token, json)
      if (record instanceof CorruptData) return record
      decoded.push([token, record])
    }
    return this.advance(from, to, decoded)
  }

  /** `advanceByJsonNow` as an Effect. */
  advanceByJson(
    from: Version,
    to: Target,
    changes: ReadonlyArray<readonly [string, string | null]>
  ): Effect.Effect<boolean, CorruptData> {
    return Effect.suspend(() => {
      const applied = this.advanceByJsonNow(from, to, changes)
      return applied instanceof CorruptData ? Effect.fail(applied) : Effect.succeed(applied)
    })
  }

  /**
   * A replacement built page by page: each page's JSON is parsed as it arrives and can
   * be collected at once, instead of the whole vault's text being held until the end.
   * Nothing changes in the cache until `commit`.
   */
  builder(): {
    readonly add: (entries: Iterable<readonly [string, string]>) => Effect.Effect<void, CorruptData>
    readonly commit: (at: VaultPoint) => void
  } {
    const positions = new Map<string, number>()
    const pairs: Array<Pair> = []
    return {
      add: (entries) =>
        Effect.suspend(() => {
          for (const [token, json] of entries) {
            const record = decodeRecord(this.tokensKey, token, json)
            if (record instanceof CorruptData) return Effect.fail(record)
            const at = positions.get(token)
            const pair: Pair = Object.freeze([token, record] as const)
            if (at === undefined) {
              positions.set(token, pairs.length)
              pairs.push(pair)
            } else {
              pairs[at] = pair
            }
          }
          return Effect.void
        }),
      commit: (at) => {
        this.positions = positions
        this.pairs = pairs
        this.pins = 0
        this.version = at.version
        this.commit = at.commit
      }
    }
  }

  replace(at: VaultPoint, entries: Iterable<readonly [string, string]>): Effect.Effect<void, CorruptData> {
    const next = this.builder()
    return Effect.map(next.add(entries), () => next.commit(at))
  }

  /** Pins the current version for a view; `release` unpins it. */
  pin(): { readonly snapshot: Snapshot; readonly release: () => void } {
    this.pins += 1
    const positions = this.positions
    const pairs = this.pairs
    const snapshot: Snapshot = {
      version: this.version ?? "",
      commit: this.commit,
      size: positions.size,
      records: {
        get: (token) => {
          const at = positions.get(token)
          return at === undefined ? undefined : (pairs[at] as Pair)[1]
        },
        has: (token) => positions.has(token)
      },
      pairs: () => pairs
    }
    let released = false
    return {
      snapshot,
      release: () => {
        // A copy made since the pin already freed the pinned arrays from further edits.
        if (!released && this.pairs === pairs) this.pins -= 1
        released = true
      }
    }
  }
}
