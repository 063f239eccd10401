/*
 * Replicas that cannot be trusted or reached: host key and connection failures at mount
 * (exit 3, one sentence, nothing mounted), an sftp replica frozen with SIGSTOP in sync mode
 * (with and without a quorum that other replicas can meet), and an sshd stopped and
 * restarted in the middle of a churn (test/replica/churn.js).
 */
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs'
import { appendFile, chmod, link, mkdir, open, rename, utimes, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { cleanupDir, isMounted, runCli as cli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { hashedKnownHostsLine, knownHostsHost, startSshd, type Sshd } from '../helpers/sshd'
import { CHURN, code, diff, snapshot, temps } from '../helpers/tree'
import { parseJournal, type JournalRecord } from '../../src/replication/journal'

const run = promisify(execFile)
const MiB = 1024 ** 2
const sleep = (ms: number) => new Promise(res => setTimeout(res, ms))

interface Dirs { dir: string, source: string, mnt: string, rfile: string, rsftp: string }

/** A source, a mountpoint and two replica dirs under one temp dir. Register cleanup yourself. */
function dirs (): Dirs {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-faults-'))
  const d = { dir, source: join(dir, 'source'), mnt: join(dir, 'mnt'), rfile: join(dir, 'replica-file'), rsftp: join(dir, 'replica-sftp') }
  for (const p of [d.source, d.mnt, d.rfile, d.rsftp]) mkdirSync(p)
  return d
}

/** `--state-dir` inside the test's dir: the journal and intents stay out of /var/lib. */
function stateDir (dir: string): string[] {
  return ['--state-dir', join(dir, 'state')]
}

const sftpUrl = (s: Sshd, root: string, port = s.port) => `sftp://root@${s.host}:${port}${root}`

/** One teardown, in the order that always works: resume, stop the daemon, stop sshd, remove. */
function teardown (t: tap.Test, parts: { sshd?: () => Sshd | undefined, daemon?: () => Daemon | undefined, d: Dirs }): void {
  t.teardown(async () => {
    const s = parts.sshd?.()
    s?.resume()
    const daemon = parts.daemon?.()
    if (daemon) {
      await stopDaemon(daemon, 15_000)
      if (!t.passing()) process.stderr.write(`--- daemon stderr (${t.name}):\n${daemon.stderr.split('\n').filter(l => /warn|error|fail|Error|reconnect|caught up/.test(l)).slice(0, 40).join('\n')}\n`)
    }
    await s?.cleanup()
    cleanupDir(parts.d.dir, parts.d.mnt)
  })
}

interface Rig { d: Dirs, sshd: Sshd, daemon: Daemon | undefined }

/** A temp tree, a harness sshd and (once a test starts it) a daemon, torn down in the order that works. */
async function rig (t: tap.Test): Promise<Rig> {
  const d = dirs()
  const parts: { sshd?: Sshd, daemon?: Daemon } = {}
  teardown(t, { sshd: () => parts.sshd, daemon: () => parts.daemon, d })
  const sshd = await startSshd()
  parts.sshd = sshd
  return {
    d,
    sshd,
    get daemon () { return parts.daemon },
    set daemon (x) { parts.daemon = x },
  }
}

/** `replicafs mount` of the rig's source to its sftp replica (and its file replica with `file`), plus `extra`. */
function mountArgs (r: Rig, file: boolean, extra: string[]): string[] {
  return [
    'mount', r.d.source, r.d.mnt, ...stateDir(r.d.dir),
    '--replica', sftpUrl(r.sshd, r.d.rsftp), ...(file ? ['--replica', `file://${r.d.rfile}`] : []),
    '--identity', r.sshd.identity, '--known-hosts', r.sshd.knownHosts, ...extra,
  ]
}

async function freePort (): Promise<number> {
  return new Promise((res, rej) => {
    const srv = net.createServer()
    srv.once('error', rej)
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address()
      const port = typeof a === 'object' && a ? a.port : 0
      srv.close(() => res(port))
    })
  })
}

async function newKey (dir: string, name: string): Promise<{ file: string, pub: string }> {
  const file = join(dir, name)
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file])
  return { file, pub: readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ') }
}

/** Polls `check` until it returns true or `ms` pass; the last value. */
async function until (check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    let ok = false
    try { ok = check() } catch {}
    if (ok || Date.now() > end) return ok
    await sleep(100)
  }
}

const text = (p: string) => existsSync(p) ? readFileSync(p, 'utf8') : '(missing)'

