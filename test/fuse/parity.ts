/*
 * POSIX parity (in the spirit of mergerfs tests/posix_parity.py): every call is made through
 * the mount and on a native directory on the same disk, from a child process (probe.js, which
 * hands xattrs, nanosecond utimensat, statvfs and mknod to probe.py), and must give the same
 * result and errno. The whole suite runs twice: as root and as an unprivileged user (65534),
 * who also meets root-owned files it must not be able to change.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { mountFixture, type Fixture } from '../helpers/mount'

const PROBE = resolve(__dirname, 'probe.js')
const NOBODY = 65534
const CHILD_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', TZ: 'UTC' }

type Who = 'root' | 'user'

interface Step {
  op: string
  /** What the native side must give ('ok' or an errno code): proves the step tests what it says. */
  expect?: string
  /** A partial value the native side must match (t.match). */
  check?: unknown
  [k: string]: unknown
}

interface Result { ok: boolean, value?: unknown, code?: string, message?: string }

let seq = 0

/** Runs the steps under `base` in a fresh probe process, as root or as 65534. */
function probe (f: Fixture, base: string, steps: Step[], who: Who): Promise<Result[]> {
  const file = join(f.dir, `steps-${process.pid}-${seq++}.json`)
  writeFileSync(file, JSON.stringify(steps), { mode: 0o644 })
  const ids = who === 'user' ? { uid: NOBODY, gid: NOBODY } : {}
  return new Promise((res, rej) => {
    execFile(process.execPath, [PROBE, base, file], { ...ids, env: CHILD_ENV, timeout: 120_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) return rej(new Error(`probe failed (${who} in ${base}): ${err.message}\n${stderr}`))
        try {
          res(JSON.parse(stdout) as Result[])
        } catch (e) {
          rej(new Error(`probe output is not JSON: ${stdout}\n${stderr}`))
        }
      })
  })
}

function show (s: Step): string {
  const { expect, check, ...rest } = s
  void check
  const j = JSON.stringify(rest)
  return (j.length > 160 ? j.slice(0, 157) + '...' : j) + (expect === undefined ? '' : ` -> ${expect}`)
}

/** Runs steps natively and through the mount; every result must be the same. */
async function parity (t: tap.Test, f: Fixture, steps: Step[], who: Who): Promise<void> {
  const native = await probe(f, join(f.dir, 'native'), steps, who)
  const mounted = await probe(f, f.mnt, steps, who)
  t.equal(mounted.length, steps.length, 'the mount ran every step')
  steps.forEach((s, i) => {
    const n = native[i]
    const m = mounted[i]
    if (n?.code === 'PROBE' || m?.code === 'PROBE') {
      t.fail(`probe error on ${show(s)}: native ${n?.message} / mount ${m?.message}`)
      return
    }
    if (s.expect !== undefined) {
      t.equal(n?.ok ? 'ok' : n?.code, s.expect, `native: ${show(s)}`)
    }
    if (s.check !== undefined) t.match(n?.value, s.check, `native value: ${show(s)}`)
    t.same(m, n, `${who}: ${show(s)}`)
  })
}

// Step builders: short, so that the lists below read like the calls they make.
const S = (op: string, path: string, o: Record<string, unknown> = {}, expect?: string): Step =>
  expect === undefined ? { op, path, ...o } : { op, path, ...o, expect }
const ok = (op: string, path: string, o: Record<string, unknown> = {}): Step => S(op, path, o, 'ok')
const err = (code: string, op: string, path: string, o: Record<string, unknown> = {}): Step => S(op, path, o, code)
const py = (call: string, path: string, o: Record<string, unknown> = {}, expect = 'ok'): Step =>
  ({ op: 'py', call, path, ...o, expect })
const file = (path: string, data = 'data', mode = '0644'): Step[] =>
  [ok('writeFile', path, { data }), ok('chmod', path, { mode })]

/** Root-owned things both identities meet, made as root on both sides before the suites. */
const SETUP: Step[] = [
  ok('mkdir', 'root', { mode: '0755' }),
  ok('mkdir', 'pub'), ok('chmod', 'pub', { mode: '0777' }),
  ...file('ro.txt', 'root data', '0644'),
  ...file('pub/shared.txt', 'shared', '0666'),
  ...file('pub/ro.txt', 'root data', '0644'),
  ok('mkdir', 'rodir', { mode: '0755' }), ...file('rodir/f', 'x'),
  ok('mkdir', 'private', { mode: '0700' }), ...file('private/f', 'secret'),
  ok('mkdir', 'sticky'), ok('chmod', 'sticky', { mode: '01777' }), ...file('sticky/rootfile', 'r', '0666'),
  ok('mkdir', 'sgid'), ok('chown', 'sgid', { uid: 0, gid: 100 }), ok('chmod', 'sgid', { mode: '02777' }),
  ok('mkdir', 'sgid0'), ok('chmod', 'sgid0', { mode: '02777' }),
  py('setxattr', 'pub/shared.txt', { name: 'user.shared', value: 'u' }),
  py('setxattr', 'pub/shared.txt', { name: 'trusted.secret', value: 't' }),
]

