import { crc32 } from 'node:zlib'
import { createHash } from 'node:crypto'
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../log'
import type { Mutation } from './mutation'

/**
 * The journal: in async mode every change, appended before the call answers; in sync mode
 * each change some replica has yet to apply when the call answers. So nothing acknowledged,
 * and nothing a degraded replica missed, is lost if the daemon is killed (SIGKILL leaves what write(2) wrote; a
 * writer's fsync makes it durable on disk too). One file, `journal.log`, in the state dir:
 *
 *   record := crc32 (u32 LE, over len and payload) | len (u32 LE) | payload
 *   payload := headerLen (u32 LE) | header (JSON: seq and the mutation without its data) | data
 *
 * A write the mount's thread journals (async mode) has no data here: its header's `src` says
 * how many bytes the source file holds for it, and a replay reads them there (forward.ts).
 *
 * Opening stops at the first short or corrupt record and truncates the file there (a torn
 * tail from a kill mid-append). Each replica's progress is kept in a `cursor-<n>` file (the last
 * seq it applied); records every replica has applied are dropped by truncating the file to
 * zero once all have caught up and it has grown past a threshold (the Replicator's).
 *
 * While some replica is behind, the file is sealed each time it passes `segmentBytes`: renamed
 * to `journal-<last seq in it>.log` (a new `journal.log` takes the appends), and a sealed one
 * is deleted once no replica needs what it holds (`dropThrough`). So the journal stays bounded
 * (--journal-max) without ever being rewritten: a replica that falls further behind than that
 * is switched to a resync, journaled as a record, and needs nothing older.
 */
export interface JournalRecord {
  seq: number
  m: Mutation
  /**
   * A write the mount's thread journaled (async mode): the file holds none of its bytes (this
   * many), the source does. Read back from the file, its data is empty until a replay reads
   * the bytes from the source (forward.ts).
   */
  src?: number
  /** Such a write's file had this many names when written (absent: not known). */
  links?: number
}

const HEAD = 8

function encode (seq: number, m: Mutation): Buffer {
  const data = m.op === 'write' ? m.data : m.op === 'setxattr' ? m.value : null
  const header = Buffer.from(JSON.stringify({ seq, m: { ...m, data: undefined, value: undefined } }), 'utf8')
  const payloadLen = 4 + header.length + (data?.length ?? 0)
  const buf = Buffer.allocUnsafe(HEAD + payloadLen)
  buf.writeUInt32LE(payloadLen, 4)
  buf.writeUInt32LE(header.length, HEAD)
  header.copy(buf, HEAD + 4)
  data?.copy(buf, HEAD + 4 + header.length)
  buf.writeUInt32LE(crc32(buf.subarray(4)), 0)
  return buf
}

/** `copy`: the data is copied off `payload` (a file's buffer), rather than a view of it. */
function decode (payload: Buffer, copy = true): JournalRecord {
  const headerLen = payload.readUInt32LE(0)
  const { seq, m, src, links } = JSON.parse(payload.subarray(4, 4 + headerLen).toString('utf8')) as { seq: number, m: Record<string, unknown>, src?: number, links?: number }
  const data = copy ? Buffer.from(payload.subarray(4 + headerLen)) : payload.subarray(4 + headerLen)
  if (m.op === 'write') m.data = data
  if (m.op === 'setxattr') m.value = data
  const r: JournalRecord = { seq, m: m as unknown as Mutation }
  if (src !== undefined) r.src = src
  if (links !== undefined) r.links = links
  return r
}

/** Parses `buf`; returns the records and the length of the valid prefix. */
export function parseJournal (buf: Buffer): { records: JournalRecord[], validLength: number } {
  const records: JournalRecord[] = []
  let at = 0
  while (at + HEAD <= buf.length) {
    const len = buf.readUInt32LE(at + 4)
    if (at + HEAD + len > buf.length) break
    if (crc32(buf.subarray(at + 4, at + HEAD + len)) !== buf.readUInt32LE(at)) break
    try {
      records.push(decode(buf.subarray(at + HEAD, at + HEAD + len)))
    } catch {
      break
    }
    at += HEAD + len
  }
  return { records, validLength: at }
}

