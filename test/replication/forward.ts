import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fillFromSource, namesAfter } from '../../src/replication/forward'
import type { JournalRecord } from '../../src/replication/journal'
import type { Mutation } from '../../src/replication/mutation'

const ids = { uid: 0, gid: 0 }
/** A write as the mount journals it in async mode: no bytes, `len` of them in the source. */
const write = (seq: number, path: string, offset: number, len: number): JournalRecord =>
  ({ seq, m: { op: 'write', path, fh: 3, offset, data: Buffer.alloc(0), ...ids }, src: len })
const rec = (seq: number, m: Mutation): JournalRecord => ({ seq, m })
const rename = (seq: number, from: string, path: string) => rec(seq, { op: 'rename', from, path, ...ids })
const data = (r: JournalRecord | undefined) => r?.m.op === 'write' ? r.m.data.toString() : null

function source (t: { teardown (fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'replicafs-forward-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

t.test('a write\'s bytes are read where its file is named at the end of the journal', async t => {
  const root = source(t)
  mkdirSync(join(root, 'e'))
  writeFileSync(join(root, 'e', 'f'), 'hello world')
  writeFileSync(join(root, 'y'), 'linked')
  writeFileSync(join(root, 'p'), 'the other file')
  writeFileSync(join(root, 'short'), 'abc')
  symlinkSync('/etc/hostname', join(root, 'now-a-link'))
  const records = [
    write(1, '/d/f', 6, 5),
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
  ]
  await fillFromSource(records, Buffer.from(root).toString('latin1'), 0)
  t.equal(data(records[0]), 'world', 'through the rename of a directory above it')
  t.equal(data(records[2]), 'linked', 'through a hard link, its first name removed')
  t.equal(data(records[5]), '', 'a name another file was renamed over: none')
  t.equal(data(records[7]), 'bc', 'a file shorter now: what is left')
  t.equal(data(records[8]), '', 'a file removed: none')
  t.equal(data(records[10]), '', 'a name that is a symlink now is not followed')
  t.equal(data(records[11]), 'hello', 'a path no later change moved')
})

t.test('only the writes past `after` are read; writes with their bytes are left alone', async t => {
  const root = source(t)
  writeFileSync(join(root, 'a'), 'abcdef')
  const old = write(1, '/a', 0, 3)
  const mine = rec(2, { op: 'write', path: '/a', fh: 3, offset: 0, data: Buffer.from('JS!'), ...ids })
  const late = write(3, '/a', 3, 3)
  await fillFromSource([old, mine, late], Buffer.from(root).toString('latin1'), 1)
  t.same([data(old), data(mine), data(late)], ['', 'JS!', 'def'])
})

t.test('a write whose file had names that the records do not show, all of those it knew gone: lost', async t => {
  const root = source(t)
  writeFileSync(join(root, 'h'), 'another file')
  const linked = { ...write(1, '/h', 0, 4), links: 2 }
  t.same(await fillFromSource([linked, rename(2, '/q', '/h')], Buffer.from(root).toString('latin1'), 0), { lost: true })
  t.equal(data(linked), '', 'no bytes read from the file that took its name')
  t.same(await fillFromSource([write(1, '/h', 0, 4), rename(2, '/q', '/h')], Buffer.from(root).toString('latin1'), 0), { lost: false }, 'one name: gone with it')
  t.same(await fillFromSource([{ ...write(1, '/h', 0, 4), links: 2 }], Buffer.from(root).toString('latin1'), 0), { lost: false }, 'a name still there: read')
})

t.test('namesAfter: a rename carries the names below it, not names that merely share a prefix', async t => {
  const records = [rename(1, '/a', '/b'), rename(2, '/b/c', '/z')]
  t.same(namesAfter(records, [0, 1], 0, '/a/c/d'), ['/z/d'])
  t.same(namesAfter(records, [0, 1], 0, '/ab'), ['/ab'])
  t.same(namesAfter(records, [0, 1], 1, '/b/c'), ['/z'], 'from a later move on')
  t.same(namesAfter([rec(1, { op: 'link', from: '/a', path: '/b', ...ids }), rec(2, { op: 'link', from: '/a', path: '/b', ...ids })], [0, 1], 0, '/a'), ['/a', '/b'], 'a link named once')
})