t.test('host keys and connection failures at mount', async t => {
  const d = dirs()
  let sshd: Sshd | undefined
  teardown(t, { sshd: () => sshd, d })
  sshd = await startSshd()
  const s = sshd
  const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(s.dir, 'host_ed25519.pub')], { encoding: 'utf8' }).split(/\s+/)[1] ?? ''
  t.match(fp, /^SHA256:[A-Za-z0-9+/]{43}$/, `the host key's fingerprint (${fp})`)
  const other = await newKey(d.dir, 'other_ed25519')
  const args = (o: { knownHosts?: string, identity?: string, port?: number } = {}) => [
    'mount', d.source, d.mnt, ...stateDir(d.dir),
    '--replica', `file://${d.rfile}`,
    '--replica', sftpUrl(s, d.rsftp, o.port),
    '--identity', o.identity ?? s.identity, '--known-hosts', o.knownHosts ?? s.knownHosts, '--timeout', '5',
  ]
  const refused = async (t: tap.Test, a: string[], message: RegExp | string) => {
    const r = await cli(a)
    t.equal(r.code, 3, 'exit 3')
    t.match(r.stderr, message, 'says why')
    // the daemon's own log lines (timestamped) may come first; the refusal is one sentence
    const said = r.stderr.trim().split('\n').filter(l => !/^\d{4}-\d\d-\d\dT[\d:.]+Z /.test(l))
    t.equal(said.length, 1, `one sentence: ${JSON.stringify(said)}`)
    t.match(said[0] ?? '', /^replicafs: /, 'prefixed replicafs:')
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
    t.notMatch(r.stdout, /mounted/, 'never said mounted')
    t.notOk(isMounted(d.mnt), 'nothing left mounted')
    t.ok(r.ms < 15_000, `bounded (${r.ms} ms)`)
  }

  t.test('unknown host (empty known_hosts): the offered fingerprint is named', async t => {
    const kh = join(d.dir, 'known_hosts.empty')
    writeFileSync(kh, '')
    await refused(t, args({ knownHosts: kh }), fp)
  })

  t.test('known_hosts that lacks this host:port', async t => {
    const kh = join(d.dir, 'known_hosts.otherport')
    writeFileSync(kh, `${knownHostsHost(s.host, s.port + 1)} ${s.hostPublicKey}\n${s.host} ${s.hostPublicKey}\n`)
    await refused(t, args({ knownHosts: kh }), fp)
  })

  t.test('changed host key', async t => {
    const kh = join(d.dir, 'known_hosts.changed')
    writeFileSync(kh, `${knownHostsHost(s.host, s.port)} ${other.pub}\n`)
    await refused(t, args({ knownHosts: kh }), new RegExp(`CHANGED.*${fp.replace(/[+/]/g, c => '\\' + c)}`, 'i'))
  })

  t.test('changed host key, hashed entry', async t => {
    const kh = join(d.dir, 'known_hosts.changed-hashed')
    writeFileSync(kh, hashedKnownHostsLine(knownHostsHost(s.host, s.port), other.pub) + '\n')
    await refused(t, args({ knownHosts: kh }), /CHANGED/i)
  })

  t.test('a hashed known_hosts entry is accepted', async t => {
    const kh = join(d.dir, 'known_hosts.hashed')
    writeFileSync(kh, `# hashed, as HashKnownHosts yes writes it\n${hashedKnownHostsLine(knownHostsHost(s.host, s.port), s.hostPublicKey)}\n`)
    const daemon = await startDaemon(args({ knownHosts: kh }))
    t.teardown(() => stopDaemon(daemon))
    await writeFile(join(d.mnt, 'via-hashed.txt'), 'trusted')
    t.equal(text(join(d.rsftp, 'via-hashed.txt')), 'trusted', 'replicated over sftp')
    t.equal(text(join(d.rfile, 'via-hashed.txt')), 'trusted', 'and to the file replica')
    await stopDaemon(daemon)
    t.equal((await daemon.exited).code, 0, 'SIGTERM: exit 0')
    t.notOk(isMounted(d.mnt), 'unmounted')
  })

  t.test('an identity file that is not a key', async t => {
    const bad = join(d.dir, 'not-a-key')
    writeFileSync(bad, 'this is not a private key\n', { mode: 0o600 })
    await refused(t, args({ identity: bad }), /key|identity|parse/i)
  })

  t.test('a key the server does not authorize', async t => {
    await refused(t, args({ identity: other.file }), /refused|denied|authenticat/i)
  })

  t.test('a missing identity file', async t => {
    await refused(t, args({ identity: join(d.dir, 'no-such-key') }), /identity|no-such-key/i)
  })

  t.test('a closed port', async t => {
    const port = await freePort()
    await refused(t, args({ port }), /ECONNREFUSED|refused|closed|connect/i)
  })

  t.test('the replicas were never touched by a refused mount', async t => {
    t.same(readdirSync(d.source).sort(), ['.replicafs-generation', 'via-hashed.txt'], 'source holds only what the accepted mount wrote (and its generation mark)')
  })
})

