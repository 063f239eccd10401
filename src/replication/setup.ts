import type { Logger } from '../log'
import type { MountConfig } from '../config'
import { appendFile, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ControlServer } from '../control'
import { native } from '../native'
import type { Metrics } from '../metrics'
import { Journal, type JournalRecord } from './journal'
import { fillFromSource } from './forward'
import { Excludes, ExcludingHook } from './exclude'
import type { Mutation, ReplicationHook } from './mutation'
import { Replicator } from './replicator'
import { claim, fence } from './fence'
import { connectReplicas, reconcile } from './replicas'

/**
 * Connects every replica of the config, replays what a killed run left, and reconciles each
 * replica with the source, all before the mount comes up.
 */
export async function startReplication (c: MountConfig, sourceRoot: string, log: Logger): Promise<{ replicator: Replicator, control: ControlServer | null, metrics: Metrics | null, hook: ReplicationHook } | null> {
  if (c.replicas.length === 0) return null
  const replicas = await connectReplicas(c, log)
  const generation = await fence(sourceRoot, c.promote, replicas)
  log.info('replica', `generation ${generation}${c.promote ? ' (promoted)' : ''}: every replica is marked as this master's`)

  const sourceBytes = Buffer.from(sourceRoot, 'utf8').toString('latin1')
  const excludes = new Excludes(c.excludes)
  const inFlight = await readIntents(c.stateDir)
  if (inFlight.size > 0) log.info('journal', `resyncing ${inFlight.size} paths whose changes were in flight when the last run stopped`)
  // Both modes journal: async every change, sync what some replica has yet to apply when
  // the call answers, so that a degraded or slow replica's changes survive a kill.
  // Sealed in files of an eighth of --journal-max: the journal stays within about that plus one.
  const opened = await Journal.open(c.stateDir, log, Math.min(64 * 1024 * 1024, Math.max(1024 * 1024, Math.floor(c.journalMax / 8))))
  // The writes the mount journaled get their bytes back from the source, for the replay.
  const { lostSeq } = await fillFromSource([...opened.records].sort((a, b) => a.seq - b.seq), sourceBytes, Math.min(...replicas.map(r => opened.cursors[r.url] ?? 0)))
  // Bytes the replay cannot have: the replicas that had yet to apply them get the whole tree.
  const whole = replicas.map(r => r.url).filter(url => (opened.cursors[url] ?? 0) < lostSeq)
  if (whole.length > 0) log.warn('journal', `the bytes of a write made before the last run stopped cannot be read from the source under any name the journal knows (a hard link it does not show, or a read error): resyncing the whole tree to ${whole.join(', ')} after the replay`)
  await journalResyncs(opened, replicas.map(r => r.url), inFlight, whole)
  const replicator = new Replicator(replicas, {
    mode: c.mode,
    quorum: c.quorum,
    // The kernel waits for a sync call without limit: the deadline is ours alone.
    timeoutMs: c.timeoutSeconds * 1000,
    queueMaxBytes: c.journalMax,
    applier: {
      atomicPublish: !c.inPlace,
      daemonUid: process.getuid?.() ?? 0,
      daemonGid: process.getgid?.() ?? 0,
      sourceRoot: sourceBytes,
      excludes,
    },
    journal: opened.journal,
    // After each reconnect: a replica a newer master has marked since is not written again.
    fence: r => claim(r, generation),
    log,
  })
  // status, wait and metrics answer from here on: through the replay and the reconcile too.
  const control = await ControlServer.start(c.stateDir, replicator, c.mode, log)
  // Loaded only when asked for: prom-client stays out of every other start.
  const metrics = c.metrics !== null ? new (await import('../metrics')).Metrics(replicator) : null
  if (metrics !== null && c.metrics !== null) {
    try {
      await metrics.listen(c.metrics.host, c.metrics.port, log)
    } catch (err) {
      await control?.close()
      await replicator.close()
      throw err
    }
  }
  replicator.restore(opened.records, opened.cursors)
  await recover(replicator, log, c.reconcile)
  if (c.reconcile) {
    for (const r of replicas) {
      const started = Date.now()
      replicator.reconciling(r.url, true)
      const s = await reconcile(sourceBytes, r, { fix: true, checksum: c.checksum, excludes }, log)
      replicator.reconciling(r.url, false)
      log.info('reconcile', `${r.url}: ${s.checked} checked, ${s.differences} differences fixed, ${s.copied} files copied (${(s.bytes / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`)
      for (const e of s.errors) log.error('reconcile', `${r.url}: ${e}`)
    }
  }
  // Excluded paths stay local: the mount hands changes to the filter first. Only where there are
  // --exclude patterns: the generation mark, excluded always, never changes through the mount
  // (local.c refuses every call on its name), so without them no change needs a look.
  let hook: ReplicationHook = excludes.any ? new ExcludingHook(replicator, excludes, sourceBytes) : replicator
  // Async mode: each change is journaled by the mount's own thread that applied it, and
  // answers with no trip into JS (native-deps/src/journal.c). Where the exclude filter must see
  // every change, they all go through JS, as in sync mode.
  if (c.mode === 'async' && !excludes.any) await replicator.journalInMount(native())
  if (metrics !== null) hook = metrics.timed(hook)
  return { replicator, control, metrics, hook }
}

