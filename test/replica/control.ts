/**
 * status and wait, against a running daemon in async mode: with a real sshd's sftp replica,
 * told the truth while the replica is frozen (SIGSTOP) and after it resumes; with a file://
 * replica that refuses a change and its repair (chattr +i), until a retry repairs it.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanupDir, replicaDirs, runCli as cli, startDaemon, stopDaemon, type Daemon, type ReplicaDirs } from '../helpers/mount'
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

/** Polls `cond` every 100 ms for up to 20 s; true once it holds. */
async function until (cond: () => boolean | Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (await cond()) return true
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return cond()
}

/** A mount in async mode to a file:// replica, with chattr +i on replica paths lifted at teardown. */
async function lockable (t: { teardown (fn: () => unknown): void }): Promise<{ f: ReplicaDirs, daemon: Daemon, lock (p: string, attr?: string): void, unlock (p: string, attr?: string): void, status (): Promise<Status>, wait (s: number): ReturnType<typeof cli> }> {
  const f = replicaDirs(t, 'control')
  const locked = new Set<string>()
  // Teardowns run last first: this one before the dirs' teardown removes them.
  t.teardown(() => {
    // A locked file may have been renamed since: the whole replica.
    if (locked.size > 0) try { execFileSync('chattr', ['-R', '-i', '-a', f.replica], { stdio: 'ignore' }) } catch {}
  })
  const daemon = await f.start(['mount', f.source, f.mnt, '--replica', `file://${f.replica}`, '--mode', 'async', '--state-dir', f.state])
  return {
    f,
    daemon,
    // Nothing may be made in, renamed over or removed from what is immutable (i), by root
    // either; nothing removed from or renamed out of an append-only directory (a), nor its
    // mode or times set.
    lock (p, attr = 'i') { locked.add(p); execFileSync('chattr', [`+${attr}`, p]) },
    unlock (p, attr = 'i') { execFileSync('chattr', [`-${attr}`, p]); locked.delete(p) },
    status: async () => JSON.parse((await cli(['status', '--state-dir', f.state, '--json'])).stdout) as Status,
    wait: (s: number) => cli(['wait', '--state-dir', f.state, '--timeout', String(s)]),
  }
}