// 2001-02-03 04:05:06.123456789 UTC and friends, as ns since the epoch.
const T1 = '981173106123456789'
const T2 = '981173107987654321'
const TOUCH1 = ['-d', '2001-02-03 04:05:06.123456789']

type Group = (d: string, who: Who) => Step[]

// Known limit (README): libfuse 2's high-level API gives each name of a hard link its own kernel
// inode, so what one name shows can lag a change made through another by the 1 s attribute
// cache. These steps therefore read a name only after changing the file through that same name,
// or through the source's own count; test/fuse/edge.ts checks the other names after the cache.

const GROUPS: Record<string, Group> = {
  getattr: (d, who) => {
    const me = who === 'root' ? 0 : NOBODY
    return [
      ...file(`${d}/f`, 'hello'),
      ok('stat', `${d}/f`, { check: { type: 'file', mode: '0644', size: 5, nlink: 1, uid: me, gid: me } }),
      ok('lstat', `${d}/f`),
      ok('stat', d, { check: { type: 'dir', nlink: 2, uid: me } }),
      ok('mkdir', `${d}/sub`), ok('mkdir', `${d}/sub2`),
      ok('stat', d, { check: { nlink: 4 } }),
      err('ENOENT', 'stat', `${d}/missing`),
      err('ENOTDIR', 'stat', `${d}/f/x`),
      ok('open', `${d}/f`, { flags: 'r', fd: 'a' }),
      ok('fstat', `${d}/f`, { fd: 'a', check: { type: 'file', size: 5 } }),
      ok('close', `${d}/f`, { fd: 'a' }),
      py('utime', `${d}/f`, { atime: T1, mtime: T2 }),
      ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: T1, mtimeNs: T2 } }),
      ok('lstat', `${d}/f`, { times: 'exact' }),
      ...file(`${d}/big`, 'x'.repeat(100_000)),
      ok('stat', `${d}/big`, { check: { size: 100_000 } }),
    ]
  },

  access: (d, who) => [
    ...file(`${d}/f`, 'x', '0644'), ...file(`${d}/x`, 'x', '0755'), ...file(`${d}/none`, 'x', '0000'),
    ok('access', `${d}/f`, { mode: 'F' }), ok('access', `${d}/f`, { mode: 'R' }),
    ok('access', `${d}/f`, { mode: 'W' }), ok('access', `${d}/f`, { mode: 'RW' }),
    err('EACCES', 'access', `${d}/f`, { mode: 'X' }),
    ok('access', `${d}/x`, { mode: 'RWX' }),
    S('access', `${d}/none`, { mode: 'R' }, who === 'root' ? 'ok' : 'EACCES'),
    S('access', `${d}/none`, { mode: 'W' }, who === 'root' ? 'ok' : 'EACCES'),
    err('EACCES', 'access', `${d}/none`, { mode: 'X' }),
    ok('access', d, { mode: 'RWX' }),
    err('ENOENT', 'access', `${d}/missing`, { mode: 'F' }),
    ok('access', 'ro.txt', { mode: 'R' }),
    S('access', 'ro.txt', { mode: 'W' }, who === 'root' ? 'ok' : 'EACCES'),
    S('access', 'private/f', { mode: 'F' }, who === 'root' ? 'ok' : 'EACCES'),
  ],

  statfs: d => [
    ok('statfs', d),
    py('statvfs', d),
    ok('statfs', '.'),
    err('ENOENT', 'statfs', `${d}/missing`),
  ],

  readdir: d => [
    ...file(`${d}/a`), ...file(`${d}/b`), ok('mkdir', `${d}/c`),
    ok('symlink', `${d}/l`, { target: 'a' }), ok('mkfifo', `${d}/p`),
    ...file(`${d}/with space`), ...file(`${d}/é漢字`), ...file(`${d}/.hidden`),
    ok('readdir', d, { check: ['.hidden', 'a', 'b', 'c', 'l', 'p', 'with space', 'é漢字'] }),
    ok('readdirTypes', d),
    ok('readdir', `${d}/c`, { check: [] }),
    err('ENOTDIR', 'readdir', `${d}/a`),
    err('ENOENT', 'readdir', `${d}/missing`),
  ],

  openFlags: (d, who) => [
    ...file(`${d}/f`, 'abc'),
    err('EEXIST', 'open', `${d}/f`, { flags: ['O_WRONLY', 'O_CREAT', 'O_EXCL'], fd: 'x' }),
    ok('open', `${d}/new`, { flags: ['O_WRONLY', 'O_CREAT', 'O_EXCL'], mode: '0640', fd: 'a' }),
    ok('close', '', { fd: 'a' }),
    ok('stat', `${d}/new`, { check: { mode: '0640', size: 0 } }),
    ok('open', `${d}/f`, { flags: ['O_WRONLY', 'O_CREAT'], mode: '0600', fd: 'c' }),
    ok('close', '', { fd: 'c' }),
    ok('stat', `${d}/f`, { check: { mode: '0644', size: 3 } }),
    ok('open', `${d}/f`, { flags: ['O_WRONLY', 'O_TRUNC'], fd: 'b' }),
    ok('close', '', { fd: 'b' }),
    ok('stat', `${d}/f`, { check: { size: 0 } }),
    ...file(`${d}/g`, 'abc'),
    ok('open', `${d}/g`, { flags: ['O_WRONLY', 'O_APPEND'], fd: 'ap' }),
    ok('write', '', { fd: 'ap', data: 'def' }),
    ok('write', '', { fd: 'ap', data: 'ghi', pos: 0 }),
    ok('close', '', { fd: 'ap' }),
    ok('readFile', `${d}/g`, { check: 'abcdefghi' }),
    err('ENOENT', 'open', `${d}/missing`, { flags: 'r', fd: 'x' }),
    err('EISDIR', 'open', d, { flags: ['O_WRONLY'], fd: 'x' }),
    err('ENOTDIR', 'open', `${d}/g`, { flags: ['O_RDONLY', 'O_DIRECTORY'], fd: 'x' }),
    err('ENOTDIR', 'open', `${d}/g/x`, { flags: ['O_WRONLY', 'O_CREAT'], fd: 'x' }),
    ok('symlink', `${d}/l`, { target: 'g' }),
    err('ELOOP', 'open', `${d}/l`, { flags: ['O_RDONLY', 'O_NOFOLLOW'], fd: 'x' }),
    ok('umask', '', { mask: '0' }),
    ok('open', `${d}/m777`, { flags: ['O_WRONLY', 'O_CREAT'], mode: '0777', fd: 'u' }),
    ok('close', '', { fd: 'u' }),
    ok('stat', `${d}/m777`, { check: { mode: '0777' } }),
    ok('umask', '', { mask: '077' }),
    ok('open', `${d}/m600`, { flags: ['O_WRONLY', 'O_CREAT'], mode: '0666', fd: 'u' }),
    ok('close', '', { fd: 'u' }),
    ok('stat', `${d}/m600`, { check: { mode: '0600' } }),
    ok('umask', '', { mask: '022' }),
    // A new file may be born setuid/setgid: its creator owns it and is in its group.
    ok('open', `${d}/suid`, { flags: ['O_WRONLY', 'O_CREAT'], mode: '06755', fd: 's' }),
    ok('close', '', { fd: 's' }),
    ok('stat', `${d}/suid`, { check: { mode: '06755' } }),
  ],

  readWrite: d => [
    ok('open', `${d}/f`, { flags: 'w+', fd: 'a' }),
    ok('write', '', { fd: 'a', data: 'hello', check: 5 }),
    ok('write', '', { fd: 'a', data: 'XY', pos: 10, check: 2 }),
    ok('fstat', '', { fd: 'a', check: { size: 12 } }),
    ok('read', '', { fd: 'a', len: 20, pos: 0, check: 'hello\0\0\0\0\0XY' }),
    ok('read', '', { fd: 'a', len: 3, pos: 3, check: 'lo\0' }),
    ok('read', '', { fd: 'a', len: 10, pos: 100, check: '' }),
    ok('write', '', { fd: 'a', data: 'Z'.repeat(300_000), pos: 7 }),
    ok('fsync', '', { fd: 'a' }),
    ok('fdatasync', '', { fd: 'a' }),
    ok('fstat', '', { fd: 'a', check: { size: 300_007 } }),
    ok('close', '', { fd: 'a' }),
    err('EBADF', 'close', '', { fd: 'a' }),
    ok('readFile', `${d}/f`),
    ok('open', `${d}/f`, { flags: 'r', fd: 'r' }),
    err('EBADF', 'write', '', { fd: 'r', data: 'x' }),
    ok('read', '', { fd: 'r', len: 9, pos: 0, check: 'hello\0\0ZZ' }),
    ok('close', '', { fd: 'r' }),
    ok('open', `${d}/f`, { flags: ['O_WRONLY'], fd: 'w' }),
    err('EBADF', 'read', '', { fd: 'w', len: 1, pos: 0 }),
    ok('close', '', { fd: 'w' }),
  ],

  opendir: d => [
    ok('mkdir', `${d}/s1`), ...file(`${d}/f1`), ...file(`${d}/f2`),
    ok('opendir', d, { dir: 'x' }),
    ok('dirread', '', { dir: 'x', check: ['f1', 'f2', 's1'] }),
    ok('closedir', '', { dir: 'x' }),
    err('ENOTDIR', 'opendir', `${d}/f1`, { dir: 'y' }),
    err('ENOENT', 'opendir', `${d}/missing`, { dir: 'y' }),
    ok('open', d, { flags: 'r', fd: 'dd' }),
    ok('fsync', '', { fd: 'dd' }),
    ok('fdatasync', '', { fd: 'dd' }),
    ok('fstat', '', { fd: 'dd', check: { type: 'dir' } }),
    ok('close', '', { fd: 'dd' }),
  ],

  truncate: d => [
    ...file(`${d}/f`, 'hello world'),
    ok('truncate', `${d}/f`, { len: 5 }),
    ok('readFile', `${d}/f`, { check: 'hello' }),
    ok('truncate', `${d}/f`, { len: 20 }),
    ok('stat', `${d}/f`, { check: { size: 20 } }),
    ok('readFile', `${d}/f`, { check: 'hello' + '\0'.repeat(15) }),
    ok('open', `${d}/f`, { flags: 'r+', fd: 'a' }),
    ok('ftruncate', '', { fd: 'a', len: 2 }),
    ok('fstat', '', { fd: 'a', check: { size: 2 } }),
    ok('ftruncate', '', { fd: 'a', len: 3 * 4096 + 1 }),
    ok('fstat', '', { fd: 'a', check: { size: 3 * 4096 + 1 } }),
    ok('close', '', { fd: 'a' }),
    ok('open', `${d}/f`, { flags: 'r', fd: 'r' }),
    err('EINVAL', 'ftruncate', '', { fd: 'r', len: 1 }),
    ok('close', '', { fd: 'r' }),
    err('EISDIR', 'truncate', d, { len: 0 }),
    err('ENOENT', 'truncate', `${d}/missing`, { len: 0 }),
  ],

  unlink: d => [
    ...file(`${d}/f`),
    ok('unlink', `${d}/f`),
    err('ENOENT', 'unlink', `${d}/f`),
    err('ENOENT', 'stat', `${d}/f`),
    ok('mkdir', `${d}/sub`),
    err('EISDIR', 'unlink', `${d}/sub`),
    err('ENOENT', 'unlink', `${d}/missing/x`),
    ok('symlink', `${d}/l`, { target: 'sub' }),
    ok('unlink', `${d}/l`),
    ok('stat', `${d}/sub`, { check: { type: 'dir' } }),
    ok('readdir', d, { check: ['sub'] }),
  ],

  rename: d => [
    ...file(`${d}/a`, 'A'), ...file(`${d}/b`, 'B'),
    ok('rename', `${d}/a`, { to: `${d}/b` }),
    ok('readFile', `${d}/b`, { check: 'A' }),
    err('ENOENT', 'stat', `${d}/a`),
    ok('mkdir', `${d}/empty`),
    err('EISDIR', 'rename', `${d}/b`, { to: `${d}/empty` }),
    err('ENOTDIR', 'rename', `${d}/empty`, { to: `${d}/b` }),
    ok('mkdir', `${d}/d1`), ...file(`${d}/d1/x`), ok('mkdir', `${d}/d2`),
    ok('rename', `${d}/d1`, { to: `${d}/d2` }),
    ok('readdir', `${d}/d2`, { check: ['x'] }),
    err('ENOENT', 'stat', `${d}/d1`),
    ok('mkdir', `${d}/full`), ...file(`${d}/full/y`),
    err('ENOTEMPTY', 'rename', `${d}/d2`, { to: `${d}/full` }),
    err('EINVAL', 'rename', `${d}/full`, { to: `${d}/full/child` }),
    err('ENOENT', 'rename', `${d}/missing`, { to: `${d}/z` }),
    err('ENOENT', 'rename', `${d}/b`, { to: `${d}/nodir/b` }),
    ok('rename', `${d}/b`, { to: `${d}/b` }),
    ok('link', `${d}/b`, { to: `${d}/b2` }),
    ok('rename', `${d}/b`, { to: `${d}/b2` }),
    ok('readdir', d, { check: ['b', 'b2', 'd2', 'empty', 'full'] }),
    ok('rename', `${d}/full/y`, { to: `${d}/y` }),
    ok('rename', `${d}/y`, { to: `${d}/empty/y` }),
    ok('readFile', `${d}/empty/y`, { check: 'data' }),
  ],

  mkdirRmdir: d => [
    ok('mkdir', `${d}/m`, { mode: '0750' }),
    ok('stat', `${d}/m`, { check: { type: 'dir', mode: '0750', nlink: 2 } }),
    err('EEXIST', 'mkdir', `${d}/m`),
    err('ENOENT', 'mkdir', `${d}/x/y`),
    ...file(`${d}/f`),
    err('EEXIST', 'mkdir', `${d}/f`),
    err('ENOTDIR', 'mkdir', `${d}/f/y`),
    ...file(`${d}/m/z`),
    err('ENOTEMPTY', 'rmdir', `${d}/m`),
    err('ENOTDIR', 'rmdir', `${d}/f`),
    ok('unlink', `${d}/m/z`),
    ok('rmdir', `${d}/m`),
    err('ENOENT', 'rmdir', `${d}/m`),
    ok('umask', '', { mask: '0' }),
    ok('mkdir', `${d}/m777`, { mode: '0777' }),
    ok('stat', `${d}/m777`, { check: { mode: '0777' } }),
    ok('umask', '', { mask: '022' }),
    ok('mkdir', `${d}/sticky`, { mode: '01777' }),
    ok('stat', `${d}/sticky`, { check: { mode: '01755' } }),
  ],

  symlink: d => [
    ...file(`${d}/t`, 'T'),
    ok('symlink', `${d}/l`, { target: 't' }),
    ok('readlink', `${d}/l`, { check: 't' }),
    ok('lstat', `${d}/l`, { check: { type: 'symlink', size: 1 } }),
    ok('stat', `${d}/l`, { check: { type: 'file' } }),
    ok('readFile', `${d}/l`, { check: 'T' }),
    ok('symlink', `${d}/dang`, { target: 'nowhere' }),
    ok('readlink', `${d}/dang`, { check: 'nowhere' }),
    ok('lstat', `${d}/dang`, { check: { type: 'symlink', size: 7 } }),
    err('ENOENT', 'stat', `${d}/dang`),
    err('ENOENT', 'readFile', `${d}/dang`),
    err('EEXIST', 'symlink', `${d}/l`, { target: 'x' }),
    err('EINVAL', 'readlink', `${d}/t`),
    err('ENOENT', 'readlink', `${d}/missing`),
    ok('symlink', `${d}/long`, { target: 'a/'.repeat(1000) + 'b' }),
    ok('readlink', `${d}/long`),
    ok('symlink', `${d}/abs`, { target: '/nonexistent/x' }),
    ok('readlink', `${d}/abs`, { check: '/nonexistent/x' }),
    ok('symlink', `${d}/loop`, { target: 'loop' }),
    err('ELOOP', 'stat', `${d}/loop`),
    ok('writeFile', `${d}/dang`, { data: 'N' }),
    ok('readFile', `${d}/nowhere`, { check: 'N' }),
    ok('symlink', `${d}/dirlink`, { target: '.' }),
    ok('readdir', `${d}/dirlink`),
  ],

  link: d => [
    ...file(`${d}/a`, 'x'),
    ok('link', `${d}/a`, { to: `${d}/b` }),
    ok('stat', `${d}/b`, { check: { nlink: 2 } }),
    err('EEXIST', 'link', `${d}/a`, { to: `${d}/b` }),
    ok('mkdir', `${d}/s`),
    err('EPERM', 'link', `${d}/s`, { to: `${d}/s2` }),
    err('ENOENT', 'link', `${d}/missing`, { to: `${d}/c` }),
    ok('writeFile', `${d}/b`, { data: 'via b' }),
    ok('readFile', `${d}/b`, { check: 'via b' }),
    ok('link', `${d}/a`, { to: `${d}/s/c` }),
    ok('stat', `${d}/s/c`, { check: { nlink: 3 } }),
    ok('unlink', `${d}/a`),
    ok('unlink', `${d}/s/c`),
    ok('symlink', `${d}/l`, { target: 'b' }),
    ok('link', `${d}/l`, { to: `${d}/l2` }),
    ok('lstat', `${d}/l2`, { check: { type: 'symlink', nlink: 2 } }),
  ],

  chmod: (d, who) => [
    ...file(`${d}/f`),
    ok('chmod', `${d}/f`, { mode: '0600' }), ok('stat', `${d}/f`, { check: { mode: '0600' } }),
    ok('chmod', `${d}/f`, { mode: '02755' }), ok('stat', `${d}/f`, { check: { mode: '02755' } }),
    ok('chmod', `${d}/f`, { mode: '04755' }), ok('stat', `${d}/f`, { check: { mode: '04755' } }),
    ok('chmod', `${d}/f`, { mode: '07777' }), ok('stat', `${d}/f`, { check: { mode: '07777' } }),
    ok('chmod', `${d}/f`, { mode: '0' }), ok('stat', `${d}/f`, { check: { mode: '0' } }),
    ok('mkdir', `${d}/s`),
    ok('chmod', `${d}/s`, { mode: '01777' }), ok('stat', `${d}/s`, { check: { mode: '01777' } }),
    ok('chmod', `${d}/s`, { mode: '02755' }), ok('stat', `${d}/s`, { check: { mode: '02755' } }),
    ok('symlink', `${d}/l`, { target: 'f' }),
    ok('chmod', `${d}/l`, { mode: '0640' }), ok('stat', `${d}/f`, { check: { mode: '0640' } }),
    err('ENOENT', 'chmod', `${d}/missing`, { mode: '0644' }),
    S('chmod', 'ro.txt', { mode: '0644' }, who === 'root' ? 'ok' : 'EPERM'),
    S('chmod', 'pub/shared.txt', { mode: '0666' }, who === 'root' ? 'ok' : 'EPERM'),
  ],

  chown: (d, who) => who === 'root'
    ? [
        ...file(`${d}/f`),
        ok('chown', `${d}/f`, { uid: 1234, gid: 5678 }),
        ok('stat', `${d}/f`, { check: { uid: 1234, gid: 5678 } }),
        ok('chown', `${d}/f`, { uid: -1, gid: 42 }),
        ok('stat', `${d}/f`, { check: { uid: 1234, gid: 42 } }),
        ok('chmod', `${d}/f`, { mode: '06755' }),
        ok('chown', `${d}/f`, { uid: 1000, gid: 1000 }),
        ok('stat', `${d}/f`, { check: { uid: 1000, gid: 1000, mode: '0755' } }),
        ok('symlink', `${d}/l`, { target: 'f' }),
        ok('lchown', `${d}/l`, { uid: 7, gid: 8 }),
        ok('lstat', `${d}/l`, { check: { uid: 7, gid: 8 } }),
        ok('stat', `${d}/l`, { check: { uid: 1000, gid: 1000 } }),
        ok('chown', `${d}/l`, { uid: 9, gid: 9 }),
        ok('stat', `${d}/f`, { check: { uid: 9, gid: 9 } }),
        ok('lstat', `${d}/l`, { check: { uid: 7, gid: 8 } }),
        ok('mkdir', `${d}/s`), ok('chown', `${d}/s`, { uid: NOBODY, gid: NOBODY }),
        ok('stat', `${d}/s`, { check: { uid: NOBODY, gid: NOBODY } }),
        err('ENOENT', 'chown', `${d}/missing`, { uid: 1, gid: 1 }),
      ]
    : [
        ...file(`${d}/f`),
        err('EPERM', 'chown', `${d}/f`, { uid: 0, gid: 0 }),
        ok('chown', `${d}/f`, { uid: NOBODY, gid: NOBODY }),
        err('EPERM', 'chown', `${d}/f`, { uid: -1, gid: 0 }),
        ok('symlink', `${d}/l`, { target: 'f' }),
        err('EPERM', 'lchown', `${d}/l`, { uid: 1, gid: 1 }),
        err('EPERM', 'chown', 'ro.txt', { uid: NOBODY, gid: NOBODY }),
        err('EPERM', 'chown', 'pub/shared.txt', { uid: NOBODY, gid: -1 }),
        ok('stat', `${d}/f`, { check: { uid: NOBODY, gid: NOBODY } }),
      ],

  utimens: (d, who) => [
    ...file(`${d}/f`),
    py('utime', `${d}/f`, { atime: T1, mtime: T2 }),
    ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: T1, mtimeNs: T2 } }),
    ok('touch', `${d}/f`, { args: TOUCH1 }),
    ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: T1, mtimeNs: T1 } }),
    // -m: atime is UTIME_OMIT; -a: mtime is.
    ok('touch', `${d}/f`, { args: ['-m', '-d', '2002-03-04 05:06:07.000000001'] }),
    ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: T1, mtimeNs: '1015218367000000001' } }),
    ok('touch', `${d}/f`, { args: ['-a', '-d', '2003-04-05 06:07:08.999999999'] }),
    ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: '1049522828999999999', mtimeNs: '1015218367000000001' } }),
    // UTIME_NOW
    ok('touch', `${d}/f`),
    ok('stat', `${d}/f`, { times: 'recent', check: { atimeRecent: true, mtimeRecent: true } }),
    ok('touch', `${d}/f`, { args: ['-m', '-d', '2002-03-04 05:06:07.5'] }),
    ok('touch', `${d}/f`, { args: ['-a'] }),
    ok('stat', `${d}/f`, { times: 'recent', check: { atimeRecent: true, mtimeRecent: false } }),
    // Before 1970 and after 2106 (past 32 bits of seconds).
    py('utime', `${d}/f`, { atime: '-1500000000', mtime: '7258118400000000007' }),
    ok('stat', `${d}/f`, { times: 'exact', check: { atimeNs: '-1500000000', mtimeNs: '7258118400000000007' } }),
    ok('symlink', `${d}/l`, { target: 'f' }),
    ok('touch', `${d}/l`, { args: ['-h', ...TOUCH1] }),
    ok('lstat', `${d}/l`, { times: 'exact', check: { mtimeNs: T1 } }),
    ok('stat', `${d}/l`, { times: 'exact', check: { mtimeNs: '7258118400000000007' } }),
    ok('mkdir', `${d}/s`),
    py('utime', `${d}/s`, { atime: T2, mtime: T1 }),
    ok('stat', `${d}/s`, { times: 'exact', check: { atimeNs: T2, mtimeNs: T1 } }),
    ok('touch', `${d}/new`),
    ok('stat', `${d}/new`, { times: 'recent', check: { size: 0, mtimeRecent: true } }),
    ok('touch', `${d}/nocreate`, { args: ['-c'] }),
    err('ENOENT', 'stat', `${d}/nocreate`),
    // Not the owner: UTIME_NOW needs write access, explicit times need ownership.
    ok('touch', 'pub/shared.txt'),
    S('touch', 'pub/shared.txt', { args: TOUCH1 }, who === 'root' ? 'ok' : 'EPERM'),
    S('py', 'pub/shared.txt', { call: 'utime', atime: T1, mtime: T1 }, who === 'root' ? 'ok' : 'EPERM'),
    S('touch', 'ro.txt', {}, who === 'root' ? 'ok' : 'EACCES'),
    // touch reports the failed open (EACCES) before the utimensat it tries next.
    S('touch', 'ro.txt', { args: TOUCH1 }, who === 'root' ? 'ok' : 'EACCES'),
    S('py', 'ro.txt', { call: 'utime', atime: T1, mtime: T1 }, who === 'root' ? 'ok' : 'EPERM'),
  ],

  mknod: (d, who) => [
    ok('mkfifo', `${d}/p`, { mode: '0640' }),
    ok('lstat', `${d}/p`, { check: { type: 'fifo', mode: '0640', size: 0 } }),
    err('EEXIST', 'mkfifo', `${d}/p`),
    py('mknod', `${d}/p2`, { kind: 'fifo', mode: '0600' }),
    ok('stat', `${d}/p2`, { check: { type: 'fifo', mode: '0600' } }),
    py('mknod', `${d}/r`, { kind: 'reg', mode: '0640' }),
    ok('stat', `${d}/r`, { check: { type: 'file', mode: '0640' } }),
    py('mknod', `${d}/null`, { kind: 'chr', mode: '0600', major: 1, minor: 3 }, who === 'root' ? 'ok' : 'EPERM'),
    S('stat', `${d}/null`, {}, who === 'root' ? 'ok' : 'ENOENT'),
    err('EEXIST', 'mkfifo', `${d}/r`),
    err('ENOENT', 'mkfifo', `${d}/missing/p`),
    ok('readdir', d),
  ],

  xattr: (d, who) => [
    ...file(`${d}/f`),
    py('setxattr', `${d}/f`, { name: 'user.a', value: 'v1' }),
    py('getxattr', `${d}/f`, { name: 'user.a', check: 'v1' }),
    py('setxattr', `${d}/f`, { name: 'user.a', value: 'v2', flags: 'create' }, 'EEXIST'),
    py('setxattr', `${d}/f`, { name: 'user.b', value: 'x', flags: 'replace' }, 'ENODATA'),
    py('setxattr', `${d}/f`, { name: 'user.a', value: 'v2', flags: 'replace' }),
    py('getxattr', `${d}/f`, { name: 'user.a', check: 'v2' }),
    py('setxattr', `${d}/f`, { name: 'user.empty', value: '' }),
    py('getxattr', `${d}/f`, { name: 'user.empty', check: '' }),
    py('setxattr', `${d}/f`, { name: 'user.big', value: 'b'.repeat(3000) }),
    py('getxattr', `${d}/f`, { name: 'user.big' }),
    py('setxattr', `${d}/f`, { name: 'user.bin', value: '\u0000\u00ff\u0001' }),
    py('getxattr', `${d}/f`, { name: 'user.bin', check: '\u0000\u00ff\u0001' }),
    py('listxattr', `${d}/f`, { check: ['user.a', 'user.big', 'user.bin', 'user.empty'] }),
    py('getxattr', `${d}/f`, { name: 'user.missing' }, 'ENODATA'),
    py('removexattr', `${d}/f`, { name: 'user.a' }),
    py('removexattr', `${d}/f`, { name: 'user.a' }, 'ENODATA'),
    py('listxattr', `${d}/f`),
    py('setxattr', `${d}/f`, { name: 'bogus.ns', value: 'x' }, 'ENOTSUP'),
    py('getxattr', `${d}/missing`, { name: 'user.a' }, 'ENOENT'),
    ok('mkdir', `${d}/s`),
    py('setxattr', `${d}/s`, { name: 'user.d', value: 'dir' }),
    py('getxattr', `${d}/s`, { name: 'user.d', check: 'dir' }),
    py('listxattr', `${d}/s`, { check: ['user.d'] }),
    ok('symlink', `${d}/l`, { target: 'f' }),
    py('listxattr', `${d}/l`, { nofollow: true, check: [] }),
    py('setxattr', `${d}/l`, { name: 'user.x', value: 'x', nofollow: true }, 'EPERM'),
    py('getxattr', `${d}/l`, { name: 'user.empty', check: '' }),
    py('setxattr', `${d}/f`, { name: 'trusted.t', value: 'x' }, who === 'root' ? 'ok' : 'EPERM'),
    // Not the owner: user.* needs write access, trusted.* stays hidden from non-root.
    py('getxattr', 'pub/shared.txt', { name: 'user.shared', check: 'u' }),
    py('listxattr', 'pub/shared.txt'),
    py('getxattr', 'pub/shared.txt', { name: 'trusted.secret' }, who === 'root' ? 'ok' : 'ENODATA'),
    py('setxattr', 'pub/shared.txt', { name: 'user.other', value: 'o' }),
    py('setxattr', 'ro.txt', { name: 'user.no', value: 'x' }, who === 'root' ? 'ok' : 'EACCES'),
    py('removexattr', 'pub/shared.txt', { name: 'user.other' }),
  ],
}

