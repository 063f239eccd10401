/**
 * The tar stream a reconcile copies through where the backup runs GNU tar: the headers as
 * GNU tar reads them, a missing tree sent whole (modes, owners, times, symlinks, FIFOs, hard
 * links inside and across it, long names, excludes), files into existing directories, a tree
 * too big to send whole, and the fallback to SFTP file by file for an SFTP-only account.
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli as cli } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'
import { TAR_END, header, padding } from '../../src/replica/tar'
import { TEMP_PREFIX } from '../../src/replication/temp'

const T0 = 1_700_000_000

function file (p: string, content: string | Buffer, mode = 0o644, mtime = T0): void {
  writeFileSync(p, content)
  chmodSync(p, mode)
  utimesSync(p, mtime, mtime)
}

/** Every node below `root`: type, mode, owner, size, mtime (files and symlinks), content or target. */
function snapshot (root: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      // Each tree's own generation mark (fence.ts) differs by design.
      if (rel === '' && name === '.replicafs-generation') continue
      const p = join(dir, name)
      const r = `${rel}/${name}`
      const st = lstatSync(p)
      const base = `${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`
      if (st.isDirectory()) {
        out[r] = base
        walk(p, r)
      } else if (st.isSymbolicLink()) {
        out[r] = `${base} -> ${readlinkSync(p)}`
      } else {
        out[r] = `${base} ${st.size} ${Math.floor(st.mtimeMs / 1000)} ${st.isFile() ? readFileSync(p).toString('base64') : ''}`
      }
    }
  }
  walk(root, '')
  return out
}

function temps (root: string): string[] {
  return Object.keys(snapshot(root)).filter(p => p.split('/').some(n => n.startsWith(TEMP_PREFIX)))
}

t.test('headers: GNU tar reads back every entry type, long names and links, big ids', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-tar-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const long = `${'d'.repeat(120)}/${'n'.repeat(200)}`
  const data = Buffer.from('hello, tar\n')
  const base = { uid: 3_000_000, gid: 1234, mtime: T0 }
  const archive = Buffer.concat([
    header({ ...base, name: 'dir', type: '5', mode: 0o750, size: 0 }),
    header({ ...base, name: 'dir/f', type: '0', mode: 0o4755, size: data.length }), data, padding(data.length),
    header({ ...base, name: 'dir/hard', type: '1', mode: 0o4755, size: 0, link: 'dir/f' }),
    header({ ...base, name: 'dir/sym', type: '2', mode: 0o777, size: 0, link: `../${'t'.repeat(150)}` }),
    header({ ...base, name: 'dir/fifo', type: '6', mode: 0o640, size: 0 }),
    header({ ...base, name: 'd'.repeat(120), type: '5', mode: 0o755, size: 0 }),
    header({ ...base, name: long, type: '0', mode: 0o600, size: 0 }),
    header({ ...base, name: 'caf\xe9', type: '0', mode: 0o644, size: 0 }),
    TAR_END,
  ])
  const out = join(dir, 'out')
  mkdirSync(out)
  const x = spawnSync('tar', ['-x', '-f', '-', '-p', '--numeric-owner', '--same-owner', '-C', out], { input: archive })
  t.equal(x.status, 0, `tar -x exits 0 ${x.stderr.toString()}`)
  const f = lstatSync(join(out, 'dir', 'f'))
  t.equal(readFileSync(join(out, 'dir', 'f'), 'utf8'), 'hello, tar\n', 'content')
  t.equal(f.mode & 0o7777, 0o4755, 'mode, setuid included')
  t.same([f.uid, f.gid], [3_000_000, 1234], 'a uid beyond the octal field (pax)')
  t.equal(Math.floor(f.mtimeMs / 1000), T0, 'mtime')
  t.equal(lstatSync(join(out, 'dir', 'hard')).ino, f.ino, 'a hard link entry is the same inode')
  t.equal(readlinkSync(join(out, 'dir', 'sym')), `../${'t'.repeat(150)}`, 'a symlink target over 100 bytes (pax)')
  t.ok(lstatSync(join(out, 'dir', 'fifo')).isFIFO(), 'a FIFO')
  t.equal(lstatSync(join(out, 'dir')).mode & 0o7777, 0o750, "a directory's mode")
  t.ok(lstatSync(join(out, long)).isFile(), 'a name over 100 bytes (pax)')
  t.ok(lstatSync(Buffer.from(join(out, 'caf\xe9'), 'latin1')).isFile(), 'a name that is not UTF-8 keeps its bytes')
  // And what GNU tar lists.
  const list = execFileSync('tar', ['-tv', '--numeric-owner', '-f', '-'], { input: archive }).toString()
  t.match(list, /^-rwsr-xr-x 3000000\/1234\s+11 .* dir\/f$/m, 'tar -tv agrees')
})

