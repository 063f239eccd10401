import { UTIME_OMIT, type Mutation } from './mutation'

/** A queued change, as compaction sees it: `waiter` is set while a caller waits for it (sync). */
export interface Queued {
  m: Mutation
  waiter: unknown
}

/** Nothing to drop: shared, so that the common case allocates nothing. */
const NONE: readonly number[] = Object.freeze([])

/** How far back a new change looks: bounds the cost per change in a long queue. */
const SCAN = 4096

/**
 * What a new change `m` cancels among the changes queued for a replica and not yet started
 * (`queue[from..]`): a replica that lags ships less, and a replay after a restart too.
 *
 * - a chmod, chown or utimens replaces the same call on the same path queued before it, when
 *   nothing in between touched that path (a rename or a resync ends the search);
 * - an unlink of a file created while queued cancels the whole life of the file: its create,
 *   writes, truncates, flushes, release and the calls on its path. The unlink itself stays (it
 *   finds nothing on the replica: ENOENT counts as done), so that every seq is still applied.
 *   Files that existed before are left alone: another hard link may still name them.
 *
 * Returns the indexes to drop, ascending. Changes a caller is waiting for are never dropped.
 */
export function cancelled (queue: readonly Queued[], start: number, m: Mutation): readonly number[] {
  switch (m.op) {
    case 'chmod':
    case 'chown':
    case 'utimens': {
      if (!whole(m)) return NONE
      const from = Math.max(start, queue.length - SCAN)
      for (let i = queue.length - 1; i >= from; i--) {
        const q = queue[i] as Queued
        if (q.m.op === m.op && q.m.path === m.path) return q.waiter !== null ? NONE : [i]
        if (touches(q.m, m.path)) return NONE
      }
      return NONE
    }
    case 'unlink':
      return lifeOf(queue, Math.max(start, queue.length - SCAN), m.path)
    default:
      // Most changes (every write) end here: no allocation.
      return NONE
  }
}

/** The call sets everything the same call before it set (no field left unchanged). */
function whole (m: Mutation): boolean {
  if (m.op === 'utimens') return m.atime.nsec !== UTIME_OMIT && m.mtime.nsec !== UTIME_OMIT
  if (m.op === 'chown') return m.owner !== 0xffffffff && m.owner !== -1 && m.group !== 0xffffffff && m.group !== -1
  return true
}

function lifeOf (queue: readonly Queued[], from: number, path: string): readonly number[] {
  let start = -1
  for (let i = queue.length - 1; i >= from; i--) {
    const m = (queue[i] as Queued).m
    if (m.op === 'create' && m.path === path) {
      start = i
      break
    }
    // Calls on the file itself are checked below; anything else about the path: give up.
    if (touches(m, path) && !onPath(m, path) && !(handleOf(m) >= 0 && 'path' in m && m.path === path)) return NONE
  }
  if (start < 0) return NONE
  const fh = (queue[start] as Queued & { m: { fh: number } }).m.fh
  let open = true
  const drop: number[] = []
  for (let i = start; i < queue.length; i++) {
    const q = queue[i] as Queued
    const m = q.m
    const ours = i === start || (open && handleOf(m) === fh) || onPath(m, path)
    if (ours) {
      if (q.waiter !== null) return NONE
      drop.push(i)
      if (m.op === 'release' && m.fh === fh) open = false
    } else if (touches(m, path)) {
      return NONE
    }
  }
  return drop
}

/** The descriptor a call acts through, or -1. */
function handleOf (m: Mutation): number {
  switch (m.op) {
    case 'write': case 'fsync': case 'flush': case 'release': return m.fh
    case 'truncate': return m.fh ?? -1
    default: return -1
  }
}

/** A call on the node at `path` itself, by path, that changes only that node. */
function onPath (m: Mutation, path: string): boolean {
  switch (m.op) {
    case 'chmod': case 'chown': case 'utimens': case 'setxattr': case 'removexattr':
      return m.path === path
    case 'truncate':
      return m.fh === null && m.path === path
    default:
      return false
  }
}

/** Whether `m` may change, or depend on, the node at `path` (or a dir above or below it). */
export function touches (m: Mutation, path: string): boolean {
  switch (m.op) {
    case 'finish-replay':
      return true
    case 'rename':
    case 'link':
      return related(m.from, path) || related(m.path, path)
    default:
      return m.path !== null && related(m.path, path)
  }
}

function related (a: string, b: string): boolean {
  return a === b || a === '/' || b === '/' || (a.length > b.length ? a.startsWith(b + '/') : b.startsWith(a + '/'))
}
