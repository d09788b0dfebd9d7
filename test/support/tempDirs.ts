/**
 * Throwaway directories for a test file: `tempDirs()` (called at the file's top level)
 * gives a `tempDir(name)` whose directories are all removed after the file's tests.
 */
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

export const tempDirs = (): ((name: string) => Promise<string>) => {
  const dirs: Array<string> = []
  afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))))
  return async (name) => {
    const dir = await mkdtemp(join(tmpdir(), name))
    dirs.push(dir)
    return dir
  }
}