t.test('SIGSTOPped sftp replica, --quorum 1 met by a file replica: calls answer at once, it catches up', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  r.daemon = await startDaemon(mountArgs(r, true, ['--quorum', '1', '--timeout', '2']))
  await writeFile(join(d.mnt, 'before.txt'), 'before')
  // quorum 1: the call may answer before the sftp replica applied it
  t.ok(await until(() => text(join(d.rsftp, 'before.txt')) === 'before', 5000), 'the sftp replica follows before the pause')

  sshd.pause()
  const timed = async (what: string, p: Promise<unknown>) => {
    const t0 = Date.now()
    const c = await code(p)
    const ms = Date.now() - t0
    t.equal(c, 'ok', `${what}: succeeds while the sftp replica is frozen`)
    t.ok(ms < 5000, `${what}: answers within timeout + margin (${ms} ms)`)
  }
  await timed('create+write', writeFile(join(d.mnt, 'during.txt'), 'written while paused'))
  await timed('mkdir', mkdir(join(d.mnt, 'during-dir')))
  await timed('append', appendFile(join(d.mnt, 'before.txt'), ' + appended while paused'))
  t.equal(text(join(d.source, 'during.txt')), 'written while paused', 'source has it')
  t.equal(text(join(d.rfile, 'during.txt')), 'written while paused', 'file replica has it')
  t.notOk(existsSync(join(d.rsftp, 'during.txt')), 'the frozen sftp replica does not (yet)')

  sshd.resume()
  const caught = await until(() =>
    text(join(d.rsftp, 'during.txt')) === 'written while paused' &&
    existsSync(join(d.rsftp, 'during-dir')) &&
    text(join(d.rsftp, 'before.txt')) === 'before + appended while paused', 20_000)
  t.ok(caught, 'after resume the sftp replica catches up (within 20 s)')
  t.equal(text(join(d.rsftp, 'during.txt')), 'written while paused', 'sftp: during.txt')
  t.equal(text(join(d.rsftp, 'before.txt')), 'before + appended while paused', 'sftp: before.txt')
  t.same(temps(d.rsftp), [], 'no temp file left on the sftp replica')

  await timed('a call after the catch-up', writeFile(join(d.mnt, 'after.txt'), 'after'))
  t.ok(await until(() => text(join(d.rsftp, 'after.txt')) === 'after', 5000), 'and the sftp replica follows again')
})

t.test('sync mode, --quorum 1: what a frozen replica missed survives a SIGKILL of the daemon', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  // --no-reconcile: the journal alone must bring the replica up to date.
  const args = mountArgs(r, true, ['--quorum', '1', '--timeout', '2', '--no-reconcile'])
  const first = r.daemon = await startDaemon(args)
  sshd.pause()
  await writeFile(join(d.mnt, 'missed.txt'), 'written while the sftp replica was frozen')
  await mkdir(join(d.mnt, 'missed-dir'))
  await rename(join(d.mnt, 'missed.txt'), join(d.mnt, 'missed-dir', 'moved.txt'))
  t.equal(text(join(d.rfile, 'missed-dir', 'moved.txt')), 'written while the sftp replica was frozen', 'the file replica met the quorum')
  t.notOk(existsSync(join(d.rsftp, 'missed-dir')), 'the frozen sftp replica has nothing yet')

  first.child.kill('SIGKILL')
  await first.exited
  r.daemon = undefined
  sshd.resume()
  const second = r.daemon = await startDaemon(args)
  t.match(second.stderr, /replaying \d+ changes from the journal/, 'the restart replays the journal to the replica that missed it')
  t.equal(text(join(d.rsftp, 'missed-dir', 'moved.txt')), 'written while the sftp replica was frozen', 'the sftp replica has every change once mounted again')
  t.notOk(existsSync(join(d.rsftp, 'missed.txt')), 'and the rename, not a copy')
  t.same(temps(d.rsftp), [], 'no temp file left on the sftp replica')
})

