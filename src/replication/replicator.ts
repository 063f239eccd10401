import { lstat } from 'node:fs/promises'
import { E } from '../errors'
import type { Logger } from '../log'
import { ReplicaError, type Replica } from '../replica/replica'
import { Applier, CopiesRefused, type ApplierOptions } from './applier'
import { Unspellable } from './mirror'
import { cancelled } from './compact'
import type { Journal, JournalRecord, SharedAppends } from './journal'
import { afterRename, atOrUnder, type Mutation, type ReplicationHook } from './mutation'

export type Mode = 'sync' | 'async'

export type LinkState = 'reconciling' | 'in sync' | 'catching up' | 'degraded' | 'offline' | 'failed'

/** One replica as `replicafs status` shows it. */
export interface LinkStatus {
  url: string
  state: LinkState
  /** Changes queued for it, and the bytes they carry. */
  queued: number
  queuedBytes: number
  /** Age of the oldest change it has yet to apply, seconds (0: none). */
  lagSeconds: number
  /** Changes and data bytes it applied since the start, and the errors it met. */
  appliedOps: number
  appliedBytes: number
  errors: number
  lastError: string | null
  /** ISO time of the last error. */
  lastErrorAt: string | null
  /**
   * Paths where it holds something other than the source (first DIFFERS_SHOWN, readable
   * text), and how many there are: a change there was refused, and its repair (a resync)
   * waits its turn, or failed and is tried again.
   */
  differs: string[]
  differsCount: number
}

/** What `replicafs wait` answers about a replica that is not caught up. */
export type Behind = Pick<LinkStatus, 'url' | 'differs' | 'differsCount'>

export interface ReplicatorOptions {
  mode: Mode
  /** Replicas that must have applied a change before a sync call answers. 1..replicas. */
  quorum: number
  /** Sync mode: how long a call waits for the quorum, ms; a replica slower than this is degraded. */
  timeoutMs: number
  /** Bytes of changes held for one replica before it is switched to a resync instead. */
  queueMaxBytes: number
  applier: ApplierOptions
  /**
   * Where changes are recorded: in async mode each one before its call answers, in sync mode
   * those some replica has yet to apply when the call answers. null: nowhere.
   */
  journal: Journal | null
  /** Checked after each reconnect: rejects (permanent) where the replica is not to be written any more. */
  fence?: (r: Replica) => Promise<void>
  log: Logger
}

interface Rec {
  seq: number
  /** When the change was made (ms since the epoch): a replica's lag is its oldest one's age. */
  at: number
  m: Mutation
  bytes: number
  acks: number
  fails: number
  waiter: { resolve: () => void, reject: (err: Error) => void, timer: NodeJS.Timeout } | null
}

/** A path a replica differs at (Link.differs). */
interface Differ {
  /** Its name now: it follows the renames the replica applies. */
  path: string
  /** 0 while its first repair waits its turn; then the delay before the next try, doubling. */
  delayMs: number
  /** The next try, while one is due (then null again: the repair is queued). */
  timer: NodeJS.Timeout | null
  due: number
}

/** One replica, its applier, and the changes it has yet to apply, in order. */
class Link {
  readonly replica: Replica
  readonly applier: Applier
  readonly queue: Rec[] = []
  queuedBytes = 0
  state: LinkState = 'in sync'
  connected = true
  running = false
  /** Changes sent and not answered yet: the first this many of the queue (never compacted). */
  inFlight = 0
  /**
   * Changes sent and lost with the connection, to be sent again: the first this many of the
   * queue (never compacted either: the replica may have applied them).
   */
  resend = 0
  appliedSeq = 0
  backoffMs = 0
  appliedOps = 0
  appliedBytes = 0
  errors = 0
  lastError: { message: string, at: number } | null = null
  /**
   * Switched to a resync of the whole tree at `seq` (too far behind), until it has run: once
   * that record is in the journal (`journaled`), it needs no older one.
   */
  wholeResync: { seq: number, journaled: boolean } | null = null
  /**
   * Paths where the replica holds something else than the source: a change there was refused
   * and its repair (a resync) has not run yet, or was refused too. Each drops out when a repair
   * of it, or of a directory above it, has run.
   */
  readonly differs = new Map<string, Differ>()

  constructor (replica: Replica, o: ApplierOptions) {
    this.replica = replica
    this.applier = new Applier(replica, o)
  }
}

/**
 * The journal starts afresh once every replica has applied it all and it holds more than
 * this, or a quarter of a sealed file if less: a replay skips what cursors passed, and a
 * truncate per drained queue would cost a syscall per call in sync mode.
 */
const JOURNAL_RESET_BYTES = 16 * 1024 * 1024

/** About what a journal record and a queued change cost besides their data, bytes. */
const RECORD_OVERHEAD = 128

/** status: a replica this far behind (seconds) is shown as catching up. */
const CATCHING_UP_SECONDS = 1

