/**
 * status and wait, against a running daemon in async mode with a real sshd's sftp replica,
 * told the truth while the replica is frozen (SIGSTOP) and after it resumes.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanupDir, replicaDirs, runCli as cli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'

interface Status { mode: string, replicas: Array<{ url: string, state: string, queued: number, lagSeconds: number, appliedOps: number, differs: string[], differsCount: number }> }

t.test('status and wait tell the truth while a replica is frozen', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-control-'))
  const src = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  const rep = join(dir, 'replica')
  const state = join(dir, 'state')
  for (const d of [src, mnt, rep]) mkdirSync(d)
  let sshd: Sshd | undefined
  let daemon: Daemon | undefined
  t.teardown(async () => {
    sshd?.resume()
    if (daemon) await stopDaemon(daemon)
    await sshd?.cleanup()
    cleanupDir(dir, mnt)
  })
  sshd = await startSshd()
  const url = `sftp://root@${sshd.host}:${sshd.port}${rep}`
  daemon = await startDaemon(['mount', src, mnt, '--replica', url, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts,
    '--mode', 'async', '--state-dir', state])
  const status = async (): Promise<Status> => JSON.parse((await cli(['status', '--state-dir', state, '--json'])).stdout) as Status

  t.equal(statSync(join(state, 'control.sock')).mode & 0o777, 0o600, 'the control socket is 0600')
  writeFileSync(join(mnt, 'first.txt'), 'first')
  t.equal((await cli(['wait', '--state-dir', state, '--timeout', '20'])).code, 0, 'wait: exit 0 once the replica has it')
  t.equal(readFileSync(join(rep, 'first.txt'), 'utf8'), 'first', 'and it has it when wait returns')
  let s = await status()
  t.equal(s.mode, 'async')
  t.equal(s.replicas[0]?.url, url)
  t.equal(s.replicas[0]?.state, 'in sync', 'in sync')
  t.equal(s.replicas[0]?.queued, 0, 'nothing queued')
  t.ok((s.replicas[0]?.appliedOps ?? 0) > 0, 'changes applied are counted')

  sshd.pause()
  for (let i = 0; i < 5; i++) writeFileSync(join(mnt, `frozen-${i}.txt`), `written while the replica is frozen ${i}`)
  await new Promise(resolve => setTimeout(resolve, 1200))
  s = await status()
  t.ok((s.replicas[0]?.queued ?? 0) > 0, `status: changes queued while frozen (${s.replicas[0]?.queued})`)
  t.ok((s.replicas[0]?.lagSeconds ?? 0) >= 1, `status: a lag of at least 1 s (${s.replicas[0]?.lagSeconds})`)
  t.equal(s.replicas[0]?.state, 'catching up', 'status: not "in sync" any more')
  const text = await cli(['status', '--state-dir', state])
  t.match(text.stdout, new RegExp(`^${url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*queued [1-9]\\d* changes`, 'm'), 'the text form says so too')
  const late = await cli(['wait', '--state-dir', state, '--timeout', '1'])
  t.equal(late.code, 1, 'wait: exit 1 on timeout')
  t.match(late.stderr, url, 'naming the replica still behind')
  t.ok(late.ms < 10_000, `within the timeout plus a margin (${late.ms} ms)`)

  sshd.resume()
  const caught = await cli(['wait', '--state-dir', state, '--timeout', '30'])
  t.equal(caught.code, 0, 'after resume, wait: exit 0')
  for (let i = 0; i < 5; i++) t.equal(readFileSync(join(rep, `frozen-${i}.txt`), 'utf8'), `written while the replica is frozen ${i}`, `the replica has frozen-${i}.txt`)
  s = await status()
  t.equal(s.replicas[0]?.queued, 0, 'status: nothing queued any more')

  await stopDaemon(daemon)
  daemon = undefined
  const gone = await cli(['status', '--state-dir', state])
  t.equal(gone.code, 3, 'status with no daemon: exit 3')
  t.match(gone.stderr, /no replicafs daemon/)
})

t.test('a path whose repair the replica refuses: status and wait name it until a retry repairs it', async t => {
  const f = replicaDirs(t, 'control')
  const locked = join(f.replica, 'locked')
  // Teardowns run last first: this one before the dirs' teardown removes them.
  t.teardown(() => {
    try { execFileSync('chattr', ['-i', locked]) } catch {}
  })
  const state = f.state
  const daemon = await f.start(['mount', f.source, f.mnt, '--replica', `file://${f.replica}`, '--mode', 'async', '--state-dir', state])
  const status = async (): Promise<Status> => JSON.parse((await cli(['status', '--state-dir', state, '--json'])).stdout) as Status

  mkdirSync(join(f.mnt, 'locked'))
  t.equal((await cli(['wait', '--state-dir', state, '--timeout', '20'])).code, 0, 'the directory is on the replica')
  // Nothing may be made in it, by root too: the new file and then its repair are refused.
  execFileSync('chattr', ['+i', locked])
  writeFileSync(join(f.mnt, 'locked', 'page.html'), 'the new page')
  let s = await status()
  for (let i = 0; i < 200 && s.replicas[0]?.differsCount !== 1; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    s = await status()
  }
  t.equal(s.replicas[0]?.differsCount, 1, 'status: one path differs')
  t.same(s.replicas[0]?.differs, ['/locked/page.html'], 'status names it')
  t.match((await cli(['status', '--state-dir', state])).stdout, /: .*1 path differs from the source \(their repair failed, and is tried again.*\): \/locked\/page\.html$/m,
    'the text form says so')
  const late = await cli(['wait', '--state-dir', state, '--timeout', '1'])
  t.equal(late.code, 1, 'wait: exit 1 while it differs, though nothing is queued')
  t.match(late.stderr, `file://${f.replica} (1 path differs from the source`, 'naming the replica')
  t.match(late.stderr, '/locked/page.html', 'and the path')
  t.match(daemon.stderr, /cannot resync "\/locked\/page\.html": .*the replica differs from the source there \(trying again in 5 s\)/, 'the log says why and when it is tried again')

  execFileSync('chattr', ['-i', locked])
  const caught = await cli(['wait', '--state-dir', state, '--timeout', '60'])
  t.equal(caught.code, 0, 'once the cause is gone, the retry repairs it: wait exits 0')
  t.equal(readFileSync(join(locked, 'page.html'), 'utf8'), 'the new page', 'the replica has the file')
  s = await status()
  t.equal(s.replicas[0]?.differsCount, 0, 'status: nothing differs')
})

t.test('status and wait: usage', async t => {
  t.equal((await cli(['status'])).code, 2, 'status with neither a mountpoint nor --state-dir: exit 2')
  t.equal((await cli(['wait', '/a', '/b'])).code, 2, 'wait with two mountpoints: exit 2')
  t.equal((await cli(['wait', '--state-dir', '/nonexistent', '--timeout', 'soon'])).code, 2, 'a timeout that is not a number: exit 2')
})
