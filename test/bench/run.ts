// replicafs benchmark: native directory vs bindfs vs replicafs (no replica), same disk, one run.
// Usage: npm run bench:mount    (full: 1 GiB, 5,000 files, 10,000 pairs, 4 x 256 MiB, 3 reps)
//        BENCH_QUICK=1 npm run bench:mount  (128 MiB, 500 files, 1,000 pairs, 4 x 32 MiB, 1 rep)
// Overrides: BENCH_REPS, BENCH_SEQ_MIB, BENCH_FILES, BENCH_PAIRS, BENCH_PAR_MIB,
//            BENCH_STEP_TIMEOUT (seconds per measured step), BENCH_DIR (parent of the work dir).
import { execFileSync } from 'node:child_process'
import { accessSync, constants as fsc, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { cleanupDir } from '../helpers/mount'
import { run, runParallel, running } from './proc'
import { cleanUpOnSignals, envInt, once, QUICK, reproduceCommand, requireTools } from './env'
import { fmt, fmtRatio, markdownTable, median } from './report'
import { bindfsTarget, nativeTarget, replicafsTarget, type Target } from './targets'
import { generateTree, type TreeStats } from './tree'

const PROJECT = resolve(__dirname, '..', '..', '..')
const MiB = 1024 * 1024

const CFG = {
  reps: envInt('BENCH_REPS', QUICK ? 1 : 3),
  seqMiB: envInt('BENCH_SEQ_MIB', QUICK ? 128 : 1024),
  files: envInt('BENCH_FILES', QUICK ? 500 : 5000),
  pairs: envInt('BENCH_PAIRS', QUICK ? 1000 : 10_000),
  parMiB: envInt('BENCH_PAR_MIB', QUICK ? 32 : 256),
  parProcs: 4,
  stepTimeoutMs: envInt('BENCH_STEP_TIMEOUT', 600) * 1000,
  parent: process.env.BENCH_DIR ?? '/var/tmp',
}
const BLOCK = 128 * 1024

type Workload = 'seq-write' | 'seq-read' | 'tree-copy' | 'tree-stat' | 'create-unlink' | 'parallel-write'
type TargetName = Target['name']
const WORKLOADS: Array<{ id: Workload, label: string, unit: string, target: string, check: (vsBindfs: number, vsNative: number) => boolean | null }> = [
  { id: 'seq-write', label: '(a) sequential write', unit: 'MB/s', target: '>=2x bindfs, >=0.5x native', check: (b, n) => b >= 2 && n >= 0.5 },
  { id: 'seq-read', label: '(b) sequential read, cold', unit: 'MB/s', target: '>=2x bindfs, >=0.5x native', check: (b, n) => b >= 2 && n >= 0.5 },
  { id: 'tree-copy', label: '(c) tree copy (cp -a)', unit: 'files/s', target: '>=2x bindfs', check: b => b >= 2 },
  { id: 'tree-stat', label: '(d) stat every file, cold', unit: 'stats/s', target: '>=2x bindfs', check: b => b >= 2 },
  { id: 'create-unlink', label: '(e) create+unlink', unit: 'pairs/s', target: '>=2x bindfs', check: b => b >= 2 },
  { id: 'parallel-write', label: '(f) 4 parallel writers', unit: 'MB/s', target: '-', check: () => null },
]

interface Sample { rep: number, value: number, ms: number, extra?: Record<string, number>, load1?: number }
const samples: Record<Workload, Record<TargetName, Sample[]>> = Object.fromEntries(
  WORKLOADS.map(w => [w.id, { native: [], bindfs: [], replicafs: [] }])) as unknown as Record<Workload, Record<TargetName, Sample[]>>
const errors: Array<{ workload: string, target: string, rep: number, error: string }> = []

const log = (s: string) => process.stderr.write(s + '\n')

async function dropCaches (): Promise<void> {
  await run('sync', [], CFG.stepTimeoutMs)
  writeFileSync('/proc/sys/vm/drop_caches', '3')
}

async function syncAll (): Promise<void> {
  await run('sync', [], CFG.stepTimeoutMs)
}

/** 1-minute load average, kept with each sample: a busy machine shows up in the raw numbers. */
function load1 (): number {
  try { return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]) } catch { return NaN }
}

function record (w: Workload, t: TargetName, s: Sample, unit: string): void {
  s.load1 = load1()
  samples[w][t].push(s)
  log(`  ${w.padEnd(14)} ${t.padEnd(9)} rep ${s.rep}: ${fmt(s.value)} ${unit} (${(s.ms / 1000).toFixed(2)} s)`)
}