/** Only for the unprivileged user: what it must not be able to do to root's files. */
const DENIED: Step[] = [
  ok('readFile', 'ro.txt', { check: 'root data' }),
  err('EACCES', 'writeFile', 'ro.txt', { data: 'x' }),
  err('EACCES', 'writeFile', 'pub/ro.txt', { data: 'x' }),
  err('EACCES', 'open', 'ro.txt', { flags: 'r+', fd: 'x' }),
  err('EACCES', 'open', 'ro.txt', { flags: 'a', fd: 'x' }),
  err('EACCES', 'open', 'ro.txt', { flags: ['O_RDONLY', 'O_TRUNC'], fd: 'x' }),
  err('EACCES', 'truncate', 'ro.txt', { len: 0 }),
  err('EPERM', 'chmod', 'ro.txt', { mode: '0666' }),
  err('EACCES', 'unlink', 'ro.txt'),
  err('EACCES', 'rename', 'ro.txt', { to: 'pub/stolen' }),
  ok('rename', 'pub/ro.txt', { to: 'pub/ro2.txt' }),
  ok('rename', 'pub/ro2.txt', { to: 'pub/ro.txt' }),
  err('EACCES', 'writeFile', 'rodir/new', { data: 'x' }),
  err('EACCES', 'mkdir', 'rodir/new'),
  err('EACCES', 'symlink', 'rodir/l', { target: 'f' }),
  err('EACCES', 'link', 'pub/shared.txt', { to: 'rodir/l' }),
  err('EACCES', 'unlink', 'rodir/f'),
  err('EACCES', 'mkfifo', 'rodir/p'),
  err('EACCES', 'stat', 'private/f'),
  err('EACCES', 'readdir', 'private'),
  err('EACCES', 'access', 'private', { mode: 'X' }),
  ok('stat', 'private', { check: { mode: '0700', uid: 0 } }),
  err('EPERM', 'unlink', 'sticky/rootfile'),
  err('EPERM', 'rename', 'sticky/rootfile', { to: 'sticky/other' }),
  ok('writeFile', 'sticky/rootfile', { data: 'w', flag: 'r+' }),
  ok('writeFile', 'sticky/mine', { data: 'm' }),
  ok('stat', 'sticky/mine', { check: { uid: NOBODY, gid: NOBODY } }),
  ok('unlink', 'sticky/mine'),
  // O_CREAT on an existing file of someone else: no new owner.
  ok('open', 'pub/shared.txt', { flags: ['O_WRONLY', 'O_CREAT'], mode: '0600', fd: 's' }),
  ok('close', '', { fd: 's' }),
  ok('stat', 'pub/shared.txt', { check: { uid: 0, gid: 0, mode: '0666' } }),
]

