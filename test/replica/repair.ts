/**
 * A change one replica refuses (it had diverged) is repaired on that replica alone: the
 * resync of its paths is not run on the replicas that applied the change.
 */
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanupDir, runCli as cli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'

const sleep = (ms: number) => new Promise(res => setTimeout(res, ms))

t.test('a refused rename is resynced on the replica that refused it, not on the others', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-repair-'))
  const [src, mnt, a, b, state] = ['source', 'mnt', 'replica-a', 'replica-b', 'state'].map(n => join(dir, n)) as [string, string, string, string, string]
  let daemon: Daemon | undefined
  t.teardown(async () => {
    if (daemon) await stopDaemon(daemon)
    cleanupDir(dir, mnt)
  })
  for (const d of [src, a, b]) {
    mkdirSync(join(d, 'd'), { recursive: true })
    writeFileSync(join(d, 'd', 'f.txt'), 'f')
  }
  mkdirSync(mnt)
  // A has a non-empty 'e': the rename d -> e fails there (ENOTEMPTY) and is repaired by a
  // resync of d and e. B takes the rename; a resync of e on B would delete B's extra file.
  mkdirSync(join(a, 'e'))
  writeFileSync(join(a, 'e', 'x'), 'in the way')
  writeFileSync(join(b, 'd', 'extra-on-b'), 'only B has it')
  daemon = await startDaemon(['mount', src, mnt, '--replica', `file://${a}`, '--replica', `file://${b}`,
    '--mode', 'async', '--no-reconcile', '--state-dir', state])
  renameSync(join(mnt, 'd'), join(mnt, 'e'))
  // The repair on A: e becomes the source's e.
  const end = Date.now() + 20_000
  while (Date.now() < end && !(existsSync(join(a, 'e', 'f.txt')) && !existsSync(join(a, 'e', 'x')))) await sleep(20)
  t.same(readdirSync(join(a, 'e')), ['f.txt'], "A's e is repaired from the source")
  t.notOk(existsSync(join(a, 'd')), "A's d is gone, as on the source")
  t.match(daemon.stderr, /replica-a: rename failed: .*resyncing that path/, 'the refusal is logged for A')
  // Every change made so far, the repair included, has been applied or passed by.
  t.equal((await cli(['wait', '--state-dir', state, '--timeout', '20'])).code, 0, 'wait: every replica is done')
  t.same(readdirSync(join(b, 'e')).sort(), ['extra-on-b', 'f.txt'], 'B took the rename and was not resynced (its own extra file is still there)')
  t.notMatch(daemon.stderr, /replica-b: .*failed/, 'B refused nothing')
})