/**
 * The mount's own threads append the records of writes in async mode
 * (native-deps/src/journal.c): same file, same framing. They hand out every seq, JS's too,
 * and seal and cut the file, under the lock their appends take.
 */
export interface SharedAppends {
  /** Appends go to `dir`/journal.log, seqs follow `seq`; `wake()` when records wait. */
  journal_start (dir: string, seq: number, wake: () => void): void
  /**
   * The records appended since the last call, in seq order, then a seq: a new one if `next`.
   * A call that returns records must be followed by another soon: `wake` is called again only
   * after one found none.
   */
  /** Appends one record of JS's own (a write(2) into the page cache, under their lock). */
  journal_append (record: Buffer): void
  journal_take (next: boolean): Array<Buffer | number>
  /** journal.log is renamed journal-<last>.log, last = max(every seq handed out, floor). */
  journal_seal (floor: number): number
  /** journal.log is cut to zero if no seq was handed out after `seq`. */
  journal_cut (seq: number): boolean
  journal_stop (): void
}

const CURRENT = 'journal.log'
const SEALED = /^journal-(\d+)\.log$/

export class Journal {
  readonly #dir: string
  #fh: FileHandle
  /** Bytes in journal.log. */
  #size: number
  /**
   * The sealed files, oldest first: the largest seq each can hold (its name: no record in it
   * is later), and its size.
   */
  readonly #sealed: Array<{ last: number, bytes: number }>
  /** The largest seq appended so far. */
  #last: number
  readonly #segmentBytes: number
  #cursors: Record<string, number>
  /** Appends run one after another, in seq order; each batch is one write. */
  #batch: Buffer[] = []
  #flushing: Promise<void> | null = null
  #resetWanted = false
  /** The last seq JS had seen when a reset was asked for (appends shared: only then is it cut). */
  #resetSeq = 0
  #shared: SharedAppends | null = null
  #log: Logger | null = null
  readonly #cursorFds = new Map<string, number>()

  private constructor (dir: string, fh: FileHandle, size: number, sealed: Array<{ last: number, bytes: number }>, last: number, cursors: Record<string, number>, segmentBytes: number) {
    this.#dir = dir
    this.#fh = fh
    this.#size = size
    this.#sealed = sealed
    this.#last = last
    this.#cursors = cursors
    this.#segmentBytes = segmentBytes
  }

