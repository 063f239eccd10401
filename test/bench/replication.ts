// replicafs replication benchmark: one sftp replica on loopback (a private sshd from the test
// harness), against OpenSSH's sftp put, rsync -a over ssh and lsyncd (Debian's package), one run.
// Usage: npm run bench:replication                (1 GiB, 5,000 files, 100 lag samples, 3 reps)
//        BENCH_QUICK=1 npm run bench:replication  (128 MiB, 500 files, 20 lag samples, 1 rep)
// Overrides: BENCH_REPS, BENCH_SEQ_MIB, BENCH_FILES, BENCH_LAG_SAMPLES, BENCH_STEP_TIMEOUT
//            (seconds per measured step), BENCH_DEADLINE (minutes: no step starts after it),
//            BENCH_DIR (parent of the work dir), BENCH_SECTIONS (e.g. 4, or 1,2: only those).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { CLI, cleanupDir, isMounted, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'
import { descendantsOf, procAlive, procStat, run, running, signalProc, type ProcId } from './proc'
import { cleanUpOnSignals, envInt, once, QUICK, reproduceCommand, requireTools } from './env'
import { fmt, fmtRatio, markdownTable, median } from './report'
import { generateTree, type TreeStats } from './tree'

const PROJECT = resolve(__dirname, '..', '..', '..')
const MiB = 1024 * 1024
const BLOCK = 128 * 1024
const CIPHER = 'aes128-gcm@openssh.com'

const CFG = {
  reps: envInt('BENCH_REPS', QUICK ? 1 : 3),
  seqMiB: envInt('BENCH_SEQ_MIB', QUICK ? 128 : 1024),
  files: envInt('BENCH_FILES', QUICK ? 500 : 5000),
  lagSamples: envInt('BENCH_LAG_SAMPLES', QUICK ? 20 : 100),
  lagTimeoutMs: 10_000,
  stepTimeoutMs: envInt('BENCH_STEP_TIMEOUT', 600) * 1000,
  deadlineMs: envInt('BENCH_DEADLINE', QUICK ? 30 : 150) * 60_000,
  parent: process.env.BENCH_DIR ?? '/var/tmp',
  /** Which sections run (BENCH_SECTIONS=4, or 1,2): all by default. */
  sections: new Set((process.env.BENCH_SECTIONS ?? '1,2,3,4').split(',').map(Number)),
}

const log = (s: string) => process.stderr.write(s + '\n')
const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))
const nowMs = () => Number(process.hrtime.bigint()) / 1e6
const T0 = Date.now()

// --- samples, errors, notes -------------------------------------------------------------------

type Key =
  | 'seq.norep' | 'seq.sync' | 'seq.async.local' | 'seq.async.conv' | 'seq.sftp' | 'seq.serial'
  | 'tree.sync' | 'tree.async.conv' | 'tree.async.cp' | 'tree.rsync' | 'tree.lsyncd.conv' | 'tree.lsyncd.cp'
  | 'rec.first' | 'rec.again' | 'rec.rsync.first' | 'rec.rsync.again'
interface Sample { rep: number, ms: number, load1: number, cpuBusyPct?: number }
const samples: Record<Key, Sample[]> = {
  'seq.norep': [], 'seq.sync': [], 'seq.async.local': [], 'seq.async.conv': [], 'seq.sftp': [], 'seq.serial': [],
  'tree.sync': [], 'tree.async.conv': [], 'tree.async.cp': [], 'tree.rsync': [], 'tree.lsyncd.conv': [], 'tree.lsyncd.cp': [],
  'rec.first': [], 'rec.again': [], 'rec.rsync.first': [], 'rec.rsync.again': [],
}
const lag: { rfs: Array<number | null>, lsyncd: Array<number | null> } = { rfs: [], lsyncd: [] }
/** open + write + close of each lag sample (the writer's own time). */
const lagWrite: { rfs: number[], lsyncd: number[] } = { rfs: [], lsyncd: [] }
const errors: Array<{ step: string, rep: number, error: string }> = []
const notes: string[] = []
const loads: number[] = []

function load1 (): number {
  try { return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]) } catch { return NaN }
}

/** Machine-wide busy CPU time (all processes, ours included) between two /proc/stat reads. */
function cpuTimes (): { busy: number, total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const idle = (f[3] ?? 0) + (f[4] ?? 0)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}
function busyPct (a: { busy: number, total: number }, b: { busy: number, total: number }): number {
  return b.total > a.total ? 100 * (b.busy - a.busy) / (b.total - a.total) : NaN
}

function record (key: Key, rep: number, ms: number, cpu0: { busy: number, total: number } | null, extra = ''): void {
  const l = load1()
  loads.push(l)
  const s: Sample = { rep, ms, load1: l }
  if (cpu0 !== null) s.cpuBusyPct = busyPct(cpu0, cpuTimes())
  samples[key].push(s)
  log(`  ${key.padEnd(17)} rep ${rep}: ${(ms / 1000).toFixed(3)} s${extra} (load1 ${l}${s.cpuBusyPct !== undefined ? `, cpu ${s.cpuBusyPct.toFixed(0)}%` : ''})`)
}

let aborted = false
const deadlinePassed = () => Date.now() - T0 > CFG.deadlineMs

/** One measured step: a failure is recorded, cleaned up by `fn`'s finally, and the run goes on. */
async function step (name: string, rep: number, fn: () => Promise<void>): Promise<void> {
  if (aborted) return
  if (deadlinePassed()) {
    errors.push({ step: name, rep, error: `skipped: BENCH_DEADLINE (${CFG.deadlineMs / 60_000} min) passed` })
    log(`  ${name} rep ${rep}: skipped (deadline)`)
    return
  }
  try {
    await fn()
  } catch (err) {
    if (aborted) return
    const msg = err instanceof Error ? err.message : String(err)
    errors.push({ step: name, rep, error: msg })
    log(`  ${name} rep ${rep}: FAILED: ${msg.split('\n').slice(0, 3).join(' | ')}`)
  }
}

