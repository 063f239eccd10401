import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanupDir, replicaDirs, runCli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'

const CHURN = join(__dirname, 'crash-churn.py')

/**
 * Every node below `root` (dirs' own mtimes excepted: they move with every entry). A replica's
 * file times are set in whole seconds (the source's, cut), and the churn sets none with a
 * fraction: a replica file with one has the replica's own clock, its times never set. Said
 * even where the second happens to match, which it mostly does.
 */
function tree (root: string, replica = false): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (rel: string) => {
    const p = join(root, rel)
    const st = lstatSync(p)
    const mode = (st.mode & 0o7777).toString(8)
    if (st.isDirectory()) {
      out[rel || '.'] = `dir ${mode}`
      // Each tree's own generation mark (fence.ts) differs by design: not compared.
      for (const name of readdirSync(p)) if (rel !== '' || name !== '.replicafs-generation') walk(join(rel, name))
    } else if (st.isSymbolicLink()) {
      out[rel] = `link -> ${readlinkSync(p)}`
    } else {
      const hash = createHash('sha1').update(readFileSync(p)).digest('hex')
      out[rel] = `file ${mode} ${st.size} ${hash} ${Math.floor(st.mtimeMs / 1000)}${replica && st.mtimeMs % 1000 !== 0 ? ' (times never set)' : ''}`
    }
  }
  walk('')
  return out
}

t.test('async mode: SIGKILL at 10 random instants of a churn, restart, converge', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-crash-'))
  const source = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  const replica = join(dir, 'replica')
  for (const d of [source, mnt, replica]) mkdirSync(d)
  // --no-reconcile: convergence must come from the journal and the intents alone.
  const args = ['mount', source, mnt, '--replica', `file://${replica}`, '--mode', 'async', '--state-dir', join(dir, 'state'), '--no-reconcile']
  let daemon: Daemon | null = null
  const churns = new Set<ReturnType<typeof spawn>>()
  t.teardown(async () => {
    for (const c of churns) c.kill('SIGKILL')
    if (daemon !== null) await stopDaemon(daemon)
    cleanupDir(dir, mnt)
  })

  // A seeded PRNG picks the instants, so a failure can be replayed.
  let seed = Number(process.env.REPLICAFS_CRASH_SEED ?? 20261125)
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648

  const logs: string[] = []
  for (let round = 0; round < 10; round++) {
    daemon = await startDaemon(args)
    const churn = spawn('python3', [CHURN, mnt, String(round + 1), '4000'], { stdio: 'ignore' })
    churns.add(churn)
    churn.once('exit', () => churns.delete(churn))
    await new Promise(resolve => setTimeout(resolve, 100 + Math.floor(rand() * 600)))
    daemon.child.kill('SIGKILL')
    await daemon.exited
    logs.push(`--- round ${round}\n${daemon.stderr}`)
    daemon = null
    churn.kill('SIGKILL')
  }

  // A last run with no churn: it replays, resyncs, drains, and exits 0 on SIGTERM.
  daemon = await startDaemon(args)
  t.match(daemon.stderr, /cleaning up the stale mount/, 'the stale mount of the killed run is cleaned')
  await stopDaemon(daemon)
  const { code } = await daemon.exited
  logs.push(`--- last run\n${daemon.stderr}`)
  daemon = null
  t.equal(code, 0, 'clean exit')

  const want = tree(source)
  t.ok(Object.keys(want).length > 10, `the churn left ${Object.keys(want).length} nodes`)
  const same = t.same(tree(replica, true), want, 'the replica equals the source: types, content, modes, mtimes, link targets')
  // A failure leaves every run's log behind, for a replay with the same seed.
  if (!same) t.comment(logs.join('\n'))
  t.same(readdirSync(replica).filter(n => n.startsWith('.replicafs.')), [], 'no temp file left behind')
})

t.test('async mode: a file still open for writing at a SIGKILL, every change to it applied already, is made whole by the restart', async t => {
  let holder: ReturnType<typeof spawn> | null = null
  let holderExited: Promise<unknown> = Promise.resolve()
  // Before the dirs' teardown (which stops the daemon and unmounts): the holder goes first.
  t.teardown(async () => {
    holder?.kill('SIGKILL')
    await holderExited
  })
  const d = replicaDirs(t, 'crash')
  const { source, mnt, replica, state } = d
  const args = ['mount', source, mnt, '--replica', `file://${replica}`, '--mode', 'async', '--state-dir', state, '--no-reconcile']

  let daemon = await d.start(args)
  writeFileSync(join(mnt, 'page.html'), 'old page')
  // Truncated and written, held open: the replica writes it under a temp name, and publishes it
  // at its flush, which does not come before the kill.
  holder = spawn('python3', ['-c', `
import sys, time
f = open(sys.argv[1], 'wb')
f.write(b'new page')
f.flush()
print('written', flush=True)
time.sleep(60)
`, join(mnt, 'page.html')], { stdio: ['ignore', 'pipe', 'ignore'] })
  const h = holder
  holderExited = new Promise(resolve => { h.once('exit', resolve); h.once('error', resolve) })
  await new Promise<void>((resolve, reject) => {
    h.stdout!.once('data', () => resolve())
    h.once('error', reject)
    h.once('exit', code => reject(new Error(`the holder exited (${code}) before it wrote`)))
  })
  // Other changes after it, of long names: the intents log passes 4 KiB and is cut (several
  // times), once nothing is in flight.
  const long = (i: number) => join(mnt, `${String(i).repeat(200)}`)
  writeFileSync(long(1), '1')
  writeFileSync(long(2), '2')
  for (let i = 0; i < 100; i++) chmodSync(long(1 + (i % 2)), i % 4 < 2 ? 0o600 : 0o644)
  t.equal((await runCli(['wait', '--state-dir', state, '--timeout', '20'])).code, 0, 'the replica has applied every change')
  t.equal(readFileSync(join(replica, 'page.html'), 'utf8'), 'old page', 'the replica holds the new bytes aside, unpublished')
  // About 20 KB of intents were logged: the log was cut, and what it holds now names the file.
  const intents = readFileSync(join(state, 'intents.log'))
  t.ok(intents.length < 8192, `the intents log was cut (${intents.length} bytes)`)
  t.ok(intents.includes('/page.html'), 'and names the file still open')
  daemon.child.kill('SIGKILL')
  await daemon.exited
  holder.kill('SIGKILL')
  await holderExited
  holder = null

  // The journal past the cursor holds nothing of the file: the restart must know it was open.
  daemon = await d.start(args)
  await d.stop()
  t.equal((await daemon.exited).code, 0, 'clean exit')
  t.equal(readFileSync(join(source, 'page.html'), 'utf8'), 'new page', 'the source has the new page')
  t.equal(readFileSync(join(replica, 'page.html'), 'utf8'), 'new page', 'so has the replica')
  t.equal(Math.floor(statSync(join(replica, 'page.html')).mtimeMs / 1000), Math.floor(statSync(join(source, 'page.html')).mtimeMs / 1000), 'with the source\'s mtime')
  t.same(readdirSync(replica).filter(n => n.startsWith('.replicafs.')), [], 'no temp file left behind')
})
