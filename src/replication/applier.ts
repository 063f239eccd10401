import { createHash } from 'node:crypto'
import { lstat } from 'node:fs/promises'
import { LRUCache } from 'lru-cache'
import { E } from '../errors'
import { ReplicaError, type RemoteHandle, type Replica } from '../replica/replica'
import type { Excludes } from './exclude'
import { Mirror } from './mirror'
import { afterRename, atOrUnder, UTIME_NOW, UTIME_OMIT, type Mutation, type Timespec } from './mutation'
import { TEMP_PREFIX, TEMP_SUFFIX } from './temp'

/** How to undo one change of an applier's open files: a file's fields, or a descriptor's file. */
type Undo =
  | { f: OpenFile, path: string | null, temp: string | null, replaces: boolean, dirty: boolean, shares: OpenFile | null }
  | { f: null, fh: number, was: OpenFile | undefined }

/** A file opened for writing through the mount, as the replica sees it. */
interface OpenFile {
  /** Where the file lives (or will, once published). null: unlinked on the source. */
  path: string | null
  /** The hidden name it is being written under, until published. */
  temp: string | null
  /** Opened with O_TRUNC: an old file at `path` waits on the replica to be replaced. */
  replaces: boolean
  /** Written since its times were last set: release sets them as the source has them. */
  dirty: boolean
  /**
   * Opened (without O_TRUNC) while another descriptor was writing the file under a temp
   * name: it writes into that temp file while it lasts, and publishes nothing itself.
   */
  shares: OpenFile | null
}

/**
 * Open remote handles, by source descriptor, at most this many: a run of writes to one file
 * reuses one handle; the least recently used idle one is closed when more are needed, and
 * reopened (in place) if its file is written again. The handle in use is never evicted: the
 * applier runs one change at a time and the one it uses is the most recently used.
 */
const MAX_HANDLES = 256

export interface ApplierOptions {
  /** Write new and truncated files under a temp name and publish on close (default). */
  atomicPublish: boolean
  /** The daemon's own uid/gid: nodes made by it need no chown on the replica. */
  daemonUid: number
  daemonGid: number
  /** The source directory as a byte string: what a resync copies from. */
  sourceRoot: string
  /** Paths a resync neither copies nor removes. */
  excludes: Excludes | null
}

/**
 * The temp name of the file opened as `fh` at `path`: derived from both, so that replaying
 * the journal after a kill writes to the same temp file again instead of leaving one behind.
 */
function tempFor (path: string, fh: number): string {
  const dir = path.slice(0, path.lastIndexOf('/') + 1)
  const id = createHash('sha256').update(`${fh}:${path}`, 'latin1').digest('hex').slice(0, 16)
  return `${dir}${TEMP_PREFIX}${id}${TEMP_SUFFIX}`
}

/** Seconds with their fraction (SFTP keeps the whole seconds; a file:// replica more). */
function seconds (t: Timespec, now: number): number | null {
  if (t.nsec === UTIME_OMIT) return null
  if (t.nsec === UTIME_NOW) return now
  return t.sec + t.nsec / 1e9
}

/**
 * The end of a replay could not copy these paths (the replica refused, or the source would
 * not give them): each is to be repaired, as the path of a refused change is.
 */
export class CopiesRefused extends Error {
  readonly paths: string[]
  constructor (paths: string[], cause: unknown) {
    super(`cannot copy ${paths.map(p => JSON.stringify(p)).join(', ')}: ${(cause as Error).message}`)
    this.paths = paths
  }
}

/**
 * Turns mutations into a replica's primitives, in order, for one replica. It owns the
 * replica's open handles (one per file opened through the mount) and the publish rule:
 * a file created, or opened with O_TRUNC, is written under a hidden temp name in the same
 * directory and renamed into place (atomically) at its first flush or at release, so readers
 * on the backup never see a half-written file. Calls on a path that is still being written
 * (chmod, utimens, a rename of it or of its directory, unlink) follow the temp file.
 *
 * `apply` must be called one mutation at a time, in the source's order.
 */
