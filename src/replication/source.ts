import type { Stats } from 'node:fs'
import { lstat } from 'node:fs/promises'

/**
 * The source tree as a resync or a reconcile reads it: `root` and paths are byte strings
 * (latin1), as in mutations; '/' is the root itself.
 */
export class SourceTree {
  readonly root: string

  constructor (root: string) {
    this.root = root
  }

  path (path: string): Buffer {
    return Buffer.from(path === '/' ? this.root : this.root + path, 'latin1')
  }

  /** lstat, or null when the node is gone (or a dir above it is now a file). */
  async lstat (path: string): Promise<Stats | null> {
    try {
      return await lstat(this.path(path))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return null
      throw err
    }
  }
}
