import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fillFromSource } from '../../src/replication/forward'
import type { JournalRecord } from '../../src/replication/journal'
import type { Mutation } from '../../src/replication/mutation'

const ids = { uid: 0, gid: 0 }
/** A write as the mount journals it in async mode: no bytes, `len` of them in the source. */
const write = (seq: number, path: string | null, offset: number, len: number, links?: number): JournalRecord => {
  const r: JournalRecord = { seq, m: { op: 'write', path, fh: 3, offset, data: Buffer.alloc(0), ...ids }, src: len }
  if (links !== undefined) r.links = links
  return r
}
const rec = (seq: number, m: Mutation): JournalRecord => ({ seq, m })
const rename = (seq: number, from: string, path: string) => rec(seq, { op: 'rename', from, path, ...ids })
const data = (r: JournalRecord | undefined) => r?.m.op === 'write' ? r.m.data.toString() : null

function source (t: { teardown (fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'replicafs-forward-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}
const latin1 = (p: string) => Buffer.from(p).toString('latin1')

t.test('a write\'s bytes are read where its file is named at the end of the journal', async t => {
  const root = source(t)
  mkdirSync(join(root, 'e'))
  writeFileSync(join(root, 'e', 'f'), 'hello world')
  writeFileSync(join(root, 'y'), 'linked')
  writeFileSync(join(root, 'p'), 'the other file')
  writeFileSync(join(root, 'short'), 'abc')
  writeFileSync(join(root, 'ab'), 'not moved')
  symlinkSync('/etc/hostname', join(root, 'now-a-link'))
  execFileSync('mkfifo', [join(root, 'now-a-fifo')])
  const records = [
    write(1, '/d/f', 6, 5, 1),
    rename(2, '/d', '/e'),
    write(3, '/x', 0, 6),
    rec(4, { op: 'link', from: '/x', path: '/y', ...ids }),
    rec(5, { op: 'unlink', path: '/x', ...ids }),
    write(6, '/p', 0, 4),
    rename(7, '/q', '/p'),
    write(8, '/short', 1, 10),
    write(9, '/gone', 0, 3),
    rec(10, { op: 'unlink', path: '/gone', ...ids }),
    write(11, '/now-a-link', 0, 4),
    write(12, '/e/f', 0, 5),
    write(13, '/ab', 0, 3),
    rename(14, '/a', '/z'),
    write(15, '/now-a-fifo', 0, 4),
  ]
  t.same(await fillFromSource(records, latin1(root), 0), { lostSeq: 0 }, 'none lost')
  t.equal(data(records[0]), 'world', 'through the rename of a directory above it')
  t.equal(data(records[2]), 'linked', 'through a hard link, its first name removed')
  t.equal(data(records[5]), '', 'a name another file was renamed over: none')
  t.equal(data(records[7]), 'bc', 'a file shorter now: what is left')
  t.equal(data(records[8]), '', 'a file removed: none')
  t.equal(data(records[10]), '', 'a name that is a symlink now is not followed')
  t.equal(data(records[11]), 'hello', 'a path no later change moved')
  t.equal(data(records[12]), 'not', 'a rename of /a does not move /ab')
  t.equal(data(records[14]), '', 'a name that is a fifo now is not read (nor waited on)')
})

t.test('a name written, moved away, then made again names two files', async t => {
  const root = source(t)
  writeFileSync(join(root, 'a'), 'second')
  writeFileSync(join(root, 'b'), 'first!')
  const records = [
    write(1, '/a', 0, 6),
    rename(2, '/a', '/b'),
    rec(3, { op: 'create', path: '/a', mode: 0o100644, flags: 0, fh: 4, ...ids }),
    write(4, '/a', 0, 6),
  ]
  await fillFromSource(records, latin1(root), 0)
  t.same([data(records[0]), data(records[3])], ['first!', 'second'])
})

t.test('only the writes past `after` are read; writes with their bytes are left alone', async t => {
  const root = source(t)
  writeFileSync(join(root, 'a'), 'abcdef')
  const old = write(1, '/a', 0, 3)
  const mine = rec(2, { op: 'write', path: '/a', fh: 3, offset: 0, data: Buffer.from('JS!'), ...ids })
  const late = write(3, '/a', 3, 3)
  await fillFromSource([old, mine, late], latin1(root), 1)
  t.same([data(old), data(mine), data(late)], ['', 'JS!', 'def'])
})

t.test('a write whose file kept only names the records do not show is lost: its seq is returned', async t => {
  const root = source(t)
  writeFileSync(join(root, 'h'), 'another file')
  const linked = write(5, '/h', 0, 4, 2)
  t.same(await fillFromSource([linked, rename(6, '/q', '/h')], latin1(root), 0), { lostSeq: 5 }, 'two names, the one known replaced')
  t.equal(data(linked), '', 'no bytes read from the file that took its name')
  t.same(await fillFromSource([write(5, '/h', 0, 4, 1), rename(6, '/q', '/h')], latin1(root), 0), { lostSeq: 0 }, 'one name: gone with it')
  t.same(await fillFromSource([write(5, '/h', 0, 4, 2)], latin1(root), 0), { lostSeq: 0 }, 'a name still there: read')
  t.same(await fillFromSource([write(7, null, 0, 4, 1)], latin1(root), 0), { lostSeq: 7 }, 'through an unlinked name, the file still named elsewhere')
  t.same(await fillFromSource([write(7, null, 0, 4, 0)], latin1(root), 0), { lostSeq: 0 }, 'through an unlinked name, the file named nowhere')
})

t.test('a name the source will not open (not "not there"): lost', async t => {
  const root = source(t)
  mkdirSync(join(root, 'locked'))
  writeFileSync(join(root, 'locked', 'f'), 'x')
  // ENAMETOOLONG: a name past NAME_MAX, as a rename record could never make it on the source.
  const long = '/' + 'n'.repeat(300)
  t.same(await fillFromSource([write(3, '/locked/f', 0, 1), rename(4, '/locked/f', long)], latin1(root), 0), { lostSeq: 3 })
})
