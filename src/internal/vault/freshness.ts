/**
 * How a replica's cache is kept as fresh as Redis, and never fresher than Redis can
 * prove. Four ways, from cheapest to dearest:
 * - `loadIfUnproven`: no round trip, unless no commit id proves the cache (then a full
 *   read). Before a mutate attempt: its fenced apply proves the rest.
 * - `bringUpToDate`: one round trip asking the change log what changed since the cache's
 *   version (and proving Redis still continues it); a full read only when the log
 *   cannot say. Before a read, and after a conflict.
 * - `applyLog`: applies one change-log answer to the cache (no round trip), or says a
 *   full read is needed.
 * - `readInFull`: the whole vault again, page by page.
 * A cache Redis no longer backs (a rewind) is counted, logged and dropped (`dropRewound`);
 * a dropped cache is never taken as current: whoever finds it dropped reads in full.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { CorruptData, RedisError } from "../../Errors.js"
import * as Metrics from "../../Metrics.js"
import { spanned } from "../observe.js"
import type { Changes, VaultBacking, VaultPoint, Version } from "./backing.js"
import type { VaultCache } from "./cache.js"

/** A full read whose pages saw different versions is retried this often before one atomic read. */
const PAGED_RELOAD_TRIES = 3

const numeric = (version: Version): number => (version === "" ? 0 : Number(version))

/**
 * Whether a change-log answer for a cache that stood at `from` needs no further step:
 * nothing changed and the token count agrees (or the cache has moved on meanwhile).
 */
export const isCurrent = (cache: VaultCache, from: VaultPoint, changes: Changes): boolean =>
  changes._tag === "Same" &&
  cache.version !== undefined &&
  (cache.version !== from.version || cache.size === changes.size)

export interface VaultFreshness {
  /** Counts and logs a cache Redis no longer backs (both points named), and drops it. */
  readonly dropRewound: (seen: VaultPoint, now: Version, detail: string) => Effect.Effect<void>
  /** Applies what the change log proved (true), or says a full read is needed (false); a rewind drops the cache. */
  readonly applyLog: (from: VaultPoint, changes: Changes) => Effect.Effect<boolean, CorruptData>
  /** Reads the whole vault into the cache; `before`: where the cache stood, to tell a rewind meanwhile. */
  readonly readInFull: (before: VaultPoint | undefined) => Effect.Effect<void, RedisError | CorruptData>
  /**
   * Finishes bringing the cache from `from` to where a change-log answer says Redis is
   * (what `bringUpToDate` does with its answer): applied, or a full read.
   */
  readonly settle: (from: VaultPoint, changes: Changes) => Effect.Effect<void, RedisError | CorruptData>
  /** Brings the cache to the current version: one round trip unless a full read is needed. */
  readonly bringUpToDate: Effect.Effect<void, RedisError | CorruptData>
  /**
   * True when no commit id proves the cache (none yet, or its version was written
   * without logging, by haechi-store-redis): it is read again before each use.
   */
  readonly unproven: () => boolean
  /** A full read when no commit id proves the cache, else nothing (no round trip). */
  readonly loadIfUnproven: Effect.Effect<void, RedisError | CorruptData>
}

/** Rewinds of `cache`: reporting one (counted, logged with both points, the cache dropped) and telling one after a full read. */
const rewindsOf = (prefix: string, cache: VaultCache) => {
  const rewinds = Metrics.vaultRewinds.pipe(Metric.tagged("prefix", prefix))

  // Counted and logged only: the cache already holds what Redis holds now.
  const reportRewound = (seen: VaultPoint, now: Version, detail: string): Effect.Effect<void> =>
    Effect.zipRight(
      Metric.update(rewinds, 1),
      Effect.logWarning(
        `vault store ${prefix}: Redis no longer holds the vault this replica cached ` +
          `(cached version ${seen.version || "none"}${seen.commit === "" ? "" : `, commit ${seen.commit}`}; ` +
          `Redis now at version ${now || "none"}: ${detail}); the cache is dropped and the vault read again`
      ).pipe(
        Effect.annotateLogs({ "haechi.prefix": prefix, "haechi.cached_version": seen.version, "haechi.version": now })
      )
    )

  const dropRewound = (seen: VaultPoint, now: Version, detail: string): Effect.Effect<void> =>
    reportRewound(seen, now, detail).pipe(Effect.zipLeft(Effect.sync(() => cache.drop())))

  /**
   * A full read that lands below, or on another commit at, where the cache stood saw a
   * rewind: counted and logged, and the cache it just read kept (dropping it here would
   * hand the read that asked for it an empty vault).
   */
  const checkLanding = (before: VaultPoint | undefined): Effect.Effect<void> =>
    Effect.suspend(() => {
      const after = cache.point()
      if (before === undefined || after === undefined) return Effect.void
      if (numeric(after.version) < numeric(before.version)) {
        return reportRewound(before, after.version, "the version went down")
      }
      if (after.version === before.version && after.commit !== before.commit) {
        return reportRewound(before, after.version, `another commit at that version (${after.commit || "none logged"})`)
      }
      return Effect.void
    })

  return { dropRewound, checkLanding }
}

