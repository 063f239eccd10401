// The failover drill: the master's daemon is SIGKILLed in the middle of an FTP upload in sync
// mode; what the FTP client saw complete is on every backup, whole, and no backup serves a
// partial file. A backup is promoted (replicafs there, the old master as its replica): the old
// master converges to it. Then fencing: the stale master coming back is refused, and so is any
// master older than the promoted one.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CURL, ftpUser, startBackups, startFtp, FTP_PASS, FTP_USER, type Ftp } from '../helpers/hosts'
import { cleanupDir, runCli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { scene } from '../helpers/scene'
import { startSshd, type Sshd } from '../helpers/sshd'

const run = promisify(execFile)
const sha = (b: Buffer | null) => b === null ? 'missing' : createHash('sha256').update(b).digest('hex').slice(0, 16)

t.test('failover drill: SIGKILL mid-upload, promote a backup, the old master converges and is fenced', async t => {
  const { backups: bs, args, cleanup } = await startBackups(2)
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-e2e-failover-'))
  chmodSync(dir, 0o755)
  const src = join(dir, 'src')
  const mnt = join(dir, 'mnt')
  const mnt2 = join(dir, 'mnt2')
  const up = join(dir, 'upload')
  const daemons: Daemon[] = []
  let ftp: Ftp | undefined
  let oldHost: Sshd | undefined
  t.teardown(async () => {
    await ftp?.cleanup()
    for (const d of daemons) await stopDaemon(d)
    cleanupDir(dir, mnt, mnt2)
    await oldHost?.cleanup()
    await cleanup()
  })
  // The old master's host, as the promoted backup reaches it: an sshd over its source.
  oldHost = await startSshd()
  for (const d of [src, mnt, mnt2, up]) mkdirSync(d, { mode: 0o755 })
  const { uid, gid } = await ftpUser()
  chownSync(src, uid, gid)
  const master = await startDaemon(['mount', src, mnt, '--allow-other', '--state-dir', join(dir, 'state'), '--mode', 'sync', ...args])
  daemons.push(master)
  ftp = await startFtp(mnt)
  t.equal(readlinkSync(join(src, '.replicafs-generation')), 'replicafs:master:1', 'the master marks its source: generation 1')
  t.equal(readlinkSync(join(bs[0]!.root, '.replicafs-generation')), 'replicafs:replica:1', 'and each backup as its replica')

  // Uploads one after another; the daemon is killed while a large one is in flight.
  const files: Array<{ path: string, data: Buffer, done: boolean }> = []
  const upload = async (i: number, size: number) => {
    const data = randomBytes(size)
    const local = join(up, `f${i}`)
    writeFileSync(local, data)
    const f = { path: `/drill/f${i}.bin`, data, done: false }
    files.push(f)
    try {
      await run('curl', [...CURL, '--ftp-create-dirs', '--user', `${FTP_USER}:${FTP_PASS}`, '--max-time', '30', '-T', local, `ftp://127.0.0.1:${ftp!.port}${f.path}`])
      f.done = true
    } catch {}
  }
  for (let i = 0; i < 10; i++) await upload(i, 50_000 + i * 7_000)
  const inFlight = upload(10, 64 * 1024 * 1024)
  // Killed once the large upload has started arriving on the source.
  const end = Date.now() + 20_000
  while (Date.now() < end) {
    try {
      if (execFileSync('stat', ['-c', '%s', join(src, 'drill', 'f10.bin')]).toString().trim() !== '0') break
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  master.child.kill('SIGKILL')
  await master.exited
  await inFlight
  await ftp.cleanup()
  ftp = undefined
  const done = files.filter(f => f.done)
  t.equal(done.length, 10, 'the FTP client saw the ten uploads before the kill complete')
  t.notOk(files[10]!.done, 'and the one in flight fail')
  for (const b of bs) {
    const served = await Promise.all(files.map(f => b.fetch(f.path)))
    t.same(served.filter((_, i) => files[i]!.done).map(sha), done.map(f => sha(f.data)), `${b.netns.addr} serves every completed upload, byte for byte`)
    t.equal(served[10], null, `${b.netns.addr} serves nothing of the upload in flight (no partial file)`)
  }

  // A copy of the old master as it stood: it comes back later, stale.
  const stale = join(dir, 'stale')
  execFileSync('cp', ['-a', src, stale])

  // Failover: the first backup becomes the master, the old master its replica.
  const promoted = bs[0]!
  const toOld = ['--replica', `sftp://root@127.0.0.1:${oldHost.port}${src}`, '--identity', oldHost.identity, '--known-hosts', oldHost.knownHosts]
  const refused = await runCli(['mount', promoted.root, mnt2, '--state-dir', join(dir, 'state2'), ...toOld])
  t.equal(refused.code, 4, 'without --promote a backup is not mounted as the master: exit 4')
  t.match(refused.stderr, /was last written as a replica by a master of generation 1.*--promote/, 'saying why, and what to do')
  const next = await startDaemon(['mount', promoted.root, mnt2, '--state-dir', join(dir, 'state2'), '--promote', ...toOld])
  daemons.push(next)
  t.equal(readlinkSync(join(promoted.root, '.replicafs-generation')), 'replicafs:master:2', 'the promoted backup is the master of generation 2')
  t.equal(readlinkSync(join(src, '.replicafs-generation')), 'replicafs:replica:2', 'the old master is its replica now')
  const verify = await runCli(['verify', promoted.root, ...toOld])
  t.equal(verify.code, 0, `the old master converged to the new one: verify exit 0${verify.code !== 0 ? `\n${verify.stdout}` : ''}`)
  const after = randomBytes(30_000)
  writeFileSync(join(mnt2, 'drill', 'after.bin'), after)
  t.equal(sha(execFileSync('cat', [join(src, 'drill', 'after.bin')])), sha(after), 'a write to the new master reaches the old one')

  // Fencing.
  await stopDaemon(next)
  const back = await runCli(['mount', src, mnt, '--state-dir', join(dir, 'state'), ...args])
  t.equal(back.code, 4, 'the old master coming back is refused: exit 4')
  t.match(back.stderr, /was last written as a replica by a master of generation 2/, 'it says its source is a newer master\'s replica now')
  const staleArgs = ['--identity', args[1]!, '--known-hosts', args[3]!, '--replica', promoted.url]
  const older = await runCli(['resync', stale, ...staleArgs])
  t.equal(older.code, 4, 'the stale copy (generation 1) resyncing to the promoted backup is refused: exit 4')
  t.match(older.stderr, /fenced: it is the source of a master of generation 2 \(this one: 1\)/, 'fenced, with the generations')
  t.equal(sha(await promoted.fetch('/drill/after.bin')), sha(after), 'the promoted backup still serves what was written after the failover')
  t.equal(readlinkSync(join(promoted.root, '.replicafs-generation')), 'replicafs:master:2', 'its mark is untouched')
})

t.test('the generation mark is neither shown nor touched through the mount', async t => {
  const { bs, args, m } = await scene(t, { backups: 1 })
  const { src, mnt } = m
  const mark = join(mnt, '.replicafs-generation')
  t.notOk(execFileSync('ls', ['-a', mnt]).toString().split('\n').includes('.replicafs-generation'), 'not listed')
  const code = async (f: () => unknown) => { try { await f(); return 'ok' } catch (err) { return (err as NodeJS.ErrnoException).code } }
  const fs = await import('node:fs/promises')
  t.equal(await code(() => fs.lstat(mark)), 'ENOENT', 'lstat: ENOENT')
  t.equal(await code(() => fs.unlink(mark)), 'ENOENT', 'unlink: ENOENT')
  t.equal(await code(() => fs.writeFile(mark, 'x')), 'EPERM', 'create: EPERM')
  t.equal(await code(() => fs.symlink('replicafs:master:99', mark)), 'EPERM', 'symlink: EPERM')
  await fs.writeFile(join(mnt, 'f'), 'f')
  t.equal(await code(() => fs.rename(join(mnt, 'f'), mark)), 'EPERM', 'rename onto it: EPERM')
  t.equal(readlinkSync(join(src, '.replicafs-generation')), 'replicafs:master:1', 'the source\'s mark is as the master left it')
  t.equal(readlinkSync(join(bs[0]!.root, '.replicafs-generation')), 'replicafs:replica:1', 'and the replica\'s')
  t.equal((await runCli(['verify', src, ...args])).code, 0, 'verify: equal (each tree keeps its own mark)')
})

t.test('a running master whose replica a newer master marked meanwhile stops writing there at its reconnect', async t => {
  const { bs, m } = await scene(t, { backups: 2, flags: ['--quorum', '1', '--timeout', '3'] })
  const { mnt, daemon } = m
  writeFileSync(join(mnt, 'before'), 'before')
  // Meanwhile a newer master (generation 7) claims the second backup; its session drops.
  const b = bs[1]!
  execFileSync('ln', ['-sfn', 'replicafs:replica:7', join(b.root, '.replicafs-generation')])
  await b.sshd.restart()
  writeFileSync(join(mnt, 'after'), 'after')
  const end = Date.now() + 20_000
  while (!/fenced/.test(daemon.stderr) && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 50))
  t.match(daemon.stderr, /fenced: a master of generation 7 has written to it since this one \(generation 1\) did; this master is stale/, 'the daemon says it is fenced off that backup')
  t.equal(await b.fetch('/after'), null, 'nothing written after the claim reached it')
  t.equal((await bs[0]!.fetch('/after'))?.toString(), 'after', 'the other backup goes on')
  t.equal(readlinkSync(join(b.root, '.replicafs-generation')), 'replicafs:replica:7', 'the newer master\'s mark stands')
})
