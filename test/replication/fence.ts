// Generation marks (fence.ts) on real directories: a source's own, and a file:// replica's.
import t from 'tap'
import { mkdirSync, mkdtempSync, readlinkSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EXIT, UserError } from '../../src/errors'
import { FileReplica } from '../../src/replica/file'
import { ReplicaError } from '../../src/replica/replica'
import { claim, formatMark, masterGeneration, parseMark } from '../../src/replication/fence'

const MARK = '.replicafs-generation'

/** The error `f` throws (null: none). */
function thrown (f: () => unknown): unknown {
  try {
    f()
    return null
  } catch (err) {
    return err
  }
}

function dirs (t: tap.Test): { src: string, rep: string } {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-fence-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const src = join(dir, 'src')
  const rep = join(dir, 'rep')
  mkdirSync(src)
  mkdirSync(rep)
  return { src, rep }
}

t.test('marks parse and print', async t => {
  t.same(parseMark('replicafs:master:12'), { role: 'master', generation: 12 })
  t.same(parseMark('replicafs:replica:3'), { role: 'replica', generation: 3 })
  for (const bad of ['replicafs:master:', 'replicafs:boss:1', 'x', 'replicafs:master:1 ', 'replicafs:master:-1']) t.equal(parseMark(bad), null, `not a mark: ${JSON.stringify(bad)}`)
  t.equal(formatMark({ role: 'replica', generation: 7 }), 'replicafs:replica:7')
})

t.test("a source's generation", async t => {
  const { src } = dirs(t)
  // Whether masterGeneration (not promoted) throws an error that `ok` accepts.
  const refuses = (ok: (err: UserError) => boolean) => {
    const err = thrown(() => masterGeneration(src, false))
    return err instanceof UserError && ok(err)
  }
  t.equal(masterGeneration(src, false), 1, 'an unmarked source starts at 1')
  t.equal(readlinkSync(join(src, MARK)), 'replicafs:master:1', 'and is marked master:1')
  t.equal(masterGeneration(src, false), 1, 'a master stays at its generation')
  t.same(readdirSync(src), [MARK], 'no temporary name is left')
  t.equal(masterGeneration(src, true), 2, '--promote takes it one past')

  rmSync(join(src, MARK))
  symlinkSync('replicafs:replica:5', join(src, MARK))
  t.ok(refuses(err => err.code === EXIT.fenced && /a master of generation 5.*--promote/.test(err.message)), 'a source marked as a replica is refused: exit 4')
  t.equal(masterGeneration(src, true), 6, 'promoted: one past the mark')
  t.equal(readlinkSync(join(src, MARK)), 'replicafs:master:6')

  rmSync(join(src, MARK))
  symlinkSync('something else', join(src, MARK))
  t.ok(refuses(err => err.code === EXIT.usage && /not a replicafs generation mark/.test(err.message)), 'a symlink that is not a mark is not overwritten')
  rmSync(join(src, MARK))
  writeFileSync(join(src, MARK), 'a file')
  t.ok(refuses(err => /not a symlink/.test(err.message)), 'nor is a file of that name')
})

t.test("a replica's claim", async t => {
  const { rep } = dirs(t)
  const r = new FileReplica(`file://${rep}`, rep)
  await r.connect()
  t.teardown(() => r.close())
  const refused = async (generation: number, pattern: RegExp, what: string) => {
    const err = await claim(r, generation).then(() => null, (e: unknown) => e)
    t.ok(err instanceof ReplicaError && err.permanent && pattern.test(err.message), what)
  }
  await claim(r, 3)
  t.equal(readlinkSync(join(rep, MARK)), 'replicafs:replica:3', 'an unmarked replica is claimed')
  await claim(r, 3)
  await claim(r, 4)
  t.equal(readlinkSync(join(rep, MARK)), 'replicafs:replica:4', 'a newer master claims it over an older one')
  t.same(readdirSync(rep), [MARK], 'no temporary name is left')
  await refused(3, /fenced: a master of generation 4 has written to it since this one \(generation 3\)/, 'an older master is fenced off')
  t.equal(readlinkSync(join(rep, MARK)), 'replicafs:replica:4', 'and the mark stands')

  rmSync(join(rep, MARK))
  symlinkSync('replicafs:master:4', join(rep, MARK))
  await refused(4, /fenced: it is the source of a master of generation 4 \(this one: 4\)/, 'a master as new is never written over')
  await claim(r, 5)
  t.equal(readlinkSync(join(rep, MARK)), 'replicafs:replica:5', 'an older master\'s source is claimed by a newer master (failover)')

  rmSync(join(rep, MARK))
  symlinkSync('other', join(rep, MARK))
  await refused(9, /not a replicafs generation mark/, 'a symlink that is not a mark is left alone')
  rmSync(join(rep, MARK))
  writeFileSync(join(rep, MARK), 'a file')
  await refused(9, /not a symlink/, 'and a file of that name')
})