t.test('resync through the stream: a missing tree whole, files into existing dirs, an SFTP-only account file by file', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-stream-'))
  const sshds: Sshd[] = []
  t.teardown(async () => {
    for (const s of sshds) await s.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  const sshd = await startSshd()
  sshds.push(sshd)
  const src = join(dir, 'source')
  const rep = join(dir, 'replica')
  mkdirSync(src)
  mkdirSync(rep)
  // Existing on both sides: files go into it one by one.
  mkdirSync(join(src, 'kept'))
  mkdirSync(join(rep, 'kept'))
  utimesSync(join(rep, 'kept'), T0, T0)
  file(join(src, 'kept', 'new.txt'), 'new in an existing dir')
  file(join(src, 'top.bin'), Buffer.alloc(3 * 1024 * 1024, 7), 0o640) // read in pieces
  // Missing: sent whole.
  const tree = join(src, 'site')
  mkdirSync(join(tree, 'a', 'b'), { recursive: true })
  file(join(tree, 'index.html'), '<h1>hi</h1>')
  file(join(tree, 'a', 'run.sh'), '#!/bin/sh\n', 0o4755)
  file(join(tree, 'a', 'b', 'big.bin'), Buffer.alloc(2 * 1024 * 1024 + 5, 1))
  file(join(tree, 'a', 'b', 'empty'), '')
  file(join(tree, `${'x'.repeat(200)}.txt`), 'long name')
  symlinkSync('../index.html', join(tree, 'a', 'up'))
  symlinkSync(`/${'t'.repeat(150)}`, join(tree, 'a', 'dangling'))
  execFileSync('mkfifo', [join(tree, 'a', 'pipe')])
  linkSync(join(tree, 'index.html'), join(tree, 'a', 'index-again.html'))
  file(join(src, 'outside.txt'), 'first name outside the tree')
  linkSync(join(src, 'outside.txt'), join(tree, 'inside.txt'))
  file(join(tree, 'skip.part'), 'excluded')
  chownSync(join(tree, 'a'), 1000, 1000)
  chmodSync(join(tree, 'a'), 0o700)
  chownSync(join(tree, 'index.html'), 33, 33)
  // A tree too big to send whole (over 2,000 nodes): made and walked, its parts sent.
  const wide = join(src, 'wide')
  for (let d = 0; d < 3; d++) {
    mkdirSync(join(wide, `d${d}`), { recursive: true })
    for (let f = 0; f < 700; f++) file(join(wide, `d${d}`, `f${f}`), `${d}/${f}`)
  }

  const r = ['--replica', `sftp://root@${sshd.host}:${sshd.port}${rep}`, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts, '--exclude', '*.part']
  const first = await cli(['resync', src, ...r])
  t.equal(first.code, 0, `resync exits 0 ${first.stderr}`)
  t.match(first.stdout, /missing \/site\/a\/b\/big\.bin \(file\)/, 'every node of the tree sent whole is reported')
  t.notMatch(first.stdout, /skip\.part/, 'an excluded node is not')
  const copied = Number(/(\d+) files copied/.exec(first.stderr)?.[1])
  // 2,100 in wide/, 6 in site/ (not the excluded one, nor the hard link to index.html), 3 more.
  t.equal(copied, 2109, 'files copied: every file once')
  const want = snapshot(src)
  delete want['/site/skip.part']
  const got = snapshot(rep)
  t.same(got, want, 'the replica holds every file, symlink and FIFO with its mode, owner, size, mtime and content')
  t.equal(lstatSync(join(rep, 'site', 'a')).mode & 0o7777, 0o700, "a directory's mode")
  t.same([lstatSync(join(rep, 'site', 'a')).uid, lstatSync(join(rep, 'site', 'a')).gid], [1000, 1000], "a directory's owner")
  t.equal(lstatSync(join(rep, 'site', 'a', 'index-again.html')).ino, lstatSync(join(rep, 'site', 'index.html')).ino, 'a hard link inside the tree stays one inode')
  t.equal(lstatSync(join(rep, 'site', 'inside.txt')).ino, lstatSync(join(rep, 'outside.txt')).ino, 'a hard link across the tree stays one inode')
  t.same(temps(rep), [], 'no temporary file or tree is left')
  t.equal((await cli(['verify', src, '--checksum', ...r])).code, 0, 'verify --checksum: equal')
  const again = await cli(['resync', src, ...r])
  t.match(again.stderr, /0 differences fixed, 0 files copied/, 'a second pass finds nothing to do')

  // An SFTP-only account (ForceCommand internal-sftp) runs no tar: file by file over SFTP.
  const jail = await startSshd({ chrootSftpOnly: true })
  sshds.push(jail)
  const data = jail.chrootDataPath!
  const owner = lstatSync(data)
  const small = join(dir, 'small')
  mkdirSync(join(small, 'site', 'a'), { recursive: true })
  file(join(small, 'site', 'index.html'), 'jailed')
  symlinkSync('../index.html', join(small, 'site', 'a', 'up'))
  execFileSync('chown', ['-hR', `${owner.uid}:${owner.gid}`, small])
  const jr = ['--replica', `sftp://${jail.user}@${jail.host}:${jail.port}/data`, '--identity', jail.identity, '--known-hosts', jail.knownHosts]
  const jailed = await cli(['resync', small, ...jr])
  t.equal(jailed.code, 0, `resync to the SFTP-only account exits 0 ${jailed.stderr}`)
  t.match(jailed.stderr, /no GNU tar for this account on the backup: bulk copies go file by file over SFTP/, 'it says it goes file by file')
  t.equal(readFileSync(join(data, 'site', 'index.html'), 'utf8'), 'jailed', 'the file is there')
  t.equal(readlinkSync(join(data, 'site', 'a', 'up')), '../index.html', 'the symlink is there')
  t.equal((await cli(['verify', small, '--checksum', ...jr])).code, 0, 'verify --checksum: equal')
})

t.test('a name SFTP cannot spell fails alone: the rest of its tree is placed', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-stream-'))
  const sshd = await startSshd()
  t.teardown(async () => {
    await sshd.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  const src = join(dir, 'source')
  const rep = join(dir, 'replica')
  mkdirSync(join(src, 'site', 'sub'), { recursive: true })
  mkdirSync(rep)
  file(join(src, 'site', 'ok.txt'), 'fine')
  file(join(src, 'site', 'sub', 'also.txt'), 'fine too')
  writeFileSync(Buffer.from(join(src, 'site', 'bad-\xff.txt'), 'latin1'), 'latin-1 name')
  const r = ['--replica', `sftp://root@${sshd.host}:${sshd.port}${rep}`, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts]
  const res = await cli(['resync', src, ...r])
  t.equal(res.code, 1, 'resync exits 1: one error')
  t.match(res.stderr, /bad-.*not valid UTF-8/, 'the error names the file and why')
  t.equal(readFileSync(join(rep, 'site', 'ok.txt'), 'utf8'), 'fine', 'its siblings are placed')
  t.equal(readFileSync(join(rep, 'site', 'sub', 'also.txt'), 'utf8'), 'fine too', 'and its cousins')
  t.same(temps(rep), [], 'no temporary file or tree is left')
})

t.test('tar fails one entry: the others are placed, the failure is reported', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-stream-'))
  const sshd = await startSshd()
  const src = join(dir, 'source')
  const rep = join(dir, 'replica')
  t.teardown(async () => {
    spawnSync('chattr', ['-i', join(rep, 'locked')])
    await sshd.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  for (const d of [src, rep]) {
    mkdirSync(join(d, 'locked'), { recursive: true })
    mkdirSync(join(d, 'free'), { recursive: true })
  }
  file(join(src, 'locked', 'new.txt'), 'cannot go in')
  file(join(src, 'free', 'other.txt'), 'goes in')
  // Even root cannot make a file in an immutable directory.
  const lock = spawnSync('chattr', ['+i', join(rep, 'locked')])
  t.equal(lock.status, 0, `chattr +i on the replica's directory ${lock.stderr.toString()}`)
  const r = ['--replica', `sftp://root@${sshd.host}:${sshd.port}${rep}`, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts]
  const res = await cli(['resync', src, ...r])
  t.equal(res.code, 1, 'resync exits 1')
  t.match(res.stderr, /tar exited with status 2: .*Operation not permitted/, "tar's own words are reported")
  t.match(res.stderr, /\/locked\/new\.txt: .*tar exited/, 'the file it could not make is named')
  t.equal(readFileSync(join(rep, 'free', 'other.txt'), 'utf8'), 'goes in', 'the other file is placed')
  t.same(temps(rep), [], 'no temporary file is left')
})
