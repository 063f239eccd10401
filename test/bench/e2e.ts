// npm run bench:e2e: the upload scene's replication lag and convergence, replicafs next to
// lsyncd, in the same run. Three backups, each its own network namespace with sshd and nginx
// (test/helpers/hosts.ts): one for replicafs in sync mode, one for replicafs in async mode,
// one for lsyncd (Debian's package: rsync over ssh, delay = 0, the smallest it accepts). Each
// master has its own vsftpd; curl uploads (Python's ftplib for the 1,000-upload session).
//
// Lag: from curl's return (the FTP server said the upload is complete) until the backup's
// nginx serves the whole file (polled with HEAD, about every millisecond), for small and large
// files, p50 and p99. Convergence: from the start of 1,000 uploads (one FTP session) until
// the backup holds all of them.
//
// Env: BENCH_E2E_SMALL (samples of small files, default 100), BENCH_E2E_LARGE (default 20),
// BENCH_E2E_UPLOADS (convergence uploads, default 1000).
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { CURL, ftpUser, startBackups, startFtp, FTP_PASS, FTP_USER, type Backup, type Ftp } from '../helpers/hosts'
import { cleanupDir, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { cleanUpOnSignals, envInt, once, reproduceCommand, requireTools } from './env'
import { descendantsOf, procAlive, procStat, signalProc, type ProcId } from './proc'
import { fmt, markdownTable } from './report'

const execFileP = promisify(execFile)
const PROJECT = resolve(__dirname, '..', '..', '..')
const SMALL = envInt('BENCH_E2E_SMALL', 100)
const LARGE = envInt('BENCH_E2E_LARGE', 20)
const UPLOADS = envInt('BENCH_E2E_UPLOADS', 1000)
const SMALL_BYTES = 4096
const LARGE_BYTES = 4 * 1024 * 1024
/** No sample waits longer than this for the backup. */
const LAG_MAX_MS = 30_000
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
const log = (s: string) => process.stderr.write(s + '\n')

interface Side { name: string, ftp: Ftp, backup: Backup, local: string }

const work = mkdtempSync(join(tmpdir(), 'replicafs-e2ebench-'))
chmodSync(work, 0o755)
const daemons: Daemon[] = []
const ftps: Ftp[] = []
const mounts: string[] = []
let lsyncd: { child: ChildProcess, me: ProcId | null } | null = null
let backupsCleanup: (() => Promise<void>) | null = null

const cleanup = once(async () => {
  for (const f of ftps) await f.cleanup().catch(() => {})
  for (const d of daemons) await stopDaemon(d).catch(() => {})
  if (lsyncd !== null) await stopLsyncd(lsyncd)
  cleanupDir(work, ...mounts)
  await backupsCleanup?.()
})

async function stopLsyncd (l: { child: ChildProcess, me: ProcId | null }): Promise<void> {
  if (l.me === null || l.child.exitCode !== null || l.child.signalCode !== null) return
  const kids = descendantsOf(l.me.pid)
  const exited = new Promise(resolve => l.child.once('exit', resolve))
  l.child.kill('SIGTERM')
  const timer = setTimeout(() => l.child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
  for (const k of kids) signalProc(k, 'SIGTERM')
  const end = Date.now() + 5000
  while (kids.some(procAlive) && Date.now() < end) await sleep(25)
  for (const k of kids) signalProc(k, 'SIGKILL')
}

/** A directory the FTP user owns, for an FTP root. */
async function ftpRoot (path: string): Promise<void> {
  mkdirSync(path, { mode: 0o755 })
  const { uid, gid } = await ftpUser()
  chownSync(path, uid, gid)
}

async function replicafsSide (name: string, backup: Backup, mode: 'sync' | 'async'): Promise<Side> {
  const src = join(work, `${name}-src`)
  const mnt = join(work, `${name}-mnt`)
  await ftpRoot(src)
  mkdirSync(mnt)
  mounts.push(mnt)
  daemons.push(await startDaemon(['mount', src, mnt, '--allow-other', '--mode', mode, '--state-dir', join(work, `${name}-state`), ...backup.replicaArgs]))
  const ftp = await startFtp(mnt)
  ftps.push(ftp)
  return { name, ftp, backup, local: join(work, `${name}-files`) }
}

async function lsyncdSide (backup: Backup): Promise<Side> {
  const watch = join(work, 'lsyncd-watch')
  await ftpRoot(watch)
  const s = backup.sshd
  const conf = join(work, 'lsyncd.conf.lua')
  const q = (x: string) => JSON.stringify(x)
  const rsh = `ssh -i ${s.identity} -o UserKnownHostsFile=${s.knownHosts} -o StrictHostKeyChecking=yes -o BatchMode=yes -c aes128-gcm@openssh.com`
  writeFileSync(conf, [
    'settings {',
    `  logfile = ${q(join(work, 'lsyncd.log'))},`,
    '  nodaemon = true,',
    '}',
    'sync {',
    '  default.rsync,',
    `  source = ${q(watch)},`,
    `  target = ${q(`${s.user}@${s.host}:${backup.root}/`)},`,
    '  delay = 0,',
    `  rsync = { archive = true, rsh = ${q(rsh)} },`,
    '}',
    '',
  ].join('\n'))
  const fd = openSync(join(work, 'lsyncd.out'), 'a')
  const child = spawn('lsyncd', ['-nodaemon', conf], { stdio: ['ignore', fd, fd] })
  closeSync(fd)
  child.once('error', () => {})
  lsyncd = { child, me: child.pid !== undefined ? { pid: child.pid, start: procStat(child.pid)?.start ?? '' } : null }
  // Its first full sync of the (empty) tree, before any sample.
  await sleep(1500)
  const ftp = await startFtp(watch)
  ftps.push(ftp)
  return { name: 'lsyncd', ftp, backup, local: join(work, 'lsyncd-files') }
}

function curlArgs (ftp: Ftp, pairs: Array<[string, string]>): string[] {
  return [...CURL, '--ftp-create-dirs', '--user', `${FTP_USER}:${FTP_PASS}`, '--max-time', '600',
    ...pairs.flatMap(([local, path]) => ['-T', local, `ftp://127.0.0.1:${ftp.port}${path}`])]
}

/** One upload, then the ms until the backup's nginx serves all of it. */
async function lag (side: Side, i: number, bytes: number, data: Buffer): Promise<number> {
  const local = join(side.local, `lag-${bytes}-${i}`)
  writeFileSync(local, data)
  const path = `/lag/${bytes}-${i}.bin`
  await execFileP('curl', curlArgs(side.ftp, [[local, path]]))
  const t0 = performance.now()
  for (;;) {
    // HEAD: nginx's Content-Length, not the time to download the file. Each tool publishes a
    // file whole (a rename from a temporary name), so the full length is the whole file.
    if (await side.backup.length(path).catch(() => null) === bytes) return performance.now() - t0
    if (performance.now() - t0 > LAG_MAX_MS) throw new Error(`${side.name}: ${path} not served within ${LAG_MAX_MS} ms`)
    await sleep(1)
  }
}

/**
 * Uploads `pairs` ([local file, FTP path]) in one FTP session, with Python's ftplib: curl
 * 7.88 (Debian 12's) given many URLs now and then leaves a passive data connection alone for
 * its one-second timer ("ftp_perform ends with SECONDARY" in its trace, then 1 s of nothing),
 * more often the sooner the server answers; a thousand uploads took up to 60 s that way.
 */
async function uploadSession (ftp: Ftp, pairs: Array<[string, string]>): Promise<void> {
  const script = [
    'import ftplib, json, sys',
    'port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]',
    'pairs = json.load(sys.stdin)',
    'f = ftplib.FTP()',
    "f.connect('127.0.0.1', port, timeout=600)",
    'f.login(user, password)',
    'made = set()',
    'for local, path in pairs:',
    // Relative to the login directory, as curl's URL paths are.
    "    path = path.lstrip('/')",
    "    d = path.rsplit('/', 1)[0] if '/' in path else ''",
    '    if d and d not in made:',
    '        try:',
    '            f.mkd(d)',
    '        except ftplib.error_perm:',
    '            pass',
    '        made.add(d)',
    "    with open(local, 'rb') as src:",
    "        f.storbinary('STOR ' + path, src)",
    'f.quit()',
  ].join('\n')
  await new Promise<void>((resolve, reject) => {
    const child = execFile('python3', ['-c', script, String(ftp.port), FTP_USER, FTP_PASS], { maxBuffer: 1 << 20, timeout: 600_000 }, err => err ? reject(err) : resolve())
    child.stdin?.end(JSON.stringify(pairs))
  })
}

/** UPLOADS small files in one FTP session: ms from its start until the backup holds them all. */
async function converge (side: Side): Promise<{ upload: number, converged: number }> {
  const dir = join(side.local, 'many')
  mkdirSync(dir, { recursive: true })
  const pairs: Array<[string, string]> = []
  let want = 0
  for (let i = 0; i < UPLOADS; i++) {
    const size = 1000 + (i * 7919) % 20000
    want += size
    writeFileSync(join(dir, `u${i}`), Buffer.alloc(size, i % 251))
    pairs.push([join(dir, `u${i}`), `/many/u${i}.html`])
  }
  const t0 = performance.now()
  await uploadSession(side.ftp, pairs)
  const upload = performance.now() - t0
  const target = join(side.backup.root, 'many')
  for (;;) {
    let n = 0
    let bytes = 0
    try {
      for (const name of readdirSync(target)) {
        if (!/^u\d+\.html$/.test(name)) continue
        n++
        bytes += statSync(join(target, name)).size
      }
    } catch {}
    if (n === UPLOADS && bytes === want) return { upload, converged: performance.now() - t0 }
    if (performance.now() - t0 > 600_000) throw new Error(`${side.name}: not converged within 600 s (${n} of ${UPLOADS})`)
    await sleep(5)
  }
}

function pct (xs: number[], p: number): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]!
}

