/**
 * The client a facade factory was given, checked once (see ../client.ts): anything but
 * an ioredis `Redis` or `Cluster` is `InvalidConfig`, thrown at the factory.
 */
import { InvalidConfig } from "../../Errors.js"
import { fromClient, type RedisClientShape } from "../../RedisClient.js"
import { isIoredisClient } from "../client.js"

/** `client` as the stores' connection; throws `InvalidConfig` naming `factory` when it is not an ioredis client. */
export const clientOf = (factory: string, client: unknown): RedisClientShape => {
  if (!isIoredisClient(client)) {
    throw new InvalidConfig({
      option: `${factory} client`,
      reason: "an ioredis Redis or Cluster instance is required (for example new Redis(process.env.REDIS_URL))"
    })
  }
  return fromClient(client)
}