t.test('a path whose repair the replica refuses: status and wait name it until a retry repairs it', async t => {
  const { f, daemon, lock, unlock, status, wait } = await lockable(t)
  const locked = join(f.replica, 'locked')
  mkdirSync(join(f.mnt, 'locked'))
  t.equal((await wait(20)).code, 0, 'the directory is on the replica')
  // The new file and then its repair are refused.
  lock(locked)
  writeFileSync(join(f.mnt, 'locked', 'page.html'), 'the new page')
  const early = await wait(1)
  t.equal(early.code, 1, 'wait, right after the upload: exit 1')
  t.ok(await until(() => /cannot resync "\/locked\/page\.html": .*the replica differs from the source there \(trying again in 5 s\)/.test(daemon.stderr)),
    'the log says why the repair failed and when it is tried again')
  const s = await status()
  t.equal(s.replicas[0]?.differsCount, 1, 'status: one path differs')
  t.same(s.replicas[0]?.differs, ['/locked/page.html'], 'status names it')
  t.match((await cli(['status', '--state-dir', f.state])).stdout, /: .*; 1 path differs from the source: "\/locked\/page\.html" \(a change there was refused; its repair/m,
    'the text form says so')
  const late = await wait(1)
  t.equal(late.code, 1, 'wait: exit 1 while it differs, though nothing is queued')
  t.match(late.stderr, `wait: file://${f.replica}: 1 path differs from the source: "/locked/page.html"`, 'naming the replica and the path')

  // The cursor has passed the refused changes, and the intents log is cut past them once 4 KiB
  // more is in it: an unmount keeps the path for the next start.
  for (let i = 0; i < 60; i++) writeFileSync(join(f.mnt, `${'x'.repeat(120)}-${i}`), `${i}`)
  t.ok(await until(() => existsSync(join(f.replica, `${'x'.repeat(120)}-59`))), 'later uploads reach the replica')
  t.notOk(readFileSync(join(f.state, 'intents.log'), 'latin1').includes('/locked/page.html'), 'the intents log was cut past the refused path')
  await f.stop()
  t.match(daemon.stderr, /differs from the source at 1 path \(.*\): the next start resyncs it/, 'the exit says the next start resyncs it')
  unlock(locked)
  await f.start(['mount', f.source, f.mnt, '--replica', `file://${f.replica}`, '--mode', 'async', '--state-dir', f.state, '--no-reconcile'])
  t.equal((await wait(60)).code, 0, 'the next start, with no reconcile, repairs it: wait exits 0')
  t.equal(readFileSync(join(locked, 'page.html'), 'utf8'), 'the new page', 'the replica has the file')
  t.equal((await status()).replicas[0]?.differsCount, 0, 'status: nothing differs')
})

t.test('a path the replica differs at follows a rename of its directory, and is repaired under its new name', async t => {
  const { f, daemon, lock, unlock, status, wait } = await lockable(t)
  mkdirSync(join(f.mnt, 'stage'))
  t.equal((await wait(20)).code, 0, 'the directory is on the replica')
  // Only the replica has it: the upload's publish over it, and the repairs, are refused.
  const old = join(f.replica, 'stage', 'page.html')
  writeFileSync(old, 'the old page')
  lock(old)
  writeFileSync(join(f.mnt, 'stage', 'page.html'), 'the new page')
  t.ok(await until(() => /cannot resync "\/stage\/page\.html"/.test(daemon.stderr)), 'its repair is refused')
  // The upload-then-rename deploy: the directory's rename is applied on the replica.
  renameSync(join(f.mnt, 'stage'), join(f.mnt, 'live'))
  const moved = join(f.replica, 'live', 'page.html')
  t.ok(await until(() => existsSync(moved)), 'the replica renamed the directory')
  t.ok(await until(async () => JSON.stringify((await status()).replicas[0]?.differs) === '["/live/page.html"]'), 'status names the new path')
  unlock(moved)
  t.equal((await wait(60)).code, 0, 'the retry repairs it: wait exits 0')
  t.equal(readFileSync(moved, 'utf8'), 'the new page', 'under the new name')
  t.same(readdirSync(join(f.replica, 'live')), ['page.html'], 'and no temp file is left')
})

t.test('a hard link made below a path the replica differs at differs too, until both are repaired', async t => {
  const { f, daemon, lock, unlock, status, wait } = await lockable(t)
  mkdirSync(join(f.mnt, 'd'))
  writeFileSync(join(f.mnt, 'd', 'x'), 'the page')
  t.equal((await wait(20)).code, 0, 'the directory and its file are on the replica')
  lock(join(f.replica, 'd'), 'a')
  chmodSync(join(f.mnt, 'd'), 0o750)
  t.ok(await until(() => /cannot resync "\/d"/.test(daemon.stderr)), 'the chmod of the directory, and its repair, are refused')
  // Linking out of an append-only directory is allowed: the new name is what the replica had.
  linkSync(join(f.mnt, 'd', 'x'), join(f.mnt, 'y'))
  t.ok(await until(async () => ((await status()).replicas[0]?.differs ?? []).includes('/y')), 'status names the new name too')
  unlock(join(f.replica, 'd'), 'a')
  t.equal((await wait(60)).code, 0, 'the retries repair both: wait exits 0')
  t.equal(statSync(join(f.replica, 'd')).mode & 0o7777, 0o750, 'the directory has its mode')
  t.equal(readFileSync(join(f.replica, 'y'), 'utf8'), 'the page', 'the new name has the file')
})

t.test('status and wait: usage', async t => {
  t.equal((await cli(['status'])).code, 2, 'status with neither a mountpoint nor --state-dir: exit 2')
  t.equal((await cli(['wait', '/a', '/b'])).code, 2, 'wait with two mountpoints: exit 2')
  t.equal((await cli(['wait', '--state-dir', '/nonexistent', '--timeout', 'soon'])).code, 2, 'a timeout that is not a number: exit 2')
})