/** Changes a link sends ahead of the answers, and their bytes (sftp's own put: 64 of 32 KiB). */
const PIPELINE = 16
const PIPELINE_BYTES = 2 * 1024 * 1024

/** How soon JS looks again for the mount's records after a look that found some. */
const PULL_AGAIN_MS = 1

const BACKOFF_MIN_MS = 250
const BACKOFF_MAX_MS = 30_000

/** A failed repair is tried again after this, doubling up to the max. */
const REPAIR_RETRY_MIN_MS = 5_000
const REPAIR_RETRY_MAX_MS = 10 * 60_000
/** Paths a replica may differ at, each retried on its own, before it is the whole tree's resync instead. */
const DIFFERS_MAX = 1000
/** Paths of them that status and wait name. */
const DIFFERS_SHOWN = 10

/** A byte-string path (latin1) as readable text (names that are not UTF-8 get U+FFFD). */
const readable = (path: string) => Buffer.from(path, 'latin1').toString('utf8')

function differsOf (link: Link): { differs: string[], differsCount: number } {
  const differs: string[] = []
  for (const path of link.differs.keys()) {
    if (differs.length === DIFFERS_SHOWN) break
    differs.push(readable(path))
  }
  return { differs, differsCount: link.differs.size }
}

/** Errors that say the change is already there: re-applying after a reconnect is harmless. */
const ALREADY_DONE: Partial<Record<Mutation['op'], number>> = {
  mkdir: E.EEXIST,
  symlink: E.EEXIST,
  link: E.EEXIST,
  mknod: E.EEXIST,
  unlink: E.ENOENT,
  rmdir: E.ENOENT,
}

/**
 * The paths a change touched: what to resync when a replica refused it (`err`). The end of a
 * replay touched those it could not copy, which its error names.
 */
function pathsOf (m: Mutation, err: unknown): string[] {
  switch (m.op) {
    case 'rename': case 'link': return [m.from, m.path]
    case 'finish-replay': return err instanceof CopiesRefused ? err.paths : []
    default: return m.path === null ? [] : [m.path]
  }
}

/** The last changes queued for `link` are repairs, one of them of `path`. */
function repairQueued (link: Link, path: string): boolean {
  for (let i = link.queue.length - 1; i > 0; i--) {
    const m = (link.queue[i] as Rec).m
    if (m.op !== 'resync') return false
    if (m.path === path && m.replica === link.replica.url) return true
  }
  return false
}

/**
 * Where the node at `path` is named once the changes queued after the head (`queue[0]`; from
 * `queue[from]`) are applied: renamed (or moved with a directory), and hard-linked too when
 * `links`.
 */
function namesAfter (queue: readonly Rec[], path: string, links: boolean, from = 1): string[] {
  const names = [path]
  for (let i = from; i < queue.length; i++) {
    const m = (queue[i] as Rec).m
    if (m.op === 'rename') {
      for (let j = 0; j < names.length; j++) names[j] = afterRename(names[j] as string, m.from, m.path)
    } else if (links && m.op === 'link' && names.includes(m.from)) {
      names.push(m.path)
    }
  }
  return names
}

function dataBytes (m: Mutation): number {
  return m.op === 'write' ? m.data.length : 0
}

/** A change as a link queues it, not yet sent anywhere. */
function recOf (seq: number, m: Mutation): Rec {
  return { seq, at: Date.now(), m, bytes: dataBytes(m), acks: 0, fails: 0, waiter: null }
}

/** The head of a link's queue that is being applied (the head, or the run of changes sent). */
function started (link: Link): number {
  return link.running ? Math.max(1, link.inFlight, link.resend) : 0
}

/**
 * The replication hook: hands each change to every replica's link, in the source's order.
 *
 * sync: the call answers once `quorum` replicas applied the change. A replica that fails the
 * change or passes the deadline is degraded: it keeps its queue and catches up in the
 * background. The call fails with EIO only when the quorum can no longer be met (the source
 * keeps the change, and every replica that missed it still gets it).
 *
 * async: the call answers at once; each link ships in the background.
 */
export class Replicator implements ReplicationHook {
  readonly #o: ReplicatorOptions
  readonly #links: Link[]
  #seq = 0

  constructor (replicas: Replica[], o: ReplicatorOptions) {
    if (o.quorum < 1 || o.quorum > replicas.length) {
      throw new TypeError(`quorum ${o.quorum} must be between 1 and the number of replicas (${replicas.length})`)
    }
    this.#o = o
    this.#links = replicas.map(r => new Link(r, o.applier))
  }