/** Runs one measured step; a failure is recorded and the run goes on with the next step. */
async function step (w: string, t: TargetName, rep: number, fn: () => Promise<void>): Promise<boolean> {
  if (aborted) return false
  try {
    await fn()
    return true
  } catch (err) {
    if (aborted) return false
    const msg = err instanceof Error ? err.message : String(err)
    errors.push({ workload: w, target: t, rep, error: msg })
    log(`  ${w.padEnd(14)} ${t.padEnd(9)} rep ${rep}: FAILED: ${msg.split('\n')[0]}`)
    return false
  }
}

// --- the workloads ----------------------------------------------------------------------------

async function seqWriteRead (t: Target, rep: number): Promise<void> {
  const f = join(t.dir, `seq-${rep}.bin`)
  const bytes = CFG.seqMiB * MiB
  const wrote = await step('seq-write', t.name, rep, async () => {
    await syncAll()
    const r = await run('dd', ['if=/dev/zero', `of=${f}`, `bs=${BLOCK}`, `count=${bytes / BLOCK}`, 'conv=fsync'], CFG.stepTimeoutMs)
    const size = statSync(f).size
    if (size !== bytes) throw new Error(`wrote ${size} bytes, expected ${bytes}`)
    record('seq-write', t.name, { rep, value: bytes / 1e6 / (r.ms / 1000), ms: r.ms }, 'MB/s')
  })
  if (wrote) {
    await step('seq-read', t.name, rep, async () => {
      await dropCaches()
      const r = await run('dd', [`if=${f}`, 'of=/dev/null', `bs=${BLOCK}`], CFG.stepTimeoutMs)
      record('seq-read', t.name, { rep, value: bytes / 1e6 / (r.ms / 1000), ms: r.ms }, 'MB/s')
    })
  }
  await step('seq-cleanup', t.name, rep, async () => { rmSync(f, { force: true }) })
}

async function treeCopyStat (t: Target, rep: number, tree: string, ts: TreeStats): Promise<void> {
  const dest = join(t.dir, `copy-${rep}`)
  const entries = ts.files + ts.symlinks
  const copied = await step('tree-copy', t.name, rep, async () => {
    // The source tree comes from the page cache for every target (the drop_caches of the other
    // steps evict it): read it all first, unmeasured, then sync.
    await run('find', [tree, '-type', 'f', '-exec', 'cat', '--', '{}', '+'], CFG.stepTimeoutMs)
    await syncAll()
    const r = await run('cp', ['-a', '--', tree, dest], CFG.stepTimeoutMs)
    // Not part of the measure (cp does not sync), but kept in the raw numbers: flushing what cp left dirty.
    const s = await run('sync', [], CFG.stepTimeoutMs)
    record('tree-copy', t.name, { rep, value: entries / (r.ms / 1000), ms: r.ms, extra: { MBps: ts.bytes / 1e6 / (r.ms / 1000), syncAfterMs: s.ms } }, 'files/s')
  })
  if (copied) {
    await step('tree-stat', t.name, rep, async () => {
      await dropCaches()
      // find lstat()s every file and symlink for %s/%T@ (directories are stat()ed as it walks).
      const r = await run('find', [dest, '(', '-type', 'f', '-o', '-type', 'l', ')', '-printf', '%s %T@\n'], CFG.stepTimeoutMs, { captureStdout: true })
      const n = r.stdout.split('\n').filter(l => l !== '').length
      if (n !== entries) throw new Error(`find saw ${n} files and symlinks, the tree has ${entries}`)
      record('tree-stat', t.name, { rep, value: n / (r.ms / 1000), ms: r.ms }, 'stats/s')
    })
  }
  await step('tree-cleanup', t.name, rep, async () => { await run('rm', ['-rf', '--', dest], CFG.stepTimeoutMs) })
}

