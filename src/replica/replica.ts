/**
 * A replica: a directory somewhere (a local disk, a backup host over SFTP) that is kept equal
 * to the source. Its operations are the primitives the applier (src/replication/applier.ts)
 * turns mutations into; they take byte-string paths relative to the replica's root ('/a/b',
 * latin1, the same encoding as Mutation paths). Every implementation refuses a path with a
 * '.' or '..' component, so nothing from the source can name a file outside the root.
 *
 * Errors reject with a ReplicaError: an errno for what the replica said about the file, and
 * whether the failure is of the connection (transient: retry later) or of the request.
 */
export interface Replica {
  readonly url: string
  /**
   * Calls sent before the answers to earlier ones are applied in the order sent (an SFTP
   * server answers a channel's requests in turn), and write (up to the server's longest
   * write: ssh2 sends the rest of a longer one after the first answer; OpenSSH takes 255 KiB,
   * the mount writes 128 KiB), closeHandle, rename, chmod and utimes (of both times) send all
   * their requests before they return: a run of them may then be pipelined (Applier.now).
   */
  readonly ordered: boolean
  /**
   * With `ordered`: chown by path is one request too (else it looks at the file first). A
   * rename, a chmod and a utimes of both times always are.
   */
  readonly chownAtOnce: boolean
  /** Connects (or reconnects). Rejects with a ReplicaError; `permanent` ones need a human. */
  connect (): Promise<void>
  close (): Promise<void>

  /**
   * `lane`: which of the replica's channels the handle (and every call on it) uses, modulo
   * how many it has; calls by path use lane 0. Bulk copies spread over lanes.
   */
  openWrite (path: string, create: boolean, truncate: boolean, mode: number, lane?: number): Promise<RemoteHandle>
  write (h: RemoteHandle, offset: number, data: Buffer): Promise<void>
  closeHandle (h: RemoteHandle): Promise<void>
  fsync (h: RemoteHandle): Promise<void>
  ftruncate (h: RemoteHandle, size: number): Promise<void>
  truncate (path: string, size: number): Promise<void>
  mkdir (path: string, mode: number): Promise<void>
  rmdir (path: string): Promise<void>
  unlink (path: string): Promise<void>
  /** Atomic replace of `to`, as rename(2). */
  rename (from: string, to: string): Promise<void>
  symlink (target: string, path: string): Promise<void>
  link (from: string, to: string): Promise<void>
  mkfifo (path: string, mode: number): Promise<void>
  chmod (path: string, mode: number): Promise<void>
  chown (path: string, uid: number, gid: number): Promise<void>
  /** Whole seconds on SFTP; `null` leaves that time as it is. */
  utimes (path: string, atime: number | null, mtime: number | null): Promise<void>
  lstat (path: string): Promise<RemoteStat | null>
  /** Names in a directory (byte strings), without '.' and '..'. */
  readdir (path: string): Promise<string[]>
  /** A directory's entries with their lstat, in one go where the protocol allows (SFTP does). */
  list (path: string): Promise<Array<{ name: string, stat: RemoteStat }>>
  /**
   * Sets a file's mode, times and (where the account may) owner through its open handle:
   * one request over SFTP instead of three by path.
   */
  fsetattrs (h: RemoteHandle, a: { mode: number, uid: number, gid: number, atime: number, mtime: number }): Promise<void>
  /** A symlink's target (a byte string). */
  readlink (path: string): Promise<string>
  /** SHA-256 of a file's content, hex, by streaming reads (verify --checksum). */
  hash (path: string): Promise<string>
  /**
   * A stream of whole files into the replica, where it has a faster way than file by file
   * (over SSH: one `tar -x` on the backup); null where it has not.
   */
  files?(): Promise<FileSink | null>
}

/** What a FileSink is given: `target` is a symlink's, or the earlier path a hard link names. */
export type SinkEntry = { mode: number, uid: number, gid: number, mtime: number } & (
  | { type: 'file', size: number }
  | { type: 'dir' | 'fifo' }
  | { type: 'symlink' | 'link', target: string })

/**
 * Whole files (and trees), one after another, written into a replica in one stream. Like a stream's
 * write, `add` and `write` say false when the caller should wait for `drained` before more;
 * they throw once the stream has failed.
 */
export interface FileSink {
  /** Throws where `path` cannot be sent (a name the replica cannot spell): nothing is sent. */
  accepts (path: string): void
  /**
   * Starts an entry (created, or replaced): a file's exactly `size` bytes of `write` follow.
   * A directory's entries may follow it, under its path.
   */
  add (path: string, f: SinkEntry): boolean
  /** The next bytes of the current file. */
  write (data: Buffer): boolean
  /** Resolves when the stream takes more; rejects if it has failed. */
  drained (): Promise<void>
  /**
   * Ends the stream. Resolves with null once the replica holds every entry added; with an
   * error where some could not be made but the others are there (each is to be checked);
   * rejects where the stream broke (none is to be trusted).
   */
  end (): Promise<ReplicaError | null>
  /** Gives up: files added may be there in part, under their names. */
  abort (): void
}

export interface RemoteHandle { readonly path: string }

export interface RemoteStat { mode: number, uid: number, gid: number, size: number, atime: number, mtime: number }

export class ReplicaError extends Error {
  readonly errno: number
  /** The connection failed (not the request): the replica is offline until it reconnects. */
  readonly transient: boolean
  /** Needs a human: a bad key, a changed host key. Retrying will not help. */
  readonly permanent: boolean
  constructor (message: string, errno: number, kind: 'request' | 'transient' | 'permanent' = 'request') {
    super(message)
    this.name = 'ReplicaError'
    this.errno = errno
    this.transient = kind === 'transient'
    this.permanent = kind === 'permanent'
  }
}

const DOT_COMPONENT = /(^|\/)\.\.?(\/|$)/

/** Joins a replica root and a mutation path, refusing anything that could leave the root. */
export function confine (root: string, path: string): string {
  if (path[0] !== '/' || DOT_COMPONENT.test(path) || path.includes('//') || path.includes('\0')) {
    throw new ReplicaError(`refusing path ${JSON.stringify(path)}: it could leave the replica root`, 22)
  }
  return path === '/' ? root : root + path
}