/** `n` chmods of `path` (0644 and 0600 in turn), then a last one to 0640: records with no data. */
const chmods = (path: string, n: number) => run('python3', ['-c', `
import os, sys
p, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.chmod(p, 0o600 if i % 2 else 0o644)
os.chmod(p, 0o640)
`, path, String(n)])

t.test('async mode: each change is in the journal when it returns (appended by the mount\'s thread; a write\'s bytes stay in the source); a SIGKILL loses none; sealed files and the cut hold', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  const state = join(d.dir, 'state')
  // Sealed in files of 1 MiB (an eighth of --journal-max, at least 1 MiB); cut once all is
  // applied and it holds more than 256 KiB (a quarter of that).
  const args = mountArgs(r, false, ['--mode', 'async', '--journal-max', '8M', '--no-reconcile'])
  const first = r.daemon = await startDaemon(args)
  sshd.pause()
  // A name whose bytes the record's JSON header must escape: quote, backslash, newline, tab, non-ASCII.
  const name = 'q"b\\n\n\tl \u00e9\u4e2d.bin'
  // Less than --journal-max: queued whole, not switched to a resync.
  const data = randomBytes(6 * MiB + 123)
  await writeFile(join(d.mnt, name), data)
  // Where the restart must read the writes' bytes: the big file moved into a directory, a
  // file renamed over another one.
  await mkdir(join(d.mnt, 'moved'))
  await rename(join(d.mnt, name), join(d.mnt, 'moved', name))
  await writeFile(join(d.mnt, 'kept.bin'), 'lost')
  await writeFile(join(d.mnt, 'over.bin'), 'kept')
  await rename(join(d.mnt, 'over.bin'), join(d.mnt, 'kept.bin'))
  // About 2.5 MB of records (a chmod's is about 100 bytes): more than two files' worth. They
  // also push the paths above out of the intents log (its last 4 KiB are resynced at a
  // restart): only the replay can bring those files.
  await writeFile(join(d.mnt, 'c.txt'), 'c')
  const n = 25_000
  await chmods(join(d.mnt, 'c.txt'), n)
  const small = join(d.mnt, 'small.txt')
  await writeFile(small, 'x')
  first.child.kill('SIGKILL')
  await first.exited
  r.daemon = undefined

  const files = readdirSync(state).filter(n => /^journal.*\.log$/.test(n))
  const sealed = files.filter(n => n !== 'journal.log')
  t.ok(sealed.length >= 2, `the journal rolled over into sealed files (${files.join(' ')})`)
  const records: JournalRecord[] = []
  for (const f of files) {
    const buf = readFileSync(join(state, f))
    const parsed = parseJournal(buf)
    t.equal(parsed.validLength, buf.length, `${f}: every byte is a whole, checked record`)
    const last = /^journal-(\d+)\.log$/.exec(f)?.[1]
    if (last !== undefined) t.ok(parsed.records.every(x => x.seq <= Number(last)), `${f} holds no record later than its name says`)
    records.push(...parsed.records)
  }
  records.sort((a, b) => a.seq - b.seq)
  t.equal(new Set(records.map(x => x.seq)).size, records.length, 'seqs are unique across JS\'s records and the mount\'s')
  const path = '/' + Buffer.from(name, 'utf8').toString('latin1')
  const writes = records.filter(x => x.m.op === 'write' && x.m.path === path)
  // Each write's record says where and how many bytes; the bytes are the source's.
  let end = 0
  let contiguous = true
  for (const w of writes) {
    if (w.m.op !== 'write' || w.m.offset !== end || w.m.data.length !== 0 || w.src === undefined) contiguous = false
    end += w.src ?? 0
  }
  t.ok(writes.length > 0 && contiguous && end === data.length, `the writes' records cover the file, in order, and hold none of its bytes (${writes.length} records, ${end} bytes)`)
  t.ok(readFileSync(join(d.source, 'moved', name)).equals(data), 'the source holds them')
  const seqOf = (op: string, p: string) => records.find(x => x.m.op === op && 'path' in x.m && x.m.path === p)?.seq ?? NaN
  t.ok(seqOf('create', path) < (writes[0]?.seq ?? NaN) && (writes.at(-1)?.seq ?? NaN) < seqOf('flush', path), 'in seq order: create, the writes, flush')
  t.equal(records.filter(x => x.m.op === 'chmod' && x.m.path === '/c.txt').length, n + 1, 'every chmod is there')
  t.ok(records.some(x => x.m.op === 'write' && x.m.path === '/small.txt' && x.src === 1), 'the last write before the kill is there too')

  sshd.resume()
  const second = r.daemon = await startDaemon(args)
  t.match(second.stderr, /replaying \d+ changes from the journal/, 'the restart replays the journal')
  const same = (p: string, want: Buffer) => existsSync(p) && readFileSync(p).equals(want)
  t.ok(await until(() => same(join(d.rsftp, 'moved', name), data), 30_000), 'the replica has the file, its bytes read from the source where it was moved')
  t.notOk(existsSync(join(d.rsftp, name)), 'and not under its first name')
  t.ok(same(join(d.rsftp, 'kept.bin'), Buffer.from('kept')), 'a file renamed over another one: its own bytes')
  t.notMatch(second.stderr, /resyncing the whole tree/, 'the replay alone brings them: no resync of the whole tree')
  t.ok(await until(() => same(join(d.rsftp, 'small.txt'), Buffer.from('x')), 30_000), 'and the last one')
  t.ok(await until(() => existsSync(join(d.rsftp, 'c.txt')) && (statSync(join(d.rsftp, 'c.txt')).mode & 0o7777) === 0o640, 30_000), 'and the last chmod')
  t.same(temps(d.rsftp), [], 'no temp file left on the replica')

  // Live: about 600 KB of records more. Whenever the replica has applied everything and
  // journal.log holds more than 256 KiB, it is cut to zero in place (its inode stays; a seal
  // would give it a new one), and the sealed files are deleted once applied.
  const log = join(state, 'journal.log')
  let prev = statSync(log)
  let cut = false
  const watch = setInterval(() => {
    try {
      const st = statSync(log)
      if (st.ino === prev.ino && st.size < prev.size) cut = true
      prev = st
    } catch {}
  }, 2)
  try {
    await chmods(join(d.mnt, 'c.txt'), 6_000)
    const more = randomBytes(4 * MiB)
    await writeFile(join(d.mnt, 'more.bin'), more)
    t.ok(await until(() => same(join(d.rsftp, 'more.bin'), more), 30_000), 'the replica has the live writes')
  } finally {
    clearInterval(watch)
  }
  t.ok(cut, 'journal.log was cut to zero on the way')
  const files2 = () => readdirSync(state).filter(n => /^journal.*\.log$/.test(n))
  t.ok(await until(() => files2().length === 1, 10_000), `the sealed files are gone once applied (${files2().join(' ')})`)
  await writeFile(join(d.mnt, 'after.txt'), 'after the cut')
  t.ok(await until(() => text(join(d.rsftp, 'after.txt')) === 'after the cut', 10_000), 'and later writes still reach the replica')
})

