import { lstat, open } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { E } from '../errors'
import { hashFile } from '../replica/file'
import { ReplicaError, type RemoteStat, type Replica } from '../replica/replica'
import type { Excludes } from './exclude'
import { CHUNK, SourceTree, type Subtree } from './source'
import { Streamer, wholeTree } from './streamer'
import { linkOver, TEMP_PREFIX, TEMP_SUFFIX } from './temp'

const S_IFMT = 0o170000
/** Directories listed at once (both sides), across the walk. */
const LISTINGS = 8
/** Nodes counted ahead at most, while the replica is asked whether it takes a stream. */
const COUNT_AHEAD = 4096
/** Writes of one file's copy in flight at once. */
const WRITES_AHEAD = 8

export type DiffKind = 'missing' | 'extra' | 'type' | 'size' | 'content' | 'mode' | 'mtime' | 'link target' | 'owner'

/** One way a replica differs from the source at `path`. */
export interface Difference {
  path: string
  kind: DiffKind
  /** What the source has, and what the replica has, in words ('' when absent). */
  source: string
  replica: string
}

export interface ReconcileOptions {
  /** Hash every file on both sides, not only those whose size agrees and mtime does not. */
  checksum: boolean
  /** false: report what differs and change nothing (verify, resync --dry-run). */
  fix: boolean
  /** Copies in flight at once. */
  parallel: number
  /** Each difference, as it is found. */
  found?: (d: Difference) => void
  /** Paths neither compared nor touched, on either side. */
  excludes?: Excludes | null
}

export interface ReconcileStats {
  checked: number
  differences: number
  copied: number
  bytes: number
  /** What could not be fixed (or read), one sentence each. */
  errors: string[]
}

function kindOf (mode: number): string {
  switch (mode & S_IFMT) {
    case 0o040000: return 'dir'
    case 0o100000: return 'file'
    case 0o120000: return 'symlink'
    case 0o010000: return 'fifo'
    default: return 'special'
  }
}

