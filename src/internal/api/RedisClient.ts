/**
 * The documented surface of RedisClient.ts, exported by the index as `RedisClient`: the
 * service, its layers and the client helpers the README names. The reply typing
 * (`toRedisError`, `wrongType`, …) and the timer clamp stay internal.
 */
export {
  connect,
  fromClient,
  layer,
  layerConfig,
  layerFromClient,
  quitWithin,
  RedisClient,
  type RedisClientShape,
  type RedisConnection
} from "../../RedisClient.js"