/** Setgid directories hand their group to what anyone makes inside (root's group 0 too). */
const SETGID: Group = (_d, who) => {
  const me = who === 'root' ? 0 : NOBODY
  return ['sgid', 'sgid0'].flatMap(g => {
    const gid = g === 'sgid' ? 100 : 0
    return [
      ...file(`${g}/f-${who}`),
      ok('stat', `${g}/f-${who}`, { check: { uid: me, gid }}),
      ok('mkdir', `${g}/d-${who}`),
      ok('stat', `${g}/d-${who}`, { check: { uid: me, gid, mode: '02755' }}),
      ok('mkfifo', `${g}/p-${who}`),
      ok('stat', `${g}/p-${who}`, { check: { uid: me, gid }}),
      ok('symlink', `${g}/l-${who}`, { target: 'f' }),
      ok('lstat', `${g}/l-${who}`, { check: { uid: me, gid }}),
    ]
  })
}

// Twice: as a plain passthrough (no call reaches JS), and replicating to a file:// replica in
// sync mode (every change goes through the JS op table and the hook before it answers).
for (const replicated of [false, true]) t.test(`posix parity: mount vs native directory${replicated ? ', replicating' : ''}`, async t => {
  const extra: string[] = []
  if (replicated) {
    const rdir = mkdtempSync(join(tmpdir(), 'replicafs-parity-replica-'))
    t.teardown(() => rmSync(rdir, { recursive: true, force: true }))
    mkdirSync(join(rdir, 'replica'))
    extra.push('--replica', `file://${join(rdir, 'replica')}`, '--state-dir', join(rdir, 'state'))
  }
  const f = await mountFixture(['--allow-other', ...extra])
  t.teardown(() => f.teardown())
  // The unprivileged user must be able to reach both sides.
  chmodSync(f.dir, 0o755)
  mkdirSync(join(f.dir, 'native'), { mode: 0o755 })

  await t.test('setup as root', async t => parity(t, f, SETUP, 'root'))

  for (const who of ['root', 'user'] as const) {
    await t.test(`as ${who}`, async t => {
      const home = who === 'root' ? 'root' : 'pub'
      for (const [name, group] of Object.entries(GROUPS)) {
        await t.test(name, async t => {
          const d = `${home}/${name}`
          await parity(t, f, [ok('mkdir', d), ...group(d, who)], who)
        })
      }
      await t.test('setgid directories', async t => parity(t, f, SETGID('', who), who))
      if (who === 'user') await t.test('root-owned files', async t => parity(t, f, DENIED, who))
    })
  }
})