function join (dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0')

/**
 * Makes a replica identical to the source (or, with `fix: false`, lists how it differs):
 * types, content, modes, numeric owners, file mtimes (whole seconds: what SFTP carries),
 * symlink targets, and hard link groups (a group's later names are linked to its first, where
 * the replica differs there); what the source lacks is deleted. Files are compared by size and
 * mtime; where the size agrees and the mtime does not (or with `checksum`), by content.
 * Directories' own mtimes are not compared: every entry made or removed moves them.
 *
 * It assumes nothing changes the source meanwhile (the mount is not up yet, or the operator
 * runs `resync` on a quiet tree); a file copied while it changes is copied again next time.
 */
export class Reconciler {
  readonly #tree: SourceTree
  readonly #r: Replica
  readonly #o: ReconcileOptions
  readonly stats: ReconcileStats = { checked: 0, differences: 0, copied: 0, bytes: 0, errors: [] }
  readonly #copies = new Set<Promise<void>>()
  /** Directory listings in flight at once. */
  readonly #listings = new Slots(LISTINGS)
  /** Hard link groups: source inode -> the first name copied, and when its copy is done. */
  readonly #groups = new Map<number, { path: string, done: Promise<void> }>()
  #temp = 0
  /**
   * Where the replica takes a stream of files (a backup that runs tar), copies go that way;
   * asked at the first difference to fix.
   */
  #streamer: Promise<Streamer | null> | undefined = undefined
  /** Whether the replica has answered whether it takes a stream. */
  #streamKnown = false
  /** Missing directories counted ahead (countAhead), and how many nodes they hold. */
  readonly #counted = new Map<string, Subtree | null>()
  #countedNodes = 0
  /** Later names of hard link groups, waiting for their first to be streamed and placed. */
  readonly #links = new Set<Promise<void>>()

  /** @param root the source directory, as a byte string (latin1). */
  constructor (root: string, replica: Replica, o: ReconcileOptions) {
    this.#tree = new SourceTree(root)
    this.#r = replica
    this.#o = o
  }

  async run (): Promise<ReconcileStats> {
    const src = await lstat(this.#tree.path('/'))
    const rem = await this.#r.lstat('/')
    if (rem === null) throw new ReplicaError(`${this.#r.url}: the replica's root does not exist`, E.ENOENT)
    try {
      await this.#dir('/', src, rem)
      await (await this.#streamer)?.finish()
      while (this.#links.size > 0) await Promise.all(this.#links)
      await Promise.all(this.#copies)
    } catch (err) {
      // The walk failed: a stream still open is given up (its temp files are extras next time).
      ;(await this.#streamer)?.abort()
      throw err
    }
    return this.stats
  }

  #differs (path: string, kind: DiffKind, source: string, replica: string): void {
    // Something is to be fixed: whether the replica takes a stream is asked now, alongside.
    if (this.#o.fix) void this.#stream()
    this.stats.differences++
    this.#o.found?.({ path, kind, source, replica })
  }

  #failed (path: string, err: unknown): void {
    this.stats.errors.push(`${path}: ${(err as Error).message}`)
  }

  async #dir (path: string, src: Stats, rem: RemoteStat): Promise<void> {
    await this.#attrs(path, src, rem)
    let names: string[]
    const theirs = new Map<string, RemoteStat>()
    await this.#listings.take()
    try {
      names = this.#tree.readdir(path)
      for (const e of await this.#r.list(path)) theirs.set(e.name, e.stat)
    } catch (err) {
      this.#failed(path, err)
      return
    } finally {
      this.#listings.give()
    }
    // Directories on both sides are walked together once this one is done: several listings
    // in flight hide the round trips.
    const subdirs: Array<() => Promise<void>> = []
    // Symlinks on both sides: their targets are read at once (a round trip each, in flight
    // together), not one after another. Nothing else of theirs depends on order.
    const links: Array<Promise<void>> = []
    const ex = this.#o.excludes
    const nodes: Array<{ p: string, s: Stats | null, r: RemoteStat | null }> = []
    for (const name of [...new Set([...names, ...theirs.keys()])].sort()) {
      const p = join(path, name)
      const s = this.#tree.lstat(p)
      const r = theirs.get(name) ?? null
      if (ex != null && ex.matches(p, s !== null ? s.isDirectory() : r !== null && (r.mode & S_IFMT) === 0o040000)) continue
      nodes.push({ p, s, r })
    }
    if (this.#o.fix && !this.#streamKnown) await this.#countAhead(nodes)
    for (const { p, s, r } of nodes) {
      const remoteKind = r !== null ? r.mode & S_IFMT : 0
      if (s !== null && s.isDirectory() && remoteKind === 0o040000) subdirs.push(() => this.#node(p, s, r))
      else if (s !== null && s.isSymbolicLink() && remoteKind === 0o120000) links.push(this.#node(p, s, r))
      else await this.#node(p, s, r)
    }
    await Promise.all(links)
    await Promise.all(subdirs.map(walk => walk()))
  }

  /**
   * While the replica is asked whether it takes a stream (a login shell on the backup starts,
   * which can take a tenth of a second), the missing directories here are counted, as
   * sendsWhole would: that much of the walk is done before the copying keeps this process busy.
   * Between two, the event loop runs: the stream's channel is being opened meanwhile, and each
   * of its steps waits for its turn.
   */
  async #countAhead (nodes: Array<{ p: string, s: Stats | null, r: RemoteStat | null }>): Promise<void> {
    for (const { p, s, r } of nodes) {
      if (this.#countedNodes >= COUNT_AHEAD || this.#streamKnown) return
      if (s === null || !s.isDirectory() || (r !== null && (r.mode & S_IFMT) === 0o040000)) continue
      void this.#stream()
      await new Promise(resolve => setImmediate(resolve))
      const counted = wholeTree(this.#tree, p)
      this.#counted.set(p, counted)
      this.#countedNodes += counted?.nodes ?? COUNT_AHEAD
    }
  }

  async #node (path: string, src: Stats | null, rem: RemoteStat | null): Promise<void> {
    this.stats.checked++
    try {
      if (src === null) {
        if (rem === null) return
        this.#differs(path, 'extra', '', kindOf(rem.mode))
        if (this.#o.fix) await this.#remove(path, rem)
        return
      }
      if (rem !== null && (rem.mode & S_IFMT) !== (src.mode & S_IFMT)) {
        this.#differs(path, 'type', kindOf(src.mode), kindOf(rem.mode))
        if (this.#o.fix) await this.#remove(path, rem)
        return this.#create(path, src)
      }
      if (rem === null) {
        this.#differs(path, 'missing', kindOf(src.mode), '')
        return this.#create(path, src)
      }
      if (src.isDirectory()) return this.#dir(path, src, rem)
      if (src.isSymbolicLink()) return this.#symlink(path, src, rem)
      if (src.isFile()) return this.#file(path, src, rem)
      await this.#attrs(path, src, rem)
    } catch (err) {
      this.#failed(path, err)
    }
  }

  /** Made on the replica, where it was missing or of another type. */
  async #create (path: string, src: Stats): Promise<void> {
    if (src.isDirectory() && this.#o.fix) {
      const streamer = await this.#stream()
      const size = streamer === null ? null : this.#counted.has(path) ? this.#counted.get(path)! : streamer.sendsWhole(path)
      this.#counted.delete(path)
      if (streamer !== null && size !== null) return this.#streamTree(streamer, path, src, size)
    }
    if (src.isDirectory()) {
      if (this.#o.fix) await this.#r.mkdir(path, src.mode & 0o7777)
      const made = this.#o.fix ? await this.#r.lstat(path) : null
      // Dry run: everything below is missing too.
      if (made === null) return this.#listMissing(path)
      return this.#dir(path, src, made)
    }
    if (!this.#o.fix) return
    if (src.isSymbolicLink()) {
      await this.#r.symlink(this.#tree.readlink(path), path)
      await this.#r.chown(path, src.uid, src.gid)
    } else if (src.isFile()) {
      await this.#copy(path, src)
    } else if (src.isFIFO()) {
      await this.#r.mkfifo(path, src.mode)
      await this.#r.chown(path, src.uid, src.gid)
    }
  }

  async #listMissing (path: string): Promise<void> {
    for (const name of this.#tree.readdir(path).sort()) {
      const p = join(path, name)
      const st = this.#tree.lstat(p)
      if (st === null || this.#o.excludes?.matches(p, st.isDirectory()) === true) continue
      this.stats.checked++
      this.#differs(p, 'missing', kindOf(st.mode), '')
      if (st.isDirectory()) await this.#listMissing(p)
    }
  }

  async #symlink (path: string, src: Stats, rem: RemoteStat): Promise<void> {
    const want = this.#tree.readlink(path)
    const have = await this.#r.readlink(path)
    if (want !== have) {
      this.#differs(path, 'link target', want, have)
      if (!this.#o.fix) return
      await this.#r.unlink(path)
      await this.#r.symlink(want, path)
      await this.#r.chown(path, src.uid, src.gid)
      return
    }
    await this.#owner(path, src, rem)
  }

  async #file (path: string, src: Stats, rem: RemoteStat): Promise<void> {
    const mtime = Math.floor(src.mtimeMs / 1000)
    let same = rem.size === src.size
    if (!same) {
      this.#differs(path, 'size', String(src.size), String(rem.size))
    } else if (this.#o.checksum || rem.mtime !== mtime) {
      const [a, b] = await Promise.all([hashFile(this.#tree.path(path)), this.#r.hash(path)])
      same = a === b
      if (!same) this.#differs(path, 'content', `sha256 ${a.slice(0, 16)}`, `sha256 ${b.slice(0, 16)}`)
    }
    if (!same) {
      if (this.#o.fix) await this.#copy(path, src)
      return
    }
    // A later name of a hard link group: the first name is known from here on.
    if (src.nlink > 1 && !this.#groups.has(src.ino)) this.#groups.set(src.ino, { path, done: Promise.resolve() })
    await this.#attrs(path, src, rem)
    if (rem.mtime !== mtime) {
      this.#differs(path, 'mtime', String(mtime), String(rem.mtime))
      if (this.#o.fix) await this.#r.utimes(path, Math.floor(src.atimeMs / 1000), mtime)
    }
  }

  /** The owner, then the mode: a chown clears setuid and setgid, so the mode is set after one. */
  async #attrs (path: string, src: Stats, rem: RemoteStat): Promise<void> {
    const chowned = await this.#owner(path, src, rem)
    const modeDiffers = (src.mode & 0o7777) !== (rem.mode & 0o7777)
    if (modeDiffers) this.#differs(path, 'mode', octal(src.mode), octal(rem.mode))
    if (this.#o.fix && (modeDiffers || (chowned && (src.mode & 0o6000) !== 0))) await this.#r.chmod(path, src.mode & 0o7777)
  }

  /** true where the owner differed (and, fixing, was set). */
  async #owner (path: string, src: Stats, rem: RemoteStat): Promise<boolean> {
    if (src.uid === rem.uid && src.gid === rem.gid) return false
    this.#differs(path, 'owner', `${src.uid}:${src.gid}`, `${rem.uid}:${rem.gid}`)
    if (this.#o.fix) await this.#r.chown(path, src.uid, src.gid)
    return true
  }

  /** Starts a copy (or a hard link to the group's first name), at most `parallel` at once. */
  async #copy (path: string, src: Stats): Promise<void> {
    const streamer = await this.#stream()
    if (streamer !== null) return this.#streamed(streamer, path, src)
    await this.#slot()
    const group = src.nlink > 1 ? this.#groups.get(src.ino) : undefined
    const work = (async () => {
      if (group !== undefined) {
        await group.done
        if (await this.#linked(group.path, path)) return
      }
      await this.#copyFile(path, src)
    })().catch(err => this.#failed(path, err))
    if (src.nlink > 1 && group === undefined) this.#groups.set(src.ino, { path, done: work })
    this.#copies.add(work)
    void work.finally(() => this.#copies.delete(work))
  }

  /** The replica's file stream (asked for once), or null where it takes none. */
  #stream (): Promise<Streamer | null> {
    return this.#streamer ??= Streamer.open(this.#r, this.#tree, this.stats, (path, err) => this.#failed(path, err))
      .finally(() => { this.#streamKnown = true })
  }

  /**
   * `path` becomes another name of `first` once `ready` settles (or, where the replica cannot
   * link, a copy of `orCopy`); the run waits for it before it ends.
   */
  #linkLater (ready: Promise<unknown>, first: string, path: string, orCopy: Stats | null): void {
    const work = (async () => {
      await ready
      if (!(await this.#linked(first, path)) && orCopy !== null) await this.#copyFile(path, orCopy)
    })().catch(err => this.#failed(path, err))
    this.#links.add(work)
    void work.finally(() => this.#links.delete(work))
  }

  /**
   * A missing directory, whole, through the replica's file stream: under a temporary name,
   * renamed into place once all of it is there. Each node below is reported missing.
   */
  async #streamTree (streamer: Streamer, path: string, src: Stats, size: Subtree): Promise<void> {
    let settled!: () => void
    const placed = new Promise<void>(resolve => { settled = resolve })
    await streamer.add(path, this.#tempFor(path), src, settled, { size, hooks: {
      include: (p, st) => {
        if (this.#o.excludes?.matches(p, st.isDirectory()) === true) return false
        this.stats.checked++
        this.#differs(p, 'missing', kindOf(st.mode), '')
        return true
      },
      linked: (p, st) => {
        const group = this.#groups.get(st.ino)
        if (group === undefined) {
          this.#groups.set(st.ino, { path: p, done: placed })
          return
        }
        // Its first name is elsewhere: it becomes another name of that one, once both are in place.
        this.#linkLater(Promise.all([group.done, placed]), group.path, p, null)
      },
    } })
  }

  /** A copy through the replica's file stream (or, for a later name of a group, a link). */
  async #streamed (streamer: Streamer, path: string, src: Stats): Promise<void> {
    const group = src.nlink > 1 ? this.#groups.get(src.ino) : undefined
    if (group !== undefined) {
      // Linked to the first once that is in place: it waits for the end of its stream.
      this.#linkLater(group.done, group.path, path, src)
      return
    }
    let settled: (() => void) | undefined
    if (src.nlink > 1) this.#groups.set(src.ino, { path, done: new Promise<void>(resolve => { settled = resolve }) })
    await streamer.add(path, this.#tempFor(path), src, settled)
  }

  /** Waits for a free copy slot. */
  async #slot (): Promise<void> {
    while (this.#copies.size >= this.#o.parallel) await Promise.race(this.#copies)
  }

  /** `path` becomes another name of `first` (false: the replica cannot link). */
  #linked (first: string, path: string): Promise<boolean> {
    return linkOver(this.#r, first, this.#tempFor(path), path)
  }

  #tempFor (path: string): string {
    const dir = path.slice(0, path.lastIndexOf('/') + 1)
    return `${dir}${TEMP_PREFIX}sync${process.pid}-${++this.#temp}${TEMP_SUFFIX}`
  }

  async #copyFile (path: string, src: Stats): Promise<void> {
    const temp = this.#tempFor(path)
    const fh = await open(this.#tree.path(path), 'r')
    try {
      // Copies spread over the replica's channels (one sftp-server process each).
      const h = await this.#r.openWrite(temp, true, true, src.mode & 0o7777, this.#temp)
      // Writes pipelined, a bounded number in flight: no round trip between two of them.
      const inFlight: Array<Promise<void>> = []
      try {
        // The size the walk saw: each read asks for no more than is left (a small file is one
        // read into a buffer of its size, not a 256 KiB one), and the copy stops there (the
        // source is quiet during a reconcile; a file that grew is copied again next time).
        let offset = 0
        while (offset < src.size) {
          const want = Math.min(CHUNK, src.size - offset)
          const buf = Buffer.allocUnsafe(want)
          const { bytesRead } = await fh.read(buf, 0, want, offset)
          if (bytesRead === 0) break
          const w = this.#r.write(h, offset, buf.subarray(0, bytesRead))
          w.catch(() => {}) // awaited below; not "unhandled" while another is awaited
          inFlight.push(w)
          if (inFlight.length >= WRITES_AHEAD) await inFlight.shift()
          offset += bytesRead
          this.stats.bytes += bytesRead
        }
        await Promise.all(inFlight)
        // Mode, owner and times in one request, before the close (nothing writes after).
        await this.#r.fsetattrs(h, { mode: src.mode, uid: src.uid, gid: src.gid, atime: Math.floor(src.atimeMs / 1000), mtime: Math.floor(src.mtimeMs / 1000) })
      } finally {
        await Promise.allSettled(inFlight)
        await this.#r.closeHandle(h)
      }
    } finally {
      await fh.close()
    }
    await this.#r.rename(temp, path)
    this.stats.copied++
  }

  async #remove (path: string, rem: RemoteStat): Promise<void> {
    if ((rem.mode & S_IFMT) === 0o040000) {
      for (const name of await this.#r.readdir(path)) {
        const p = join(path, name)
        const st = await this.#r.lstat(p)
        if (st !== null) await this.#remove(p, st)
      }
      await this.#r.rmdir(path)
    } else {
      await this.#r.unlink(path)
    }
  }
}

/** A counting semaphore: at most `n` holders at once, the others wait in turn. */
class Slots {
  #free: number
  readonly #waiting: Array<() => void> = []

  constructor (n: number) {
    this.#free = n
  }

  async take (): Promise<void> {
    if (this.#free > 0) {
      this.#free--
      return
    }
    await new Promise<void>(resolve => this.#waiting.push(resolve))
  }

  give (): void {
    const next = this.#waiting.shift()
    if (next !== undefined) next()
    else this.#free++
  }
}
