/**
 * The reply codes of the Lua scripts, by name: the one table the backings decode with and
 * the scripts' headers name (each `lua/<script>.lua` header lists its table's codes under
 * `Reply (<Table> in src/internal/replyCodes.ts)`; test/replyCodes.test.ts holds the two
 * to each other). A code's meaning, and the rest of its reply, is documented in the script.
 */

/** `audit_append`: the reply's first element. */
export const AuditAppendReply = {
  Conflict: 0,
  Committed: 1,
  AlreadyCommitted: 2,
  WrongType: 3,
  LockHeld: 4,
  HeadDisagrees: 5,
  Rewound: 6,
  NotSuccessor: 7
} as const

/** `audit_turn`: the reply's first element. */
export const AuditTurnReply = {
  Queued: 0,
  Granted: 1
} as const

/** `vault_apply`: the reply's first element. */
export const VaultApplyReply = {
  Conflict: 0,
  Committed: 1,
  AlreadyCommitted: 2,
  WrongType: 3,
  LockHeld: 4,
  Rewound: 5
} as const

/** `vault_changes`: the reply's second element (the status). */
export const VaultChangesReply = {
  Same: "same",
  Delta: "delta",
  Reload: "reload",
  Rewound: "rewound",
  WrongType: "wrongtype"
} as const

/** `checkpoint_advance`: the reply's first element. */
export const CheckpointAdvanceReply = {
  Advanced: 1,
  AtOrPast: 2,
  MissesCheckpoint: 3,
  WrongType: 4
} as const

/** `lock_extend`: the whole reply. */
export const LockExtendReply = {
  Extended: 1,
  Expired: 0,
  Taken: -1
} as const

/** `lock_release`: the whole reply. */
export const LockReleaseReply = {
  HandedOn: 2,
  Released: 1,
  NotOurs: 0
} as const

/** `ratelimit_consume`: the reply's first element. */
export const RateLimitConsumeReply = {
  Allowed: 1,
  Denied: 0,
  Corrupt: -1
} as const

/** A code of one of the tables above. */
export type ReplyCode<Table extends Readonly<Record<string, number | string>>> = Table[keyof Table]

/** Each table by the script whose replies it names (the file name in `lua/`, without `.lua`). */
export const replyTables = {
  audit_append: { name: "AuditAppendReply", codes: AuditAppendReply },
  audit_turn: { name: "AuditTurnReply", codes: AuditTurnReply },
  vault_apply: { name: "VaultApplyReply", codes: VaultApplyReply },
  vault_changes: { name: "VaultChangesReply", codes: VaultChangesReply },
  checkpoint_advance: { name: "CheckpointAdvanceReply", codes: CheckpointAdvanceReply },
  lock_extend: { name: "LockExtendReply", codes: LockExtendReply },
  lock_release: { name: "LockReleaseReply", codes: LockReleaseReply },
  ratelimit_consume: { name: "RateLimitConsumeReply", codes: RateLimitConsumeReply }
} as const
