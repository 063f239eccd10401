// The upload scene's security: a chrooted SFTP-only backup account works as a replica; hostile
// names and symlinks write nothing outside a replica's root; a backup whose host key changed is
// refused, with a clear error, while the other goes on.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { runCli } from '../helpers/mount'
import { scene } from '../helpers/scene'

const sha = (b: Buffer | null) => b === null ? 'missing' : createHash('sha256').update(b).digest('hex').slice(0, 16)
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

t.test('a chrooted, SFTP-only backup account works as a replica', async t => {
  const { bs, args, m } = await scene(t, { backups: 1, flags: ['--mode', 'sync'], chrootSftpOnly: true })
  const b = bs[0]!
  t.match(b.url, /^sftp:\/\/rfsftp@.*\/data$/, 'the replica is the chrooted account\'s /data')
  chmodSync(m.mnt, 0o777) // the FTP user writes into the root
  const data = randomBytes(120_000)
  writeFileSync(join(m.upload, 'a'), data)
  await m.ftp.curl('pub/a.bin', '-T', join(m.upload, 'a'), '--ftp-create-dirs')
  t.equal(sha(await b.fetch('/pub/a.bin')), sha(data), 'an FTP upload is served by the chrooted backup\'s nginx')
  const verify = await runCli(['verify', m.src, ...args])
  t.ok(verify.code === 0 || verify.code === 1, `verify runs (exit ${verify.code}: 0 equal, 1 different)`)
  // The account cannot chown: owners may differ; nothing else may.
  const kinds = verify.stdout.split('\n').filter(l => l.trim() !== '' && !/\bowner\b/.test(l))
  t.same(kinds, [], 'verify finds no difference other than owners')
})

t.test('hostile names and symlinks write nothing outside a replica root', async t => {
  const { bs, args, m } = await scene(t, { backups: 1, flags: ['--mode', 'sync'] })
  const b = bs[0]!
  const around = () => readdirSync(dirname(b.root)).sort()
  const before = around()
  const names = ['..x', '...', '-rf', ' lead', 'trail ', 'new\nline', 'tab\tname', '*', '?', 'back\\slash', '%2e%2e', 'ünï cødé']
  execFileSync('mkdir', ['-p', join(m.mnt, 'h')])
  for (const n of names) writeFileSync(join(m.mnt, 'h', n), `name ${n}`)
  // A name that is not UTF-8 cannot be spelled over SFTP: the call fails (EIO), and the
  // source keeps it (it is reported, and retried by the next reconcile).
  const bytes = Buffer.concat([Buffer.from(join(m.mnt, 'h', 'f')), Buffer.from([0xff, 0xfe])])
  t.throws(() => writeFileSync(bytes, 'not UTF-8'), { code: 'EIO' }, 'a name that is not UTF-8: EIO')
  const held = await runCli(['wait', '--state-dir', m.state, '--timeout', '1'])
  t.equal(held.code, 1, 'wait: exit 1 while the backup lacks it')
  t.match(held.stderr, /1 path differs from the source: "\/h\/f\ufffd\ufffd"/, 'naming the path')
  rmSync(Buffer.concat([Buffer.from(join(m.src, 'h', 'f')), Buffer.from([0xff, 0xfe])]), { force: true })
  // Its repair is tried again: with the name gone from the source, it finds nothing to remove.
  const gone = await runCli(['wait', '--state-dir', m.state, '--timeout', '30'])
  t.equal(gone.code, 0, `once the source has it no more, the retried repair clears it: wait exits 0${gone.code !== 0 ? `\n${gone.stderr}` : ''}`)
  symlinkSync('../../../../../../../../etc/passwd', join(m.mnt, 'h', 'up'))
  symlinkSync('/etc', join(m.mnt, 'h', 'abs'))
  symlinkSync(dirname(b.root), join(m.mnt, 'h', 'parent'))
  // Through the mount, a write under a symlink to a directory outside lands there, locally,
  // not through replicafs: nothing of it is replicated.
  const outside = mkdtempSync(join(tmpdir(), 'replicafs-e2e-outside-'))
  t.teardown(() => rmSync(outside, { recursive: true, force: true }))
  symlinkSync(outside, join(m.mnt, 'h', 'out'))
  writeFileSync(join(m.mnt, 'h', 'out', 'through'), 'local only')
  execFileSync('mv', [join(m.mnt, 'h', '..x'), join(m.mnt, 'h', '...y')])
  t.same(around(), before, 'nothing appeared beside the replica root')
  t.same(readdirSync(join(b.root, 'h'), { encoding: 'buffer' }).map(n => n.toString('latin1')).sort(),
    readdirSync(join(m.src, 'h'), { encoding: 'buffer' }).map(n => n.toString('latin1')).sort(), 'the replica holds the same names as the source')
  t.same(readdirSync(outside), ['through'], 'a write under a symlink to a directory outside stays local')
  const verify = await runCli(['verify', m.src, ...args])
  t.equal(verify.code, 0, `verify: equal${verify.code !== 0 ? `\n${verify.stdout}${verify.stderr}` : ''}`)
})

t.test('a backup whose host key changed is refused with a clear error; the other goes on', async t => {
  const { bs, m } = await scene(t, { backups: 2, flags: ['--mode', 'sync', '--quorum', '1', '--timeout', '3'] })
  const first = randomBytes(10_000)
  writeFileSync(join(m.upload, 'first'), first)
  await m.ftp.curl('first.bin', '-T', join(m.upload, 'first'))
  t.same(await Promise.all(bs.map(async b => sha(await b.fetch('/first.bin')))), [sha(first), sha(first)], 'both backups serve the first upload')

  // The second backup is reinstalled: a new host key, and its sshd restarted (the session drops).
  const hostKey = join(bs[1]!.sshd.dir, 'host_ed25519')
  rmSync(hostKey)
  rmSync(`${hostKey}.pub`)
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
  await bs[1]!.sshd.restart()

  for (let i = 0; i < 5; i++) {
    const data = randomBytes(10_000 + i)
    writeFileSync(join(m.upload, `n${i}`), data)
    await m.ftp.curl(`next${i}.bin`, '-T', join(m.upload, `n${i}`))
    t.equal(sha(await bs[0]!.fetch(`/next${i}.bin`)), sha(data), `upload ${i} after the change: served by the first backup`)
  }
  const end = Date.now() + 20_000
  while (!/host key/i.test(m.daemon.stderr) && Date.now() < end) await sleep(100)
  t.match(m.daemon.stderr, new RegExp(`${bs[1]!.netns.addr.replace(/\./g, '\\.')}.*(changed|does not match|mismatch)`, 'i'), 'the daemon says the second backup\'s host key changed')
  t.equal(await bs[1]!.fetch('/next4.bin'), null, 'nothing after the change reached the second backup')
  const status = await runCli(['status', '--state-dir', m.state, '--json'])
  t.equal(status.code, 0, 'status answers')
  const reps = JSON.parse(status.stdout).replicas as Array<{ url: string, state: string, lastError?: { message: string } | null }>
  const second = reps.find(r => r.url === bs[1]!.url)
  t.not(second?.state, 'in sync', `status: the second backup is not in sync (${second?.state})`)
})
