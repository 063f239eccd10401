/*
 * The journal records the C layer appends in async mode (native-deps/src/journal.c), on paths
 * no syscall takes: libfuse hands fd-based calls (write, release) the path it built, which a
 * rename of a parent can make longer than PATH_MAX.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { parseJournal } from '../../src/replication/journal'
import { replicaDirs } from '../helpers/mount'

t.test('async mode: a write through a descriptor whose path outgrew PATH_MAX is journaled whole', async t => {
  const f = replicaDirs(t, 'longpath')
  // Names of 255 bytes that JSON must escape 6 for 1 (\u0001): the record's header is sized
  // from the path, not from a cap.
  const name = (c: string) => '\u0001'.repeat(250) + c.repeat(5)
  const daemon = await f.start(['mount', f.source, f.mnt, '--replica', `file://${f.replica}`, '--mode', 'async', '--state-dir', f.state, '--no-reconcile'])
  // 16 levels (top and 15 of 256 bytes): a path of about 3.9 KB, under PATH_MAX.
  let dir = join(f.mnt, 'top')
  mkdirSync(dir)
  for (let i = 0; i < 15; i++) {
    dir = join(dir, name(String.fromCharCode(97 + i)))
    mkdirSync(dir)
  }
  const fd = openSync(join(dir, 'f'), 'w')
  try {
    writeSync(fd, 'before ')
    // The top directory moves under a 255-byte name: the open file's path is now over 4 KB.
    mkdirSync(join(f.mnt, name('z')))
    renameSync(join(f.mnt, 'top'), join(f.mnt, name('z'), 'top'))
    writeSync(fd, 'after')
  } finally {
    closeSync(fd)
  }
  t.equal(daemon.child.exitCode, null, 'the daemon is still up')
  // Trees deeper than PATH_MAX: rm -rf (openat all the way down) removes them, where the
  // teardown's rmSync cannot; the daemon is stopped first (it unmounts).
  t.teardown(async () => {
    await f.stop()
    execFileSync('rm', ['-rf', '--', f.source, f.replica])
  })
  const { records } = parseJournal(readFileSync(join(f.state, 'journal.log')))
  const writeRecords = records.filter(r => r.m.op === 'write')
  const writes = writeRecords.map(r => r.m)
  const last = writes.at(-1)
  t.equal(writes.length, 2, 'both writes are in the journal')
  const long = last?.op === 'write' && last.path !== null ? last.path : ''
  t.ok(long.length > 4096, `the second one names the path libfuse gave (${long.length} bytes)`)
  t.ok(long.startsWith(`/${name('z')}/top/`) && long.endsWith('/f'), 'byte for byte')
  t.ok(last?.op === 'write' && last.offset === 7 && writeRecords.at(-1)?.src === 5, 'with its offset and length (its bytes stay in the source)')
})