async function createUnlink (t: Target, rep: number): Promise<void> {
  const dir = join(t.dir, `cu-${rep}`)
  await step('create-unlink', t.name, rep, async () => {
    mkdirSync(dir)
    try {
      await syncAll()
      const r = await run(process.execPath, [join(__dirname, 'create-unlink.js'), dir, String(CFG.pairs)], CFG.stepTimeoutMs, { captureStdout: true })
      const loopMs = Number(r.stdout.trim())
      if (!Number.isFinite(loopMs) || loopMs <= 0) throw new Error(`create-unlink printed ${JSON.stringify(r.stdout)}`)
      // The rate is over the child's loop only (node's ~40 ms start-up excluded); wall time kept too.
      record('create-unlink', t.name, { rep, value: CFG.pairs / (loopMs / 1000), ms: loopMs, extra: { wallMs: r.ms } }, 'pairs/s')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

async function parallelWrite (t: Target, rep: number): Promise<void> {
  const files = Array.from({ length: CFG.parProcs }, (_, i) => join(t.dir, `par-${rep}-${i}.bin`))
  const each = CFG.parMiB * MiB
  await step('parallel-write', t.name, rep, async () => {
    try {
      await syncAll()
      const r = await runParallel(files.map(f => ['dd', ['if=/dev/zero', `of=${f}`, `bs=${BLOCK}`, `count=${each / BLOCK}`, 'conv=fsync']]), CFG.stepTimeoutMs)
      for (const f of files) if (statSync(f).size !== each) throw new Error(`${f}: wrong size`)
      record('parallel-write', t.name, { rep, value: CFG.parProcs * each / 1e6 / (r.ms / 1000), ms: r.ms }, 'MB/s')
    } finally {
      for (const f of files) rmSync(f, { force: true })
    }
  })
}

// --- orchestration ----------------------------------------------------------------------------

let work: string | null = null
let targets: Target[] = []
/** Set by a signal: no more steps start. */
let aborted = false

const cleanup = once(async () => {
  for (const c of running) c.kill('SIGKILL')
  for (const t of targets) {
    try { await t.teardown() } catch (err) { log(`teardown of ${t.name}: ${String(err)}`) }
  }
  if (work !== null) {
    try {
      cleanupDir(work, ...targets.flatMap(t => t.mnt !== undefined ? [t.mnt] : []))
    } catch (err) { log(`removing ${work}: ${String(err)}`) }
  }
})

cleanUpOnSignals(sig => {
  aborted = true
  log(`\n${sig}: cleaning up`)
}, cleanup)


function preflight (): void {
  requireTools('drop_caches, bindfs, FUSE', [['bindfs', ['--version']], ['fusermount', ['-V']], ['dd', ['--version']], ['find', ['--version']], ['cp', ['--version']]],
    'native-deps/setup.sh --bench')
  try { accessSync('/proc/sys/vm/drop_caches', fsc.W_OK) } catch { throw new Error('/proc/sys/vm/drop_caches is not writable') }
}

async function main (): Promise<number> {
  const t0 = Date.now()
  const load1AtStart = load1()
  preflight()
  work = mkdtempSync(join(CFG.parent, 'replicafs-bench-'))
  const devWork = statSync(work).dev
  const devProject = statSync(PROJECT).dev
  const devTmp = statSync(tmpdir()).dev
  if (devWork !== devProject) throw new Error(`${work} is not on the project's device (${PROJECT}): set BENCH_DIR`)
  const fsStat = statfsSync(work)
  const freeMiB = Number(fsStat.bavail) * Number(fsStat.bsize) / MiB
  const needMiB = 2 * (CFG.files * 0.06 + 40) + Math.max(CFG.seqMiB, CFG.parProcs * CFG.parMiB) + 1024
  if (freeMiB < needMiB) throw new Error(`${work}: ${Math.round(freeMiB)} MiB free, about ${Math.round(needMiB)} MiB needed`)
  log(`work dir ${work} (device ${devWork}, same as ${PROJECT}${devTmp === devWork ? ` and ${tmpdir()}` : ''}); ${Math.round(freeMiB / 1024)} GiB free`)
  log(`config ${JSON.stringify(CFG)}`)

  const tree = join(work, 'tree')
  const ts = generateTree(tree, CFG.files)
  log(`tree: ${ts.files} files, ${ts.symlinks} symlinks, ${ts.dirs} dirs, ${(ts.bytes / 1e6).toFixed(1)} MB (seeded, generated in ${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  execFileSync('sync')

  const rfs = replicafsTarget(work)
  targets = [nativeTarget(work), bindfsTarget(work), rfs]
  for (const t of targets) {
    await t.setup()
    log(`${t.name}: ${t.describe} at ${t.dir}`)
  }

  const groups: Array<[string, (t: Target, rep: number) => Promise<void>]> = [
    ['sequential write + cold read', seqWriteRead],
    ['tree copy + cold stat', (t, rep) => treeCopyStat(t, rep, tree, ts)],
    ['create+unlink', createUnlink],
    ['parallel write', parallelWrite],
  ]
  for (const [name, fn] of groups) {
    if (aborted) break
    log(`\n== ${name}`)
    for (let rep = 1; rep <= CFG.reps && !aborted; rep++) {
      // Rotate the order of the targets each repetition, so none is always first after a sync.
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + rep - 1) % targets.length]!
        if (t.name === 'replicafs') {
          const d = rfs.daemon()
          if (d === null || d.child.exitCode !== null || d.child.signalCode !== null) {
            errors.push({ workload: name, target: t.name, rep, error: 'the replicafs daemon is gone' })
            continue
          }
        }
        await fn(t, rep)
      }
    }
  }

  if (aborted) return new Promise<number>(() => {}) // the signal handler cleans up and exits
  const rfsLog = rfs.daemon()?.stderr ?? ''
  await cleanup()
  const totalS = (Date.now() - t0) / 1000

  // --- report ---
  const med = (w: Workload, t: TargetName) => median(samples[w][t].map(s => s.value))
  const rows: string[][] = []
  const summary: Record<string, unknown> = {}
  for (const w of WORKLOADS) {
    const n = med(w.id, 'native')
    const b = med(w.id, 'bindfs')
    const r = med(w.id, 'replicafs')
    const vsB = r !== null && b !== null ? r / b : null
    const vsN = r !== null && n !== null ? r / n : null
    const met = vsB !== null && vsN !== null ? w.check(vsB, vsN) : null
    rows.push([w.label, w.unit, fmt(n), fmt(b), fmt(r), fmtRatio(vsB), fmtRatio(vsN), w.target, met === null ? '-' : met ? 'yes' : 'NO'])
    summary[w.id] = { unit: w.unit, median: { native: n, bindfs: b, replicafs: r }, replicafsVsBindfs: vsB, replicafsVsNative: vsN, targetMet: met }
  }
  const table = markdownTable(
    ['workload', 'unit', 'native', 'bindfs', 'replicafs', 'rfs/bindfs', 'rfs/native', 'target', 'met'], rows)

  const jsonPath = join(tmpdir(), `replicafs-bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(jsonPath, JSON.stringify({
    date: new Date().toISOString(),
    command: reproduceCommand(PROJECT, 'bench:mount'),
    host: { kernel: release(), cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, load1AtStart: load1AtStart },
    config: CFG,
    tree: ts,
    summary,
    samples,
    errors,
    totalSeconds: totalS,
    replicafsLogTail: rfsLog.slice(-4000),
  }, null, 2) + '\n')

  const out = process.stdout
  out.write('\n')
  out.write(`reproduce: ${reproduceCommand(PROJECT, 'bench:mount')}\n`)
  out.write(`medians of ${CFG.reps} run(s); ${release()}, ${cpus().length} CPUs; same disk (${work} removed); ` +
    `(a) dd ${CFG.seqMiB} MiB bs=128k conv=fsync, (b) dd read after drop_caches, ` +
    `(c) cp -a of ${ts.files + ts.symlinks} files+symlinks in ${ts.dirs} dirs, ${(ts.bytes / 1e6).toFixed(0)} MB (cp only, no sync), ` +
    `(d) find -printf after drop_caches, (e) ${CFG.pairs} pairs from a node child, (f) ${CFG.parProcs} x dd ${CFG.parMiB} MiB conv=fsync; MB = 10^6 bytes\n\n`)
  out.write(table + '\n\n')
  if (errors.length > 0) {
    out.write(`${errors.length} step(s) FAILED:\n`)
    for (const e of errors) out.write(`  ${e.workload} ${e.target} rep ${e.rep}: ${e.error.split('\n')[0]}\n`)
  }
  out.write(`raw numbers: ${jsonPath}\n`)
  out.write(`total runtime: ${Math.floor(totalS / 60)} min ${Math.round(totalS % 60)} s\n`)
  return errors.length > 0 ? 1 : 0
}

if (process.env.TAP_CHILD_ID !== undefined) {
  // Spawned by tap as a test file (e.g. dist/test/bench/run.js, which tap's exclude of
  // test/bench/** does not cover): a benchmark is no test, so skip rather than run for minutes.
  process.stdout.write('1..0 # the benchmark runs with `npm run bench:mount` (or `npm run bench`), not under tap\n')
} else {
  runMain()
}

function runMain (): void {
  main().then(code => { process.exitCode = code }, async err => {
    log(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    await cleanup()
    process.exitCode = 1
  })
}
