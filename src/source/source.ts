import { E } from '../errors'
import type { Logger } from '../log'
import type { Mutation, ReplicationHook } from '../replication/mutation'
import { NO_OWNER, Op, type Done, type Sys } from './sys'

const O_ACCMODE = 3
const O_TRUNC = 0o1000
/** trusted.* xattrs need CAP_SYS_ADMIN: the daemon has it, a caller other than root may not. */
const TRUSTED = 'trusted.'

/** The caller of a FUSE request, as the kernel reported it. */
export interface Caller { uid: number, gid: number }

/**
 * The source directory: applies each call to it and, for a change that succeeded, hands one
 * Mutation to the replication hook before answering. Knows nothing of FUSE: paths come in as
 * byte strings relative to the root ('/a/b'), results go out as `done(res, value)` with res
 * >= 0 or a negative errno, so it is testable without a mount.
 */
export class Source {
  readonly #sys: Sys
  readonly #root: string
  readonly #hook: ReplicationHook
  readonly #log: Logger
  readonly #uid: number
  readonly #gid: number

  /**
   * @param root absolute path of the source directory, as a byte string (latin1), no
   *   trailing slash ('' would mean '/', which the CLI refuses).
   * @param daemon uid/gid of this process: nodes made for this same identity need no chown.
   */
  constructor (sys: Sys, root: string, hook: ReplicationHook, log: Logger, daemon: Caller) {
    this.#sys = sys
    this.#root = root
    this.#hook = hook
    this.#log = log
    this.#uid = daemon.uid
    this.#gid = daemon.gid
  }

