import { constants } from 'node:fs'
import { open } from 'node:fs/promises'
import type { JournalRecord } from './journal'
import type { Mutation } from './mutation'

/**
 * A write the mount journaled in async mode holds no bytes in the journal: the source file
 * has them. Before a replay after a restart, each such write gets its bytes back from the
 * source, read where the file is named now: its path at the write, carried through the renames
 * (of it or of a directory above it) and hard links that the journal records after it, and
 * dropped with an unlink or a rename over it. Bytes written later to the same file may be read
 * with it; they are written again by their own records, so the replica ends as the source.
 * A file no longer named anywhere gets no bytes: nothing on the replica keeps it either,
 * unless it had names when written that no record shows (`links`): then the bytes are lost
 * to the replay, and the return says so (the caller resyncs the whole tree).
 * `records` in seq order; only those after `after` (the oldest cursor) are filled.
 */
export async function fillFromSource (records: JournalRecord[], sourceRoot: string, after: number): Promise<{ lost: boolean }> {
  let lost = false
  // The changes that move or remove names, in order: what a write's path is carried through.
  const moves: number[] = []
  records.forEach((r, i) => { if (r.m.op === 'rename' || r.m.op === 'link' || r.m.op === 'unlink') moves.push(i) })
  // Writes to one path with no move between them share their names.
  const memo = new Map<string, string[]>()
  let next = 0
  for (let i = 0; i < records.length; i++) {
    const r = records[i] as JournalRecord
    const m = r.m
    if (r.src === undefined || m.op !== 'write' || m.path === null || r.seq <= after) continue
    while (next < moves.length && (moves[next] as number) < i) next++
    const key = `${next}\0${m.path}`
    let names = memo.get(key)
    if (names === undefined) {
      names = namesAfter(records, moves, next, m.path)
      memo.set(key, names)
    }
    if (names.length === 0 && (r.links ?? 1) > 1) lost = true
    m.data = await readAt(sourceRoot, names, m.offset, r.src)
  }
  return { lost }
}

/** Where the node named `path` is named once the changes at `moves[from..]` are applied. */
export function namesAfter (records: JournalRecord[], moves: number[], from: number, path: string): string[] {
  let names = [path]
  for (let k = from; k < moves.length && names.length > 0; k++) names = move(names, (records[moves[k] as number] as JournalRecord).m)
  return names
}

const under = (p: string, dir: string) => p === dir || p.startsWith(dir + '/')

function move (names: string[], m: Mutation): string[] {
  switch (m.op) {
    case 'rename': {
      const out: string[] = []
      for (const n of names) {
        if (under(n, m.from)) out.push(m.path + n.slice(m.from.length))
        // Replaced (a directory moved over it was empty: only the name itself).
        else if (n !== m.path) out.push(n)
      }
      return out
    }
    case 'link':
      return names.includes(m.from) && !names.includes(m.path) ? [...names, m.path] : names
    case 'unlink':
      return names.filter(n => n !== m.path)
    default:
      return names
  }
}

/** Up to `len` bytes at `offset` of the first of `names` that opens (all name one file). */
async function readAt (root: string, names: string[], offset: number, len: number): Promise<Buffer> {
  for (const name of names) {
    let fh
    try {
      // Never through a symlink: a name the file no longer has may be one now.
      fh = await open(Buffer.from(root + name, 'latin1'), constants.O_RDONLY | constants.O_NOFOLLOW)
    } catch {
      continue
    }
    try {
      const buf = Buffer.allocUnsafe(len)
      let got = 0
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, offset + got)
        if (bytesRead === 0) break
        got += bytesRead
      }
      return buf.subarray(0, got)
    } catch {
      continue
    } finally {
      await fh.close()
    }
  }
  return Buffer.alloc(0)
}