t.test('async mode: a write to a hard-linked file whose other name the journal does not show, then its known name replaced: a SIGKILL, the whole tree resynced', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  const args = mountArgs(r, false, ['--mode', 'async', '--no-reconcile'])
  const first = r.daemon = await startDaemon(args)
  // Both names on the replica before it freezes: no record that follows shows the second.
  await writeFile(join(d.mnt, 'two-a.bin'), 'old!')
  await link(join(d.mnt, 'two-a.bin'), join(d.mnt, 'two-b.bin'))
  // Other changes push those names out of the intents log too (its last 4 KiB are resynced at
  // a restart): only the journal can bring the file.
  await writeFile(join(d.mnt, 'c.txt'), 'c')
  await chmods(join(d.mnt, 'c.txt'), 1000)
  t.equal((await cli(['wait', '--state-dir', join(d.dir, 'state'), '--timeout', '20'])).code, 0, 'the replica has applied everything')
  t.ok(existsSync(join(d.rsftp, 'two-b.bin')), 'both names')
  sshd.pause()
  await writeFile(join(d.mnt, 'two-a.bin'), 'new!', { flag: 'r+' })
  await writeFile(join(d.mnt, 'three.bin'), 'three')
  await rename(join(d.mnt, 'three.bin'), join(d.mnt, 'two-a.bin'))
  first.child.kill('SIGKILL')
  await first.exited
  r.daemon = undefined

  // Restarted, not resumed: the frozen session must not apply what was already sent to it.
  await sshd.restart()
  t.equal(readFileSync(join(d.rsftp, 'two-b.bin'), 'utf8'), 'old!', 'the replica has not had the write')
  const second = r.daemon = await startDaemon(args)
  t.match(second.stderr, /cannot be read from the source under any name the journal knows .*resyncing the whole tree to sftp:/, 'said, with the replica resynced')
  const same = (p: string, want: string) => existsSync(p) && readFileSync(p, 'utf8') === want
  t.ok(await until(() => same(join(d.rsftp, 'two-b.bin'), 'new!'), 30_000), 'the other name has the bytes')
  t.ok(same(join(d.rsftp, 'two-a.bin'), 'three'), 'the name replaced holds the new file')
})