/** Other processes busy on the machine (not this run's): a 1 s sample of /proc, for the report. */
async function foreignLoad (): Promise<string> {
  const ours = new Set([process.pid, ...descendantsOf(process.pid).map(p => p.pid)])
  const read = () => {
    const m = new Map<number, { comm: string, t: number }>()
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue
      try {
        const s = readFileSync(`/proc/${name}/stat`, 'utf8')
        const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'))
        const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
        m.set(Number(name), { comm, t: Number(rest[11]) + Number(rest[12]) })
      } catch {}
    }
    return m
  }
  const a = read()
  await sleep(1000)
  const b = read()
  const busy: string[] = []
  for (const [pid, v] of b) {
    if (ours.has(pid)) continue
    const d = v.t - (a.get(pid)?.t ?? v.t)
    if (d >= 5) busy.push(`${v.comm}[${pid}] ${d}%`) // clock ticks per second = 100
  }
  return busy.length > 0 ? busy.join(', ') : 'none above 5% CPU'
}

// --- filesystem helpers ------------------------------------------------------------------------

interface Walk { files: number, symlinks: number, dirs: number, bytes: number }
/** Counts regular files, symlinks and directories (root not counted) and regular-file bytes. */
function walk (root: string): Walk {
  const w: Walk = { files: 0, symlinks: 0, dirs: 0, bytes: 0 }
  const q = [root]
  while (q.length > 0) {
    const d = q.pop()!
    let ents
    try { ents = readdirSync(d, { withFileTypes: true }) } catch { continue }
    for (const e of ents) {
      // A replica's generation mark (fence.ts): replicafs's own, not part of the tree.
      if (d === root && e.name === '.replicafs-generation') continue
      const p = join(d, e.name)
      if (e.isDirectory()) { w.dirs++; q.push(p) } else if (e.isSymbolicLink()) w.symlinks++
      else if (e.isFile()) {
        w.files++
        try { w.bytes += lstatSync(p).size } catch {}
      }
    }
  }
  return w
}
const sameTree = (w: Walk, ts: TreeStats) => w.files === ts.files && w.symlinks === ts.symlinks && w.bytes === ts.bytes

/** Polls `cond` every `everyMs` until true; resolves with the hrtime (ms) at which it was seen true. */
async function pollUntil (cond: () => boolean, timeoutMs: number, everyMs: number, what: string): Promise<number> {
  const t0 = nowMs()
  for (;;) {
    if (cond()) return nowMs()
    if (nowMs() - t0 > timeoutMs) throw new Error(`${what}: not reached within ${timeoutMs / 1000} s`)
    if (aborted) throw new Error('aborted')
    await sleep(everyMs)
  }
}

function fileSize (p: string): number {
  try { return statSync(p).size } catch { return -1 }
}

// --- the things measured -----------------------------------------------------------------------

let work = ''
let sshd: Sshd | null = null
let seq = 0
const liveMounts = new Set<Rfs>()
const liveLsyncd = new Set<Lsyncd>()

interface Rfs { base: string, src: string, mnt: string, replica: string, daemon: Daemon, stop (): Promise<void> }

function sshCmd (s: Sshd): string[] {
  return ['ssh', '-i', s.identity, '-p', String(s.port), '-o', `UserKnownHostsFile=${s.knownHosts}`,
    '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-c', CIPHER]
}

/** A fresh source, mountpoint, replica dir and state dir, mounted by a new daemon. */
async function mountRfs (mode: 'sync' | 'async' | null): Promise<Rfs> {
  const base = join(work, `rfs-${++seq}-${mode ?? 'norep'}`)
  const src = join(base, 'src')
  const mnt = join(base, 'mnt')
  const replica = join(base, 'replica')
  const state = join(base, 'state')
  for (const d of [base, src, mnt, replica, state]) mkdirSync(d)
  const args = ['mount', src, mnt]
  if (mode !== null) {
    const s = sshd!
    args.push('--replica', `sftp://${s.user}@${s.host}:${s.port}${replica}`, '--identity', s.identity,
      '--known-hosts', s.knownHosts, '--mode', mode, '--state-dir', state)
  }
  let daemon: Daemon
  try {
    daemon = await startDaemon(args)
  } catch (err) {
    cleanupDir(base, mnt)
    throw err
  }
  let stopped = false
  const r: Rfs = {
    base, src, mnt, replica, daemon,
    async stop () {
      if (stopped) return
      stopped = true
      liveMounts.delete(r)
      await stopDaemon(daemon, 60_000) // SIGTERM: unmount, drain (bounded by --timeout), exit
      const ex = await daemon.exited
      if (ex.code !== 0) notes.push(`daemon ${base} exited ${ex.code ?? ex.signal}; log tail: ${daemon.stderr.slice(-500)}`)
      for (const m of daemon.stderr.match(/.*(switching it to a resync|degraded|failed:).*/g) ?? []) {
        notes.push(`daemon (${mode}) logged: ${m.trim().slice(0, 300)}`)
      }
      cleanupDir(base, mnt)
    },
  }
  liveMounts.add(r)
  return r
}

interface Lsyncd { base: string, watch: string, target: string, child: ChildProcess, stop (): Promise<void> }

