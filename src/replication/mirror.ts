import { open } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { E } from '../errors'
import { ReplicaError, type RemoteStat, type Replica } from '../replica/replica'
import type { Excludes } from './exclude'
import { CHUNK, SourceTree } from './source'
import { isTempName, linkOver, TEMP_PREFIX, TEMP_SUFFIX } from './temp'

const S_IFMT = 0o170000
const S_IFDIR = 0o040000

/**
 * Names below a resync's path that the replica cannot be given (not UTF-8, over SFTP): all
 * else below it was made what the source holds.
 */
export class Unspellable extends Error {
  readonly paths: string[]
  constructor (paths: string[]) {
    super(`${paths.map(p => JSON.stringify(p)).join(', ')}: names that are not valid UTF-8 cannot be carried over SFTP`)
    this.paths = paths
  }
}

/**
 * Makes the replica's `path`, and everything below it, what the source holds now: the repair
 * for a change whose journal record never completed (the daemon was killed between applying
 * it and recording it). Files are copied whole under a temp name, given their mode, owner and
 * times there, and renamed into place. A hard link group's names found in one run stay one
 * file: the first is copied, the others linked to it. A name of a group found alone (a path
 * resynced whose other names lie outside it) is copied: those others keep what the replica
 * held.
 */
export class Mirror {
  readonly #tree: SourceTree
  readonly #r: Replica
  readonly #ex: Excludes | null
  readonly #inUse: (path: string) => boolean

  /**
   * @param root the source directory, as a byte string (latin1).
   * @param inUse temp files a live applier is still writing: the sweep leaves them.
   */
  constructor (root: string, replica: Replica, excludes: Excludes | null = null, inUse: (path: string) => boolean = () => false) {
    this.#tree = new SourceTree(root)
    this.#r = replica
    this.#ex = excludes
    this.#inUse = inUse
  }

  /** Its hard link groups: source inode -> the name copied first. */
  readonly #groups = new Map<number, string>()
  /** Names below its path that the replica cannot be given. */
  readonly #unspellable: string[] = []