  #p (path: string): string {
    return this.#root + path
  }

  /** uid to give a new node, or NO_OWNER when the daemon's own identity is right. */
  #owner (c: Caller): number {
    return c.uid === this.#uid && c.gid === this.#gid ? NO_OWNER : c.uid
  }

  /**
   * The one place where a local result meets replication: a failed local call answers its
   * errno and replicates nothing; a successful one answers once the hook accepted it.
   */
  #commit (res: number, m: Mutation, done: Done): void {
    let pending: void | Promise<void>
    try {
      pending = this.#hook.apply(m)
    } catch (err) {
      this.#log.error('replica', `replication hook failed on ${m.op}`, err)
      done(-E.EIO)
      return
    }
    if (pending === undefined) {
      done(res)
      return
    }
    pending.then(() => done(res), err => {
      this.#log.error('replica', `replication hook failed on ${m.op}`, err)
      done(-E.EIO)
    })
  }

  // Changes: applied here, then replicated.

  open (path: string, flags: number, c: Caller, done: Done): void {
    this.#sys.call(Op.open, this.#p(path), null, flags, 0, NO_OWNER, 0, null, (fd: number) => {
      if (fd < 0 || !(flags & O_TRUNC) || (flags & O_ACCMODE) === 0) return done(fd)
      this.#commit(fd, { op: 'open-truncate', path, fh: fd, uid: c.uid, gid: c.gid }, done)
    })
  }

  create (path: string, mode: number, flags: number, c: Caller, done: Done): void {
    this.#sys.call(Op.open, this.#p(path), null, flags, mode, this.#owner(c), c.gid, null, (fd: number) => {
      if (fd < 0) return done(fd)
      this.#commit(fd, { op: 'create', path, mode, flags, fh: fd, uid: c.uid, gid: c.gid }, done)
    })
  }

  write (path: string | null, fh: number, buf: Buffer, len: number, offset: number, c: Caller, done: Done): void {
    this.#sys.call(Op.pwrite, null, null, fh, len, offset, 0, buf, (n: number) => {
      if (n <= 0) return done(n)
      const data = n === len ? buf : buf.subarray(0, n)
      this.#commit(n, { op: 'write', path, fh, offset, data, uid: c.uid, gid: c.gid }, done)
    })
  }

  /**
   * close(2) of a descriptor: nothing is buffered on the source (writes go out with pwrite),
   * but close(2) waits for this answer and not for release's, so it is where replicas publish
   * a file written under a temp name (an FTP server's "226 Transfer complete" follows it).
   */
  flush (path: string | null, fh: number, c: Caller, done: Done): void {
    this.#commit(0, { op: 'flush', path, fh, uid: c.uid, gid: c.gid }, done)
  }

  fsync (path: string | null, fh: number, datasync: boolean, c: Caller, done: Done): void {
    this.#sys.call(Op.fsync, null, null, fh, datasync ? 1 : 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'fsync', path, fh, datasync, uid: c.uid, gid: c.gid }, done)
    })
  }

  release (path: string | null, fh: number, c: Caller, done: Done): void {
    this.#sys.call(Op.close, null, null, fh, 0, 0, 0, null, (res: number) => {
      if (res < 0) this.#log.warn('source', `close of fd ${fh} failed: errno ${-res}`)
      this.#commit(0, { op: 'release', path, fh, uid: c.uid, gid: c.gid }, done)
    })
  }

  truncate (path: string, size: number, c: Caller, done: Done): void {
    this.#sys.call(Op.truncate, this.#p(path), null, 0, size, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'truncate', path, fh: null, size, uid: c.uid, gid: c.gid }, done)
    })
  }

  ftruncate (path: string | null, fh: number, size: number, c: Caller, done: Done): void {
    this.#sys.call(Op.ftruncate, null, null, fh, size, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'truncate', path, fh, size, uid: c.uid, gid: c.gid }, done)
    })
  }

  mkdir (path: string, mode: number, c: Caller, done: Done): void {
    this.#sys.call(Op.mkdir, this.#p(path), null, mode, 0, this.#owner(c), c.gid, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'mkdir', path, mode, uid: c.uid, gid: c.gid }, done)
    })
  }

  mknod (path: string, mode: number, rdev: number, c: Caller, done: Done): void {
    this.#sys.call(Op.mknod, this.#p(path), null, mode, rdev, this.#owner(c), c.gid, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'mknod', path, mode, rdev, uid: c.uid, gid: c.gid }, done)
    })
  }

  symlink (target: string, path: string, c: Caller, done: Done): void {
    this.#sys.call(Op.symlink, target, this.#p(path), 0, 0, this.#owner(c), c.gid, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'symlink', path, target, uid: c.uid, gid: c.gid }, done)
    })
  }

  link (from: string, path: string, c: Caller, done: Done): void {
    this.#sys.call(Op.link, this.#p(from), this.#p(path), 0, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'link', from, path, uid: c.uid, gid: c.gid }, done)
    })
  }

  rename (from: string, path: string, c: Caller, done: Done): void {
    this.#sys.call(Op.rename, this.#p(from), this.#p(path), 0, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'rename', from, path, uid: c.uid, gid: c.gid }, done)
    })
  }

  unlink (path: string, c: Caller, done: Done): void {
    this.#sys.call(Op.unlink, this.#p(path), null, 0, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'unlink', path, uid: c.uid, gid: c.gid }, done)
    })
  }

  rmdir (path: string, c: Caller, done: Done): void {
    this.#sys.call(Op.rmdir, this.#p(path), null, 0, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'rmdir', path, uid: c.uid, gid: c.gid }, done)
    })
  }

  chmod (path: string, mode: number, c: Caller, done: Done): void {
    this.#sys.call(Op.chmod, this.#p(path), null, mode, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'chmod', path, mode, uid: c.uid, gid: c.gid }, done)
    })
  }

  chown (path: string, owner: number, group: number, c: Caller, done: Done): void {
    this.#sys.call(Op.lchown, this.#p(path), null, owner, group, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'chown', path, owner, group, uid: c.uid, gid: c.gid }, done)
    })
  }

  utimens (path: string, asec: number, ansec: number, msec: number, mnsec: number, c: Caller, done: Done): void {
    this.#sys.call(Op.utimens, this.#p(path), null, asec, ansec, msec, mnsec, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, {
        op: 'utimens',
        path,
        atime: { sec: asec, nsec: ansec },
        mtime: { sec: msec, nsec: mnsec },
        uid: c.uid,
        gid: c.gid,
      }, done)
    })
  }

  setxattr (path: string, name: string, value: Buffer, size: number, flags: number, c: Caller, done: Done): void {
    if (c.uid !== 0 && name.startsWith(TRUSTED)) return done(-E.EPERM)
    this.#sys.call(Op.setxattr, this.#p(path), name, flags, size, 0, 0, value, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'setxattr', path, name, value: value.subarray(0, size), flags, uid: c.uid, gid: c.gid }, done)
    })
  }

  removexattr (path: string, name: string, c: Caller, done: Done): void {
    if (c.uid !== 0 && name.startsWith(TRUSTED)) return done(-E.EPERM)
    this.#sys.call(Op.removexattr, this.#p(path), name, 0, 0, 0, 0, null, (res: number) => {
      if (res < 0) return done(res)
      this.#commit(res, { op: 'removexattr', path, name, uid: c.uid, gid: c.gid }, done)
    })
  }
}
