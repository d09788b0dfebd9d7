/**
 * The one timer that keeps an operation's deadlines (`DeadlineQueue`), on real time: a
 * deadline passes once, never early and never after it ended; the ones that end while
 * an older one stands never pass; a deadline started while others pass is kept too;
 * and the queue holds the process open only while a deadline stands.
 */
import { describe, expect, it } from "vitest"
import { DeadlineQueue, type QueuedDeadline } from "../src/internal/deadlineQueue.js"

interface Op extends QueuedDeadline {
  readonly name: string
  passedAt?: number
}

const op = (name: string): Op => ({ name, endsAt: 0, done: false })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const refTimers = () => process.getActiveResourcesInfo().filter((what) => what === "Timeout").length

/** A queue of `delay` ms that records which deadlines passed, in order, and when. */
const recording = (delay: number, onPassed: (op: Op, queue: DeadlineQueue<Op>) => void = () => {}) => {
  const passed: Array<Op> = []
  const queue: DeadlineQueue<Op> = new DeadlineQueue<Op>(delay, (deadline) => {
    deadline.passedAt = performance.now()
    passed.push(deadline)
    onPassed(deadline, queue)
  })
  return { queue, passed }
}

describe("DeadlineQueue", () => {
  it("passes each standing deadline once, in order, never before its time", async () => {
    const { queue, passed } = recording(30)
    const ops = ["a", "b", "c"].map(op)
    for (const each of ops) {
      queue.start(each)
      await sleep(5)
    }
    await sleep(80)
    expect(passed.map((each) => each.name)).toEqual(["a", "b", "c"])
    for (const each of passed) expect(each.passedAt!).toBeGreaterThanOrEqual(each.endsAt)
    // Ended after it passed: nothing more happens.
    for (const each of ops) queue.end(each)
    await sleep(40)
    expect(passed).toHaveLength(3)
  })

  it("never passes a deadline that ended, even one ended behind an older one still standing", async () => {
    const { queue, passed } = recording(40)
    const standing = op("standing")
    queue.start(standing)
    const quick = Array.from({ length: 2000 }, (_, i) => op(`quick${i}`))
    for (const each of quick) {
      queue.start(each)
      queue.end(each)
    }
    const endedLate = op("endedLate")
    queue.start(endedLate)
    await sleep(10)
    queue.end(endedLate)
    await sleep(80)
    expect(passed.map((each) => each.name)).toEqual(["standing"])
  })

  it("keeps a deadline started while others pass, on the re-armed timer", async () => {
    let restarted: Op | undefined
    const { queue, passed } = recording(25, (first, q) => {
      if (first.name !== "first") return
      restarted = op("restarted")
      q.start(restarted)
    })
    queue.start(op("first"))
    await sleep(90)
    expect(passed.map((each) => each.name)).toEqual(["first", "restarted"])
    expect(restarted!.passedAt! - passed[0]!.passedAt!).toBeGreaterThanOrEqual(25)
  })

  it("holds the process open only while a deadline stands", async () => {
    const { queue, passed } = recording(10_000)
    const before = refTimers()
    const first = op("first")
    queue.start(first)
    expect(refTimers()).toBe(before + 1)
    const second = op("second")
    queue.start(second)
    queue.end(first)
    expect(refTimers()).toBe(before + 1)
    queue.end(second)
    expect(refTimers()).toBe(before)
    // A deadline started again on the timer left armed holds it again.
    const third = op("third")
    queue.start(third)
    expect(refTimers()).toBe(before + 1)
    queue.end(third)
    expect(refTimers()).toBe(before)
    expect(passed).toHaveLength(0)
  })
})
