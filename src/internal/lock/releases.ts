/**
 * Release notifications over one dedicated subscriber connection (`client.duplicate()`),
 * opened on the first `open`. A listener is woken by a message on its channel and, once,
 * when its subscription becomes active (a release may have happened just before). Any
 * failure here only costs latency: the waiters' poll covers it.
 */
import * as Effect from "effect/Effect"
import type { RedisConnection } from "../../RedisClient.js"
import { timerDelay, watchedWait } from "../deadline.js"
import { onClientEnd } from "./clientLife.js"
import type { Wakeup } from "./contract.js"

/**
 * How long a channel stays subscribed after its last listener left: under contention the
 * same lock is waited for again at once, and a warm subscription saves a SUBSCRIBE and
 * an UNSUBSCRIBE per wait.
 */
const CHANNEL_LINGER_MS = 1000

const isAddressedTo = (message: string, token: string): boolean =>
  token.length > 0 && message.length > token.length && message.startsWith(token) && message[token.length] === " "

/** A fence as the scripts write it: a positive decimal integer (no sign, exponent, hex or "Infinity"). */
const FENCE = /^[1-9][0-9]{0,15}$/

/** The fence of a hand-off message ("<token> <fence>[ <payload>]") addressed to `token`, else 0. */
export const handedFence = (message: string, token: string): number => {
  if (!isAddressedTo(message, token)) return 0
  const end = message.indexOf(" ", token.length + 1)
  const text = message.slice(token.length + 1, end < 0 ? undefined : end)
  const fence = FENCE.test(text) ? Number(text) : 0
  return Number.isSafeInteger(fence) ? fence : 0
}

/**
 * What a hand-off addressed to `token` carries after its fence (a store's turn: what to
 * build on), "" when nothing; undefined when the message is no hand-off to `token`.
 */
export const handedPayload = (message: string, token: string): string | undefined => {
  if (handedFence(message, token) === 0) return undefined
  const end = message.indexOf(" ", token.length + 1)
  return end < 0 ? "" : message.slice(end + 1)
}

/**
 * When a hand-off to `token` read at `at` starts the lease, if it may be taken as ours: not
 * when it is read (a message held by a frozen link, or read by a blocked loop, past the TTL
 * would pass for a fresh lease while someone else holds the lock) but at `attemptSentAt`,
 * the send of the last attempt, which found the lock held before the release handed it on.
 * Undefined when the message is no hand-off to `token`, when its fence is at or below
 * `refusedFence` (the fence counter an attempt was refused at: the hand-off was made
 * before that refusal, so its lease was over by then, however late the message came), or
 * when that attempt is `windowMs` ago or more (`handOffWindowMs`): then the waiter
 * attempts again, and the script confirms (its own token: a fresh TTL).
 */
export const handedSince = (
  message: string | undefined,
  token: string,
  attemptSentAt: number,
  refusedFence: number,
  windowMs: number,
  at: number
): number | undefined =>
  message !== undefined && handedFence(message, token) > refusedFence && at - attemptSentAt < windowMs
    ? attemptSentAt
    : undefined

/**
 * How long after an attempt a hand-off is taken without confirming it: the renewal
 * interval, and never more than a third of the TTL (a `renewEvery` at or past the TTL
 * would let a message read after the handed lease lapsed pass for a lease).
 */
export const handOffWindowMs = (options: { readonly renewMs: number; readonly ttlMs: number }): number =>
  Math.min(options.renewMs, options.ttlMs / 3)

interface Listener {
  /** The waiter's token, whose hand-offs wake it (others' do not). */
  readonly token: string | undefined
  /** A wake-up that arrived while nobody was waiting on it; the next `next` returns it at once. */
  pending: string | undefined
  wake: ((message: string) => void) | undefined
  /** Set while it waits with `upToMs`: another waiter's hand-off came. */
  moved: (() => void) | undefined
}

interface Channel {
  readonly listeners: Set<Listener>
  ready: boolean
  /** Set while the channel has no listeners and stays subscribed a little longer. */
  linger?: ReturnType<typeof setTimeout> | undefined
}

const notify = (listener: Listener, message: string) => {
  if (message !== "" && (listener.token === undefined || handedFence(message, listener.token) === 0)) {
    listener.moved?.()
    return
  }
  const wake = listener.wake
  if (wake !== undefined) wake(message)
  else if (!listener.pending) listener.pending = message
}

/**
 * Waits for the next wake-up of `listener`, or `ms` (restarted by another waiter's
 * hand-off, up to `upToMs` in all), and calls `settle` once with the message (undefined:
 * timed out); at once if one is pending or it is closed. Returns what stops the wait
 * (after which `settle` is not called).
 */
const startWait = (
  listener: Listener,
  isOpen: () => boolean,
  ms: number,
  upToMs: number,
  settle: (message: string | undefined) => void
): (() => void) => {
  if (listener.pending !== undefined || !isOpen()) {
    const message = listener.pending ?? ""
    listener.pending = undefined
    settle(message)
    return ignore
  }
  const wait = Math.max(0, ms)
  const endsBy = performance.now() + Math.max(wait, upToMs)
  let settled = false
  const stop = () => {
    settled = true
    listener.wake = listener.moved = undefined
    clearTimeout(timer)
  }
  const once = (message: string | undefined) => {
    if (settled) return
    stop()
    settle(message)
  }
  const timedOut = () => once(undefined)
  // (Node runs a delay past 2^31 - 1 ms, Infinity too, after 1 ms: a poll that never waited.)
  let timer = setTimeout(timedOut, timerDelay(wait))
  listener.wake = once
  if (upToMs > wait) {
    listener.moved = () => {
      const left = endsBy - performance.now()
      if (left <= 0) return
      clearTimeout(timer)
      timer = setTimeout(timedOut, timerDelay(Math.min(wait, left)))
    }
  }
  return stop
}

