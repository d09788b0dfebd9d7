/**
 * The deadlines of one kind of operation, kept by one timer. Every deadline in a queue
 * has the same delay, so they pass in the order they started: one timer, armed for the
 * oldest standing, serves them all (a timer per operation cost more than the rest of a
 * fast operation's own work: Node's timer lists are rebuilt whenever one empties).
 * A deadline never passes early (a timer that fires early is re-armed), and the queue
 * holds the process open only while a deadline stands.
 */

/** One operation's deadline in a queue: `endsAt` is set by `start`, `done` by `end`. */
export interface QueuedDeadline {
  /** When it passes, on `performance.now()`'s clock. */
  endsAt: number
  /** Ended: it will not pass. */
  done: boolean
}

export class DeadlineQueue<D extends QueuedDeadline> {
  private queue: Array<D> = []
  private head = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined

  /** `passed` is called once for each deadline that passes before it ends. */
  constructor(
    readonly delay: number,
    private readonly passed: (deadline: D) => void
  ) {}

  /** Starts `deadline` now: it passes `delay` ms from now unless it ends first. */
  start(deadline: D): void {
    deadline.endsAt = performance.now() + this.delay
    if (this.head === this.queue.length) this.timer?.ref()
    this.queue.push(deadline)
    this.timer ??= setTimeout(this.fire, this.delay)
  }

  /** Ends `deadline` (once it has ended or passed, again is nothing). */
  end(deadline: D): void {
    deadline.done = true
    while (this.head < this.queue.length && this.queue[this.head]!.done) this.head += 1
    if (this.head === this.queue.length) this.empty()
    else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      // (Operations always in flight never empty the queue: the ended front goes now and then.)
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
  }

  // Nothing stands: the timer, left armed, no longer holds the process open.
  private empty(): void {
    this.queue.length = 0
    this.head = 0
    this.timer?.unref()
  }

  // Passes every deadline due (a `passed` may end or start others), then re-arms for the
  // oldest left, also when a `passed` throws (the others still pass, as on timers of their own).
  private readonly fire = (): void => {
    this.timer = undefined
    const now = performance.now()
    try {
      while (this.head < this.queue.length) {
        const first = this.queue[this.head]!
        if (!first.done && first.endsAt > now) break
        this.head += 1
        if (!first.done) this.passed(first)
      }
    } finally {
      this.rearm(now)
    }
  }

  private rearm(now: number): void {
    if (this.head === this.queue.length) return this.empty()
    clearTimeout(this.timer)
    this.timer = setTimeout(this.fire, Math.ceil(this.queue[this.head]!.endsAt - now))
  }
}
