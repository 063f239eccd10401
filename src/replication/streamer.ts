import type { Stats } from 'node:fs'
import { E } from '../errors'
import { ReplicaError, type FileSink, type Replica, type SinkEntry } from '../replica/replica'
import { CHUNK, type Listed, type SourceTree, type Subtree } from './source'

/** A file up to this size is read whole, in one go, when its turn comes (a larger one in CHUNKs). */
const READ_WHOLE = 1024 * 1024
/**
 * Nodes queued at most (a tree sent whole counts all of its own): the walk stays ahead of the
 * stream (a missing directory takes a few round trips before its files are known) without
 * holding the whole tree in memory.
 */
const QUEUED = 4096
/** A stream is ended, and its files renamed into place, after this many files or bytes. */
const BATCH_FILES = 2000
const BATCH_BYTES = 256 * 1024 * 1024

interface Entry {
  path: string
  temp: string
  src: Stats
  /** Called once the file is in place, or has failed (hard link groups wait for their first). */
  settled?: () => void
  /** A missing directory: its whole tree is sent, under `temp`, and renamed into place at once. */
  tree?: TreeHooks
  /** Files of the tree that could not be read in full: deleted once it is in place. */
  broken?: string[]
  /** Files sent in the tree. */
  files?: number
  /** A tree's size (sendsWhole's answer): it goes into one stream. */
  size?: Subtree
}

/** What a reconcile is told of a tree as it is sent. */
export interface TreeHooks {
  /** Each node below the tree's root, before it is sent: false leaves it out (excluded). */
  include (path: string, st: Stats): boolean
  /**
   * A file with other names outside this tree: where its group already has a first name,
   * the reconcile links it there once the tree is in place.
   */
  linked (path: string, st: Stats): void
}

/**
 * A failure of the source file alone: the stream goes on without it. `sent`: its header (and
 * zeros for what could not be read) went already.
 */
class Unreadable {
  constructor (readonly err: unknown, readonly sent: boolean) {}
}

/** The tree below `path`, where it fits in one stream (Streamer.sendsWhole); null otherwise. */
export function wholeTree (tree: SourceTree, path: string): Subtree | null {
  // The directory's own entry counts too.
  return tree.within(path, BATCH_FILES - 1, BATCH_BYTES)
}

/** One stream: the files written into it are renamed into place when it has ended. */
interface Batch {
  sink: FileSink
  files: number
  bytes: number
  entries: Entry[]
  /** A tree is being sent into it: it is not ended before the tree is all in. */
  held: boolean
}

export interface StreamerStats { copied: number, bytes: number }

/**
 * Copies for a reconcile, through a replica's file stream (a backup that runs tar): files are
 * queued by the walk, written into the stream one after another by a single loop (read from
 * the source synchronously: from the page cache that takes microseconds, where a trip through
 * the thread pool for each open, read and close takes several times that), each under a
 * temporary name, and renamed into place when their stream ends. A reader on the backup never
 * sees a file in part; a crash leaves temporary files, which the next reconcile deletes.
 */
export class Streamer {
  readonly #r: Replica
  readonly #tree: SourceTree
  readonly #stats: StreamerStats
  readonly #failed: (path: string, err: unknown) => void
  /** A stream opened ahead, for the next batch. */
  #spare: Promise<FileSink | null> | null
  #batch: Batch | null = null
  readonly #queue: Entry[] = []
  #head = 0
  /** What the queued files and trees add up to. */
  #queuedNodes = 0
  #queuedBytes = 0
  #loop: Promise<void> | null = null
  /** The walk, waiting for room in the queue. */
  #waiting: Array<() => void> = []
  readonly #ending = new Set<Promise<void>>()
  #finished = false
  #aborted = false

  /** A streamer for `r`, or null where it takes no stream of files. */
  static async open (r: Replica, tree: SourceTree, stats: StreamerStats, failed: (path: string, err: unknown) => void): Promise<Streamer | null> {
    const first = await r.files?.().catch(() => null) ?? null
    return first === null ? null : new Streamer(r, tree, stats, failed, first)
  }