t.test('async mode: every changing call is journaled by the mount\'s thread, as the Mutation JS would have made', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  const state = join(d.dir, 'state')
  const args = mountArgs(r, false, ['--mode', 'async', '--no-reconcile'])
  const first = r.daemon = await startDaemon(args)
  sshd.pause()
  // One of each, as the syscalls themselves (python's os module), so that each reaches the
  // mount as the call it names.
  execFileSync('python3', ['-c', `
import os, sys
m = sys.argv[1]
os.mkdir(m + '/d', 0o750)
fd = os.open(m + '/d/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
os.write(fd, b'hello')
os.ftruncate(fd, 3)
os.close(fd)
os.truncate(m + '/d/f', 2)
os.chmod(m + '/d/f', 0o600)
os.chown(m + '/d/f', 1234, 5678)
os.utime(m + '/d/f', ns=(1000000001 * 10**9 + 2, 1100000003 * 10**9 + 4))
os.symlink('../x "y"', m + '/d/s')
os.link(m + '/d/f', m + '/d/h')
os.rename(m + '/d/h', m + '/d/h2')
os.unlink(m + '/d/h2')
os.mkfifo(m + '/d/p', 0o644)
os.close(os.open(m + '/d/f', os.O_WRONLY | os.O_TRUNC))
os.mkdir(m + '/e')
os.rmdir(m + '/e')
`, d.mnt])
  first.child.kill('SIGKILL')
  await first.exited
  r.daemon = undefined

  const { records } = parseJournal(readFileSync(join(state, 'journal.log')))
  const ms = records.sort((a, b) => a.seq - b.seq).map(x => x.m).filter(m => m.op !== 'flush' && m.op !== 'release' || ('path' in m && m.path === '/d/f'))
  const fh = ms.find(m => m.op === 'create')?.fh
  t.ok(typeof fh === 'number' && fh > 0, 'create names the descriptor')
  t.match(ms, [
    { op: 'mkdir', path: '/d', uid: 0, gid: 0 },
    { op: 'create', path: '/d/f', fh, flags: Number },
    { op: 'write', path: '/d/f', fh, offset: 0, data: Buffer.alloc(0) },
    { op: 'truncate', path: '/d/f', fh, size: 3 },
    { op: 'flush', path: '/d/f', fh },
    { op: 'release', path: '/d/f', fh, mtime: Number, atime: Number },
    { op: 'truncate', path: '/d/f', fh: null, size: 2 },
    { op: 'chmod', path: '/d/f' },
    { op: 'chown', path: '/d/f', owner: 1234, group: 5678 },
    { op: 'utimens', path: '/d/f', atime: { sec: 1000000001, nsec: 2 }, mtime: { sec: 1100000003, nsec: 4 } },
    { op: 'symlink', path: '/d/s', target: '../x "y"' },
    { op: 'link', from: '/d/f', path: '/d/h' },
    { op: 'rename', from: '/d/h', path: '/d/h2' },
    { op: 'unlink', path: '/d/h2' },
    { op: 'mknod', path: '/d/p' },
    { op: 'open-truncate', path: '/d/f', links: 1 },
    { op: 'flush', path: '/d/f' },
    { op: 'release', path: '/d/f' },
    { op: 'mkdir', path: '/e' },
    { op: 'rmdir', path: '/e' },
  ], 'each call\'s record, in the order of the calls')
  t.equal(ms.length, 20, 'and nothing else')
  t.equal(records.find(x => x.m.op === 'write')?.src, 5, 'the write\'s record counts its 5 bytes, which stay in the source')
  const mode = (op: string) => { const m = ms.find(x => x.op === op && 'mode' in x); return m !== undefined && 'mode' in m ? m.mode & 0o7777 : -1 }
  t.same([mode('mkdir'), mode('create'), mode('chmod'), mode('mknod')], [0o750, 0o640, 0o600, 0o644], 'modes as the calls gave them')
  const release = ms.find(m => m.op === 'release')
  t.ok(release?.op === 'release' && release.mtime > 1e9, 'release carries the file\'s mtime')

  sshd.resume()
  r.daemon = await startDaemon(args)
  const f = join(d.rsftp, 'd', 'f')
  t.ok(await until(() => existsSync(f) && statSync(f).size === 0 && (statSync(f).mode & 0o7777) === 0o600 && statSync(f).uid === 1234, 30_000), 'the replica applies them after the restart')
  t.equal(readlinkSync(join(d.rsftp, 'd', 's')), '../x "y"', 'the symlink too')
  t.notOk(existsSync(join(d.rsftp, 'd', 'h2')) || existsSync(join(d.rsftp, 'e')), 'and what was removed is not there')
})