/**
 * The next wake-up of `listener` (see `startWait`). It watches the current operation's
 * deadline like any other wait: past it, it is abandoned (a queue that keeps moving does
 * not hold the operation).
 */
const nextWakeup = (listener: Listener, isOpen: () => boolean, ms: number, upToMs: number) =>
  watchedWait<string | undefined>((settle) =>
    startWait(listener, isOpen, ms, upToMs, (message) => settle(Effect.succeed(message)))
  )

const ignore = () => {}

/** The release channels one RedisLock listens on, over its own subscriber connection. */
export class ReleaseSubscriber {
  private readonly channels = new Map<string, Channel>()
  private connection: RedisConnection | undefined
  private closed = false
  private idleTimer: ReturnType<typeof setTimeout> | undefined

  /** `idleMs`: disconnect once no channel has been listened on for this long (never if undefined). */
  constructor(
    private readonly client: RedisConnection,
    private readonly idleMs: number | undefined
  ) {}

  /** Starts listening on `name` for the waiter with `token`; `close` the result when done. */
  open(name: string, token: string | undefined): Wakeup {
    const listener: Listener = { token, pending: undefined, wake: undefined, moved: undefined }
    let open = true
    const isOpen = () => open
    this.add(name, listener)
    return {
      next: (ms, upToMs = 0) => nextWakeup(listener, isOpen, ms, upToMs),
      nextThen: (ms, upToMs, settle) => startWait(listener, isOpen, ms, upToMs, settle),
      attemptRefused: () => {
        if (listener.pending) listener.pending = ""
      },
      close: () => {
        if (!open) return
        open = false
        listener.wake = listener.moved = undefined
        this.remove(name, listener)
      }
    }
  }

  /** Whether `name` is subscribed already (a listener opened now misses nothing from here on). */
  isLive(name: string): boolean {
    return this.channels.get(name)?.ready === true
  }

  /** Disconnects for good; later waits only poll. */
  readonly close: Effect.Effect<void> = Effect.sync(() => {
    this.closed = true
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    this.channels.forEach((entry) => entry.linger !== undefined && clearTimeout(entry.linger))
    this.disconnect()
  })

  /** Stops following the parent client's end (set while a subscriber connection is open). */
  private unfollow: (() => void) | undefined

  /**
   * The parent client ended (quit, or gave up reconnecting): its subscriber goes with it,
   * not after a linger, and so do the channels (a client connected again subscribes afresh).
   */
  private readonly parentEnded = () => {
    this.channels.forEach((entry) => entry.linger !== undefined && clearTimeout(entry.linger))
    this.channels.clear()
    this.disconnect()
  }

  private disconnect() {
    const c = this.connection
    this.connection = undefined
    this.unfollow?.()
    this.unfollow = undefined
    this.channels.forEach((entry) => (entry.ready = false))
    c?.disconnect()
  }

  private connect(): RedisConnection | undefined {
    if (this.closed) return undefined
    if (this.connection === undefined) {
      const c = this.client.duplicate()
      c.on("error", () => {})
      // (A subscriber left connected after its parent quit kept reconnecting, and the
      // process alive, until its linger and idle time ran out.)
      this.unfollow = onClientEnd(this.client, this.parentEnded)
      c.on("message", (channel: string, message: string) => {
        this.channels.get(channel)?.listeners.forEach((listener) => notify(listener, message))
      })
      this.connection = c
    }
    return this.connection
  }

  private add(name: string, listener: Listener) {
    if (this.idleTimer !== undefined) {
      clearTimeout(this.idleTimer)
      this.idleTimer = undefined
    }
    const existing = this.channels.get(name)
    if (existing !== undefined) {
      if (existing.linger !== undefined) {
        clearTimeout(existing.linger)
        existing.linger = undefined
      }
      existing.listeners.add(listener)
      return
    }
    const entry: Channel = { listeners: new Set([listener]), ready: false }
    this.channels.set(name, entry)
    const c = this.connect()
    c?.subscribe(name).then(
      () => {
        if (this.channels.get(name) === entry && this.connection === c) {
          entry.ready = true
          entry.listeners.forEach((listener) => notify(listener, ""))
        }
      },
      () => {}
    )
  }

  private remove(name: string, listener: Listener) {
    const entry = this.channels.get(name)
    if (entry === undefined || !entry.listeners.delete(listener) || entry.listeners.size > 0) return
    entry.linger = setTimeout(() => {
      entry.linger = undefined
      if (entry.listeners.size > 0 || this.channels.get(name) !== entry) return
      this.channels.delete(name)
      this.connection?.unsubscribe(name).catch(() => {})
      this.idleAfterLastChannel()
    }, CHANNEL_LINGER_MS)
    entry.linger.unref?.()
  }

  private idleAfterLastChannel() {
    if (this.channels.size === 0 && this.idleMs !== undefined && this.connection !== undefined) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined
        if (this.channels.size === 0) this.disconnect()
      }, this.idleMs)
      this.idleTimer.unref?.()
    }
  }
}
