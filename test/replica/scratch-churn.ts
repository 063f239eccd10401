import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { cleanupDir, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'
const run = promisify(execFile)
const CHURN = resolve(__dirname, 'churn.js')
t.test('scratch', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-scratch-'))
  const source = join(dir, 'source'), mnt = join(dir, 'mnt'), rfile = join(dir, 'rf'), rsftp = join(dir, 'rs')
  for (const d of [source, mnt, rfile, rsftp]) mkdirSync(d)
  let sshd: Sshd | undefined, daemon: Daemon | undefined
  t.teardown(async () => { if (daemon) await stopDaemon(daemon); await sshd?.cleanup(); cleanupDir(dir, mnt) })
  sshd = await startSshd()
  const reps = (process.env.REPS ?? 'file,sftp').split(',')
  const args = ['mount', source, mnt, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts, '--mode', process.env.MODE ?? 'sync', '--timeout', '30']
  if (reps.includes('file')) args.push('--replica', `file://${rfile}`)
  if (reps.includes('sftp')) args.push('--replica', `sftp://root@127.0.0.1:${sshd.port}${rsftp}`)
  if (process.env.INPLACE) args.push('--in-place')
  daemon = await startDaemon(args)
  const { stdout } = await run(process.execPath, [CHURN, 'run', mnt, process.env.SEED ?? '1234', process.env.OPS ?? '3000', '45000', 'big'], { timeout: 90_000, env: process.env })
  console.error(stdout)
  daemon.child.kill('SIGTERM'); await daemon.exited
  console.error(daemon.stderr.split('\n').filter(l => !/connected|mounted|SIGTERM/.test(l)).slice(0, 60).join('\n'))
  const snap = async (d: string) => JSON.parse((await run(process.execPath, [CHURN, 'snapshot', d], { maxBuffer: 1 << 26 })).stdout)
  const a = await snap(source)
  for (const [l, d] of [['file', rfile], ['sftp', rsftp]] as const) {
    if (!reps.includes(l)) continue
    const b = await snap(d)
    const out: string[] = []
    for (const p of [...new Set([...Object.keys(a.entries), ...Object.keys(b.entries)])].sort()) {
      const x = a.entries[p], y = b.entries[p]
      if (!x || !y) { out.push(`${p}: ${x ? 'missing' : 'extra'}`); continue }
      const f = Object.keys({ ...x, ...y }).filter(k => x[k] !== y[k])
      if (f.length) out.push(`${p}: ${f.join(',')}`)
    }
    const wg = new Set(a.linkGroups), gg = new Set(b.linkGroups)
    for (const g of wg) if (!gg.has(g)) out.push(`group missing ${g}`)
    for (const g of gg) if (!wg.has(g)) out.push(`group extra ${g}`)
    console.error(`${l}: ${out.length} diffs\n` + out.slice(0, 25).join('\n'))
  }
  t.pass()
})