t.test('SIGSTOPped single sftp replica (quorum = all): EIO after --timeout, the source keeps it, the replica gets it after resume', async t => {
  const r = await rig(t)
  const { d, sshd } = r
  r.daemon = await startDaemon(mountArgs(r, false, ['--timeout', '2']))
  await writeFile(join(d.mnt, 'base.txt'), 'base content')
  t.equal(text(join(d.rsftp, 'base.txt')), 'base content', 'in sync before the pause')
  const fh = await open(join(d.mnt, 'base.txt'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))

  sshd.pause()
  const eio = async (what: string, p: Promise<unknown>) => {
    const t0 = Date.now()
    const c = await code(p)
    const ms = Date.now() - t0
    t.equal(c, 'EIO', `${what}: EIO`)
    t.ok(ms >= 1500 && ms < 5000, `${what}: after about --timeout 2 s (${ms} ms)`)
  }
  await eio('mkdir', mkdir(join(d.mnt, 'pdir')))
  t.ok(existsSync(join(d.source, 'pdir')), 'mkdir: the source keeps the dir')
  await eio('write', fh.write('PAUSED', 0))
  t.equal(text(join(d.source, 'base.txt')), 'PAUSEDontent', 'write: the source keeps the data')
  await eio('create', writeFile(join(d.mnt, 'pnew.txt'), 'new'))
  t.ok(existsSync(join(d.source, 'pnew.txt')), 'create: the source keeps the file')
  t.notOk(existsSync(join(d.rsftp, 'pdir')), 'the frozen replica has none of it yet')

  sshd.resume()
  const got = await until(() => existsSync(join(d.rsftp, 'pdir')) && text(join(d.rsftp, 'base.txt')) === 'PAUSEDontent', 20_000)
  t.ok(got, 'after resume the replica gets the dir and the write (within 20 s)')
  t.equal(text(join(d.rsftp, 'base.txt')), 'PAUSEDontent', 'replica: base.txt')
  const created = await until(() => existsSync(join(d.rsftp, 'pnew.txt')), 10_000)
  t.ok(created, 'after resume the replica gets the file whose create failed with EIO')
  t.equal(text(join(d.rsftp, 'pnew.txt')), text(join(d.source, 'pnew.txt')), 'replica: pnew.txt as on the source')
  await fh.close()
  t.equal(await code(writeFile(join(d.mnt, 'later.txt'), 'later')), 'ok', 'calls succeed again')
  t.equal(text(join(d.rsftp, 'later.txt')), 'later', 'and reach the replica synchronously')
  t.same(temps(d.rsftp), [], 'no temp file left on the replica')
})