/** How long a start waits for the replicas to replay the journal before it mounts anyway. */
const RECOVERY_WAIT_MS = 60_000

/**
 * The replay of what a killed run left, and the resyncs of the paths it had in flight, run
 * before the mount accepts new changes: a resync then reads the source as the journal left it,
 * not a state that changes made meanwhile (and queued behind it) would then apply to twice.
 */
async function recover (replicator: Replicator, log: Logger, reconcileNext: boolean): Promise<void> {
  const queued = replicator.queued
  if (queued === 0) return
  const started = Date.now()
  log.info('journal', `applying ${queued} changes left by the last run before mounting`)
  // A reconcile must not run beside a replay (the replay would apply old changes over what the
  // reconcile made right): with one to come, the wait has no bound.
  if (await replicator.settle(reconcileNext ? Infinity : RECOVERY_WAIT_MS)) {
    log.info('journal', `replicas caught up in ${Date.now() - started} ms`)
  } else {
    log.warn('journal', `replicas still have ${replicator.queued} changes to apply after ${RECOVERY_WAIT_MS / 1000} s; mounting, they catch up in the background`)
  }
}

/** The file local.c logs the paths of each change to before applying it. */
export function intentsPath (stateDir: string): string {
  return join(stateDir, 'intents.log')
}

/**
 * Puts `paths` in the intents (as local.c writes them: u16 length, the bytes, u16 0), for the
 * next start to resync on every replica: where a replica differs at the exit (a change
 * refused, its repair not done), which the journal's cursors have passed. `fresh`: in place of
 * what the log holds (nothing else was in flight), else after it.
 */
export async function keepIntents (stateDir: string, paths: string[], fresh: boolean): Promise<void> {
  const parts: Buffer[] = []
  for (const p of paths) {
    const b = Buffer.from(p, 'latin1')
    if (b.length > 0xffff) continue
    const head = Buffer.alloc(2)
    head.writeUInt16LE(b.length)
    parts.push(head, b, Buffer.alloc(2))
  }
  const file = intentsPath(stateDir)
  if (!fresh) return appendFile(file, Buffer.concat(parts), { mode: 0o600 })
  await rm(`${file}.new`, { force: true })
  await writeFile(`${file}.new`, Buffer.concat(parts), { mode: 0o600 })
  await rename(`${file}.new`, file)
}

/** The paths of changes that were in flight when the last run stopped (local.c's intents). */
async function readIntents (stateDir: string): Promise<Set<string>> {
  const paths = new Set<string>()
  let buf: Buffer
  try {
    buf = await readFile(intentsPath(stateDir))
  } catch {
    return paths
  }
  for (let at = 0; at + 2 <= buf.length;) {
    const la = buf.readUInt16LE(at)
    if (at + 4 + la > buf.length) break
    const lb = buf.readUInt16LE(at + 2 + la)
    if (at + 4 + la + lb > buf.length) break
    paths.add(buf.toString('latin1', at + 2, at + 2 + la))
    if (lb > 0) paths.add(buf.toString('latin1', at + 4 + la, at + 4 + la + lb))
    at += 4 + la + lb
  }
  return paths
}

/**
 * Async mode: each in-flight path becomes a resync record, journaled before the mount starts
 * a new intents file, so the repair survives another kill; so does a whole-tree resync for
 * each replica in `whole`. Resyncs a killed run had journaled and some replica had yet to
 * apply are journaled again with them, after every other record: a replay then runs in seq
 * order and each replica's cursor only moves forward.
 */
async function journalResyncs (opened: { journal: Journal, records: JournalRecord[], cursors: Record<string, number> }, urls: string[], inFlight: Set<string>, whole: string[]): Promise<void> {
  const oldest = Math.min(...urls.map(u => opened.cursors[u] ?? 0))
  // Each path once, for every replica or (a repair) for the one that needed it.
  const resyncs = new Map<string, Mutation>()
  for (const path of inFlight) resyncs.set(`\0${path}`, { op: 'resync', path, uid: 0, gid: 0 })
  for (const replica of whole) resyncs.set(`${replica}\0/`, { op: 'resync', path: '/', uid: 0, gid: 0, replica })
  for (const r of opened.records) {
    if (r.m.op === 'resync' && r.seq > oldest) resyncs.set(`${r.m.replica ?? ''}\0${r.m.path}`, r.m)
  }
  opened.records = opened.records.filter(r => r.m.op !== 'resync')
  let seq = 0
  for (const r of opened.records) seq = Math.max(seq, r.seq)
  for (const v of Object.values(opened.cursors)) seq = Math.max(seq, v)
  for (const m of resyncs.values()) {
    seq++
    await opened.journal.append(seq, m)
    opened.records.push({ seq, m })
  }
}
