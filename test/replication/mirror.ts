// The resync's copier (Mirror) against a real file:// replica: hard link groups stay one file,
// a parent the replica lacks is mirrored once, no temp name is left, and a replica that will
// not link gets copies.
import t from 'tap'
import { linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { E } from '../../src/errors'
import { FileReplica } from '../../src/replica/file'
import { ReplicaError, type Replica } from '../../src/replica/replica'
import { Mirror } from '../../src/replication/mirror'
import { replicaDirs } from '../helpers/mount'
import { temps } from '../helpers/tree'

/** Every file below `dir`: its inode, link count and content, by path. */
function files (dir: string, at = ''): Record<string, { ino: number, nlink: number, data: string }> {
  const out: Record<string, { ino: number, nlink: number, data: string }> = {}
  for (const name of readdirSync(join(dir, at)).sort()) {
    const p = `${at}/${name}`
    const st = lstatSync(join(dir, p))
    if (st.isDirectory()) Object.assign(out, files(dir, p))
    else out[p] = { ino: st.ino, nlink: st.nlink, data: readFileSync(join(dir, p), 'utf8') }
  }
  return out
}

/** A source made by `make`, an empty replica, `Mirror.path(path)`: the replica's files. */
async function mirror (t: tap.Test, path: string, make: (src: string) => void, wrap: (r: FileReplica) => Replica = r => r): Promise<ReturnType<typeof files>> {
  const { source: src, replica: rep } = replicaDirs(t, 'mirror')
  make(src)
  const r = new FileReplica(`file://${rep}`, rep)
  await r.connect()
  await new Mirror(src, wrap(r)).path(path)
  const got = files(rep)
  t.same(temps(rep), [], 'no temp name is left')
  return got
}

/** /a/b holding a hard link group (h1, h2) and plain files around it. */
function grouped (src: string): void {
  mkdirSync(join(src, 'a', 'b'), { recursive: true })
  writeFileSync(join(src, 'a', 'b', 'h1'), 'linked')
  linkSync(join(src, 'a', 'b', 'h1'), join(src, 'a', 'b', 'h2'))
  for (const n of ['p', 'q', 'x', 'z']) writeFileSync(join(src, 'a', 'b', n), `plain ${n}`)
}

t.test('a path under parents the replica lacks: the group is one file, the others their own', async t => {
  for (const path of ['/a/b', '/a/b/x', '/a/b/h2', '/']) {
    const got = await mirror(t, path, grouped)
    const h1 = got['/a/b/h1']
    const h2 = got['/a/b/h2']
    t.ok(h1 !== undefined && h2 !== undefined && h1.ino === h2.ino && h1.nlink === 2, `${path}: h1 and h2 are one file of two names`)
    t.equal(h1?.data, 'linked', `${path}: holding its own bytes`)
    for (const n of ['p', 'q', 'x', 'z']) {
      const f = got[`/a/b/${n}`]
      t.ok(f?.data === `plain ${n}` && f.nlink === 1, `${path}: ${n} is its own file, with its bytes`)
    }
  }
})

t.test('a replica that will not link: the names are copies, each whole', async t => {
  const noLinks = (r: FileReplica): Replica => new Proxy(r, {
    get (target, key) {
      if (key === 'link') return () => Promise.reject(new ReplicaError('link refused (test)', E.EPERM))
      const v = Reflect.get(target, key) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
  const got = await mirror(t, '/', grouped, noLinks)
  t.equal(got['/a/b/h1']?.data, 'linked')
  t.equal(got['/a/b/h2']?.data, 'linked')
  t.not(got['/a/b/h1']?.ino, got['/a/b/h2']?.ino, 'two files')
})
