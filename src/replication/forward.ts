import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import type { JournalRecord } from './journal'

/**
 * A write the mount journaled in async mode holds no bytes in the journal: the source file
 * has them. Before a replay after a restart, each such write gets its bytes back from the
 * source, read where its file is named now: its path at the write, carried through the
 * renames (of it or of a directory above it) and hard links that the journal records after
 * it, and dropped with an unlink or a rename over it. Bytes written later to the same file
 * may be read with it; they are written again by their own records, so the replica ends as
 * the source. A file no longer named anywhere gets no bytes: nothing on the replica keeps it
 * either, unless it had names when written that no record shows (the record's `links`).
 * Those bytes are lost to the replay, as are those the source would not give (an error other
 * than "not there"): the return says the last seq of such a write, 0 if none, and the caller
 * resyncs the whole tree for the replicas behind it.
 *
 * One pass over the records, with the names kept in a tree of path components: a rename
 * moves a subtree, so the pass costs the records times the depth of their paths.
 * `records` in seq order; only the writes after `after` (the oldest cursor) are filled.
 */
export async function fillFromSource (records: JournalRecord[], sourceRoot: string, after: number): Promise<{ lostSeq: number }> {
  const root: Name = { kids: null, file: null }
  const files: Tracked[] = []
  for (const r of records) {
    const m = r.m
    switch (m.op) {
      case 'write': {
        if (r.src === undefined || r.seq <= after) break
        let f: Tracked
        if (m.path === null) {
          // Written through a name unlinked meanwhile: only the names no record shows remain.
          f = { names: [], others: r.links ?? 0, writes: [] }
          files.push(f)
        } else {
          const n = walk(root, m.path, true) as Name
          if (n.file === null) {
            n.file = { names: [], others: 0, writes: [] }
            files.push(n.file)
          }
          f = n.file
          f.others = Math.max(f.others, (r.links ?? 1) - 1)
        }
        f.writes.push(r)
        break
      }
      case 'rename': {
        const moved = detach(root, m.from)
        detach(root, m.path)
        if (moved !== null) attach(root, m.path, moved)
        break
      }
      case 'link': {
        const file = walk(root, m.from, false)?.file ?? null
        if (file !== null) (walk(root, m.path, true) as Name).file = file
        break
      }
      case 'unlink': {
        const n = walk(root, m.path, false)
        if (n !== null) n.file = null
        break
      }
    }
  }
  collect(root, '')
  let lostSeq = 0
  for (const f of files) {
    const lastSeq = (f.writes.at(-1) as JournalRecord).seq
    if (f.names.length === 0) {
      if (f.others > 0) lostSeq = Math.max(lostSeq, lastSeq)
      continue
    }
    if (!await readWrites(sourceRoot, f)) lostSeq = Math.max(lostSeq, lastSeq)
  }
  return { lostSeq }
}

/** A name in the tree: a directory's names below it, the file it names (if tracked). */
interface Name { kids: Map<string, Name> | null, file: Tracked | null }

/** A file some writes went to: its names at the end, names no record shows, those writes. */
interface Tracked { names: string[], others: number, writes: JournalRecord[] }

/** The name at `path` ('/a/b'), made (with those above it) when `make`; else null if none. */
function walk (root: Name, path: string, make: boolean): Name | null {
  let n = root
  for (const part of path.split('/')) {
    if (part === '') continue
    let kid = n.kids?.get(part)
    if (kid === undefined) {
      if (!make) return null
      kid = { kids: null, file: null }
      ;(n.kids ??= new Map()).set(part, kid)
    }
    n = kid
  }
  return n
}

function parentAndLast (path: string): [string, string] {
  const i = path.lastIndexOf('/')
  return [path.slice(0, i), path.slice(i + 1)]
}

/** Takes the name at `path` (and all below it) out of the tree. */
function detach (root: Name, path: string): Name | null {
  const [dir, last] = parentAndLast(path)
  const parent = walk(root, dir, false)
  const n = parent?.kids?.get(last)
  if (n === undefined) return null
  parent?.kids?.delete(last)
  return n
}

function attach (root: Name, path: string, n: Name): void {
  const [dir, last] = parentAndLast(path)
  const parent = walk(root, dir, true) as Name
  ;(parent.kids ??= new Map()).set(last, n)
}

/** Each tracked file learns its names at the end. */
function collect (n: Name, path: string): void {
  if (n.kids === null) return
  for (const [part, kid] of n.kids) {
    const p = `${path}/${part}`
    kid.file?.names.push(p)
    collect(kid, p)
  }
}

/** Errors that mean "not this name": the next one is tried. */
const NOT_THERE = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EISDIR'])

/**
 * Reads each write's bytes (up to its count, at its offset) from the first of the file's
 * names that is a regular file. false: the source would not give them.
 */
async function readWrites (root: string, f: Tracked): Promise<boolean> {
  for (const name of f.names) {
    let fh: FileHandle
    try {
      // Never through a symlink, and never waiting on a fifo: a name the file no longer has
      // may be one now (a change in flight at the kill, resynced after the replay).
      fh = await open(Buffer.from(root + name, 'latin1'), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    } catch (err) {
      if (NOT_THERE.has((err as NodeJS.ErrnoException).code ?? '')) continue
      return false
    }
    try {
      if (!(await fh.stat()).isFile()) continue
      for (const w of f.writes) {
        if (w.m.op !== 'write') continue
        const len = w.src ?? 0
        const buf = Buffer.allocUnsafe(len)
        let got = 0
        while (got < len) {
          const { bytesRead } = await fh.read(buf, got, len - got, w.m.offset + got)
          if (bytesRead === 0) break
          got += bytesRead
        }
        w.m.data = buf.subarray(0, got)
      }
      return true
    } catch {
      return false
    } finally {
      await fh.close()
    }
  }
  // None of the names is there any more (changes in flight at the kill): their resync copies
  // the file whole after the replay.
  return true
}
