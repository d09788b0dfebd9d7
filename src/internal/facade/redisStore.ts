/**
 * What both Redis store factories of the facade do before they build a store: check the
 * client, plan the store from its options on the stores' own setup path
 * (`planRedisStore`: a bad option throws here, synchronously), and gate the first call
 * behind the server checks the layers would run when the store is made.
 */
import type * as Runtime from "effect/Runtime"
import type { RedisClientShape } from "../../RedisClient.js"
import { planRedisStore, type RedisStoreSetup, type StoreOptions } from "../../StoreOptions.js"
import { clientOf } from "./client.js"
import { startupGate, type StartupGate } from "./gate.js"
import { promiseRunner, runSyncOrThrow } from "./run.js"

export interface FacadeStoreSetup extends RedisStoreSetup, StartupGate {
  readonly redis: RedisClientShape
}

/** The checked client, the store's setup, and its start-up gate (`witness` joins the gate after the server checks). */
export const facadeStoreSetup = <K extends { readonly lock: string; readonly readyProbe: string }>(
  factory: string,
  options: StoreOptions & {
    readonly client: unknown
    readonly keyPrefix?: string
    readonly runtime?: Runtime.Runtime<never>
  },
  defaultPrefix: string,
  keysOf: (prefix: string) => K,
  witness?: (redis: RedisClientShape, prefix: string) => Parameters<typeof startupGate>[1]
): FacadeStoreSetup => {
  const given = options ?? ({} as typeof options)
  const redis = clientOf(factory, given.client)
  const setup = runSyncOrThrow(planRedisStore(redis, given, defaultPrefix, keysOf))
  const gate = startupGate(promiseRunner(given.runtime), setup.serverChecks, witness?.(redis, setup.prefix))
  return { ...setup, ...gate, redis }
}