  private constructor (r: Replica, tree: SourceTree, stats: StreamerStats, failed: (path: string, err: unknown) => void, first: FileSink) {
    this.#r = r
    this.#tree = tree
    this.#stats = stats
    this.#failed = failed
    this.#spare = Promise.resolve(first)
  }

  /**
   * Queues the file `path` to be written under `temp` and renamed; resolves once the queue
   * has room (the walk waits for that, not for the copy).
   */
  async add (path: string, temp: string, src: Stats, settled?: () => void, tree?: { hooks: TreeHooks, size: Subtree }): Promise<void> {
    this.#queue.push({ path, temp, src, settled, tree: tree?.hooks, size: tree?.size })
    this.#queuedNodes += tree !== undefined ? tree.size.nodes + 1 : 1
    this.#queuedBytes += tree !== undefined ? tree.size.bytes : src.isFile() ? src.size : 0
    this.#loop ??= this.#run()
    if (this.#queuedNodes >= QUEUED) await new Promise<void>(resolve => this.#waiting.push(resolve))
  }

  /** Once the walk is done: resolves when every queued file is in place (or has failed). */
  async finish (): Promise<void> {
    this.#finished = true
    while (this.#loop !== null) await this.#loop
    if (this.#batch !== null) this.#end(this.#batch)
    while (this.#ending.size > 0) await Promise.all(this.#ending)
    this.#abortSpare()
  }

  /**
   * Whether the missing directory `path` is sent whole (add with tree hooks): where it is no
   * bigger than one stream, so that an interrupted reconcile loses no more than that (a tree
   * left under its temporary name is deleted by the next one). A bigger one is made and
   * walked, and its parts sent.
   */
  sendsWhole (path: string): Subtree | null {
    return wholeTree(this.#tree, path)
  }

  /** Gives up (the walk failed): files not yet renamed stay under their temporary names. */
  abort (): void {
    this.#finished = true
    this.#aborted = true
    this.#queue.length = 0
    this.#head = 0
    this.#queuedNodes = this.#queuedBytes = 0
    for (const wake of this.#waiting.splice(0)) wake()
    this.#batch?.sink.abort()
    this.#batch = null
    this.#abortSpare()
  }

  #abortSpare (): void {
    void this.#spare?.then(s => s?.abort(), () => {})
    this.#spare = null
  }

  async #run (): Promise<void> {
    try {
      while (this.#head < this.#queue.length) {
        const e = this.#queue[this.#head++]!
        this.#queuedNodes -= e.size !== undefined ? e.size.nodes + 1 : 1
        this.#queuedBytes -= e.size !== undefined ? e.size.bytes : e.src.isFile() ? e.src.size : 0
        if (this.#head === this.#queue.length) {
          this.#queue.length = 0
          this.#head = 0
        }
        if (this.#waiting.length > 0 && this.#queuedNodes < QUEUED / 2) {
          for (const wake of this.#waiting.splice(0)) wake()
        }
        await this.#write(e)
      }
    } finally {
      this.#loop = null
    }
  }

  async #write (e: Entry): Promise<void> {
    if (e.tree !== undefined) return this.#writeTree(e, e.tree)
    let batch: Batch
    try {
      batch = await this.#emit(e.temp, e.path, e.src)
    } catch (err) {
      return this.#settle(e, err instanceof Unreadable ? err.err : err)
    }
    // Renamed when the stream its bytes went into ends (pushed before anything awaits: that
    // stream may be ending already).
    batch.entries.push(e)
  }

  /**
   * A tree goes into one stream, whole: the current one where it fits, else a new one. It is
   * placed when that stream ends, and fails with it.
   */
  async #writeTree (e: Entry, hooks: TreeHooks): Promise<void> {
    const size = e.size ?? { nodes: BATCH_FILES, bytes: BATCH_BYTES, listings: new Map() }
    const current = this.#batch
    if (current !== null && (current.files + size.nodes + 1 > BATCH_FILES || current.bytes + size.bytes > BATCH_BYTES)) this.#end(current)
    let batch: Batch
    try {
      batch = await this.#current()
    } catch (err) {
      return this.#settle(e, err)
    }
    batch.entries.push(e)
    batch.held = true
    try {
      await this.#sendTree(e, hooks)
    } catch (err) {
      if (err instanceof Unreadable) {
        // Its own directory: nothing of it went, and it is not placed.
        batch.entries.splice(batch.entries.indexOf(e), 1)
        return this.#settle(e, err.err)
      }
      // The stream broke: every entry of it, this one included, has failed already.
    } finally {
      batch.held = false
      if (this.#batch === batch && (batch.files >= BATCH_FILES || batch.bytes >= BATCH_BYTES)) this.#end(batch)
    }
  }

  async #current (): Promise<Batch> {
    return this.#batch ??= { sink: await this.#sink(), files: 0, bytes: 0, entries: [], held: false }
  }

  /** A missing directory and everything below it, depth first, under `e.temp`. */
  async #sendTree (e: Entry, hooks: TreeHooks): Promise<void> {
    // Hard link groups within the tree: inode -> where its first name went.
    const firsts = new Map<number, string>()
    // Inodes whose first name went as zeros (a read failed half way): every name is deleted.
    const zeroed = new Set<number>()
    // As the tree was counted (sendsWhole): not listed again.
    const listings = e.size?.listings
    const walk = async (path: string, to: string, st: Stats): Promise<void> => {
      await this.#emit(to, path, st)
      let listed: Listed[]
      try {
        listed = listings?.get(path) ?? this.#tree.list(path)
      } catch (err) {
        // Made empty; the next pass reports it again.
        this.#failed(path, err)
        return
      }
      for (const { name, st: s } of listed) {
        const p = `${path}/${name}`
        const t = `${to}/${name}`
        if (!hooks.include(p, s)) continue
        try {
          if (s.isDirectory()) {
            await walk(p, t, s)
            continue
          }
          if (s.isFile() && s.nlink > 1) {
            const first = firsts.get(s.ino)
            if (first !== undefined) {
              await this.#emit(t, p, s, first)
              if (zeroed.has(s.ino)) (e.broken ??= []).push(p)
              continue
            }
            hooks.linked(p, s)
          }
          await this.#emit(t, p, s)
          if (s.isFile()) {
            e.files = (e.files ?? 0) + 1
            if (s.nlink > 1) firsts.set(s.ino, t)
          }
        } catch (err) {
          if (!(err instanceof Unreadable)) throw err
          // Left out; the next pass finds it missing (where zeros went in its place, they are
          // deleted once the tree is in place, with the other names of that inode).
          this.#failed(p, err.err)
          if (err.sent && !s.isDirectory()) {
            (e.broken ??= []).push(p)
            if (s.nlink > 1) {
              firsts.set(s.ino, t)
              zeroed.add(s.ino)
            }
          }
        }
      }
    }
    await walk(e.path, e.temp, e.src)
  }

  /**
   * One node into the current stream, as `to`: a file's bytes read from `path` (or, with
   * `first`, a hard link to that earlier entry). Resolves with the stream it went into, ended
   * already when that made it full. Rejects with an Unreadable where the source failed, or
   * with the stream's failure (then every file in that stream failed with it).
   */
  async #emit (to: string, path: string, st: Stats, first?: string): Promise<Batch> {
    const batch = await this.#current()
    const base = { mode: st.mode, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) }
    let entry: SinkEntry
    let data: Buffer | null = null
    let fd: number | null = null
    const size = first === undefined && st.isFile() ? st.size : 0
    try {
      // Read (or opened) before the header goes: a file that is gone fails alone.
      if (first !== undefined) entry = { ...base, type: 'link', target: first }
      else if (st.isFile()) entry = { ...base, type: 'file', size }
      else if (st.isDirectory()) entry = { ...base, type: 'dir' }
      else if (st.isSymbolicLink()) entry = { ...base, type: 'symlink', target: this.#tree.readlink(path) }
      else if (st.isFIFO()) entry = { ...base, type: 'fifo' }
      else throw new Error('neither a file, a directory, a symlink nor a FIFO: not copied')
      batch.sink.accepts(to)
      if (entry.type === 'link') batch.sink.accepts(entry.target)
      if (entry.type === 'file') {
        if (size <= READ_WHOLE) data = this.#tree.readWhole(path, size)
        else fd = this.#tree.open(path)
      }
    } catch (err) {
      throw new Unreadable(err, false)
    }
    let unread: unknown = null
    try {
      let more = batch.sink.add(to, entry)
      if (data !== null) {
        if (size > 0) more = batch.sink.write(data)
      } else if (fd !== null) {
        for (let at = 0; at < size; at += CHUNK) {
          if (!more) await batch.sink.drained()
          const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - at))
          try {
            this.#tree.readAt(fd, buf, at)
          } catch (err) {
            // The stream needs the bytes it was promised: zeros, and this file is not placed.
            buf.fill(0)
            unread ??= err
          }
          more = batch.sink.write(buf)
        }
      }
      if (!more) await batch.sink.drained()
    } catch (err) {
      // The stream is broken: none of its files is placed; the next one opens another.
      if (this.#batch === batch) this.#batch = null
      batch.sink.abort()
      for (const x of batch.entries.splice(0)) this.#settle(x, err)
      throw err
    } finally {
      if (fd !== null) this.#tree.close(fd)
    }
    if (unread !== null) throw new Unreadable(unread, true)
    this.#stats.bytes += size
    batch.files++
    batch.bytes += size
    if (!batch.held && (batch.files >= BATCH_FILES || batch.bytes >= BATCH_BYTES)) this.#end(batch)
    // Half way through a stream, the next is opened: its tar is started by a login shell on
    // the backup, which may take longer than the rest of this stream does to go.
    else if (this.#spare === null && this.#more(batch) && (batch.files >= BATCH_FILES / 2 || batch.bytes >= BATCH_BYTES / 2)) this.#spare = this.#open()
    return batch
  }

  #givenUp (): ReplicaError {
    return new ReplicaError(`${this.#r.url}: the reconcile was given up`, E.ECANCELED)
  }