  /**
   * Throws Unspellable, having done all else, where names below `path` cannot be given. One
   * call per Mirror.
   */
  async path (path: string): Promise<void> {
    await this.#sweep(path === '/' ? '/' : path.slice(0, path.lastIndexOf('/')) || '/')
    await this.#mirror(path)
    if (this.#unspellable.length > 0) throw new Unspellable(this.#unspellable)
  }

  /** A name the replica cannot spell was never made there. */
  #lstat (path: string): Promise<RemoteStat | null> {
    return this.#r.lstat(path).catch((err: unknown) => {
      if (err instanceof ReplicaError && err.errno === E.EILSEQ) return null
      throw err
    })
  }

  /** One name below the path: one the replica cannot be given is left out, and said at the end. */
  async #child (path: string): Promise<void> {
    try {
      await this.#mirror(path)
    } catch (err) {
      if (!(err instanceof ReplicaError && err.errno === E.EILSEQ)) throw err
      this.#unspellable.push(path)
    }
  }

  /** Temp files a killed run left in `dir` (but not those a live applier is writing). */
  async #sweep (dir: string): Promise<void> {
    let names: string[]
    try {
      names = await this.#r.readdir(dir)
    } catch {
      return
    }
    for (const name of names) {
      const p = join(dir, name)
      if (isTempName(name) && !this.#inUse(p)) await this.#r.unlink(p).catch(() => {})
    }
  }

  async #mirror (path: string): Promise<void> {
    const st = this.#tree.lstat(path)
    // Excluded: neither copied nor removed, on either side.
    if (this.#ex !== null && this.#ex.matches(path, st?.isDirectory() ?? isDir(await this.#lstat(path)))) return
    if (st === null) return this.#remove(path)
    const parent = path.slice(0, path.lastIndexOf('/')) || '/'
    // A parent the replica lacks is mirrored whole, this path with it: once, or a second visit
    // would find its own name as its group's first.
    if (parent !== path && (await this.#lstat(parent)) === null) return this.#mirror(parent)
    const remote = await this.#lstat(path)
    const sameType = remote !== null && (remote.mode & S_IFMT) === (st.mode & S_IFMT)
    if (st.isDirectory()) {
      if (remote !== null && !sameType) await this.#remove(path)
      if (!sameType) await this.#r.mkdir(path, st.mode & 0o7777)
      const names = new Set(this.#tree.readdir(path))
      for (const name of await this.#r.readdir(path)) {
        if (names.has(name)) continue
        const p = join(path, name)
        if (this.#inUse(p)) continue
        if (this.#ex !== null && this.#ex.matches(p, isDir(await this.#lstat(p)))) continue
        await this.#remove(p)
      }
      for (const name of names) await this.#child(join(path, name))
    } else {
      // A file replaces a file atomically (#copy renames over it); anything else goes first.
      if (remote !== null && !(sameType && st.isFile())) await this.#remove(path)
      if (st.isSymbolicLink()) {
        await this.#r.symlink(this.#tree.readlink(path), path)
      } else if (st.isFIFO()) {
        await this.#r.mkfifo(path, st.mode)
      } else if (st.isFile()) {
        // Placed whole, its mode, owner and times with it (a linked name has its first's).
        const first = st.nlink > 1 ? this.#groups.get(st.ino) : undefined
        if (first === undefined || !await this.#link(first, path)) await this.#copy(path, st)
        if (st.nlink > 1 && first === undefined) this.#groups.set(st.ino, path)
        return
      } else {
        return
      }
    }
    await this.#attrs(path, st)
  }

  /** The owner, then the mode (a chown clears setuid and setgid), then the times. */
  async #attrs (path: string, st: Stats): Promise<void> {
    await this.#r.chown(path, st.uid, st.gid)
    if (!st.isSymbolicLink()) await this.#r.chmod(path, st.mode & 0o7777)
    await this.#r.utimes(path, Math.floor(st.atimeMs / 1000), Math.floor(st.mtimeMs / 1000))
  }

  /** The name a file is written (or linked) under before it is renamed to `path`. */
  #temp (path: string): string {
    return `${path.slice(0, path.lastIndexOf('/') + 1)}${TEMP_PREFIX}resync${process.pid}${TEMP_SUFFIX}`
  }

  /** `path` becomes another name of `first` (false: the replica cannot link). */
  async #link (first: string, path: string): Promise<boolean> {
    const temp = this.#temp(path)
    // A temp name a killed run of the same pid left (its copies truncate it; a link fails on it).
    await this.#r.unlink(temp).catch(() => {})
    return linkOver(this.#r, first, temp, path)
  }

  async #copy (path: string, st: Stats): Promise<void> {
    const temp = this.#temp(path)
    const fh = await open(this.#tree.path(path), 'r')
    try {
      const h = await this.#r.openWrite(temp, true, true, st.mode & 0o7777)
      try {
        const buf = Buffer.allocUnsafe(CHUNK)
        let offset = 0
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, CHUNK, offset)
          if (bytesRead === 0) break
          await this.#r.write(h, offset, Buffer.from(buf.subarray(0, bytesRead)))
          offset += bytesRead
        }
      } finally {
        await this.#r.closeHandle(h)
      }
      await this.#attrs(temp, st)
      await this.#r.rename(temp, path)
    } catch (err) {
      // A copy refused half way leaves no temp file behind (after a lost connection, the
      // next sweep of its directory takes it).
      if (!(err instanceof ReplicaError && err.transient)) await this.#r.unlink(temp).catch(() => {})
      throw err
    } finally {
      await fh.close()
    }
  }

  async #remove (path: string): Promise<void> {
    const st = await this.#lstat(path)
    if (st === null) return
    if ((st.mode & S_IFMT) === S_IFDIR) {
      for (const name of await this.#r.readdir(path)) await this.#remove(join(path, name))
      await this.#r.rmdir(path)
    } else {
      await this.#r.unlink(path)
    }
  }
}

function isDir (st: RemoteStat | null): boolean {
  return st !== null && (st.mode & S_IFMT) === S_IFDIR
}

function join (dir: string, name: string): string {
  if (name.includes('/') || name === '.' || name === '..') throw new ReplicaError(`bad name ${JSON.stringify(name)}`, E.EINVAL)
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