  /**
   * Async mode: changes are journaled by the mount's own threads from now on, and reach the
   * links from there (taken as they come, and before each change of JS's own, so that every
   * queue stays in seq order); JS's own changes take their seqs from there too.
   */
  journalInMount (shared: SharedAppends): Promise<void> {
    const journal = this.#o.journal
    if (this.#o.mode !== 'async' || journal === null) throw new TypeError('changes are journaled by the mount only in async mode, with a journal')
    return journal.share(shared, this.#seq, () => this.#look(), this.#o.log)
  }

  /** The changes the mount journaled since the last look, queued for every link. */
  #pull (): void {
    const t = this.#o.journal?.take(false)
    if (t != null) this.#took(t.records, t.seq)
  }

  /** #pull, when the mount wakes us or a look is due: a failure is logged, not thrown. */
  #look (): void {
    try {
      this.#pull()
    } catch (err) {
      this.#o.log.error('journal', 'cannot take the changes the mount journaled', err)
    }
  }

  /** The seq of a new change (after the changes the mount journaled so far, queued first). */
  #next (): number {
    const t = this.#o.journal?.take(true)
    if (t == null) return ++this.#seq
    this.#took(t.records, t.seq)
    return t.seq
  }

  /** A look for more of the mount's records is due shortly (they come in bursts). */
  #pullDue = false

  #took (records: JournalRecord[], seq: number): void {
    if (records.length > 0 && !this.#pullDue) {
      // The mount does not wake us again until a look finds nothing: look again shortly (a
      // burst is then taken in batches, rather than waking this thread once per change).
      this.#pullDue = true
      setTimeout(() => {
        this.#pullDue = false
        this.#look()
      }, PULL_AGAIN_MS)
    }
    for (const r of records) {
      const rec = recOf(r.seq, r.m)
      for (const link of this.#links) this.#enqueue(link, rec)
    }
    if (seq > this.#seq) this.#seq = seq
  }

  apply (m: Mutation): void | Promise<void> {
    const rec = recOf(this.#next(), m)
    if (this.#o.mode === 'async') {
      detach(rec)
      for (const link of this.#links) this.#enqueue(link, rec)
      const journal = this.#o.journal
      if (journal === null) return
      const recorded = journal.record(rec.seq, m)
      if (m.op === 'fsync') return (recorded ?? Promise.resolve()).then(() => journal.sync())
      return recorded
    }
    for (const link of this.#links) this.#enqueue(link, rec)
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.#deadline(rec), this.#o.timeoutMs)
      rec.waiter = { resolve, reject, timer }
      if (this.#links.length - rec.fails < this.#o.quorum) {
        // Replicas stopped for good (a changed host key): no need to wait for the deadline.
        detach(rec)
        this.#orphaned(m)
        this.#answer(rec, new Error(`quorum of ${this.#o.quorum} cannot be met on ${m.op}`))
      }
    })
  }

  /**
   * Sync mode: answers the call. A change that some replica has yet to apply is journaled
   * first, so that a kill of the daemon does not lose it for that replica; one that every
   * replica applied needs no record (the common case costs no journal write).
   */
  #answer (rec: Rec, err: Error | null): void {
    const w = rec.waiter
    if (w === null) return
    rec.waiter = null
    clearTimeout(w.timer)
    const done = err === null ? w.resolve : () => w.reject(Object.assign(err, { code: 'EIO' }))
    const recorded = rec.acks < this.#links.length ? this.#o.journal?.append(rec.seq, rec.m) : undefined
    if (recorded === undefined) done()
    else recorded.then(done, w.reject)
  }

  /** Resolves when every replica has applied every change made so far (or failed for good). */
  drain (timeoutMs: number): Promise<boolean> {
    this.#pull()
    const target = this.#seq
    return poll(() => this.#links.every(l => l.appliedSeq >= target || l.state === 'failed'), timeoutMs)
  }

  /**
   * Resolves true once every replica has nothing queued (or failed for good), false after
   * `timeoutMs`: the wait for a journal's replay before the mount accepts new changes.
   */
  settle (timeoutMs: number): Promise<boolean> {
    this.#pull()
    return poll(() => this.#links.every(l => l.state === 'failed' || (l.queue.length === 0 && !l.running)), timeoutMs)
  }

  /** Each replica's state, queue, lag and last error. */
  status (): LinkStatus[] {
    this.#pull()
    const now = Date.now()
    return this.#links.map(l => {
      const lagSeconds = l.queue.length > 0 ? (now - (l.queue[0] as Rec).at) / 1000 : 0
      return {
        url: l.replica.url,
        // A replica that is a second or more behind is not "in sync", whatever it last said.
        state: l.state === 'in sync' && lagSeconds >= CATCHING_UP_SECONDS ? 'catching up' : l.state,
        queued: l.queue.length,
        queuedBytes: l.queuedBytes,
        lagSeconds,
        appliedOps: l.appliedOps,
        appliedBytes: l.appliedBytes,
        errors: l.errors,
        lastError: l.lastError?.message ?? null,
        lastErrorAt: l.lastError !== null ? new Date(l.lastError.at).toISOString() : null,
        ...differsOf(l),
      }
    })
  }

  /** Marks a replica as being reconciled (status), or done with it. */
  reconciling (url: string, on: boolean): void {
    for (const l of this.#links) if (l.replica.url === url && l.state !== 'failed') l.state = on ? 'reconciling' : 'in sync'
  }

  /**
   * The barrier of `replicafs wait`: resolves with the replicas that have not applied every
   * change made before the call once `timeoutMs` passed ([] as soon as all have). A replica
   * that refused a change holds something else there than the source: it is behind until a
   * repair of that path has run (the repair is a change made after the call).
   */
  async barrier (timeoutMs: number): Promise<Behind[]> {
    this.#pull()
    const target = this.#seq
    const behind = () => this.#links.filter(l => l.state !== 'failed' && (l.appliedSeq < target || l.differs.size > 0))
    await poll(() => behind().length === 0, timeoutMs)
    // A replica stopped for good never catches up: it is behind too.
    return [...behind(), ...this.#links.filter(l => l.state === 'failed')].map(l => ({ url: l.replica.url, ...differsOf(l) }))
  }

  /** Changes queued for the replicas, summed. */
  get queued (): number {
    return this.#links.reduce((n, l) => n + l.queue.length, 0)
  }

  async close (): Promise<void> {
    for (const l of this.#links) this.#repaired(l, '/')
    await this.#o.journal?.close()
    await Promise.all(this.#links.map(l => l.replica.close()))
  }

  /**
   * After a restart: each replica gets the journal's records past its cursor, in order, then
   * the files the journal left open are published as the source holds them.
   */
  restore (unsorted: JournalRecord[], cursors: Record<string, number>): void {
    // Sync mode journals a change when it answers: not always in seq order.
    const records = [...unsorted].sort((a, b) => a.seq - b.seq)
    for (const r of records) this.#seq = Math.max(this.#seq, r.seq)
    for (const c of Object.values(cursors)) this.#seq = Math.max(this.#seq, c)
    for (const link of this.#links) {
      const cursor = cursors[link.replica.url] ?? 0
      link.appliedSeq = cursor
      const behind = records.filter(r => r.seq > cursor)
      if (behind.length === 0) continue
      this.#o.log.info('journal', `${link.replica.url}: replaying ${behind.length} changes from the journal`)
      // Replayed changes first; then the files they left open are published; then the
      // resyncs of paths that were in flight, which read the source as it is now.
      let last = cursor
      link.applier.beginReplay()
      for (const r of behind) {
        if (r.m.op === 'resync') continue
        this.#enqueue(link, recOf(r.seq, r.m))
        last = r.seq
      }
      this.#enqueue(link, recOf(last, { op: 'finish-replay', uid: 0, gid: 0 }))
      for (const r of behind) {
        if (r.m.op !== 'resync') continue
        this.#enqueue(link, recOf(r.seq, r.m))
        // A whole-tree resync to come for it: nothing older is needed again.
        if (r.m.path === '/' && (r.m.replica === undefined || r.m.replica === link.replica.url)) link.wholeResync = { seq: Math.max(link.wholeResync?.seq ?? 0, r.seq), journaled: true }
      }
    }
  }

  #enqueue (link: Link, rec: Rec): void {
    if (link.state === 'failed') {
      rec.fails++
      return
    }
    // What this change cancels is never shipped (the head may be running: it stays).
    const drop = cancelled(link.queue, started(link), rec.m)
    for (let i = drop.length - 1; i >= 0; i--) {
      const [gone] = link.queue.splice(drop[i] as number, 1)
      link.queuedBytes -= (gone as Rec).bytes
    }
    link.queue.push(rec)
    link.queuedBytes += rec.bytes
    // Each change costs its record's header too (a run of chmods carries no data, but fills
    // the journal and memory all the same).
    if (link.queuedBytes + link.queue.length * RECORD_OVERHEAD > this.#o.queueMaxBytes) {
      // Too far behind to replay: drop what is queued and mirror the whole tree instead (said
      // once while it waits for that resync; it may be switched again meanwhile).
      if (link.wholeResync === null) this.#o.log.warn('replica', `${link.replica.url}: more than ${this.#o.queueMaxBytes} bytes of changes queued; switching it to a resync of the whole tree`)
      // The change being applied now (the head, while running, or the writes sent) finishes as it is.
      const dropped = link.queue.splice(started(link))
      for (const r of dropped) {
        link.queuedBytes -= r.bytes
        this.#fail(r)
      }
      link.state = 'degraded'
      const resync: Mutation = { op: 'resync', path: '/', uid: 0, gid: 0, replica: link.replica.url }
      link.queue.push(recOf(rec.seq, resync))
      // Journaled too, so that what it skipped can go from the journal (once the record is
      // in it) and a restart still knows to resync it.
      const whole = { seq: rec.seq, journaled: false }
      link.wholeResync = whole
      this.#o.journal?.append(rec.seq, resync).then(() => {
        whole.journaled = true
        this.#trimJournal()
      }, e => this.#o.log.error('journal', 'cannot journal a resync', e))
    }
    if (!link.running) void this.#run(link)
  }

  async #run (link: Link): Promise<void> {
    link.running = true
    try {
      while (link.queue.length > 0 && link.state !== 'failed') {
        if (!link.connected) {
          await this.#reconnect(link)
          continue
        }
        const rec = link.queue[0] as Rec
        // A repair another replica needs: this one passes it by (its cursor moves on).
        if (rec.m.op === 'resync' && rec.m.replica !== undefined && rec.m.replica !== link.replica.url) {
          this.#passed(link, rec)
          continue
        }
        const applier = link.applier
        const mark = applier.mark()
        const sent = applier.now(rec.m)
        if (sent !== null) {
          await this.#pipelined(link, sent, mark)
          continue
        }
        let failure: unknown = null
        try {
          await applier.apply(rec.m)
        } catch (err) {
          failure = err ?? new Error('failed')
        }
        if (rec.m.op === 'resync' && !(failure instanceof ReplicaError && failure.transient)) await this.#followRenames(link, rec.m.path)
        if (failure !== null) {
          // Lost with the connection: sent again after it, finding what it found this time.
          if (failure instanceof ReplicaError && failure.transient) applier.rollback(mark)
          else applier.settled(applier.mark())
          await this.#failed(link, rec, failure)
          continue
        }
        applier.settled(applier.mark())
        this.#applied(link, rec)
      }
    } finally {
      link.running = false
      link.inFlight = 0
    }
    const journal = this.#o.journal
    this.#pull()
    if (journal !== null && journal.size > Math.min(JOURNAL_RESET_BYTES, journal.segmentBytes / 4) && this.#links.every(l => l.appliedSeq >= this.#seq || l.state === 'failed')) {
      void journal.reset(this.#seq)
    } else {
      this.#trimJournal()
    }
    if (link.queue.length === 0 && (link.state === 'catching up' || link.state === 'degraded' || link.state === 'offline')) {
      this.#o.log.info('replica', `${link.replica.url}: caught up, in sync`)
      link.state = 'in sync'
    }
  }

  /**
   * A run of changes that are one request each on files open on the replica (writes, and
   * the closes of released files; see Applier.now), the head's (`first`) already sent: the
   * ones queued behind it go out too without waiting for each answer (up to a bound), and
   * more as the first are answered, in order. The first change that is not one such request
   * is started too (its requests follow in the channel), and ends the run: nothing goes out
   * after it until it is done, as its later requests wait for its earlier answers. A refusal
   * is handled as in #run, and the rest are counted by their own answers; a lost connection
   * stops the run, and what was sent after it comes round again once reconnected (writes and
   * closes are safe to repeat; the one other change is the last, as a single change in flight
   * would be).
   */
  async #pipelined (link: Link, first: Promise<void>, firstMark: number): Promise<void> {
    const applier = link.applier
    const sent = [first]
    // Where the applier's undo log was as each was sent (Applier.rollback).
    const marks = [firstMark]
    let bytes = (link.queue[0] as Rec).bytes
    let more = true
    try {
      while (sent.length > 0) {
        while (more && sent.length < PIPELINE && bytes < PIPELINE_BYTES) {
          const next = link.queue[sent.length]
          // Repairs, and the end of a replay, read the source: they run on their own.
          if (next === undefined || next.m.op === 'resync' || next.m.op === 'finish-replay') break
          marks.push(applier.mark())
          let p = applier.now(next.m)
          if (p === null) {
            p = applier.apply(next.m)
            more = false
          }
          // Awaited in turn; not "unhandled" while an earlier one is awaited.
          p.catch(() => {})
          sent.push(p)
          bytes += next.bytes
        }
        link.inFlight = sent.length
        const rec = link.queue[0] as Rec
        let failure: unknown = null
        try {
          await sent[0]
        } catch (err) {
          failure = err ?? new Error('failed')
        }
        sent.shift()
        const mark = marks.shift() as number
        bytes -= rec.bytes
        if (failure === null) {
          link.inFlight = sent.length
          applier.settled(marks[0] ?? applier.mark())
          this.#applied(link, rec)
          continue
        }
        if (failure instanceof ReplicaError && failure.transient) {
          // The connection is gone: what was sent from this one on comes round again after
          // the reconnect, each finding what it found this time (see Applier.now).
          await Promise.allSettled(sent)
          applier.rollback(mark)
          link.resend = Math.max(link.resend, sent.length + 1)
          link.inFlight = 0
          await this.#failed(link, rec, failure)
          return
        }
        // Refused: its path is resynced; the changes sent after it were applied or refused on
        // their own, and are counted as their answers say, in order (never sent twice).
        link.inFlight = sent.length + 1
        await this.#failed(link, rec, failure)
        applier.settled(marks[0] ?? applier.mark())
        link.inFlight = sent.length
      }
    } finally {
      link.inFlight = 0
    }
  }

  /** Deletes the journal's sealed files that no replica needs any more. */
  #trimJournal (): void {
    const journal = this.#o.journal
    if (journal === null) return
    let floor = Infinity
    for (const l of this.#links) {
      if (l.state === 'failed') continue
      floor = Math.min(floor, l.wholeResync?.journaled === true ? l.wholeResync.seq - 1 : l.appliedSeq)
    }
    if (floor !== Infinity) void journal.dropThrough(floor)
  }

  /** Its whole-tree resync has run (or failed, and was said): the journal's floor moves on. */
  #wholeResyncDone (link: Link, rec: Rec): void {
    if (rec.m.op !== 'resync' || rec.m.path !== '/') return
    if (link.wholeResync !== null && rec.seq >= link.wholeResync.seq) link.wholeResync = null
  }

  /** The head of the queue is done with (applied, passed by or refused). */
  #shift (link: Link): void {
    link.queue.shift()
    if (link.resend > 0) link.resend--
  }

  #passed (link: Link, rec: Rec): void {
    this.#shift(link)
    this.#advance(link, rec.seq)
    this.#ack(rec)
  }

  #applied (link: Link, rec: Rec): void {
    this.#wholeResyncDone(link, rec)
    if (link.differs.size > 0) this.#follow(link, rec.m)
    this.#shift(link)
    link.queuedBytes -= rec.bytes
    link.appliedOps++
    link.appliedBytes += rec.bytes
    this.#advance(link, rec.seq)
    this.#ack(rec)
  }

  /** A change the replica did not apply: retry after a reconnect, or repair the path. */
  async #failed (link: Link, rec: Rec, err: unknown): Promise<void> {
    link.lastError = { message: (err as Error).message, at: Date.now() }
    link.errors++
    if (err instanceof ReplicaError && err.transient) {
      link.connected = false
      if (link.state === 'in sync') link.state = 'offline'
      return
    }
    // A replayed rename that finds nothing is not "already done": a resync may have run in
    // between, reading a newer source. It falls through to a resync of its paths, like any
    // change the replica refuses.
    const already = err instanceof ReplicaError && ALREADY_DONE[rec.m.op] === err.errno
    if (already) {
      this.#applied(link, rec)
      return
    }
    // A resync that did all but names the replica cannot spell: those alone differ.
    if (err instanceof Unspellable && rec.m.op === 'resync') {
      const was = new Map(err.paths.map(p => [p, { delayMs: link.differs.get(p)?.delayMs ?? 0 }]))
      this.#applied(link, rec)
      for (const path of err.paths) {
        const when = this.#retry(link, path, was.get(path))
        this.#o.log.error('replica', `${link.replica.url}: cannot resync ${JSON.stringify(path)}: it is not valid UTF-8, which SFTP cannot carry; ` +
          `the replica differs from the source there (${when})`)
      }
      return
    }
    // A repair that found the source changed under it (a name gone between two looks) goes
    // again, where the changes that did it leave the path.
    const code = err instanceof ReplicaError ? undefined : (err as NodeJS.ErrnoException | null)?.code
    const moved = rec.m.op === 'resync' && rec.m.path !== '/' && (code === 'ENOENT' || code === 'ENOTDIR') &&
      !await lstat(Buffer.from(this.#o.applier.sourceRoot + rec.m.path, 'latin1')).then(() => true, () => false)
    if (rec.m.op === 'resync' && !moved) {
      this.#wholeResyncDone(link, rec)
      const when = this.#retry(link, rec.m.path)
      this.#o.log.error('replica', `${link.replica.url}: cannot resync ${JSON.stringify(rec.m.path)}: ${(err as Error).message}; ` +
        `the replica differs from the source there (${when})`)
    } else {
      // The replica refused a change (it had diverged, or a resync read a newer source state
      // than the change's): repair the paths from the source as it is now. The repair is a
      // change of its own, after every change made so far, so that cursors only move forward;
      // it is journaled before this change counts as applied, so a kill cannot lose it. It is
      // this replica's: the others pass it by (in order, so that every cursor moves on).
      this.#o.log.warn('replica', `${link.replica.url}: ${rec.m.op} failed: ${(err as Error).message}; resyncing that path`)
      link.applier.refused(rec.m)
      // The replica differs at its paths (named as it names them now) until a repair runs. The
      // changes queued after this one may rename a path (or a directory above it), or link it,
      // before the repair runs: its names then are repaired too.
      const paths = pathsOf(rec.m, err)
      for (const path of paths) this.#track(link, path)
      await this.#repairs(link, paths, 1)
    }
    this.#shift(link)
    link.queuedBytes -= rec.bytes
    this.#advance(link, rec.seq)
    this.#fail(rec)
  }

  /**
   * After a repair of `path` (the head of the queue) ran: it read the source as it is now, so
   * where the changes queued after it rename the path (made on the source already: it found
   * the old name gone), the name they give it is repaired after them.
   */
  async #followRenames (link: Link, path: string): Promise<void> {
    if (path === '/') return
    this.#look()
    // Renames only: a link queued after it makes the new name the same file on the replica.
    for (const later of namesAfter(link.queue, path, false)) if (later !== path) await this.#repair(link, later)
  }

  /**
   * Queues the repairs of what the replica names `paths` after `link.queue[from - 1]`, under
   * the names the changes queued after that leave them: the mount's records taken first, and
   * every repair queued before any is awaited, so that no change slips in between unseen.
   */
  async #repairs (link: Link, paths: string[], from: number): Promise<void> {
    this.#look()
    const names = new Set<string>()
    for (const path of paths) for (const name of namesAfter(link.queue, path, true, from)) names.add(name)
    await Promise.all([...names].map(name => this.#repair(link, name)))
  }

  /**
   * Queues a resync of `path` for `link`'s replica, after every change made so far (journaled
   * before it counts, so a kill cannot lose it): the others pass it by, in order. Not again
   * where one is queued last already (a run of writes refused in turn).
   */
  async #repair (link: Link, path: string): Promise<void> {
    if (repairQueued(link, path)) return
    const repair = recOf(this.#next(), { op: 'resync', path, uid: 0, gid: 0, replica: link.replica.url })
    for (const l of this.#links) this.#enqueue(l, repair)
    await this.#o.journal?.append(repair.seq, repair.m).catch(e => {
      // Queued all the same; only a kill before it is applied would lose it.
      this.#o.log.error('journal', `cannot journal the resync of ${JSON.stringify(path)}`, e)
    })
  }

  /**
   * `path` (the replica's name for it now) differs from the source until a repair of it runs:
   * its entry, which follows the renames the replica applies (undefined where the whole
   * tree's is there already, which covers it). Past DIFFERS_MAX paths, the whole tree's entry
   * replaces them all, its repair due at once.
   */
  #track (link: Link, path: string, cap = true): Differ | undefined {
    const known = link.differs.get(path)
    if (known !== undefined) return known
    if (link.differs.has('/')) return undefined
    if (cap && link.differs.size >= DIFFERS_MAX) {
      this.#repaired(link, '/')
      const whole: Differ = { path: '/', delayMs: 0, timer: null, due: 0 }
      link.differs.set('/', whole)
      this.#arm(link, whole, 0)
      return whole
    }
    const d: Differ = { path, delayMs: 0, timer: null, due: 0 }
    link.differs.set(path, d)
    return d
  }

  /**
   * The replica refused the repair of `path`: it differs from the source there until a repair
   * runs. One is queued again later (the cause, a full disk or a directory it may not write,
   * may be gone by then), at longer and longer intervals. Returns when, for the log.
   */
  #retry (link: Link, path: string, unspellable?: { delayMs: number }): string {
    // A name that cannot be spelled is tracked on its own whatever their number (the whole
    // tree's resync would meet it again), with the backoff it had.
    const d = this.#track(link, path, unspellable === undefined)
    if (d === undefined) return 'the resync of the whole tree, due, repairs it'
    if (unspellable !== undefined) d.delayMs = unspellable.delayMs
    // Refused again before its try (a run of changes to the file, each repaired): it stands.
    if (d.timer === null) {
      d.delayMs = d.delayMs === 0 ? REPAIR_RETRY_MIN_MS : Math.min(REPAIR_RETRY_MAX_MS, d.delayMs * 2)
      this.#arm(link, d, d.delayMs)
    }
    return `${d.path === path ? '' : `as part of ${JSON.stringify(d.path)}, `}trying again in ${Math.ceil((d.due - Date.now()) / 1000)} s`
  }

  /** In `ms`, a repair of `d` is queued, under the names the changes queued by then leave it. */
  #arm (link: Link, d: Differ, ms: number): void {
    d.due = Date.now() + ms
    d.timer = setTimeout(() => {
      d.timer = null
      this.#repairs(link, [d.path], 0).catch(err => {
        this.#o.log.error('replica', `${link.replica.url}: cannot queue the resync of ${JSON.stringify(d.path)}`, err)
        this.#retry(link, d.path)
      })
    }, ms)
    d.timer.unref()
  }

  /** A repair of `path` ran: the replica holds what the source does there, and below. */
  #repaired (link: Link, path: string): void {
    for (const [p, d] of link.differs) {
      if (!atOrUnder(p, path)) continue
      if (d.timer !== null) clearTimeout(d.timer)
      link.differs.delete(p)
    }
  }

  /** The replica applied `m`: where it differs moves with a rename, goes with an unlink, spreads with a link. */
  #follow (link: Link, m: Mutation): void {
    // A new name for what differs (a link to it or below it, a rename of a name below it; a
    // rename of the path itself moves it, below) differs too.
    const carried = (m.op === 'rename' || m.op === 'link') && this.#within(link, m.from, m.op === 'link')
    switch (m.op) {
      case 'resync':
      // Gone on both sides.
      case 'unlink': case 'rmdir':
        this.#repaired(link, m.path)
        return
      case 'rename': {
        // What was at `to` is gone; what differed at and below `from` differs at its new name.
        this.#repaired(link, m.path)
        const moved: Differ[] = []
        for (const [p, d] of link.differs) {
          if (!atOrUnder(p, m.from)) continue
          link.differs.delete(p)
          d.path = afterRename(p, m.from, m.path)
          moved.push(d)
        }
        for (const d of moved) link.differs.set(d.path, d)
      }
    }
    if (carried) this.#retry(link, m.path)
  }

  /** The replica differs at a directory above `path` (or at `path` itself, with `at`). */
  #within (link: Link, path: string, at: boolean): boolean {
    if (at && link.differs.has(path)) return true
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) if (link.differs.has(path.slice(0, i))) return true
    return link.differs.has('/')
  }

  /** Every path some replica differs at (byte strings), each once: for the next start to resync. */
  differing (): string[] {
    const paths = new Set<string>()
    // Named as the changes still queued leave them: the next start replays those first.
    for (const l of this.#links) for (const p of l.differs.keys()) for (const name of namesAfter(l.queue, p, true, 0)) paths.add(name)
    return [...paths]
  }

  /** The replica has applied every change up to `seq`. */
  #advance (link: Link, seq: number): void {
    if (seq <= link.appliedSeq) return
    link.appliedSeq = seq
    // Past the oldest sealed file: it may go now, under load too (not only when a queue drains).
    const oldest = this.#o.journal?.oldestSealed ?? null
    if (oldest !== null && seq >= oldest) this.#trimJournal()
    this.#o.journal?.setCursor(link.replica.url, seq)
  }

  async #reconnect (link: Link): Promise<void> {
    if (link.backoffMs > 0) await new Promise(resolve => setTimeout(resolve, link.backoffMs))
    try {
      await link.replica.connect()
      await this.#o.fence?.(link.replica)
      link.applier.reset()
      link.connected = true
      link.backoffMs = 0
      link.state = 'catching up'
      this.#o.log.info('replica', `${link.replica.url}: reconnected, catching up (${link.queue.length} changes queued)`)
    } catch (err) {
      if (err instanceof ReplicaError && err.permanent) {
        this.#o.log.error('replica', `${link.replica.url}: ${err.message}; replication to it is stopped`)
        link.state = 'failed'
        this.#repaired(link, '/')
        void link.replica.close().catch(() => {})
        for (const r of link.queue.splice(0)) this.#fail(r)
        link.queuedBytes = 0
        link.resend = 0
        return
      }
      link.backoffMs = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, link.backoffMs * 2))
    }
  }


  #ack (rec: Rec): void {
    rec.acks++
    const w = rec.waiter
    if (w === null || rec.acks < this.#o.quorum) return
    if (rec.acks < this.#links.length) detach(rec)
    this.#answer(rec, null)
  }

  #fail (rec: Rec): void {
    rec.fails++
    const w = rec.waiter
    if (w === null || this.#links.length - rec.fails >= this.#o.quorum) return
    detach(rec)
    this.#orphaned(rec.m)
    this.#answer(rec, new Error(`quorum of ${this.#o.quorum} lost on ${rec.m.op}`))
  }

  /**
   * A create or truncating open that answers EIO: the local layer closes the file, and the
   * kernel will send no release for it. The replicas get one anyway, queued before the
   * answer (so before the descriptor number can be reused), so they publish the file the
   * source keeps.
   */
  #orphaned (m: Mutation): void {
    if (m.op !== 'create' && m.op !== 'open-truncate') return
    const release: Mutation = { op: 'release', path: m.path, fh: m.fh, mtime: 0, atime: 0, uid: m.uid, gid: m.gid }
    const rec = recOf(this.#next(), release)
    for (const link of this.#links) this.#enqueue(link, rec)
    this.#o.journal?.append(rec.seq, release).catch(e => this.#o.log.error('journal', 'cannot journal a release', e))
  }

  /** The sync deadline passed: whoever has not applied the change yet is degraded. */
  #deadline (rec: Rec): void {
    if (rec.waiter === null) return
    for (const link of this.#links) {
      if (link.appliedSeq < rec.seq && link.state !== 'failed') {
        if (link.state !== 'degraded') this.#o.log.warn('replica', `${link.replica.url}: did not apply ${rec.m.op} within ${this.#o.timeoutMs} ms; degraded, catching up in the background`)
        link.state = 'degraded'
      }
    }
    // Had the quorum been met, #ack would have answered and cleared the waiter.
    detach(rec)
    this.#orphaned(rec.m)
    this.#answer(rec, new Error(`quorum of ${this.#o.quorum} not met within ${this.#o.timeoutMs} ms on ${rec.m.op}`))
  }
}

/** Resolves true as soon as `done()` holds (checked every 20 ms), false once `timeoutMs` passed. */
async function poll (done: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs
  for (;;) {
    if (done()) return true
    if (Date.now() >= end) return false
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** The call is about to answer while a replica still needs the data: copy it off the kernel's buffer. */
function detach (rec: Rec): void {
  const m = rec.m
  if (m.op === 'write') m.data = Buffer.from(m.data)
}