  /**
   * Opens (or creates) the journal in `dir`, truncating a torn tail: the records of the sealed
   * files, oldest first, then journal.log's.
   */
  static async open (dir: string, log: Logger, segmentBytes = 64 * 1024 * 1024): Promise<{ journal: Journal, records: JournalRecord[], cursors: Record<string, number> }> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const records: JournalRecord[] = []
    const sealed: Array<{ last: number, bytes: number }> = []
    const names = await readdir(dir)
    for (const last of names.map(n => SEALED.exec(n)?.[1]).filter(n => n !== undefined).map(Number).sort((a, b) => a - b)) {
      const buf = await readFile(join(dir, `journal-${last}.log`))
      const parsed = parseJournal(buf)
      // Sealed files were complete when sealed: a bad record in one is damage, said once.
      if (parsed.validLength < buf.length) log.warn('journal', `journal-${last}.log: ${buf.length - parsed.validLength} bytes past its last good record are ignored`)
      records.push(...parsed.records)
      sealed.push({ last, bytes: buf.length })
    }
    const path = join(dir, CURRENT)
    const fh = await open(path, 'a+', 0o600)
    const buf = await readFile(path)
    const { records: current, validLength } = parseJournal(buf)
    if (validLength < buf.length) {
      log.warn('journal', `dropping a torn tail of ${buf.length - validLength} bytes from ${path}`)
      await fh.truncate(validLength)
    }
    records.push(...current)
    let last = 0
    for (const r of records) last = Math.max(last, r.seq)
    const cursors: Record<string, number> = {}
    for (const name of names) {
      if (!name.startsWith('cursor-')) continue
      const [seq, url] = (await readFile(join(dir, name), 'utf8')).split('\n')
      const n = Number(seq?.trim())
      if (url && Number.isInteger(n) && n > 0) cursors[url] = n
    }
    return { journal: new Journal(dir, fh, validLength, sealed, last, cursors, segmentBytes), records, cursors }
  }

  /** journal.log is sealed once it holds this many bytes. */
  get segmentBytes (): number {
    return this.#segmentBytes
  }

  /** The last seq of the oldest sealed file; null when there is none. */
  get oldestSealed (): number | null {
    return this.#sealed[0]?.last ?? null
  }

  /** Bytes in all of the journal's files. */
  get size (): number {
    let n = this.#size
    for (const s of this.#sealed) n += s.bytes
    return n
  }

  /**
   * Deletes the sealed files whose records all have seq <= `seq`: no replica needs them (it
   * has applied them, or a resync after them replaces them).
   */
  async dropThrough (seq: number): Promise<void> {
    while (this.#sealed.length > 0 && this.#sealed[0]!.last <= seq) {
      const { last } = this.#sealed.shift()!
      await unlink(join(this.#dir, `journal-${last}.log`)).catch(() => {})
    }
  }

  /**
   * From now on the mount's threads append writes too (async mode), and hand out the seqs
   * after `seq`; `wake()` is called when their records wait to be taken.
   */
  async share (shared: SharedAppends, seq: number, wake: () => void, log: Logger): Promise<void> {
    // A seal of JS's own in flight must be done first: the mount's appends go to journal.log.
    await this.#flushing
    shared.journal_start(Buffer.from(this.#dir, 'utf8').toString('latin1'), seq, wake)
    this.#shared = shared
    this.#log = log
  }

  /**
   * The changes the mount's threads appended since the last call, in seq order (their data is
   * no copy), and a seq: a fresh one for a change of JS's own when `next`, else the last
   * handed out. null when appends are not shared.
   */
  take (next: boolean): { records: JournalRecord[], seq: number } | null {
    const shared = this.#shared
    if (shared === null) return null
    const out = shared.journal_take(next)
    const seq = out.pop() as number
    const records: JournalRecord[] = []
    for (const b of out as Buffer[]) {
      // What the file holds of it: a write's data follows the record only here.
      this.#size += HEAD + b.readUInt32LE(4)
      try {
        records.push(decode(b.subarray(HEAD), false))
      } catch (err) {
        // Not one of ours (a bug): said, and the rest of the batch still goes.
        this.#log?.error('journal', 'a record the mount appended cannot be read', err)
      }
    }
    if (seq > this.#last) this.#last = seq
    this.#sealIfFull()
    return { records, seq }
  }

  /** Shared appends grew journal.log past a segment: the flush loop seals it. */
  #sealIfFull (): void {
    if (this.#size >= this.#segmentBytes) void this.#flush().catch(err => this.#log?.error('journal', 'cannot seal journal.log', err))
  }

  /** Resolves once the record is in the file (SIGKILL-safe; not fsynced). */
  append (seq: number, m: Mutation): Promise<void> {
    try {
      return this.record(seq, m) ?? Promise.resolve()
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Appends the record: at once when appends are shared with the mount's threads (then it
   * is in the file on return: no trip through the thread pool for each change), else as
   * `append` does (the promise). Throws if the file refused it.
   */
  record (seq: number, m: Mutation): Promise<void> | undefined {
    if (seq > this.#last) this.#last = seq
    const shared = this.#shared
    if (shared !== null && !this.#resetWanted) {
      const buf = encode(seq, m)
      shared.journal_append(buf)
      this.#size += buf.length
      this.#sealIfFull()
      return undefined
    }
    this.#batch.push(encode(seq, m))
    return this.#flush()
  }

  #flush (): Promise<void> {
    this.#flushing ??= (async () => {
      // Later appends join the next batch: one write for all that queued meanwhile.
      await Promise.resolve()
      while (this.#batch.length > 0 || this.#resetWanted || this.#size >= this.#segmentBytes) {
        if (this.#size >= this.#segmentBytes) {
          // Grown by the mount's appends (or a reset that could not cut it).
          await this.#seal()
          continue
        }
        if (this.#resetWanted) {
          // Only records queued after the request are pending: they land after the cut.
          this.#resetWanted = false
          if (this.#shared === null) {
            await this.#fh.truncate(0)
          } else if (!this.#shared.journal_cut(this.#resetSeq)) {
            // The mount's threads appended a write since: not everything is applied after all.
            continue
          }
          this.#size = 0
          await this.dropThrough(Infinity)
          continue
        }
        const batch = this.#batch
        this.#batch = []
        const buf = batch.length === 1 ? batch[0] as Buffer : Buffer.concat(batch)
        let done = 0
        if (this.#shared !== null) {
          this.#shared.journal_append(buf)
          done = buf.length
        }
        while (done < buf.length) {
          const { bytesWritten } = await this.#fh.write(buf, done, buf.length - done)
          done += bytesWritten
        }
        this.#size += buf.length
      }
    })().finally(() => { this.#flushing = null })
    return this.#flushing
  }

  /**
   * journal.log becomes journal-<last>.log; a new journal.log takes the appends. <last> is the
   * largest seq appended so far (no record in the file is later), and more than the last
   * sealed file's: unique, and in order.
   */
  async #seal (): Promise<void> {
    let last = Math.max(this.#last, (this.#sealed.at(-1)?.last ?? 0) + 1)
    const old = this.#fh
    if (this.#shared !== null) {
      // Under the lock of the mount's appends: none lands in the file after its name is chosen.
      last = this.#shared.journal_seal(last)
    } else {
      await rename(join(this.#dir, CURRENT), join(this.#dir, `journal-${last}.log`))
    }
    this.#fh = await open(join(this.#dir, CURRENT), 'a+', 0o600)
    // Synced in the background, then closed: a writer's fsync (sync) waits for it, as what it
    // appended may be in there; appends do not.
    const synced = old.sync().finally(() => old.close()).catch(() => {})
    this.#syncing.add(synced)
    void synced.finally(() => this.#syncing.delete(synced))
    this.#sealed.push({ last, bytes: this.#size })
    this.#size = 0
  }

  /** Sealed files being synced and closed. */
  readonly #syncing = new Set<Promise<void>>()

  /** A writer's fsync: the journal reaches the disk too. */
  async sync (): Promise<void> {
    await this.#flushing
    await Promise.all([this.#fh.sync(), ...this.#syncing])
  }

  /**
   * Records a replica's progress, synchronously, as each change is applied: a replay after a
   * kill then repeats at most the one change that was in flight, and each change is safe to
   * apply twice in a row (a second rename finds nothing: ENOENT), but not a run of them (a
   * rename A→B replayed after a later rename C→A would move the wrong file). One 20-byte
   * pwrite into the page cache: cheaper than the thread-pool round trip it would otherwise be.
   */
  setCursor (url: string, seq: number): void {
    let fd = this.#cursorFds.get(url)
    if (fd === undefined) {
      const name = `cursor-${createHash('sha256').update(url).digest('hex').slice(0, 16)}`
      fd = openSync(join(this.#dir, name), 'w', 0o600)
      this.#cursorFds.set(url, fd)
      writeSync(fd, `${' '.repeat(20)}\n${url}\n`, 0)
    }
    this.#cursors[url] = seq
    writeSync(fd, String(seq).padStart(20), 0)
  }

  /**
   * Every replica applied every record appended so far (`seq`, the last JS has seen): start
   * the file afresh.
   */
  reset (seq: number): Promise<void> {
    this.#resetWanted = true
    this.#resetSeq = seq
    return this.#flush()
  }

  async close (): Promise<void> {
    await this.#flushing
    // The mount is gone: no more appends from its threads.
    this.#shared?.journal_stop()
    await Promise.all(this.#syncing)
    for (const fd of this.#cursorFds.values()) closeSync(fd)
    this.#cursorFds.clear()
    await this.#fh.close()
  }
}
