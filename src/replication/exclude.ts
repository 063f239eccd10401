import { lstatSync } from 'node:fs'
import ignore, { type Ignore } from 'ignore'
import type { Mutation, ReplicationHook } from './mutation'

/**
 * `--exclude` patterns, gitignore-style (the `ignore` package, which follows git's rules:
 * `*.part`, `/cache/`, `tmp/**`, `!keep.part`, ...), matched against paths relative to the
 * source root. Excluded paths are served by the mount but never replicated; verify and resync
 * neither compare nor touch them (on either side).
 */
export class Excludes {
  readonly patterns: string[]
  readonly #ig: Ignore

  constructor (patterns: string[]) {
    this.patterns = patterns
    this.#ig = ignore().add(patterns)
  }

  /**
   * `path`: a byte string ('/a/b', latin1) as in mutations. `dir`: it is a directory
   * (patterns with a trailing '/' match only those).
   */
  matches (path: string, dir: boolean): boolean {
    if (path === '/' || path === '') return false
    const rel = Buffer.from(path.slice(1), 'latin1').toString('utf8')
    try {
      return this.#ig.ignores(dir ? rel + '/' : rel)
    } catch {
      // A path `ignore` refuses ('.' components: never sent by the kernel): not excluded.
      return false
    }
  }
}

/**
 * Stands between the mount and the replicator: a change to an excluded path stays local. A
 * rename or link that carries a node across the boundary becomes a resync of the side that is
 * replicated (a file moved out of an excluded dir appears on the replicas whole; one moved into
 * it disappears from them).
 */
export class ExcludingHook implements ReplicationHook {
  readonly #inner: ReplicationHook
  readonly #ex: Excludes
  /** The source root as a byte string: where a rename's node is looked at (file or dir). */
  readonly #root: string

  constructor (inner: ReplicationHook, ex: Excludes, root: string) {
    this.#inner = inner
    this.#ex = ex
    this.#root = root
  }

  #isDir (path: string): boolean {
    try {
      return lstatSync(Buffer.from(this.#root + path, 'latin1')).isDirectory()
    } catch {
      return false
    }
  }

  apply (m: Mutation): void | Promise<void> {
    const ex = this.#ex
    switch (m.op) {
      case 'finish-replay':
        return this.#inner.apply(m)
      case 'mkdir':
      case 'rmdir':
        return ex.matches(m.path, true) ? undefined : this.#inner.apply(m)
      case 'rename':
      case 'link': {
        // The node is at its new name now: its type tells dir-only patterns apart.
        const dir = m.op === 'rename' && this.#isDir(m.path)
        const from = ex.matches(m.from, dir)
        const to = ex.matches(m.path, dir)
        if (!from && !to) return this.#inner.apply(m)
        if (from && to) return undefined
        const uid = m.uid
        const gid = m.gid
        // Into the replicated side: it appears there whole. Out of it: it goes (a rename) or
        // stays (a link's old name is still there).
        if (from) return this.#inner.apply({ op: 'resync', path: m.path, uid, gid })
        return m.op === 'rename' ? this.#inner.apply({ op: 'resync', path: m.from, uid, gid }) : undefined
      }
      default:
        return m.path !== null && ex.matches(m.path, false) ? undefined : this.#inner.apply(m)
    }
  }
}