/** `applyLog` over `cache` (see `VaultFreshness`). */
const logApplier =
  (prefix: string, cache: VaultCache, dropRewound: VaultFreshness["dropRewound"]) =>
  (from: VaultPoint, changes: Changes): Effect.Effect<boolean, CorruptData> => {
    // (Dropped meanwhile, by a rewind another operation found and reported: nothing to answer from.)
    if (cache.version === undefined) return Effect.succeed(false)
    switch (changes._tag) {
      case "Same":
        return cache.version === from.version && cache.size !== changes.size
          ? Effect.as(
              dropRewound(from, changes.version, `Redis holds ${changes.size} tokens, the cache ${cache.size}`),
              false
            )
          : Effect.succeed(true)
      case "Reload":
        return changes.unreadable === undefined
          ? Effect.succeed(false)
          : Effect.as(
              Effect.logWarning(
                `vault store ${prefix}: the change log entry for version ${changes.unreadable} does not decode; reading the vault in full`
              ),
              false
            )
      case "Rewound":
        return Effect.as(
          dropRewound(
            from,
            changes.version,
            numeric(changes.version) < numeric(from.version)
              ? "the version went down"
              : `the commit it saw is no longer logged at version ${from.version} (${changes.commitThere || "none is"})`
          ),
          false
        )
      case "Delta":
        return Effect.flatMap(
          cache.advanceByJson(
            from.version,
            { version: changes.version, commit: changes.commit, size: changes.size },
            changes.changes
          ),
          (applied) =>
            applied
              ? Effect.succeed(true)
              : Effect.as(
                  dropRewound(
                    from,
                    changes.version,
                    `Redis holds ${changes.size} tokens, which the log does not explain`
                  ),
                  false
                )
        )
    }
  }

export const vaultFreshness = (backing: VaultBacking, cache: VaultCache): VaultFreshness => {
  const prefix = backing.keys.prefix
  const reloads = Metrics.vaultReloads.pipe(Metric.tagged("prefix", prefix))
  const { dropRewound, checkLanding } = rewindsOf(prefix, cache)
  const applyLog = logApplier(prefix, cache, dropRewound)

  // Pages never block Redis for long; if the pages saw different versions the log
  // replays what changed in between, else the read is tried again, then done atomically.
  const readInFull = (before: VaultPoint | undefined): Effect.Effect<void, RedisError | CorruptData> =>
    Effect.gen(function* () {
      yield* Metric.update(reloads, 1)
      for (let attempt = 0; attempt < PAGED_RELOAD_TRIES; attempt++) {
        const next = cache.builder()
        let first: VaultPoint | undefined
        let last: Version = ""
        let cursor = "0"
        do {
          const page = yield* backing.scan(cursor)
          first ??= { version: page.version, commit: page.commit }
          last = page.version
          cursor = page.cursor
          yield* next.add(page.entries)
        } while (cursor !== "0")
        const start = first ?? { version: "", commit: "" }
        next.commit(start)
        if (start.version === last) return yield* checkLanding(before)
        const changes = yield* backing.changes(start, "")
        if (changes._tag === "Rewound") continue
        if (yield* applyLog(start, changes)) return yield* checkLanding(before)
      }
      const all = yield* backing.snapshot
      yield* cache.replace({ version: all.version, commit: all.commit }, all.entries)
      yield* checkLanding(before)
    }).pipe(spanned("haechi.vault.reload", { "haechi.prefix": prefix }))

  /**
   * A cache that no commit id proves (none yet, or its version was written without
   * logging, by haechi-store-redis) is read again before each use, as that writer does.
   */
  const unproven = (): boolean => cache.version === undefined || (cache.version !== "" && cache.commit === "")

  const settle = (from: VaultPoint, changes: Changes): Effect.Effect<void, RedisError | CorruptData> =>
    Effect.flatMap(applyLog(from, changes), (current) =>
      current ? Effect.void : readInFull(changes._tag === "Reload" ? from : undefined)
    )

  const bringUpToDate: Effect.Effect<void, RedisError | CorruptData> = Effect.suspend(() => {
    const from = cache.point()
    if (from === undefined || unproven()) return readInFull(from)
    return Effect.flatMap(backing.changes(from, ""), (changes) =>
      // (The common answer, nothing changed and the count agrees, takes no further step.)
      isCurrent(cache, from, changes) ? Effect.void : settle(from, changes)
    )
  })

  const loadIfUnproven = Effect.suspend(() => (unproven() ? readInFull(cache.point()) : Effect.void))

  return { dropRewound, applyLog, readInFull, settle, bringUpToDate, loadIfUnproven, unproven }
}
