/**
 * How the chain is read: in pages of LRANGE, one size for every reader (the store's
 * `readChain`, `Verify`, the checkpointer, the CLI's `--page-size` default).
 */

/**
 * Default LRANGE page: large enough to keep round trips off the critical path (the next
 * page is fetched while one is hashed), small enough that one LRANGE blocks Redis for
 * well under a millisecond.
 */
export const DEFAULT_PAGE_SIZE = 1000
