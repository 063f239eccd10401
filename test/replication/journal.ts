import t from 'tap'
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../src/log'
import { Journal, parseJournal } from '../../src/replication/journal'
import type { Mutation } from '../../src/replication/mutation'

const write = (path: string, offset: number, text: string): Mutation =>
  ({ op: 'write', path, fh: 7, offset, data: Buffer.from(text), uid: 0, gid: 0 })

function dir (t: { teardown (fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'replicafs-journal-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

t.test('records come back in order, data and all, across a reopen', async t => {
  const d = dir(t)
  const { journal } = await Journal.open(d, silentLogger)
  await journal.append(1, { op: 'mkdir', path: '/é\xff', mode: 0o755, uid: 1, gid: 2 })
  await Promise.all([journal.append(2, write('/a', 0, 'hello')), journal.append(3, write('/a', 5, ' world'))])
  journal.setCursor('file:///r', 2)
  await journal.close()
  const again = await Journal.open(d, silentLogger)
  t.same(again.records.map(r => r.seq), [1, 2, 3])
  t.same(again.records[0]?.m, { op: 'mkdir', path: '/é\xff', mode: 0o755, uid: 1, gid: 2 }, 'byte-string paths survive')
  const w = again.records[2]?.m
  t.equal(w?.op === 'write' && w.data.toString(), ' world')
  t.same(again.cursors, { 'file:///r': 2 })
  await again.journal.close()
})

t.test('a torn tail is dropped and truncated; a corrupt record ends the journal', async t => {
  const d = dir(t)
  const { journal } = await Journal.open(d, silentLogger)
  await journal.append(1, write('/a', 0, 'one'))
  await journal.append(2, write('/a', 3, 'two'))
  await journal.close()
  const file = join(d, 'journal.log')
  const whole = readFileSync(file)
  // A kill in the middle of an append: half of a third record.
  appendFileSync(file, whole.subarray(0, 20))
  const torn = await Journal.open(d, silentLogger)
  t.same(torn.records.map(r => r.seq), [1, 2], 'the half record is ignored')
  t.equal(statSync(file).size, whole.length, 'and cut off')
  await torn.journal.close()

  // A flipped byte in the second record: its checksum fails, it and what follows are dropped.
  const flipped = Buffer.from(whole)
  flipped[flipped.length - 2] = (flipped[flipped.length - 2] as number) ^ 0xff
  writeFileSync(file, flipped)
  t.same(parseJournal(flipped).records.map(r => r.seq), [1])
})

t.test('reset empties the journal; later appends follow', async t => {
  const d = dir(t)
  const { journal } = await Journal.open(d, silentLogger)
  await journal.append(1, write('/a', 0, 'x'))
  const appended = journal.append(2, write('/a', 1, 'y'))
  await journal.reset(2)
  await appended
  await journal.append(3, write('/a', 2, 'z'))
  await journal.sync()
  await journal.close()
  const { records, journal: j } = await Journal.open(d, silentLogger)
  t.ok(records.every(r => r.seq >= 2), 'what was there at the reset is gone')
  t.ok(records.some(r => r.seq === 3), 'what came after is kept')
  await j.close()
})

t.test('sealed files: the journal rolls over, reads back whole, and drops what no one needs', async t => {
  const d = dir(t)
  const files = () => readdirSync(d).filter(n => n.startsWith('journal')).sort()
  const { journal } = await Journal.open(d, silentLogger, 1000)
  for (let seq = 1; seq <= 12; seq++) await journal.append(seq, write('/a', seq * 300, 'x'.repeat(300)))
  t.ok(files().length >= 3, `it rolled over into sealed files (${files().join(' ')})`)
  const total = files().reduce((n, f) => n + statSync(join(d, f)).size, 0)
  t.equal(journal.size, total, 'size counts every file')
  await journal.close()

  const again = await Journal.open(d, silentLogger, 1000)
  t.same(again.records.map(r => r.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'every record, oldest first, across the files')
  // Each sealed file is named by the last seq it holds: those at or before 6 can go.
  const sealed = files().filter(f => f !== 'journal.log').map(f => Number(/journal-(\d+)/.exec(f)?.[1]))
  await again.journal.dropThrough(6)
  const left = files().filter(f => f !== 'journal.log').map(f => Number(/journal-(\d+)/.exec(f)?.[1]))
  t.same(left, sealed.filter(n => n > 6), 'the sealed files that end at or before seq 6 are deleted, no other')
  t.ok(again.journal.size < total, 'and no longer counted')
  await again.journal.close()
  const after = await Journal.open(d, silentLogger, 1000)
  t.ok(after.records.every(r => r.seq > Math.max(...sealed.filter(n => n <= 6))), 'what they held is gone')
  t.ok(after.records.some(r => r.seq === 12), 'the rest is kept')
  await after.journal.reset(12)
  t.same(files(), ['journal.log'], 'reset deletes the sealed files too')
  await after.journal.close()
})
