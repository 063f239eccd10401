/*
 * Replication through a real mount, asserted on the source and on the replica directories
 * right after each call returns: one daemon with a file:// replica and an sftp replica (a
 * private sshd on 127.0.0.1, logged in as root, so its replica dir is readable here too).
 *
 * - every changing call, in sync mode;
 * - a seeded churn of a few thousand random calls (test/replica/churn.js, a child process),
 *   in sync and in async mode, then whole-tree equality;
 * - a reader of the sftp replica never sees a half-uploaded file under its final name.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  appendFileSync, chmodSync, chownSync, closeSync, existsSync, fdatasyncSync, fsyncSync, ftruncateSync,
  linkSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, renameSync,
  rmdirSync, statSync, symlinkSync, truncateSync, unlinkSync, utimesSync, writeFileSync, writeSync,
} from 'node:fs'
import { readFile, readdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { cleanupDir, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'
import { CHURN, TEMP, diff, snapshot, temps } from '../helpers/tree'

const run = promisify(execFile)
const MiB = 1024 ** 2

interface Rig {
  dir: string
  source: string
  mnt: string
  rfile: string
  rsftp: string
  sshd: Sshd
  daemon: Daemon
  /** [label, dir] of the source and of each replica */
  all: Array<[string, string]>
  replicas: Array<[string, string]>
}

/** A source, a mountpoint, a file:// replica and an sftp replica, mounted; torn down always. */
async function rig (t: tap.Test, mode: 'sync' | 'async', extra: string[] = []): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-repl-'))
  const source = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  const rfile = join(dir, 'replica-file')
  const rsftp = join(dir, 'replica-sftp')
  for (const d of [source, mnt, rfile, rsftp]) mkdirSync(d)
  let sshd: Sshd | undefined
  let daemon: Daemon | undefined
  t.teardown(async () => {
    if (daemon) await stopDaemon(daemon)
    if (daemon && !t.passing()) process.stderr.write(`--- daemon stderr (${t.name}):\n${daemonLog(daemon)}\n`)
    await sshd?.cleanup()
    cleanupDir(dir, mnt)
  })
  sshd = await startSshd()
  daemon = await startDaemon([
    'mount', source, mnt, ...stateDir(dir),
    '--replica', `file://${rfile}`,
    '--replica', `sftp://root@${sshd.host}:${sshd.port}${rsftp}`,
    '--identity', sshd.identity, '--known-hosts', sshd.knownHosts,
    '--mode', mode, ...extra,
  ])
  return {
    dir, source, mnt, rfile, rsftp, sshd, daemon,
    all: [['source', source], ['file replica', rfile], ['sftp replica', rsftp]],
    replicas: [['file replica', rfile], ['sftp replica', rsftp]],
  }
}

/** `--state-dir` inside the test's dir: the journal and intents stay out of /var/lib. */
function stateDir (dir: string): string[] {
  return ['--state-dir', join(dir, 'state')]
}