export class Applier {
  readonly #r: Replica
  readonly #o: ApplierOptions
  readonly #open = new Map<number, OpenFile>()
  readonly #handles: LRUCache<number, Promise<RemoteHandle>>
  /** The handles of #handles whose open has answered: a write to one can go out at once. */
  readonly #ready = new Map<number, RemoteHandle>()
  /** While a journal replay runs: paths written through descriptors opened before it. */
  #orphans: Set<string> | null = null
  /**
   * How to undo each change of what this applier knows of open files since the oldest change
   * not answered yet (`mark`, `settled`): after a lost connection the changes from there on are
   * sent again, and each must find what it found the first time (`rollback`).
   */
  readonly #undo: Undo[] = []
  /** Undo entries dropped from the front of #undo so far (marks count from the start). */
  #undone = 0
  /**
   * Open files a change was refused for (a write, their publish): what the replica holds of
   * them is not to be trusted, and their release gets their path resynced. Not undone by a
   * rollback: a refusal is an answer.
   */
  readonly #broken = new WeakSet<OpenFile>()
  /** Publishes sent and not answered yet, by temp name: a new file under that name waits. */
  readonly #publishing = new Map<string, Promise<void>>()

  constructor (replica: Replica, o: ApplierOptions) {
    this.#r = replica
    this.#o = o
    this.#handles = new LRUCache({
      max: MAX_HANDLES,
      dispose: (h, fh, reason) => {
        this.#ready.delete(fh)
        if (reason === 'evict') h.then(x => this.#r.closeHandle(x)).catch(() => {})
      },
    })
  }

  /**
   * After a reconnect the server has closed every handle: reopen lazily, in place (a file
   * still being written goes on under the same temp name).
   */
  reset (): void {
    this.#handles.clear()
  }

  /** Where the undo log is now: taken before a change is sent. */
  mark (): number {
    return this.#undone + this.#undo.length
  }

  /** Every change sent before `mark` has been answered: their undo entries go. */
  settled (mark: number): void {
    const n = mark - this.#undone
    if (n <= 0) return
    this.#undo.splice(0, n)
    this.#undone = mark
  }

  /**
   * The connection was lost with the changes sent from `mark` on unanswered: what they did
   * to this applier's open files is undone, latest first, so that each finds, sent again,
   * what it found the first time. (What they did on the replica stays done, or not: each is
   * safe to repeat, or fails and gets its path resynced.)
   */
  rollback (mark: number): void {
    const keep = Math.max(0, mark - this.#undone)
    for (let i = this.#undo.length - 1; i >= keep; i--) {
      const u = this.#undo[i] as Undo
      if (u.f === null) {
        if (u.was === undefined) this.#open.delete(u.fh)
        else this.#open.set(u.fh, u.was)
      } else {
        u.f.path = u.path
        u.f.temp = u.temp
        u.f.replaces = u.replaces
        u.f.dirty = u.dirty
        u.f.shares = u.shares
      }
    }
    this.#undo.length = keep
  }

  /** `f` as it is now, for an undo: called before any of its fields changes. */
  #save (f: OpenFile): void {
    this.#undo.push({ f, path: f.path, temp: f.temp, replaces: f.replaces, dirty: f.dirty, shares: f.shares })
  }

  /** The file open as `fh` is now `f` (undefined: none). */
  #setOpen (fh: number, f: OpenFile | undefined): void {
    this.#undo.push({ f: null, fh, was: this.#open.get(fh) })
    if (f === undefined) this.#open.delete(fh)
    else this.#open.set(fh, f)
  }

  /** Written since its times were set. */
  #dirty (f: OpenFile | undefined, dirty: boolean): void {
    if (f === undefined || f.dirty === dirty) return
    this.#save(f)
    f.dirty = dirty
  }

  /**
   * The replica refused `m` (its path is being resynced): if it acted on an open file, that
   * file is copied again once released, as the resync may run before the file is complete.
   */
  refused (m: Mutation): void {
    if (!('fh' in m) || typeof m.fh !== 'number' || m.op === 'release') return
    const f = this.#open.get(m.fh)
    if (f === undefined) return
    this.#broken.add(f)
    // Written into another descriptor's temp file: that one is published with it.
    if (f.shares !== null) this.#broken.add(f.shares)
  }

  /** `f` closed: forgotten, unless its descriptor number is another file's already. */
  #forget (fh: number, f: OpenFile | undefined): void {
    if (f !== undefined && this.#open.get(fh) === f) this.#setOpen(fh, undefined)
  }


  /**
   * End of a journal replay: files whose release the journal never saw (the daemon was
   * killed while they were open) are closed and published as the source holds them.
   */
  async finishAll (): Promise<void> {
    // Files opened before the replay's start: what the replay wrote into them went in place,
    // not where the killed run was writing them (a temp file). Copied whole below, with any
    // file whose publish fails here. Kept until all are copied: after a lost connection this
    // runs again and finds them all again.
    const repair = this.#orphans ??= new Set()
    for (const [fh, f] of [...this.#open]) {
      try {
        await this.#close(fh, f)
        // Its times, which a release would have set: the source's now.
        if (f.path !== null) await this.#timesFromSource(f.path)
      } catch (err) {
        if (err instanceof ReplicaError && err.transient) throw err
        if (f.path !== null) repair.add(f.path)
      }
      if (this.#broken.has(f) && f.path !== null) repair.add(f.path)
      this.#setOpen(fh, undefined)
    }
    const refused: string[] = []
    let cause: unknown
    for (const path of repair) {
      try {
        await this.#mirror().path(path)
      } catch (err) {
        if (err instanceof ReplicaError && err.transient) throw err
        refused.push(path)
        cause ??= err
      }
    }
    this.#orphans = null
    if (refused.length > 0) throw new CopiesRefused(refused, cause)
  }

  /** The replica's `path` gets the times the source's file has (none if it has gone). */
  async #timesFromSource (path: string): Promise<void> {
    const st = await lstat(Buffer.from(this.#o.sourceRoot + path, 'latin1')).catch(() => null)
    if (st === null || !st.isFile()) return
    await this.#r.utimes(path, Math.floor(st.atimeMs / 1000), Math.floor(st.mtimeMs / 1000))
  }

  /** The replica's handle of `fh` closed, and the file published where it was written aside. */
  async #close (fh: number, f: OpenFile): Promise<void> {
    const h = this.#handles.get(fh)
    this.#handles.delete(fh)
    if (h !== undefined) await this.#r.closeHandle(await h)
    await this.#publish(f)
  }

  /** Closes every handle and forgets every open file (their temp files are swept after). */
  async #forgetOpen (): Promise<void> {
    const handles = [...this.#handles.values()]
    this.#handles.clear()
    for (const fh of [...this.#open.keys()]) this.#setOpen(fh, undefined)
    await Promise.all(handles.map(h => h.then(x => this.#r.closeHandle(x)).catch(() => {})))
  }

  /** A resync's copier; it leaves alone the temp files this applier is still writing. */
  #mirror (): Mirror {
    return new Mirror(this.#o.sourceRoot, this.#r, this.#o.excludes, path => {
      for (const f of this.#open.values()) if (f.temp === path) return true
      return false
    })
  }

  /**
   * A resync of `path` is to replace the files at and below it: those written in place lose
   * their handles (a handle on the file replaced would write into one with no name), so later
   * writes reopen the new one, and each is copied again once released.
   */
  #letGo (path: string): void {
    for (const [fh, f] of this.#open) {
      if (f.temp !== null || f.path === null || !atOrUnder(f.path, path)) continue
      this.#dropHandle(fh)
      this.#broken.add(f)
    }
  }

  /** A journal replay starts: note the files it writes that it never saw opened. */
  beginReplay (): void {
    this.#orphans = new Set()
  }

  /** The file being written under a temp name for `path`, if any. */
  #pending (path: string): OpenFile | undefined {
    for (const f of this.#open.values()) if (f.temp !== null && f.path === path) return f
    return undefined
  }

  /** Where a path-based call on `path` must go: the temp file while it is unpublished. */
  #target (path: string): string {
    return this.#pending(path)?.temp ?? path
  }

  async #owner (path: string, uid: number, gid: number): Promise<void> {
    if (uid === this.#o.daemonUid && gid === this.#o.daemonGid) return
    await this.#r.chown(path, uid, gid)
  }

  async #startFile (fh: number, path: string, mode: number, uid: number, gid: number, replaces: boolean): Promise<void> {
    const r = this.#r
    const atomic = this.#o.atomicPublish
    const name = atomic ? tempFor(path, fh) : path
    this.#setOpen(fh, { path, temp: atomic ? name : null, replaces, dirty: false, shares: null })
    // The same name (same path, same descriptor number) still being published: once it has
    // gone, or a repeat of that rename after a lost connection would move this new file.
    await this.#publishing.get(name)?.catch(() => {})
    const opening = this.#remember(fh, r.openWrite(name, true, true, mode))
    const h = await opening
    // The server's umask may have narrowed the mode.
    if ((mode & 0o7022) !== 0) await r.chmod(h.path, mode)
    await this.#owner(h.path, uid, gid)
  }

  /**
   * A file being written under a temp name lost its name on the source (unlinked, or
   * replaced by a rename): its temp file goes now, so that its directory can be removed or
   * renamed as on the source. The open handle keeps working on the unlinked file.
   */
  async #drop (f: OpenFile): Promise<void> {
    // State changes only once the replica has done it: a retry after a reconnect redoes it.
    if (f.temp !== null) await this.#unlinkIfThere(f.temp)
    this.#save(f)
    f.path = null
    f.temp = null
  }

  async #unlinkIfThere (path: string): Promise<void> {
    try {
      await this.#r.unlink(path)
    } catch (err) {
      if (!(err instanceof ReplicaError && err.errno === E.ENOENT)) throw err
    }
  }

  async #publish (f: OpenFile): Promise<void> {
    const temp = f.temp
    if (temp === null) return
    // Forgotten only once done: a rename lost with the connection is retried after it.
    try {
      await this.#place(temp, f.path)
    } catch (err) {
      // Not there: most likely renamed already, its answer lost with a connection (or a
      // directory it needs is gone). Later changes name the file as published; the failure
      // gets its path resynced all the same.
      if (err instanceof ReplicaError && err.errno === E.ENOENT) this.#published(f, temp)
      throw err
    }
    this.#published(f, temp)
  }

  /** A file written under `temp` goes to `path`: renamed into place, or gone if unlinked since. */
  #place (temp: string, path: string | null): Promise<void> {
    return path === null ? this.#unlinkIfThere(temp) : this.#r.rename(temp, path)
  }

  /** `f`, written under `temp`, is published now (if not since moved on). */
  #published (f: OpenFile, temp: string): void {
    if (f.temp !== temp) return
    this.#save(f)
    f.temp = null
  }

  /** A handle being opened for `fh`; forgotten if the open fails, so a later write retries. */
  #remember (fh: number, opening: Promise<RemoteHandle>): Promise<RemoteHandle> {
    this.#handles.set(fh, opening)
    opening.then(h => {
      if (this.#handles.peek(fh) === opening) this.#ready.set(fh, h)
    }, () => {
      if (this.#handles.get(fh) === opening) this.#handles.delete(fh)
    })
    return opening
  }

  /**
   * A change that is one request to the replica, sent at once, without waiting for the
   * changes before it to be answered (the replica applies calls in the order sent), so that a
   * run of them is pipelined: a write or the release of a file with nothing left to publish
   * or set (the close of its handle), on a handle open here already; the flush of a file
   * written under a temp name (its publish: the rename into place), its open answered; a
   * chmod, chown or utimens (a setstat of the name the file has on the replica now). After a lost
   * connection the caller rolls back (`rollback`) and sends them again, in order. null where
   * it cannot go out at once (no handle yet, more than one request, or a replica that does not
   * keep the order): `apply` it, in turn, instead.
   */
  now (m: Mutation): Promise<void> | null {
    if (!this.#r.ordered) return null
    try {
      return this.#now(m)
    } catch (err) {
      // A name the replica cannot carry, say: a failure of the change, as apply's would be.
      return Promise.reject(err)
    }
  }

  #now (m: Mutation): Promise<void> | null {
    switch (m.op) {
      case 'write':
      case 'release': {
        const h = this.#handles.get(m.fh) === undefined ? undefined : this.#ready.get(m.fh)
        if (h === undefined) return null
        const f = this.#open.get(m.fh)
        if (m.op === 'write') {
          this.#dirty(f, true)
          return this.#r.write(h, m.offset, m.data)
        }
        if (f === undefined || f.temp !== null || this.#broken.has(f) || (f.dirty && f.path !== null && m.mtime > 0)) return null
        // Forgotten now, as apply forgets it once closed: the server drops the handle anyway if
        // the connection is lost first, and any other failure gets the path resynced.
        this.#handles.delete(m.fh)
        this.#forget(m.fh, f)
        return this.#r.closeHandle(h)
      }
      case 'flush': {
        const f = this.#open.get(m.fh)
        // A replay's flush of a file it never saw opened: apply notes it, to copy at the end.
        if (f === undefined && this.#orphans !== null) return null
        const temp = f?.temp ?? null
        if (f === undefined || temp === null) return Promise.resolve()
        // Its temp file must exist on the replica: its open has been answered.
        if (this.#handles.get(m.fh) === undefined || this.#ready.get(m.fh) === undefined) return null
        return this.#sendPublish(f, temp)
      }
      case 'chown':
        return this.#r.chownAtOnce ? this.#setstat(m) : null
      case 'utimens':
        // One time left as it is: the replica reads the file first.
        return m.atime.nsec === UTIME_OMIT || m.mtime.nsec === UTIME_OMIT ? null : this.#setstat(m)
      case 'chmod':
        return this.#setstat(m)
      default:
        return null
    }
  }

  /**
   * A publish sent ahead of the answers: the changes sent after it find the file published,
   * as they will on the replica. Until it is answered, a new file written under the same temp
   * name waits (a publish sent again after a lost connection would move that one instead).
   */
  #sendPublish (f: OpenFile, temp: string): Promise<void> {
    const path = f.path
    this.#published(f, temp)
    const done = this.#place(temp, path)
    const settled = done.then(() => {}, () => {}).then(() => {
      if (this.#publishing.get(temp) === settled) this.#publishing.delete(temp)
    })
    this.#publishing.set(temp, settled)
    return done
  }

  /** A chmod, chown or utimens: one setstat of the name the file has on the replica now. */
  #setstat (m: Extract<Mutation, { op: 'chmod' | 'chown' | 'utimens' }>): Promise<void> {
    const r = this.#r
    switch (m.op) {
      case 'chmod':
        return r.chmod(this.#target(m.path), m.mode)
      case 'chown':
        return r.chown(this.#target(m.path), m.owner, m.group)
      case 'utimens': {
        // The times are set after the writes before them: the release need not set them again.
        for (const f of this.#open.values()) if (f.path === m.path) this.#dirty(f, false)
        const now = Date.now() / 1000
        return r.utimes(this.#target(m.path), seconds(m.atime, now), seconds(m.mtime, now))
      }
    }
  }

  #handleFor (fh: number, path: string | null): Promise<RemoteHandle> | null {
    const known = this.#handles.get(fh)
    if (known !== undefined) return known
    let f = this.#open.get(fh)
    if (f === undefined) {
      // Opened without O_TRUNC, or before this applier knew it (a restart): write in place,
      // or into the temp file if another descriptor is still writing the file under one.
      if (path === null) return null
      this.#orphans?.add(path)
      f = { path, temp: null, replaces: false, dirty: false, shares: this.#pending(path) ?? null }
      this.#setOpen(fh, f)
    }
    // Never opened here, closed as least recently used, or lost with a connection: reopen,
    // without truncating, and without creating: a file that is not there was renamed or
    // published meanwhile (by a change sent after this one, whose answer was lost), and a new
    // empty one in its place would be published or renamed over the whole file. The write
    // fails instead, and the path is resynced.
    const p = f.shares?.temp ?? f.temp ?? f.path
    if (p === null) return null
    return this.#remember(fh, this.#r.openWrite(p, false, false, 0o644))
  }

  async apply (m: Mutation): Promise<void> {
    const r = this.#r
    switch (m.op) {
      case 'create': {
        this.#closeStale(m.fh)
        return this.#startFile(m.fh, m.path, m.mode, m.uid, m.gid, false)
      }
      case 'open-truncate': {
        this.#closeStale(m.fh)
        if (!this.#o.atomicPublish) {
          this.#setOpen(m.fh, { path: m.path, temp: null, replaces: false, dirty: false, shares: null })
          await this.#remember(m.fh, r.openWrite(m.path, true, true, 0o644))
          return
        }
        // A file with other names (hard links) must keep its inode: truncate it in place.
        if (m.links > 1) {
          this.#setOpen(m.fh, { path: m.path, temp: null, replaces: false, dirty: false, shares: null })
          await this.#remember(m.fh, r.openWrite(m.path, true, true, 0o644))
          return
        }
        const st = await r.lstat(m.path)
        await this.#startFile(m.fh, m.path, st === null ? 0o644 : st.mode & 0o7777, st?.uid ?? this.#o.daemonUid, st?.gid ?? this.#o.daemonGid, st !== null)
        return
      }
      case 'write': {
        const h = this.#handleFor(m.fh, m.path)
        if (h === null) return
        this.#dirty(this.#open.get(m.fh), true)
        return r.write(await h, m.offset, m.data)
      }
      case 'truncate': {
        if (m.fh !== null) {
          const h = this.#handleFor(m.fh, m.path)
          if (h === null) return
          this.#dirty(this.#open.get(m.fh), true)
          return r.ftruncate(await h, m.size)
        }
        if (m.path !== null) return r.truncate(this.#target(m.path), m.size)
        return
      }
      case 'fsync': {
        const h = this.#handles.get(m.fh)
        if (h !== undefined) return r.fsync(await h)
        return
      }
      case 'flush': {
        const f = this.#open.get(m.fh)
        if (f === undefined && m.path !== null) this.#orphans?.add(m.path)
        if (f?.temp == null) return
        await this.#handles.get(m.fh)
        return this.#publish(f)
      }
      case 'release': {
        const f = this.#open.get(m.fh)
        if (f === undefined) {
          // Replayed, of a file the replay never saw written: copied at the replay's end.
          if (m.path !== null) this.#orphans?.add(m.path)
          return
        }
        try {
          await this.#close(m.fh, f)
          if (f.dirty && f.path !== null && m.mtime > 0) {
            // Another descriptor may still be writing it under its temp name.
            await r.utimes(this.#target(f.path), m.atime, m.mtime).catch(err => {
              if (!(err instanceof ReplicaError && err.errno === E.ENOENT)) throw err
            })
          }
          if (this.#broken.has(f)) throw new ReplicaError(`${f.path ?? m.path}: a change to it was refused while it was open; copying it again`, E.EIO)
        } catch (err) {
          // Kept for a retry after a lost connection (it publishes and sets times again);
          // forgotten after any other failure (the path gets resynced), so that a reused
          // descriptor number never finds it.
          if (!(err instanceof ReplicaError && err.transient)) this.#forget(m.fh, f)
          throw err
        }
        this.#forget(m.fh, f)
        return
      }
      case 'mkdir':
        await r.mkdir(m.path, m.mode)
        return this.#owner(m.path, m.uid, m.gid)
      case 'mknod':
        // Device nodes and sockets stay local: a document root has no use for them.
        if ((m.mode & 0o170000) !== 0o010000) return
        await r.mkfifo(m.path, m.mode)
        return this.#owner(m.path, m.uid, m.gid)
      case 'symlink':
        await r.symlink(m.target, m.path)
        return this.#owner(m.path, m.uid, m.gid)
      case 'link': {
        // A hard link to a file still being written: publish it first, links need the name.
        const f = this.#pending(m.from)
        if (f !== undefined) await this.#publish(f)
        return r.link(m.from, m.path)
      }
      case 'rename': {
        // A replay's files to copy at its end go by the names they have then. (A name moved
        // in the loop comes round again, below m.path now: never under m.from, it stays.)
        const orphans = this.#orphans
        if (orphans !== null) {
          for (const p of orphans) {
            const moved = afterRename(p, m.from, m.path)
            if (moved === p) continue
            orphans.delete(p)
            orphans.add(moved)
          }
        }
        const moving = this.#pending(m.from)
        // Replaced on the source before it was ever published: it never will be.
        const replaced = this.#pending(m.path)
        if (replaced !== undefined && replaced !== moving) await this.#drop(replaced)
        for (const f of this.#open.values()) {
          const temp = f.temp === null ? null : afterRename(f.temp, m.from, m.path)
          const path = f.path === null ? null : afterRename(f.path, m.from, m.path)
          if (temp === f.temp && path === f.path) continue
          this.#save(f)
          f.temp = temp
          f.path = path
        }
        // Not yet on the replica under its name: it lands at the new name when published;
        // the old file it replaces (O_TRUNC) leaves the old name now.
        if (moving !== undefined) {
          if (moving.replaces) {
            await this.#unlinkIfThere(m.from)
            this.#save(moving)
            moving.replaces = false
          }
          return
        }
        return r.rename(m.from, m.path)
      }
      case 'unlink': {
        const f = this.#pending(m.path)
        if (f === undefined) return r.unlink(m.path)
        const replaces = f.replaces
        await this.#drop(f)
        if (replaces) await this.#unlinkIfThere(m.path)
        return
      }
      case 'rmdir':
        return r.rmdir(m.path)
      case 'chmod':
      case 'chown':
      case 'utimens':
        return this.#setstat(m)
      case 'resync':
        // The whole tree (a replica switched to it, too far behind): the changes it skipped
        // included files' writes and releases, so what this applier has open is forgotten;
        // later writes to those files go in place, after the copy of what the source holds.
        if (m.path === '/') await this.#forgetOpen()
        else this.#letGo(m.path)
        return this.#mirror().path(m.path)
      case 'finish-replay':
        return this.finishAll()
      case 'setxattr':
      case 'removexattr':
        // xattrs stay local: SFTP v3 has no way to carry them.
        return
    }
  }

  /** A descriptor number reused by the source after a release we never saw. */
  #closeStale (fh: number): void {
    this.#setOpen(fh, undefined)
    this.#dropHandle(fh)
  }

  /** The replica's handle of `fh`, if any, forgotten and closed in the background. */
  #dropHandle (fh: number): void {
    const h = this.#handles.get(fh)
    this.#handles.delete(fh)
    h?.then(x => this.#r.closeHandle(x)).catch(() => {})
  }
}
