// Generation marks (fence.ts) on real directories: a source's own, and a file:// replica's.
import t from 'tap'
import { mkdirSync, mkdtempSync, readlinkSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EXIT, UserError } from '../../src/errors'
import { FileReplica } from '../../src/replica/file'
import { ReplicaError } from '../../src/replica/replica'
import { claim, fence, formatMark, parseMark } from '../../src/replication/fence'

const MARK = '.replicafs-generation'

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
  const { src, rep } = dirs(t)
  const none: FileReplica[] = []
  t.equal(await fence(src, false, none), 1, 'an unmarked source starts at 1')
  t.equal(readlinkSync(join(src, MARK)), 'replicafs:master:1', 'and is marked master:1')
  t.equal(await fence(src, false, none), 1, 'a master stays at its generation')
  t.same(readdirSync(src), [MARK], 'no temporary name is left')
  t.equal(await fence(src, true, none), 2, '--promote takes it one past')

  // Whether fence (not promoted) rejects with an error that `ok` accepts.
  const refuses = async (ok: (err: UserError) => boolean) => {
    const err = await fence(src, false, none).then(() => null, (e: unknown) => e)
    return err instanceof UserError && ok(err)
  }
  rmSync(join(src, MARK))
  symlinkSync('replicafs:replica:5', join(src, MARK))
  t.ok(await refuses(err => err.code === EXIT.fenced && /a master of generation 5.*--promote/.test(err.message)), 'a source marked as a replica is refused: exit 4')
  t.equal(readlinkSync(join(src, MARK)), 'replicafs:replica:5', 'and its mark stands')
  const r = new FileReplica(`file://${rep}`, rep)
  await r.connect()
  t.teardown(() => r.close())
  symlinkSync('replicafs:replica:8', join(rep, MARK))
  t.equal(await fence(src, true, [r]), 9, 'promoted: one past every mark seen, the replicas\' too')
  t.equal(readlinkSync(join(src, MARK)), 'replicafs:master:9')
  t.equal(readlinkSync(join(rep, MARK)), 'replicafs:replica:9', 'and the replica is claimed')
  await r.connect()
  rmSync(join(rep, MARK))
  symlinkSync('replicafs:master:9', join(rep, MARK))
  const fenced = await fence(src, false, [r]).then(() => null, (e: unknown) => e)
  t.ok(fenced instanceof UserError && fenced.code === EXIT.fenced && /remove its \.replicafs-generation/.test(fenced.message), 'a replica that is the source of a master as new refuses the command (exit 4), with what to do where it was copied')
  await r.connect()
  rmSync(join(rep, MARK))

  rmSync(join(src, MARK))
  symlinkSync('something else', join(src, MARK))
  t.ok(await refuses(err => err.code === EXIT.usage && /not a replicafs generation mark/.test(err.message)), 'a symlink that is not a mark is not overwritten')
  rmSync(join(src, MARK))
  writeFileSync(join(src, MARK), 'a file')
  t.ok(await refuses(err => /not a symlink/.test(err.message)), 'nor is a file of that name')
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