/** The daemon's warnings and errors, for a failing test's output. */
function daemonLog (d: Daemon): string {
  return d.stderr.split('\n').filter(l => /warn|error|fail|Error/.test(l)).slice(0, 30).join('\n')
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

function noTemps (t: tap.Test, r: Rig, when: string): void {
  for (const [label, dir] of r.replicas) t.same(temps(dir), [], `${when}: no temp file left on the ${label}`)
}

t.test('every changing call, sync mode, on a file:// and an sftp replica', async t => {
  const r = await rig(t, 'sync')
  const { mnt } = r
  const m = (p: string) => join(mnt, p)
  /** Runs `fn` on the source and on both replicas. */
  const each = (fn: (dir: string, label: string) => void) => { for (const [label, dir] of r.all) fn(dir, label) }
  const isLink = (p: string) => { try { return lstatSync(p).isSymbolicLink() } catch { return false } }
  const content = (t: tap.Test, rel: string, want: string | Buffer, what: string) => each((dir, label) => {
    const p = join(dir, rel)
    if (!existsSync(p)) {
      t.fail(`${what}: ${rel} missing on the ${label}`)
      return
    }
    const got = readFileSync(p)
    const w = Buffer.isBuffer(want) ? want : Buffer.from(want)
    if (got.length > 200 || w.length > 200) t.equal(sha(got), sha(w), `${what}: ${rel} on the ${label} (sha256, ${w.length} bytes)`)
    else t.equal(got.toString('latin1'), w.toString('latin1'), `${what}: ${rel} on the ${label}`)
  })
  const absent = (t: tap.Test, rel: string, what: string) => each((dir, label) => t.notOk(existsSync(join(dir, rel)) || isLink(join(dir, rel)), `${what}: ${rel} gone from the ${label}`))

  t.test('create + write: only a temp name while open, the final name at close', async t => {
    const fd = openSync(m('a.txt'), 'w', 0o640)
    writeSync(fd, 'hello ')
    for (const [label, dir] of r.replicas) {
      t.notOk(existsSync(join(dir, 'a.txt')), `while open: no a.txt yet on the ${label}`)
      const tmp = temps(dir)
      t.equal(tmp.length, 1, `while open: one temp file on the ${label}`)
      if (tmp[0] !== undefined) t.equal(readFileSync(join(dir, tmp[0]), 'utf8'), 'hello ', `the first write is in the temp file on the ${label}`)
    }
    writeSync(fd, 'world')
    closeSync(fd)
    content(t, 'a.txt', 'hello world', 'create+write')
    each((dir, label) => t.equal(statSync(join(dir, 'a.txt')).mode & 0o7777, 0o640, `create mode 0640 on the ${label}`))
    noTemps(t, r, 'after close')
  })

  t.test('overwrite with O_TRUNC', async t => {
    writeFileSync(m('a.txt'), 'second version')
    content(t, 'a.txt', 'second version', 'O_TRUNC')
    each((dir, label) => t.equal(statSync(join(dir, 'a.txt')).mode & 0o7777, 0o640, `O_TRUNC keeps mode 0640 on the ${label}`))
    noTemps(t, r, 'after the O_TRUNC close')
  })

  t.test('append', async t => {
    appendFileSync(m('a.txt'), ' + appended')
    content(t, 'a.txt', 'second version + appended', 'append')
    appendFileSync(m('a.txt'), '!')
    content(t, 'a.txt', 'second version + appended!', 'second append')
  })

  t.test('write at an offset leaving a hole', async t => {
    const size = 4 * MiB + 4
    const want = Buffer.alloc(size)
    want.write('head', 0)
    want.write('tail', 4 * MiB)
    const fd = openSync(m('sparse.bin'), 'w')
    writeSync(fd, 'head')
    writeSync(fd, 'tail', 4 * MiB)
    closeSync(fd)
    content(t, 'sparse.bin', want, 'hole in a new file')
    // where the source's disk keeps holes, the replicas' (the same disk here) must too
    const sparse = statSync(join(r.source, 'sparse.bin')).blocks * 512 < MiB
    each((dir, label) => {
      const st = statSync(join(dir, 'sparse.bin'))
      t.equal(st.size, size, `size on the ${label}`)
      if (sparse) t.ok(st.blocks * 512 < MiB, `sparse on the ${label} (${st.blocks * 512} bytes allocated)`)
    })
    // in place: past the end of an existing file
    const fd2 = openSync(m('a.txt'), 'r+')
    writeSync(fd2, 'Z', 100_000)
    const want2 = Buffer.alloc(100_001)
    want2.write('second version + appended!', 0)
    want2.write('Z', 100_000)
    content(t, 'a.txt', want2, 'hole in an existing file, before close')
    closeSync(fd2)
    content(t, 'a.txt', want2, 'hole in an existing file')
  })

  t.test('truncate and ftruncate', async t => {
    truncateSync(m('a.txt'), 6)
    content(t, 'a.txt', 'second', 'truncate shrink')
    truncateSync(m('a.txt'), 9)
    content(t, 'a.txt', 'second\0\0\0', 'truncate extend')
    const fd = openSync(m('a.txt'), 'r+')
    ftruncateSync(fd, 3)
    content(t, 'a.txt', 'sec', 'ftruncate, before close')
    ftruncateSync(fd, 0)
    content(t, 'a.txt', '', 'ftruncate to 0')
    writeSync(fd, 'rewritten', 0)
    closeSync(fd)
    content(t, 'a.txt', 'rewritten', 'write after ftruncate')
  })

  t.test('rename', async t => {
    renameSync(m('a.txt'), m('b.txt'))
    absent(t, 'a.txt', 'rename')
    content(t, 'b.txt', 'rewritten', 'rename')
    writeFileSync(m('c.txt'), 'old c')
    renameSync(m('b.txt'), m('c.txt'))
    absent(t, 'b.txt', 'rename over an existing file')
    content(t, 'c.txt', 'rewritten', 'rename over an existing file')
    mkdirSync(m('d1'))
    mkdirSync(m('d1/sub'))
    writeFileSync(m('d1/sub/x'), 'deep')
    renameSync(m('d1'), m('d2'))
    absent(t, 'd1', 'dir rename')
    content(t, 'd2/sub/x', 'deep', 'dir rename')
    each((dir, label) => t.ok(statSync(join(dir, 'd2/sub')).isDirectory(), `d2/sub is a dir on the ${label}`))
  })

  t.test('unlink', async t => {
    unlinkSync(m('d2/sub/x'))
    absent(t, 'd2/sub/x', 'unlink')
    each((dir, label) => t.same(readdirSync(join(dir, 'd2/sub')), [], `d2/sub empty on the ${label}`))
  })

  t.test('mkdir and rmdir', async t => {
    mkdirSync(m('newdir'), { mode: 0o750 })
    each((dir, label) => {
      const st = statSync(join(dir, 'newdir'))
      t.ok(st.isDirectory(), `mkdir: a dir on the ${label}`)
      t.equal(st.mode & 0o7777, 0o750, `mkdir: mode 0750 on the ${label}`)
    })
    rmdirSync(m('newdir'))
    absent(t, 'newdir', 'rmdir')
    rmdirSync(m('d2/sub'))
    absent(t, 'd2/sub', 'rmdir of a nested dir')
  })

  t.test('symlink', async t => {
    symlinkSync('c.txt', m('sl'))
    symlinkSync('/nonexistent/target', m('dangling'))
    each((dir, label) => {
      t.ok(lstatSync(join(dir, 'sl')).isSymbolicLink(), `a symlink on the ${label}`)
      t.equal(readlinkSync(join(dir, 'sl')), 'c.txt', `symlink target on the ${label}`)
      t.equal(readlinkSync(join(dir, 'dangling')), '/nonexistent/target', `dangling symlink target on the ${label}`)
    })
  })

  t.test('hard link', async t => {
    linkSync(m('c.txt'), m('hl'))
    each((dir, label) => {
      const a = statSync(join(dir, 'c.txt'))
      const b = statSync(join(dir, 'hl'))
      t.equal(b.ino, a.ino, `one inode for both names on the ${label}`)
      t.equal(a.nlink, 2, `nlink 2 on the ${label}`)
    })
    content(t, 'hl', 'rewritten', 'hard link')
  })

  t.test('chmod', async t => {
    chmodSync(m('c.txt'), 0o604)
    each((dir, label) => t.equal(statSync(join(dir, 'c.txt')).mode & 0o7777, 0o604, `file mode on the ${label}`))
    chmodSync(m('d2'), 0o711)
    each((dir, label) => t.equal(statSync(join(dir, 'd2')).mode & 0o7777, 0o711, `dir mode on the ${label}`))
  })

  t.test('chown', async t => {
    chownSync(m('c.txt'), 1234, 5678)
    chownSync(m('d2'), 1234, 5678)
    each((dir, label) => {
      for (const p of ['c.txt', 'd2']) {
        const st = statSync(join(dir, p))
        t.same([st.uid, st.gid], [1234, 5678], `${p} owner on the ${label}`)
      }
    })
  })

  t.test('utimens', async t => {
    utimesSync(m('c.txt'), 1_111_111_111.5, 1_234_567_890.25)
    const src = statSync(join(r.source, 'c.txt'), { bigint: true })
    t.equal(src.mtimeNs, 1_234_567_890_250_000_000n, 'source mtime exact')
    const file = statSync(join(r.rfile, 'c.txt'), { bigint: true })
    t.equal(file.mtimeNs, src.mtimeNs, 'file replica: mtime exact (ns)')
    t.equal(file.atimeNs, src.atimeNs, 'file replica: atime exact (ns)')
    const sftp = statSync(join(r.rsftp, 'c.txt'), { bigint: true })
    t.equal(sftp.mtimeNs / 1_000_000_000n, 1_234_567_890n, 'sftp replica: mtime to the second')
    t.equal(sftp.atimeNs / 1_000_000_000n, 1_111_111_111n, 'sftp replica: atime to the second')
    utimesSync(m('d2'), 1_000_000_000, 1_000_000_000)
    each((dir, label) => t.equal(Math.floor(statSync(join(dir, 'd2')).mtimeMs / 1000), 1_000_000_000, `dir mtime on the ${label}`))
  })

  t.test('fsync and fdatasync', async t => {
    const fd = openSync(m('c.txt'), 'r+')
    writeSync(fd, 'SYNC', 0)
    fsyncSync(fd)
    content(t, 'c.txt', 'SYNCitten', 'after fsync')
    writeSync(fd, 'DATA', 0)
    fdatasyncSync(fd)
    content(t, 'c.txt', 'DATAitten', 'after fdatasync')
    closeSync(fd)
    const fd2 = openSync(m('new-synced'), 'w')
    writeSync(fd2, 'fresh')
    fsyncSync(fd2)
    closeSync(fd2)
    content(t, 'new-synced', 'fresh', 'fsync of a new file')
  })

  t.test('the trees are equal (types, content, modes, owners, links) and hold no temp file', async t => {
    const want = await snapshot(r.source)
    for (const [label, dir] of r.replicas) t.same(diff(want, await snapshot(dir), ['mtime']), [], `${label} equals the source`)
    noTemps(t, r, 'at the end')
  })
})

t.test('hard links and files still being written, sync mode', async t => {
  const r = await rig(t, 'sync')
  const m = (p: string) => join(r.mnt, p)
  const same = (t: tap.Test, rel: string, what: string) => {
    const want = readFileSync(join(r.source, rel))
    for (const [label, dir] of r.replicas) {
      const p = join(dir, rel)
      t.equal(existsSync(p) ? readFileSync(p).toString('latin1') : '(missing)', want.toString('latin1'), `${what}: ${rel} on the ${label} equals the source`)
    }
  }

  t.test('O_TRUNC overwrite of a file with two hard links', async t => {
    writeFileSync(m('h1'), 'original')
    linkSync(m('h1'), m('h2'))
    writeFileSync(m('h1'), 'rewritten through h1')
    t.equal(readFileSync(join(r.source, 'h2'), 'utf8'), 'rewritten through h1', 'source: h2 is the same file')
    same(t, 'h1', 'O_TRUNC of a linked file')
    same(t, 'h2', 'O_TRUNC of a linked file')
    for (const [label, dir] of r.replicas) {
      t.equal(statSync(join(dir, 'h2')).ino, statSync(join(dir, 'h1')).ino, `h1 and h2 still one inode on the ${label}`)
    }
    noTemps(t, r, 'after close')
  })

  t.test('append through one name of a hard link right after the file grew through the other', async t => {
    writeFileSync(m('ap1'), 'aaaa')
    linkSync(m('ap1'), m('ap2'))
    t.equal(statSync(m('ap2')).size, 4, 'ap2 seen at 4 bytes')
    appendFileSync(m('ap1'), 'bbbb')
    appendFileSync(m('ap2'), 'cc')
    t.equal(readFileSync(join(r.source, 'ap1'), 'utf8'), 'aaaabbbbcc', 'source: both appends, in order')
    same(t, 'ap1', 'O_APPEND through a second name')
    same(t, 'ap2', 'O_APPEND through a second name')
  })

  t.test('a second descriptor writes a new file still open on the first', async t => {
    const fd1 = openSync(m('two'), 'w')
    writeSync(fd1, 'AAAA')
    const fd2 = openSync(m('two'), 'r+')
    writeSync(fd2, 'BB', 0)
    closeSync(fd2)
    writeSync(fd1, 'CC', 4)
    closeSync(fd1)
    t.equal(readFileSync(join(r.source, 'two'), 'utf8'), 'BBAACC', 'source')
    same(t, 'two', 'two writers')
    noTemps(t, r, 'after both closed')
  })

  t.test('chmod, rename and unlink of a file still open', async t => {
    const fd = openSync(m('open1'), 'w')
    writeSync(fd, 'one')
    chmodSync(m('open1'), 0o600)
    renameSync(m('open1'), m('open1-renamed'))
    writeSync(fd, ' two')
    closeSync(fd)
    same(t, 'open1-renamed', 'renamed while open')
    for (const [label, dir] of r.replicas) {
      t.equal(statSync(join(dir, 'open1-renamed')).mode & 0o7777, 0o600, `mode set while open on the ${label}`)
      t.notOk(existsSync(join(dir, 'open1')), `old name absent on the ${label}`)
    }
    const fd2 = openSync(m('open2'), 'w')
    writeSync(fd2, 'doomed')
    unlinkSync(m('open2'))
    writeSync(fd2, ' still')
    closeSync(fd2)
    for (const [label, dir] of r.replicas) t.notOk(existsSync(join(dir, 'open2')), `unlinked while open: absent on the ${label}`)
    noTemps(t, r, 'after close')
  })

  t.test('a new file unlinked while open, then its directory renamed', async t => {
    mkdirSync(m('ud'))
    const fd = openSync(m('ud/f'), 'w')
    writeSync(fd, 'doomed')
    unlinkSync(m('ud/f'))
    renameSync(m('ud'), m('ud-renamed'))
    writeSync(fd, ' still')
    let closed = 'ok'
    try { closeSync(fd) } catch (err) { closed = (err as NodeJS.ErrnoException).code ?? String(err) }
    t.equal(closed, 'ok', 'close succeeds')
    for (const [label, dir] of r.replicas) {
      t.same(readdirSync(join(dir, 'ud-renamed')), [], `ud-renamed is empty on the ${label}`)
    }
    noTemps(t, r, 'after close')
  })

  t.test('a new file unlinked while open, then its directory removed', async t => {
    mkdirSync(m('rd'))
    const fd = openSync(m('rd/f'), 'w')
    writeSync(fd, 'doomed')
    unlinkSync(m('rd/f'))
    let removed = 'ok'
    try { rmdirSync(m('rd')) } catch (err) { removed = (err as NodeJS.ErrnoException).code ?? String(err) }
    t.equal(removed, 'ok', 'rmdir succeeds')
    t.notOk(existsSync(join(r.source, 'rd')), 'source: rd removed')
    for (const [label, dir] of r.replicas) t.notOk(existsSync(join(dir, 'rd')), `rmdir: rd removed from the ${label}`)
    writeSync(fd, ' still')
    closeSync(fd)
    for (const [label, dir] of r.replicas) t.notOk(existsSync(join(dir, 'rd')), `after close: no rd on the ${label}`)
    noTemps(t, r, 'after close')
  })
})

async function churn (t: tap.Test, mode: 'sync' | 'async', seed: number, options = 'big'): Promise<void> {
  // async: the SIGTERM drain may take up to --timeout
  const r = await rig(t, mode, ['--timeout', mode === 'async' ? '60' : '10'])
  const started = Date.now()
  const { stdout } = await run(process.execPath, [CHURN, 'run', r.mnt, String(seed), '3000', '40000', options], { timeout: 60_000, maxBuffer: 16 * MiB })
  const res = JSON.parse(stdout) as { ops: number, done: boolean, counts: Record<string, number>, errors: Record<string, number>, unexpected: string[], entries: number }
  t.comment(`${mode}: ${res.ops} calls in ${Date.now() - started} ms, ${res.entries} entries, failed calls by kind ${JSON.stringify(res.errors)}`)
  t.ok(res.done, 'the whole workload ran within the deadline')
  t.same(res.unexpected, [], 'no call failed unexpectedly (no EIO)')
  t.ok(res.entries > 100, 'a tree of a few hundred entries')

  if (mode === 'async') {
    const t0 = Date.now()
    r.daemon.child.kill('SIGTERM')
    const { code } = await r.daemon.exited
    t.equal(code, 0, 'SIGTERM: exit 0')
    t.comment(`drain and exit took ${Date.now() - t0} ms`)
    t.notMatch(r.daemon.stderr, /had not applied every change/, 'every replica drained before exit')
  }
  const want = await snapshot(r.source)
  for (const [label, dir] of r.replicas) {
    const d = diff(want, await snapshot(dir))
    t.same(d.slice(0, 15), [], `${label} equals the source: types, content, modes, owners, mtimes (s), symlinks, link groups (${d.length} differences)`)
  }
  t.notMatch(r.daemon.stderr, /now differs from the source/, 'no replica reported a divergence')
  if (mode === 'sync') {
    await stopDaemon(r.daemon)
    t.equal((await r.daemon.exited).code, 0, 'SIGTERM: exit 0')
  }
  noTemps(t, r, 'after the churn')
}

t.test('churn, sync mode: the replicas equal the source when the calls return', async t => {
  await churn(t, 'sync', 1234)
})

t.test('churn, async mode: the replicas equal the source after SIGTERM drains', async t => {
  await churn(t, 'async', 4321)
})

// The same without hard links and without files held open across other calls: the calls
// the full churn above shares with the focused tests of files still being written (O_TRUNC
// of a linked file, a second writer), so that any other divergence stands out on its own.
const PLAIN = 'big,skip=link+open+heldWrite+close'

t.test('churn without links or held files, sync mode', async t => {
  await churn(t, 'sync', 777, PLAIN)
})

t.test('churn without links or held files, async mode', async t => {
  await churn(t, 'async', 778, PLAIN)
})

// coreutils' cp -a (and install) set a copy's mode through its access ACL (a setxattr of
// system.posix_acl_access), not with chmod: the replicas must get that mode all the same.
for (const mode of ['sync', 'async'] as const) {
  t.test(`cp -a: modes set through the access ACL reach the replicas, ${mode} mode`, async t => {
    const r = await rig(t, mode)
    const tree = join(r.dir, 'tree')
    mkdirSync(join(tree, 'd'), { recursive: true })
    writeFileSync(join(tree, 'a.html'), 'a')
    writeFileSync(join(tree, 'd', 'run.cgi'), 'b')
    writeFileSync(join(tree, 'd', 'secret'), 'c')
    chmodSync(join(tree, 'a.html'), 0o644)
    chmodSync(join(tree, 'd', 'run.cgi'), 0o755)
    chmodSync(join(tree, 'd', 'secret'), 0o600)
    chmodSync(join(tree, 'd'), 0o2750)
    await run('cp', ['-a', tree, r.mnt])
    if (mode === 'async') await run(process.execPath, [join(__dirname, '..', '..', 'dist', 'src', 'cli.js'), 'wait', '--state-dir', join(r.dir, 'state'), '--timeout', '30'])
    const modes = (root: string) => ['tree', 'tree/a.html', 'tree/d', 'tree/d/run.cgi', 'tree/d/secret'].map(p => (lstatSync(join(root, p)).mode & 0o7777).toString(8))
    t.same(modes(r.source), ['755', '644', '2750', '755', '600'], 'the source has the modes cp gave')
    for (const [label, dir] of r.replicas) t.same(modes(dir), modes(r.source), `the ${label} has them too`)
  })
}

/** Polls `file` until `until` resolves; every sighting of it is recorded as [size, sha256]. */
async function watch (file: string, until: Promise<unknown>): Promise<{ polls: number, seen: Array<[number, string]>, tempSeen: number }> {
  let done = false
  until.then(() => { done = true }, () => { done = true })
  const seen: Array<[number, string]> = []
  let polls = 0
  let tempSeen = 0
  const dir = resolve(file, '..')
  for (let extra = 0; extra < 3;) {
    if (done) extra++
    polls++
    try {
      await stat(file)
      const b = await readFile(file)
      seen.push([b.length, sha(b)])
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    if ((await readdir(dir)).some(n => TEMP.test(n))) tempSeen++
    await new Promise(res => setImmediate(res))
  }
  return { polls, seen, tempSeen }
}

t.test('a reader of the sftp replica never sees a partial upload under the final name', async t => {
  const r = await rig(t, 'sync')
  const size = 20 * MiB
  const final = join(r.rsftp, 'big.bin')
  const upload = run(process.execPath, [CHURN, 'upload', join(r.mnt, 'big.bin'), String(size), String(128 * 1024)], { timeout: 60_000 })
  const w = await watch(final, upload)
  const hash = (await upload).stdout.trim()
  t.comment(`${w.polls} polls, ${w.seen.length} sightings of the final name, temp name seen ${w.tempSeen} times`)
  t.ok(w.tempSeen > 0, 'the reader ran while the upload was in progress (it saw the temp name)')
  t.ok(w.seen.length > 0, 'the final name appeared')
  const partial = w.seen.filter(([n, h]) => n !== size || h !== hash)
  t.same(partial.slice(0, 5), [], 'every sighting of the final name had the full size and content')
  t.equal(sha(readFileSync(join(r.source, 'big.bin'))), hash, 'the source has the upload')
  t.equal(sha(readFileSync(final)), hash, 'the sftp replica has the upload')
  t.equal(sha(readFileSync(join(r.rfile, 'big.bin'))), hash, 'the file replica has the upload')
  noTemps(t, r, 'after the upload')
})

t.test('control: with --in-place the same reader does see the file grow under its name', async t => {
  const r = await rig(t, 'sync', ['--in-place'])
  const size = 20 * MiB
  const final = join(r.rsftp, 'big.bin')
  const upload = run(process.execPath, [CHURN, 'upload', join(r.mnt, 'big.bin'), String(size), String(128 * 1024)], { timeout: 60_000 })
  const w = await watch(final, upload)
  const hash = (await upload).stdout.trim()
  const partial = w.seen.filter(([n]) => n !== size)
  t.comment(`${w.polls} polls, ${w.seen.length} sightings, ${partial.length} partial`)
  t.ok(partial.length > 0, 'the reader saw a partial file (so the check above can fail)')
  t.equal(w.tempSeen, 0, 'no temp name with --in-place')
  t.equal(sha(readFileSync(final)), hash, 'the sftp replica has the upload')
})