/** lsyncd -nodaemon with default.rsync (rsync over ssh to the same sshd), delay = 0. */
async function startLsyncd (): Promise<Lsyncd> {
  const s = sshd!
  const base = join(work, `lsyncd-${++seq}`)
  const watch = join(base, 'watch')
  const target = join(base, 'target')
  for (const d of [base, watch, target]) mkdirSync(d)
  const conf = join(base, 'lsyncd.conf.lua')
  const logFile = join(base, 'lsyncd.log')
  const outFile = join(base, 'lsyncd.out')
  const q = (x: string) => JSON.stringify(x)
  writeFileSync(conf, [
    'settings {',
    `  logfile = ${q(logFile)},`,
    `  statusFile = ${q(join(base, 'lsyncd.status'))},`,
    '  nodaemon = true,',
    '}',
    'sync {',
    '  default.rsync,',
    `  source = ${q(watch)},`,
    `  target = ${q(`${s.user}@${s.host}:${target}/`)},`,
    '  delay = 0,',
    '  rsync = {',
    '    archive = true,',
    `    rsh = ${q(sshCmd(s).join(' '))},`,
    '  },',
    '}',
    '',
  ].join('\n'))
  const fd = openSync(outFile, 'a')
  const child = spawn('lsyncd', ['-nodaemon', conf], { stdio: ['ignore', fd, fd] })
  closeSync(fd)
  const exited = new Promise<void>(res => child.once('exit', () => res()))
  child.once('error', () => {})
  const me: ProcId | null = child.pid !== undefined ? { pid: child.pid, start: procStat(child.pid)?.start ?? '' } : null
  const readLogs = () => {
    let t = ''
    for (const f of [logFile, outFile]) { try { t += readFileSync(f, 'utf8') } catch {} }
    return t
  }
  let stopped = false
  const l: Lsyncd = {
    base, watch, target, child,
    async stop () {
      if (stopped) return
      stopped = true
      liveLsyncd.delete(l)
      if (me !== null && child.exitCode === null && child.signalCode === null) {
        const kids = descendantsOf(me.pid)
        child.kill('SIGTERM')
        const t0 = Date.now()
        while (child.exitCode === null && child.signalCode === null && Date.now() - t0 < 10_000) await sleep(25)
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        await exited
        const left = [...kids, ...kids.flatMap(k => descendantsOf(k.pid))]
        for (const k of left) signalProc(k, 'SIGTERM')
        const t1 = Date.now()
        while (left.some(procAlive) && Date.now() - t1 < 5000) await sleep(25)
        for (const k of left) signalProc(k, 'SIGKILL')
      }
      rmSync(base, { recursive: true, force: true })
    },
  }
  liveLsyncd.add(l)
  try {
    // Ready once its start-up rsync of the (empty) watched dir is done.
    await pollUntil(() => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`lsyncd exited (${child.exitCode ?? child.signalCode}):\n${readLogs().slice(-2000)}`)
      return /Startup of .* finished/.test(readLogs())
    }, 30_000, 50, 'lsyncd start-up')
  } catch (err) {
    await l.stop()
    throw err
  }
  return l
}

async function warm (paths: string[]): Promise<void> {
  // Inputs come from the page cache for every contender: read them first (unmeasured), then sync.
  for (const p of paths) await run('find', [p, '-type', 'f', '-exec', 'cat', '--', '{}', '+'], CFG.stepTimeoutMs)
  await run('sync', [], CFG.stepTimeoutMs)
}

// (1) sequential write -------------------------------------------------------------------------

const ddArgs = (input: string, out: string) => [`if=${input}`, `of=${out}`, `bs=${BLOCK}`, 'conv=fsync']

async function seqRfs (mode: 'sync' | 'async' | null, rep: number, input: string, bytes: number): Promise<void> {
  const name = mode === null ? 'seq.norep' : `seq.${mode}`
  await step(name, rep, async () => {
    const r = await mountRfs(mode)
    try {
      await warm([input])
      const out = join(r.mnt, 'seq.bin')
      const replicaFile = join(r.replica, 'seq.bin')
      const cpu0 = cpuTimes()
      const t0 = nowMs()
      const d = await run('dd', ddArgs(input, out), CFG.stepTimeoutMs)
      if (statSync(out).size !== bytes) throw new Error(`wrote ${statSync(out).size} bytes, expected ${bytes}`)
      if (mode === null) {
        record('seq.norep', rep, d.ms, cpu0, ` ${fmt(bytes / 1e3 / d.ms)} MB/s`)
      } else if (mode === 'sync') {
        const atReturn = fileSize(replicaFile)
        record('seq.sync', rep, d.ms, cpu0, ` ${fmt(bytes / 1e3 / d.ms)} MB/s`)
        if (atReturn !== bytes) notes.push(`seq sync rep ${rep}: the replica file had ${atReturn} bytes (not ${bytes}) when dd returned`)
      } else {
        const tLocal = nowMs()
        record('seq.async.local', rep, tLocal - t0, cpu0, ` ${fmt(bytes / 1e3 / (tLocal - t0))} MB/s`)
        const tConv = await pollUntil(() => fileSize(replicaFile) === bytes, CFG.stepTimeoutMs, 5, 'async replica of the 1 GiB file')
        record('seq.async.conv', rep, tConv - t0, cpu0, ` ${fmt(bytes / 1e3 / (tConv - t0))} MB/s (from dd start)`)
      }
      if (mode !== null) {
        // Unmeasured: the replica must hold the same bytes.
        try { await run('cmp', ['--', input, replicaFile], CFG.stepTimeoutMs) } catch (err) {
          throw new Error(`the replica differs from the input after ${name}: ${(err as Error).message}`)
        }
      }
    } finally {
      await r.stop()
    }
  })
}