t.test('sshd stopped mid-churn and restarted, --quorum 1 with a file replica: both replicas equal the source after SIGTERM', async t => {
  const r = await rig(t)
  const { d, sshd: s } = r
  const daemon = r.daemon = await startDaemon(mountArgs(r, true, ['--quorum', '1', '--timeout', '30']))
  // No hard links and no files held open: those diverge for reasons of their own (see
  // replicate.ts); this test is about the outage.
  const started = Date.now()
  const worker = run(process.execPath, [CHURN, 'run', d.mnt, '2468', '1000000', '12000', 'big,skip=link+open+heldWrite+close'], { timeout: 60_000, maxBuffer: 16 * MiB })
  await sleep(3000)
  await s.stop()
  const stoppedAt = Date.now() - started
  await sleep(3000)
  await s.restart()
  const restartedAt = Date.now() - started
  const res = JSON.parse((await worker).stdout) as { ops: number, errors: Record<string, number>, unexpected: string[], entries: number }
  t.comment(`${res.ops} calls in ${Date.now() - started} ms; sshd stopped at ${stoppedAt} ms, restarted at ${restartedAt} ms; ${res.entries} entries`)
  t.same(res.unexpected, [], 'no call through the mount failed (quorum 1 met by the file replica)')
  t.ok(res.ops > 500, 'the churn ran on through the outage')

  const t0 = Date.now()
  daemon.child.kill('SIGTERM')
  const { code: exit } = await daemon.exited
  t.comment(`drain and exit took ${Date.now() - t0} ms`)
  t.equal(exit, 0, 'SIGTERM: exit 0')
  t.match(daemon.stderr, /reconnected/, 'the sftp replica reconnected')
  t.notMatch(daemon.stderr, /had not applied every change/, 'every replica drained before exit')

  const want = await snapshot(d.source)
  for (const [label, dir] of [['sftp replica', d.rsftp], ['file replica', d.rfile]] as const) {
    const dd = diff(want, await snapshot(dir))
    t.same(dd.slice(0, 15), [], `${label} equals the source (${dd.length} differences)`)
    t.same(temps(dir), [], `no temp file left on the ${label}`)
  }
})


t.test('async: a replica frozen far behind is switched to a resync; the journal stays within --journal-max; it converges', async t => {
  const r = await rig(t)
  r.daemon = await startDaemon(mountArgs(r, false, ['--mode', 'async', '--journal-max', '4M']))
  // A file open across the switch: written before it, after it, and closed after it (its
  // dropped writes must not come back as a half temp file published over the resync's copy).
  const open1 = await open(join(r.d.mnt, 'open-across.bin'), 'w')
  await open1.write(Buffer.alloc(MiB, 0x31))
  // Hard links made before the freeze and during it: the resync keeps each group one file.
  await mkdir(join(r.d.mnt, 'links'))
  await writeFile(join(r.d.mnt, 'links', 'a'), 'before')
  await link(join(r.d.mnt, 'links', 'a'), join(r.d.mnt, 'a2'))
  await link(join(r.d.mnt, 'links', 'a'), join(r.d.mnt, 'links', 'a3'))
  r.sshd.pause()
  // Made while frozen, before the switch: the resync copies it. Its setuid bit survives (a
  // chown after the chmod would clear it).
  await writeFile(join(r.d.mnt, 'links', 'run.sh'), '#!/bin/sh\n')
  await chmod(join(r.d.mnt, 'links', 'run.sh'), 0o4755)
  // 40 MiB of changes for a replica that takes none: ten times what it may hold.
  const chunk = Buffer.alloc(MiB, 0x61)
  for (let i = 0; i < 40; i++) {
    chunk[0] = i
    await writeFile(join(r.d.mnt, `f${i}.bin`), chunk)
    if (i === 5) await link(join(r.d.mnt, 'f5.bin'), join(r.d.mnt, 'links', 'f5'))
  }
  await appendFile(join(r.d.mnt, 'a2'), ' and during')
  // The dir's own time, which each entry made in it moved, set last (as the churn does).
  await utimes(join(r.d.mnt, 'links'), 1_600_000_000, 1_600_000_000)
  await open1.write(Buffer.alloc(MiB, 0x32), 0, MiB, MiB)
  await open1.close()
  await sleep(200)
  t.match(r.daemon.stderr, /more than 4194304 bytes of changes queued; switching it to a resync of the whole tree/, 'it is switched to a resync')
  const state = join(r.d.dir, 'state')
  const journalSize = () => readdirSync(state).filter(n => /^journal.*\.log$/.test(n)).reduce((n, f) => n + readFileSync(join(state, f)).length, 0)
  // Sealed files go once the resync's record is written: give that a moment (bounded).
  let journalBytes = journalSize()
  for (let i = 0; i < 50 && journalBytes > 6 * MiB; i++) {
    await sleep(100)
    journalBytes = journalSize()
  }
  t.ok(journalBytes <= 6 * MiB, `the journal holds ${(journalBytes / MiB).toFixed(1)} MiB of 40 written: within --journal-max and one sealed file (1 MiB)`)
  r.sshd.resume()
  t.equal((await cli(['wait', '--state-dir', state, '--timeout', '60'])).code, 0, 'wait: the replica catches up')
  t.same(diff(await snapshot(r.d.source), await snapshot(r.d.rsftp)), [], 'the replica equals the source')
})
