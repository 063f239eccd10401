/**
 * One replicated change: the unit that crosses the wire and the journal. Every changing call
 * through the mount that succeeds on the source produces exactly one, in the order the source
 * applied them, and hands it to the ReplicationHook.
 *
 * Paths are byte strings relative to the source root, with a leading '/': one JS char per
 * byte (latin1), so names that are not UTF-8 survive. `uid`/`gid` are the calling process's.
 * `fh` identifies the open file on the source (its descriptor) for the ops that act on one;
 * `path` of such an op is null when the file was unlinked while open.
 */
export type Mutation =
  | { op: 'create', path: string, mode: number, flags: number, fh: number, uid: number, gid: number }
  /** `links`: the file's link count when the source truncated it. */
  | { op: 'open-truncate', path: string, fh: number, links: number, uid: number, gid: number }
  | { op: 'write', path: string | null, fh: number, offset: number, data: Buffer, uid: number, gid: number }
  | { op: 'truncate', path: string | null, fh: number | null, size: number, uid: number, gid: number }
  | { op: 'fsync', path: string | null, fh: number, datasync: boolean, uid: number, gid: number }
  | { op: 'flush', path: string | null, fh: number, uid: number, gid: number }
  /** `mtime`/`atime`: the file's, in seconds, as the source closed it (0: unknown). */
  | { op: 'release', path: string | null, fh: number, mtime: number, atime: number, uid: number, gid: number }
  | { op: 'mkdir', path: string, mode: number, uid: number, gid: number }
  | { op: 'mknod', path: string, mode: number, rdev: number, uid: number, gid: number }
  | { op: 'symlink', path: string, target: string, uid: number, gid: number }
  | { op: 'link', from: string, path: string, uid: number, gid: number }
  | { op: 'rename', from: string, path: string, uid: number, gid: number }
  | { op: 'unlink', path: string, uid: number, gid: number }
  | { op: 'rmdir', path: string, uid: number, gid: number }
  | { op: 'chmod', path: string, mode: number, uid: number, gid: number }
  | { op: 'chown', path: string, owner: number, group: number, uid: number, gid: number }
  | { op: 'utimens', path: string, atime: Timespec, mtime: Timespec, uid: number, gid: number }
  | { op: 'setxattr', path: string, name: string, value: Buffer, flags: number, uid: number, gid: number }
  | { op: 'removexattr', path: string, name: string, uid: number, gid: number }
  /** Not a call: make the replica's `path` (and all below) what the source holds now. */
  /** `replica`: only that one (by URL) needs it (it refused a change); the others pass it by. */
  | { op: 'resync', path: string, uid: number, gid: number, replica?: string }
  /** Not a call: the journal replay is over; publish the files it left open. */
  | { op: 'finish-replay', uid: number, gid: number }

/** `path` is `dir` or below it (every path is below the root, `/`). */
export function atOrUnder (path: string, dir: string): boolean {
  return path === dir || dir === '/' || (path.length > dir.length && path.startsWith(dir) && path[dir.length] === '/')
}

/** `path` after a rename of `from` to `to`: moved with it when it is `from` or below it. */
export function afterRename (path: string, from: string, to: string): string {
  return atOrUnder(path, from) ? to + path.slice(from.length) : path
}

/** Seconds and nanoseconds; nsec may be UTIME_NOW or UTIME_OMIT. */
export interface Timespec { sec: number, nsec: number }

export const UTIME_NOW = (1 << 30) - 1
export const UTIME_OMIT = (1 << 30) - 2

/**
 * Where replication plugs in. `apply` is called after the source applied the change and
 * before the call answers: a returned promise delays the answer (sync mode); a rejection
 * answers EIO (the source keeps the change).
 *
 * `data` of a write and `value` of a setxattr are views of the kernel's request buffer, not
 * copies: valid until the call answers (until the returned promise settles), and detached
 * after. A hook that keeps them longer (a queue, a background shipper) must copy them first.
 * No copy is made on the per-syscall path for a hook that does not need one.
 */
export interface ReplicationHook {
  apply (m: Mutation): void | Promise<void>
}

/** No replicas: changes stay on the source. */
export const localOnly: ReplicationHook = { apply () {} }