async function seqSftp (rep: number, input: string, bytes: number): Promise<void> {
  await step('seq.sftp', rep, async () => {
    const s = sshd!
    const dir = join(work, `sftp-${++seq}`)
    mkdirSync(dir)
    try {
      const batch = join(dir, 'batch')
      const dest = join(dir, 'seq.bin')
      writeFileSync(batch, `put ${input} ${dest}\n`)
      await warm([input])
      const cpu0 = cpuTimes()
      const r = await run('sftp', sftpArgs(s, batch), CFG.stepTimeoutMs)
      if (fileSize(dest) !== bytes) throw new Error(`sftp put left ${fileSize(dest)} bytes, expected ${bytes}`)
      record('seq.sftp', rep, r.ms, cpu0, ` ${fmt(bytes / 1e3 / r.ms)} MB/s`)
      await run('cmp', ['--', input, dest], CFG.stepTimeoutMs)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

/**
 * The ceiling of a sync write: replicafs's own SFTP client (ssh2, through src/replica/sftp.ts)
 * writing the file to the same sshd in 128 KiB writes, each one waited for before the next is
 * sent, as each write(2) through a sync mount waits for the replica (the kernel hands a FUSE
 * daemon one 128 KiB write of a writer at a time). No FUSE, no source, no journal.
 */
async function seqSerial (rep: number, input: string, bytes: number): Promise<void> {
  await step('seq.serial', rep, async () => {
    const s = sshd!
    const dir = join(work, `serial-${++seq}`)
    mkdirSync(dir)
    const { SftpReplica } = await import('../../src/replica/sftp')
    const { silentLogger } = await import('../../src/log')
    const r = new SftpReplica({ url: `sftp://${s.user}@${s.host}:${s.port}${dir}`, user: s.user, host: s.host, port: s.port, root: dir, identities: [s.identity], knownHosts: s.knownHosts, timeoutMs: 10_000, log: silentLogger })
    const fd = openSync(input, 'r')
    try {
      await warm([input])
      await r.connect()
      const buf = Buffer.allocUnsafe(BLOCK)
      const cpu0 = cpuTimes()
      const t0 = nowMs()
      const h = await r.openWrite('/seq.bin', true, true, 0o644)
      for (let at = 0; at < bytes; at += BLOCK) {
        const n = readSync(fd, buf, 0, BLOCK, at)
        await r.write(h, at, buf.subarray(0, n))
      }
      await r.closeHandle(h)
      const ms = nowMs() - t0
      record('seq.serial', rep, ms, cpu0, ` ${fmt(bytes / 1e3 / ms)} MB/s`)
      if (fileSize(join(dir, 'seq.bin')) !== bytes) throw new Error(`the serial writes left ${fileSize(join(dir, 'seq.bin'))} bytes, expected ${bytes}`)
    } finally {
      closeSync(fd)
      await r.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

function sftpArgs (s: Sshd, batch: string): string[] {
  return ['-b', batch, '-i', s.identity, '-o', `UserKnownHostsFile=${s.knownHosts}`, '-o', 'StrictHostKeyChecking=yes',
    '-c', CIPHER, '-P', String(s.port), `${s.user}@${s.host}`]
}

// (2) tree copy --------------------------------------------------------------------------------

async function treeRfs (mode: 'sync' | 'async', rep: number, tree: string, ts: TreeStats): Promise<void> {
  await step(`tree.${mode}`, rep, async () => {
    const r = await mountRfs(mode)
    try {
      await warm([tree])
      const replicaTree = join(r.replica, 'tree')
      const cpu0 = cpuTimes()
      const t0 = nowMs()
      const c = await run('cp', ['-a', '--', tree, r.mnt + '/'], CFG.stepTimeoutMs)
      if (mode === 'sync') {
        const atReturn = walk(replicaTree)
        record('tree.sync', rep, c.ms, cpu0, ` ${fmt(ts.files / (c.ms / 1000))} files/s`)
        if (!sameTree(atReturn, ts)) notes.push(`tree sync rep ${rep}: replica not complete when cp returned (${JSON.stringify(atReturn)})`)
      } else {
        record('tree.async.cp', rep, c.ms, null)
        const tConv = await pollUntil(() => sameTree(walk(replicaTree), ts), CFG.stepTimeoutMs, 10, 'async replica of the tree')
        record('tree.async.conv', rep, tConv - t0, cpu0, ' (from cp start)')
      }
      try { await run('diff', ['-rq', '--no-dereference', '--', tree, replicaTree], CFG.stepTimeoutMs) } catch (err) {
        throw new Error(`the replica tree differs after tree.${mode}: ${(err as Error).message.slice(0, 1000)}`)
      }
    } finally {
      await r.stop()
    }
  })
}

async function treeRsync (rep: number, tree: string, ts: TreeStats): Promise<void> {
  await step('tree.rsync', rep, async () => {
    const s = sshd!
    const dest = join(work, `rsync-${++seq}`)
    mkdirSync(dest)
    try {
      await warm([tree])
      const cpu0 = cpuTimes()
      const r = await run('rsync', rsyncArgs(s, tree, dest), CFG.stepTimeoutMs)
      record('tree.rsync', rep, r.ms, cpu0, ` ${fmt(ts.files / (r.ms / 1000))} files/s`)
      if (!sameTree(walk(dest), ts)) throw new Error('rsync left a different tree')
      await run('diff', ['-rq', '--no-dereference', '--', tree, dest], CFG.stepTimeoutMs)
    } finally {
      rmSync(dest, { recursive: true, force: true })
    }
  })
}

// (4) reconcile ---------------------------------------------------------------------------------

/**
 * `replicafs resync` of the tree to an empty sftp replica, then again with nothing changed;
 * or the same two runs of `rsync -a --delete` over ssh.
 */
async function reconcileRun (tool: 'rfs' | 'rsync', rep: number, tree: string, ts: TreeStats): Promise<void> {
  const [first, again]: [Key, Key] = tool === 'rfs' ? ['rec.first', 'rec.again'] : ['rec.rsync.first', 'rec.rsync.again']
  await step(first.replace('.first', ''), rep, async () => {
    const s = sshd!
    const dest = join(reconcileDir(), `reconcile-${++seq}`)
    mkdirSync(dest)
    const cmd = tool === 'rfs'
      ? [process.execPath, [CLI, 'resync', tree, '--replica', `sftp://${s.user}@${s.host}:${s.port}${dest}`, '--identity', s.identity, '--known-hosts', s.knownHosts]] as const
      : ['rsync', ['--delete', ...rsyncArgs(s, tree, dest)]] as const
    try {
      await warm([tree])
      for (const key of [first, again]) {
        const cpu0 = cpuTimes()
        const r = await run(cmd[0], [...cmd[1]], CFG.stepTimeoutMs)
        record(key, rep, r.ms, cpu0, ` ${fmt(ts.files / (r.ms / 1000))} files/s`)
        if (!sameTree(walk(dest), ts)) throw new Error(`${key} left a different tree`)
      }
      // The replica's generation mark (fence.ts) is replicafs's own, not part of the tree.
      await run('diff', ['-rq', '--no-dereference', '--exclude=.replicafs-generation', '--', tree, dest], CFG.stepTimeoutMs)
    } finally {
      rmSync(dest, { recursive: true, force: true })
    }
  })
}

/**
 * Where the reconcile runs write: a tmpfs where there is one with room, so that both tools are
 * measured and not the disk's writeback (on the test VM, rsync's first copy swung between 1.2
 * and 5 s on disk, with the page cache flushing the run before it).
 */
let shmDir: string | null = null
function reconcileDir (): string {
  if (shmDir !== null) return shmDir
  try {
    const shm = statfsSync('/dev/shm')
    if (shm.type === 0x01021994 && Number(shm.bavail) * Number(shm.bsize) > 4 * (CFG.files * 0.06 + 40) * MiB) {
      shmDir = mkdtempSync('/dev/shm/replicafs-repbench-')
      notes.push(`section 4 writes its replicas to tmpfs (${shmDir}); the source tree is on disk, in the page cache`)
      return shmDir
    }
  } catch {}
  return work
}

function rsyncArgs (s: Sshd, tree: string, dest: string): string[] {
  return ['-a', '-e', sshCmd(s).join(' '), `${tree}/`, `${s.user}@${s.host}:${dest}/`]
}

async function treeLsyncd (rep: number, tree: string, ts: TreeStats): Promise<void> {
  await step('tree.lsyncd', rep, async () => {
    const l = await startLsyncd()
    try {
      await warm([tree])
      const targetTree = join(l.target, 'tree')
      const cpu0 = cpuTimes()
      const t0 = nowMs()
      const c = await run('cp', ['-a', '--', tree, l.watch + '/'], CFG.stepTimeoutMs)
      record('tree.lsyncd.cp', rep, c.ms, null)
      const tConv = await pollUntil(() => sameTree(walk(targetTree), ts), CFG.stepTimeoutMs, 10, 'lsyncd target of the tree')
      record('tree.lsyncd.conv', rep, tConv - t0, cpu0, ' (from cp start)')
      await run('diff', ['-rq', '--no-dereference', '--', tree, targetTree], CFG.stepTimeoutMs)
    } finally {
      await l.stop()
    }
  })
}

// (3) small-file lag ---------------------------------------------------------------------------

async function lagRun (writeDir: string, readDir: string): Promise<{ ms: Array<number | null>, writeMs: number[] }> {
  const r = await run(process.execPath, [join(__dirname, 'lag.js'), writeDir, readDir, String(CFG.lagSamples), String(CFG.lagTimeoutMs), '10'],
    Math.min(CFG.stepTimeoutMs, CFG.lagSamples * (CFG.lagTimeoutMs + 100) + 30_000), { captureStdout: true })
  return JSON.parse(r.stdout) as { ms: Array<number | null>, writeMs: number[] }
}

async function lagRfs (): Promise<void> {
  await step('lag.rfs', 1, async () => {
    const r = await mountRfs('async')
    try {
      const l0 = load1()
      const x = await lagRun(r.mnt, r.replica)
      lag.rfs = x.ms
      lagWrite.rfs = x.writeMs
      loads.push(l0, load1())
      log(`  lag.rfs: ${summary(lag.rfs)}; write+close ${summary(lagWrite.rfs)}`)
    } finally {
      await r.stop()
    }
  })
}

async function lagLsyncd (): Promise<void> {
  await step('lag.lsyncd', 1, async () => {
    const l = await startLsyncd()
    try {
      const l0 = load1()
      const x = await lagRun(l.watch, l.target)
      lag.lsyncd = x.ms
      lagWrite.lsyncd = x.writeMs
      loads.push(l0, load1())
      log(`  lag.lsyncd: ${summary(lag.lsyncd)}; write+close ${summary(lagWrite.lsyncd)}`)
    } finally {
      await l.stop()
    }
  })
}

/** Nearest-rank percentile; a sample that never arrived counts as +Infinity. */
function pct (xs: Array<number | null>, p: number): number | null {
  if (xs.length === 0) return null
  const s = xs.map(x => x ?? Infinity).sort((a, b) => a - b)
  return s[Math.max(0, Math.ceil(p / 100 * s.length) - 1)]!
}
function summary (xs: Array<number | null>): string {
  const lost = xs.filter(x => x === null).length
  return `n=${xs.length} p50 ${fmtMs(pct(xs, 50))} p99 ${fmtMs(pct(xs, 99))} max ${fmtMs(pct(xs, 100))}${lost > 0 ? `, ${lost} not arrived within ${CFG.lagTimeoutMs / 1000} s` : ''}`
}
function fmtMs (x: number | null): string {
  if (x === null) return 'n/a'
  if (!Number.isFinite(x)) return 'timeout'
  return `${x.toFixed(x < 10 ? 2 : 1)} ms`
}

// --- orchestration ----------------------------------------------------------------------------

const cleanup = once(async () => {
  for (const c of running) c.kill('SIGKILL')
  for (const l of [...liveLsyncd]) { try { await l.stop() } catch (err) { log(`stopping lsyncd: ${String(err)}`) } }
  for (const m of [...liveMounts]) { try { await m.stop() } catch (err) { log(`stopping a daemon: ${String(err)}`) } }
  if (sshd !== null) { try { await sshd.cleanup() } catch (err) { log(`sshd cleanup: ${String(err)}`) } }
  if (shmDir !== null) rmSync(shmDir, { recursive: true, force: true })
  if (work !== '') {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map(l => l.split(' ')[4] ?? '').filter(p => p.startsWith(work + '/'))
    try { cleanupDir(work, ...mounts) } catch (err) { log(`removing ${work}: ${String(err)}`) }
    for (const m of mounts) if (isMounted(m)) log(`WARNING: ${m} is still mounted`)
  }
})

cleanUpOnSignals(sig => {
  aborted = true
  log(`\n${sig}: cleaning up`)
}, cleanup)


function preflight (): void {
  requireTools('FUSE, sshd, root login on the replica', [['fusermount', ['-V']], ['dd', ['--version']], ['cp', ['--version']], ['cmp', ['--version']], ['diff', ['--version']],
    ['sftp', ['-h']], ['ssh', ['-V']], ['rsync', ['--version']], ['lsyncd', ['-version']], ['/usr/sbin/sshd', ['-V']]],
  'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lsyncd rsync openssh-client openssh-server')
}

async function main (): Promise<number> {
  const load1AtStart = load1()
  const cpuRun0 = cpuTimes()
  preflight()
  const foreignAtStart = await foreignLoad()
  log(`load1 ${load1AtStart}; other busy processes: ${foreignAtStart}`)
  work = mkdtempSync(join(CFG.parent, 'replicafs-repbench-'))
  if (statSync(work).dev !== statSync(PROJECT).dev) throw new Error(`${work} is not on the project's device: set BENCH_DIR`)
  const fsStat = statfsSync(work)
  const freeMiB = Number(fsStat.bavail) * Number(fsStat.bsize) / MiB
  const needMiB = 4 * CFG.seqMiB + 4 * (CFG.files * 0.06 + 40) + 1024
  if (freeMiB < needMiB) throw new Error(`${work}: ${Math.round(freeMiB)} MiB free, about ${Math.round(needMiB)} MiB needed`)
  log(`work dir ${work}; config ${JSON.stringify(CFG)}`)

  sshd = await startSshd()
  if (statSync(sshd.dir).dev !== statSync(work).dev) notes.push(`sshd's key dir ${sshd.dir} is on another device (replicas are under ${work})`)
  log(`sshd (OpenSSH, harness) on ${sshd.host}:${sshd.port}, pid ${sshd.pid}`)

  const tree = join(work, 'tree')
  const ts = generateTree(tree, CFG.files)
  log(`tree: ${ts.files} files, ${ts.symlinks} symlinks, ${ts.dirs} dirs, ${(ts.bytes / 1e6).toFixed(1)} MB`)
  const input = join(work, 'input.bin')
  const bytes = CFG.seqMiB * MiB
  await run('dd', ['if=/dev/urandom', `of=${input}`, 'bs=1M', `count=${CFG.seqMiB}`, 'iflag=fullblock'], CFG.stepTimeoutMs)
  execFileSync('sync')

  log('\n== (1) sequential write')
  for (let rep = 1; rep <= CFG.reps && !aborted && CFG.sections.has(1); rep++) {
    const order: Array<() => Promise<void>> = [
      () => seqRfs(null, rep, input, bytes), () => seqRfs('sync', rep, input, bytes),
      () => seqRfs('async', rep, input, bytes), () => seqSftp(rep, input, bytes),
      () => seqSerial(rep, input, bytes),
    ]
    for (let i = 0; i < order.length; i++) await order[(i + rep - 1) % order.length]!()
  }
  rmSync(input, { force: true })

  log('\n== (2) tree copy')
  for (let rep = 1; rep <= CFG.reps && !aborted && CFG.sections.has(2); rep++) {
    const order: Array<() => Promise<void>> = [
      () => treeRfs('sync', rep, tree, ts), () => treeRfs('async', rep, tree, ts),
      () => treeRsync(rep, tree, ts), () => treeLsyncd(rep, tree, ts),
    ]
    for (let i = 0; i < order.length; i++) await order[(i + rep - 1) % order.length]!()
  }

  log('\n== (3) small-file lag')
  if (CFG.sections.has(3)) {
    await lagRfs()
    await lagLsyncd()
  }

  log('\n== (4) reconcile to an empty replica, then again unchanged')
  for (let rep = 1; rep <= CFG.reps && !aborted && CFG.sections.has(4); rep++) {
    const order: Array<() => Promise<void>> = [() => reconcileRun('rfs', rep, tree, ts), () => reconcileRun('rsync', rep, tree, ts)]
    for (let i = 0; i < order.length; i++) await order[(i + rep - 1) % order.length]!()
  }

  if (aborted) return new Promise<number>(() => {})
  const foreignAtEnd = await foreignLoad()
  const runBusy = busyPct(cpuRun0, cpuTimes())
  await cleanup()
  const totalS = (Date.now() - T0) / 1000

  // --- report ---
  const med = (k: Key) => median(samples[k].map(s => s.ms))
  const mbps = (ms: number | null) => ms === null ? null : bytes / 1e3 / ms
  const secs = (ms: number | null) => ms === null ? 'n/a' : `${(ms / 1000).toFixed(2)} s`
  const mbpsCell = (k: Key) => { const m = med(k); return m === null ? 'n/a' : `${fmt(mbps(m))} MB/s (${secs(m)})` }
  const treeCell = (k: Key) => { const m = med(k); return m === null ? 'n/a' : `${secs(m)} (${fmt(ts.files / (m / 1000))} files/s)` }
  const ratio = (a: number | null, b: number | null) => a !== null && b !== null && b > 0 ? a / b : null
  const met = (x: number | null, ok: (x: number) => boolean) => x === null ? 'n/a' : ok(x) ? 'met' : 'NOT met'

  const asyncVsNorep = ratio(mbps(med('seq.async.local')), mbps(med('seq.norep')))
  const convVsSftp = ratio(mbps(med('seq.async.conv')), mbps(med('seq.sftp')))
  const syncVsSftp = ratio(mbps(med('seq.sync')), mbps(med('seq.sftp')))
  const serialVsSftp = ratio(mbps(med('seq.serial')), mbps(med('seq.sftp')))
  const treeSyncVsRsync = ratio(med('tree.sync'), med('tree.rsync'))
  const treeAsyncVsLsyncd = ratio(med('tree.async.conv'), med('tree.lsyncd.conv'))
  const treeCpVs = ratio(med('tree.async.cp'), med('tree.lsyncd.cp'))
  const recFirst = ratio(med('rec.first'), med('rec.rsync.first'))
  const recAgain = ratio(med('rec.again'), med('rec.rsync.again'))
  const p50r = pct(lag.rfs, 50); const p99r = pct(lag.rfs, 99)
  const p50l = pct(lag.lsyncd, 50); const p99l = pct(lag.lsyncd, 99)
  const finite = (x: number | null) => x !== null && Number.isFinite(x) ? x : null
  const seqLabel = `${CFG.seqMiB >= 1024 ? `${CFG.seqMiB / 1024} GiB` : `${CFG.seqMiB} MiB`}`

  const rows: string[][] = [
    [`1 seq write ${seqLabel}, mount without replica (dd)`, mbpsCell('seq.norep'), '-', '-', '-', '-'],
    ['1 seq write, async: local write (dd returns)', mbpsCell('seq.async.local'), `no-replica mount ${mbpsCell('seq.norep')}`, fmtRatio(asyncVsNorep), '>= 0.9x', met(asyncVsNorep, x => x >= 0.9)],
    ['1 seq write, async: replica has the whole file (from dd start)', mbpsCell('seq.async.conv'), `sftp put ${mbpsCell('seq.sftp')}`, fmtRatio(convVsSftp), '-', '-'],
    ['1 seq write, sync (dd returns)', mbpsCell('seq.sync'), `sftp put ${mbpsCell('seq.sftp')}`, fmtRatio(syncVsSftp), '>= 0.5x', met(syncVsSftp, x => x >= 0.5)],
    ['1 seq write, ssh2 one 128 KiB write at a time, no FUSE (the ceiling of a sync write, info)', mbpsCell('seq.serial'), `sftp put ${mbpsCell('seq.sftp')}`, fmtRatio(serialVsSftp), '-', '-'],
    [`2 tree ${ts.files.toLocaleString('en-US')} files, sync: cp -a returns`, treeCell('tree.sync'), `rsync -a over ssh ${treeCell('tree.rsync')}`, fmtRatio(treeSyncVsRsync), '<= 1.5x (time)', met(treeSyncVsRsync, x => x <= 1.5)],
    ['2 tree, async: replica converged (from cp start)', treeCell('tree.async.conv'), `lsyncd converged ${treeCell('tree.lsyncd.conv')}`, fmtRatio(treeAsyncVsLsyncd), '<= 0.5x (time)', met(treeAsyncVsLsyncd, x => x <= 0.5)],
    ['2 tree, async: cp -a returns (info)', treeCell('tree.async.cp'), `cp -a into lsyncd's dir ${treeCell('tree.lsyncd.cp')}`, fmtRatio(treeCpVs), '-', '-'],
    [`3 lag 4 KiB file, async, p50 (n=${lag.rfs.length})`, fmtMs(p50r), `lsyncd p50 ${fmtMs(p50l)} (n=${lag.lsyncd.length})`, fmtRatio(ratio(finite(p50r), finite(p50l))), '-', '-'],
    ['3 lag 4 KiB file, async, p99', fmtMs(p99r), `lsyncd p99 ${fmtMs(p99l)}`, fmtRatio(ratio(finite(p99r), finite(p99l))), '<= 20 ms', met(p99r, x => x <= 20)],
    ['3 open+write+close of that file, async, p50 / p99 (info)', `${fmtMs(pct(lagWrite.rfs, 50))} / ${fmtMs(pct(lagWrite.rfs, 99))}`,
      `into lsyncd's dir ${fmtMs(pct(lagWrite.lsyncd, 50))} / ${fmtMs(pct(lagWrite.lsyncd, 99))}`, '-', '-', '-'],
    ['4 reconcile (replicafs resync) to an empty replica', treeCell('rec.first'), `rsync -a --delete ${treeCell('rec.rsync.first')}`, fmtRatio(recFirst), '<= 1.2x (time)', met(recFirst, x => x <= 1.2)],
    ['4 reconcile again, nothing changed', treeCell('rec.again'), `rsync -a --delete ${treeCell('rec.rsync.again')}`, fmtRatio(recAgain), '<= 1.0x (time)', met(recAgain, x => x <= 1.0)],
  ]
  const table = markdownTable(['workload', 'replicafs', 'baseline', 'ratio', 'target', 'result'], rows.filter(r => CFG.sections.has(Number(r[0]![0]))))

  const s = { port: 'PORT', identity: 'KEY', knownHosts: 'KNOWN_HOSTS', user: 'root', host: '127.0.0.1' } as unknown as Sshd
  const commands = [
    reproduceCommand(PROJECT, 'bench:replication'),
    `  replicafs: node dist/src/cli.js mount SRC MNT --replica sftp://root@127.0.0.1:PORT/REPLICA --identity KEY --known-hosts KNOWN_HOSTS --mode sync|async --state-dir STATE  (no --replica for the plain mount)`,
    `  dd if=INPUT of=MNT/seq.bin bs=${BLOCK} conv=fsync     (INPUT: ${seqLabel} from /dev/urandom, in the page cache)`,
    `  sftp ${sftpArgs(s, 'BATCH').join(' ')}     (BATCH: put INPUT /DEST/seq.bin)`,
    '  one write at a time: src/replica/sftp.ts (ssh2) to the same sshd, 128 KiB writes of INPUT, each awaited before the next',
    `  cp -a TREE MNT/ ;  cp -a TREE WATCH/ (lsyncd)`,
    `  rsync ${rsyncArgs(s, 'TREE', '/DEST').map(a => a.includes(' ') ? JSON.stringify(a) : a).join(' ')}`,
    `  lsyncd -nodaemon CONF   (CONF: sync { default.rsync, source = WATCH, target = "root@127.0.0.1:TARGET/", delay = 0, rsync = { archive = true, rsh = "${sshCmd(s).join(' ')}" } })`,
    `  replicafs resync TREE --replica sftp://root@127.0.0.1:PORT/DEST --identity KEY --known-hosts KNOWN_HOSTS   (twice: DEST empty, then unchanged)`,
    `  rsync --delete ${rsyncArgs(s, 'TREE', '/DEST').map(a => a.includes(' ') ? JSON.stringify(a) : a).join(' ')}   (twice)`,
    `  lag: node dist/test/bench/lag.js WRITE_DIR READ_DIR ${CFG.lagSamples} ${CFG.lagTimeoutMs} 10`,
  ]

  const jsonPath = join(tmpdir(), `replicafs-repbench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  const finiteLoads = loads.filter(Number.isFinite)
  const loadLine = `load1 ${load1AtStart} at start, ${finiteLoads.length > 0 ? Math.min(...finiteLoads) : 'n/a'}..${finiteLoads.length > 0 ? Math.max(...finiteLoads) : 'n/a'} during the steps; machine CPU busy ${runBusy.toFixed(0)}% over the run (all processes, ours included, ${cpus().length} CPUs)`
  let gitRev = ''
  try { gitRev = execFileSync('git', ['-C', PROJECT, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim() } catch {}
  writeFileSync(jsonPath, JSON.stringify({
    date: new Date().toISOString(), command: reproduceCommand(PROJECT, 'bench:replication'), git: gitRev,
    host: { kernel: release(), cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, load1AtStart, foreignAtStart, foreignAtEnd, runCpuBusyPct: runBusy },
    config: CFG, tree: ts, samples, lag, lagWrite, errors, notes, totalSeconds: totalS,
  }, null, 2) + '\n')

  const out = process.stdout
  out.write('\n')
  out.write(`medians of ${CFG.reps} run(s) (lag: ${CFG.lagSamples} samples each); one sftp replica on 127.0.0.1 (OpenSSH sshd, ${CIPHER} for the baselines; ` +
    `replicafs uses ssh2's own choice), replica and baselines on the same disk as the source${shmDir !== null ? ' (section 4: on tmpfs)' : ''}; git ${gitRev}; ${release()}, ${cpus().length} CPUs; MB = 10^6 bytes\n`)
  out.write(`tree: ${ts.files} files + ${ts.symlinks} symlinks in ${ts.dirs} dirs, ${(ts.bytes / 1e6).toFixed(0)} MB; convergence = file count and total bytes equal (polled every 10 ms), then diff -r checked; seq: cmp checked\n`)
  out.write(`${loadLine}\nother busy processes: at start ${foreignAtStart}; at end ${foreignAtEnd}\n\n`)
  out.write(table + '\n\n')
  out.write('commands:\n' + commands.join('\n') + '\n\n')
  if (notes.length > 0) out.write('notes:\n' + [...new Set(notes)].map(n => `  ${n}`).join('\n') + '\n')
  if (errors.length > 0) {
    out.write(`${errors.length} step(s) FAILED:\n`)
    for (const e of errors) out.write(`  ${e.step} rep ${e.rep}: ${e.error.split('\n').slice(0, 4).join(' | ')}\n`)
  }
  out.write(`raw numbers: ${jsonPath}\n`)
  out.write(`total runtime: ${Math.floor(totalS / 60)} min ${Math.round(totalS % 60)} s\n`)
  return errors.length > 0 ? 1 : 0
}

if (process.env.TAP_CHILD_ID !== undefined) {
  process.stdout.write('1..0 # the benchmark runs with `npm run bench:replication`, not under tap\n')
} else {
  main().then(code => { process.exitCode = code }, async err => {
    log(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    await cleanup()
    process.exitCode = 1
  })
}
