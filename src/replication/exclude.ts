import { lstatSync } from 'node:fs'
import ignore, { type Ignore } from 'ignore'
import { MARK } from './fence'
import type { Mutation, ReplicationHook } from './mutation'

/**
 * `--exclude` patterns, gitignore-style (the `ignore` package, which follows git's rules:
 * `*.part`, `/cache/`, `tmp/**`, `!keep.part`, ...), matched against paths relative to the
 * source root. Excluded paths are served by the mount but never replicated; verify and resync
 * neither compare nor touch them (on either side). The generation mark (fence.ts) is always
 * excluded: each tree keeps its own.
 */
export class Excludes {
  readonly patterns: string[]
  readonly #ig: Ignore | null

  constructor (patterns: string[]) {
    this.patterns = patterns
    this.#ig = patterns.length > 0 ? ignore().add(patterns) : null
  }

  /** Whether some paths besides the generation mark are excluded (--exclude patterns). */
  get any (): boolean {
    return this.#ig !== null
  }

  /**
   * `path`: a byte string ('/a/b', latin1) as in mutations. `dir`: it is a directory
   * (patterns with a trailing '/' match only those).
   */
  matches (path: string, dir: boolean): boolean {
    if (path === MARK) return true
    if (this.#ig === null || path === '/' || path === '') return false
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
  /**
   * Descriptors the replicas know (a call through them was forwarded): their later calls go on
   * whatever the path is now, so that the replica's state of each ends with its release, and
   * a descriptor number the source reuses never finds a stale one.
   */
  readonly #open = new Set<number>()

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
      case 'write':
      case 'flush':
      case 'fsync':
      case 'release':
      case 'truncate': {
        const fh = m.fh
        if (fh === null) return m.path !== null && ex.matches(m.path, false) ? undefined : this.#inner.apply(m)
        const known = this.#open.has(fh)
        if (!known && m.path !== null && ex.matches(m.path, false)) return undefined
        if (m.op === 'release') this.#open.delete(fh)
        else if (!known) this.#open.add(fh)
        return this.#inner.apply(m)
      }
      case 'create':
      case 'open-truncate':
        if (ex.matches(m.path, false)) return undefined
        this.#open.add(m.fh)
        return this.#inner.apply(m)
      case 'chmod':
      case 'chown':
      case 'utimens':
      case 'setxattr':
      case 'removexattr':
        // A dir-only pattern (cache/) must see a dir as one.
        return ex.matches(m.path, this.#isDir(m.path)) ? undefined : this.#inner.apply(m)
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
        // Into the replicated side: it appears there whole. Out of it: it goes (a rename; a file
        // as an unlink, which also drops a copy still being written under a temp name) or
        // stays (a link's old name is still there).
        if (from) return this.#inner.apply({ op: 'resync', path: m.path, uid, gid })
        if (m.op === 'link') return undefined
        return this.#inner.apply(dir ? { op: 'resync', path: m.from, uid, gid } : { op: 'unlink', path: m.from, uid, gid })
      }
      default:
        return m.path !== null && ex.matches(m.path, false) ? undefined : this.#inner.apply(m)
    }
  }
}
