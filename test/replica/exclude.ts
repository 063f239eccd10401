/**
 * --exclude: excluded paths are served by the mount but never reach a replica; a rename
 * across the boundary brings a file in whole, or takes it out; verify and resync honour the
 * same patterns. Unit checks of the matcher, then a real mount with a file:// replica.
 */
import t from 'tap'
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { Excludes } from '../../src/replication/exclude'
import { replicaDirs, runCli as cli } from '../helpers/mount'

t.test('gitignore-style matching', async t => {
  const ex = new Excludes(['*.part', '/.ftpquota', 'cache/', '!keep.part'])
  t.ok(ex.matches('/upload.part', false), '*.part at the top')
  t.ok(ex.matches('/a/b/upload.part', false), '*.part anywhere')
  t.notOk(ex.matches('/keep.part', false), '! re-includes')
  t.ok(ex.matches('/.ftpquota', false), 'anchored name')
  t.notOk(ex.matches('/sub/.ftpquota', false), 'anchored: not below')
  t.ok(ex.matches('/cache', true), 'a dir pattern matches the dir')
  t.notOk(ex.matches('/cache', false), 'not a file of that name')
  t.ok(ex.matches('/x/cache/y.html', false), 'and what is inside the dir')
  t.notOk(ex.matches('/', true), 'never the root')
  t.notOk(ex.matches('/a/./b', false), 'a path the matcher refuses is not excluded (and does not throw)')
  t.ok(new Excludes(['caf\u00e9*']).matches(Buffer.from('/caf\u00e9.tmp', 'utf8').toString('latin1'), false), 'UTF-8 names match UTF-8 patterns')
})

t.test('excluded paths never reach the replica; verify and resync honour them', async t => {
  const { source: src, mnt, replica: rep, state, start, stop } = replicaDirs(t, 'exclude')
  const ex = ['--exclude', '*.part', '--exclude', 'cache/']
  // Already on the replica, and excluded: left alone by the reconcile.
  writeFileSync(join(rep, 'theirs.part'), 'the replica keeps this')
  await start(['mount', src, mnt, '--replica', `file://${rep}`, '--state-dir', state, ...ex])

  writeFileSync(join(mnt, 'upload.part'), 'half an upload')
  mkdirSync(join(mnt, 'cache'))
  writeFileSync(join(mnt, 'cache', 'page.html'), 'cached')
  writeFileSync(join(mnt, 'page.html'), 'a page')
  t.ok(existsSync(join(src, 'upload.part')) && existsSync(join(src, 'cache', 'page.html')), 'the source has the excluded files')
  t.notOk(existsSync(join(rep, 'upload.part')), 'a *.part file never reaches the replica')
  t.notOk(existsSync(join(rep, 'cache')), 'nor a cache/ dir or what is in it')
  t.equal(readFileSync(join(rep, 'page.html'), 'utf8'), 'a page', 'other files do')

  renameSync(join(mnt, 'upload.part'), join(mnt, 'upload.bin'))
  t.equal(readFileSync(join(rep, 'upload.bin'), 'utf8'), 'half an upload', 'renamed out of the pattern: it appears whole')
  renameSync(join(mnt, 'page.html'), join(mnt, 'cache', 'moved.html'))
  t.notOk(existsSync(join(rep, 'page.html')), 'renamed into an excluded dir: it leaves the replica')
  t.notOk(existsSync(join(rep, 'cache')), 'and the excluded dir is still not there')
  t.equal(readFileSync(join(rep, 'theirs.part'), 'utf8'), 'the replica keeps this', 'an excluded file already on the replica is left alone')

  // An upload renamed into an excluded dir while still open: it leaves the replica at once,
  // its temp copy too, and the descriptor number it frees is reused cleanly.
  writeFileSync(join(mnt, 'other.html'), 'other ')
  const fd = openSync(join(mnt, 'moving.html'), 'w')
  writeSync(fd, 'first half, ')
  renameSync(join(mnt, 'moving.html'), join(mnt, 'cache', 'moving.html'))
  writeSync(fd, 'second half')
  closeSync(fd)
  t.notOk(existsSync(join(rep, 'moving.html')), 'an open file renamed into an excluded dir is not published')
  t.same(readdirSync(rep).filter(n => n.startsWith('.replicafs.')), [], 'and its temp copy is gone')
  for (let i = 0; i < 3; i++) appendFileSync(join(mnt, 'other.html'), `more ${i} `)
  t.equal(readFileSync(join(rep, 'other.html'), 'utf8'), 'other more 0 more 1 more 2 ', 'appends through reused descriptors land where they belong')

  await stop()
  t.equal((await cli(['verify', src, '--replica', `file://${rep}`, ...ex])).code, 0, 'verify with the same excludes: equal')
  const all = await cli(['verify', src, '--replica', `file://${rep}`])
  t.equal(all.code, 1, 'verify without them: differs')
  t.match(all.stdout, /missing \/cache/, 'the excluded dir is missing there')
  const dry = await cli(['resync', src, '--replica', `file://${rep}`, '--dry-run', ...ex])
  t.equal(dry.stdout, '', 'resync with the same excludes finds nothing to do')
})