  async #sink (): Promise<FileSink> {
    if (this.#aborted) throw this.#givenUp()
    // A new stream may start while the last one's tar is still at work: no tree spans two
    // streams, so the two never make the same directories.
    const spare = this.#spare
    this.#spare = null
    const sink = (await spare) ?? await this.#r.files!()
    if (sink === null) throw new ReplicaError(`${this.#r.url}: the replica no longer takes a stream of files`, E.EIO)
    if (this.#aborted) {
      sink.abort()
      throw this.#givenUp()
    }
    return sink
  }

  /**
   * Whether another stream may be needed after `batch`: the walk goes on, or what waits does
   * not fit in it.
   */
  #more (batch: Batch | null): boolean {
    if (!this.#finished) return true
    if (batch === null) return this.#queuedNodes > 0
    return this.#queuedNodes + batch.files > BATCH_FILES || this.#queuedBytes + batch.bytes > BATCH_BYTES
  }

  #open (): Promise<FileSink | null> {
    return this.#r.files!().catch(() => null)
  }

  /** Ends a batch's stream, then renames its files into place. */
  #end (batch: Batch): void {
    if (this.#batch === batch) this.#batch = null
    // The next batch's stream is opened now, while this one ends.
    if (this.#more(null)) this.#spare ??= this.#open()
    const ended = batch.sink.end()
    const done = (async () => {
      let partly: ReplicaError | null
      try {
        partly = await ended
      } catch (err) {
        for (const e of batch.entries) this.#settle(e, err)
        return
      }
      // Where tar failed some entries, a file it made whole is placed; a tree is not (which
      // of its files is whole?), nor a file that is not there, or not all there.
      if (partly !== null) this.#failed('/', partly)
      await Promise.all(batch.entries.map(async e => {
        try {
          if (partly !== null && (e.tree !== undefined || (await this.#r.lstat(e.temp))?.size !== e.src.size)) return this.#settle(e, partly)
          await this.#r.rename(e.temp, e.path)
          for (const p of e.broken ?? []) await this.#r.unlink(p)
        } catch (err) {
          return this.#settle(e, partly ?? err)
        }
        this.#stats.copied += e.tree !== undefined ? e.files ?? 0 : 1
        this.#settle(e, null)
      }))
    })()
    this.#ending.add(done)
    void done.finally(() => this.#ending.delete(done))
  }

  #settle (e: Entry, err: unknown): void {
    if (err !== null) this.#failed(e.path, err)
    e.settled?.()
  }
}