async function main (): Promise<number> {
  requireTools('network namespaces, vsftpd and nginx', [['vsftpd', ['-v']], ['nginx', ['-v']], ['lsyncd', ['-version']], ['rsync', ['--version']], ['curl', ['--version']], ['ip', ['-V']]], 'npm run bench:e2e installs them (native-deps/setup.sh --test --bench)')
  const T0 = Date.now()
  const started = await startBackups(3)
  backupsCleanup = started.cleanup
  const [bSync, bAsync, bLsyncd] = started.backups as [Backup, Backup, Backup]
  const sides = [await replicafsSide('sync', bSync, 'sync'), await replicafsSide('async', bAsync, 'async'), await lsyncdSide(bLsyncd)]
  for (const s of sides) mkdirSync(s.local, { recursive: true })

  const lags: Record<string, { small: number[], large: number[] }> = {}
  for (const s of sides) lags[s.name] = { small: [], large: [] }
  const small = Buffer.alloc(SMALL_BYTES, 7)
  const large = Buffer.alloc(LARGE_BYTES, 9)
  log(`lag: ${SMALL} uploads of ${SMALL_BYTES} B and ${LARGE} of ${LARGE_BYTES / 1024 / 1024} MiB per side, interleaved`)
  for (let i = 0; i < SMALL; i++) for (const s of sides) lags[s.name]!.small.push(await lag(s, i, SMALL_BYTES, small))
  for (let i = 0; i < LARGE; i++) for (const s of sides) lags[s.name]!.large.push(await lag(s, i, LARGE_BYTES, large))
  log(`convergence: ${UPLOADS} uploads per side`)
  const conv: Record<string, { upload: number, converged: number }> = {}
  for (const s of sides) conv[s.name] = await converge(s)

  const ms = (x: number | null) => x === null ? 'n/a' : `${fmt(x)} ms`
  const ratio = (a: number | null, b: number | null) => a !== null && b !== null && a > 0 ? b / a : null
  const rows: string[][] = []
  for (const [kind, label] of [['small', `${SMALL_BYTES / 1024} KiB file`], ['large', `${LARGE_BYTES / 1024 / 1024} MiB file`]] as const) {
    for (const p of [50, 99]) {
      const sync = pct(lags.sync![kind], p)
      const async = pct(lags.async![kind], p)
      const ls = pct(lags.lsyncd![kind], p)
      const x = ratio(async, ls)
      rows.push([`lag, ${label}, p${p} (n=${lags.sync![kind].length})`, ms(sync), ms(async), ms(ls), x === null ? 'n/a' : `${fmt(x)}x lower`,
        p === 99 ? (x !== null && x >= 10 ? 'met (>= 10x)' : 'NOT met (>= 10x)') : '-'])
    }
  }
  rows.push([`convergence after ${UPLOADS} uploads (from the first)`, ms(conv.sync!.converged), ms(conv.async!.converged), ms(conv.lsyncd!.converged),
    (() => { const x = ratio(conv.async!.converged, conv.lsyncd!.converged); return x === null ? 'n/a' : `${fmt(x)}x lower` })(), '-'])
  rows.push([`  of which the FTP uploads themselves`, ms(conv.sync!.upload), ms(conv.async!.upload), ms(conv.lsyncd!.upload), '-', '-'])

  process.stdout.write('\n' + markdownTable(['upload scene', 'replicafs sync', 'replicafs async', 'lsyncd (delay 0)', 'async vs lsyncd', 'target (async p99 lag)'], rows) + '\n\n')
  process.stdout.write([
    `lag: from curl's return (226 Transfer complete) until the backup's nginx serves the whole file (HEAD: its full Content-Length), polled about every 1 ms;`,
    `sync mode's lag is the first poll's round trip: the backup had the file before the FTP server answered.`,
    `three backups, each its own network namespace (veth, 198.18.0.0/15) with OpenSSH sshd and nginx; vsftpd per master on 127.0.0.1; curl as the FTP client (one upload per curl), Python's ftplib for the session of ${UPLOADS} uploads (curl 7.88 stalls 1 s on some of a long session's data connections).`,
    `lsyncd: default.rsync, delay = 0, rsync -a over ssh -c aes128-gcm@openssh.com.`,
    `${release()}, ${cpus().length} CPUs; total runtime ${((Date.now() - T0) / 1000).toFixed(0)} s`,
    `reproduce: ${reproduceCommand(PROJECT, 'bench:e2e')}`,
    '',
  ].join('\n'))
  return 0
}

cleanUpOnSignals(() => {}, cleanup)
main().then(async code => {
  await cleanup()
  process.exit(code)
}, async err => {
  log(`bench:e2e failed: ${(err as Error).stack ?? String(err)}`)
  await cleanup()
  process.exit(1)
})
