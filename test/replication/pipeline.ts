// The shipper's pipelined runs (Applier.now: writes, closes, setstats and publishes sent ahead
// of the answers) against a connection lost at each request in turn, the request itself applied
// or not. The replica is a real file:// directory, made to apply calls one at a time in the order
// sent (as an SFTP channel does) and to drop the connection on cue: the order and the loss
// are the only parts played.
import t from 'tap'
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { E } from '../../src/errors'
import { silentLogger } from '../../src/log'
import { FileReplica } from '../../src/replica/file'
import { ReplicaError, type RemoteHandle, type Replica } from '../../src/replica/replica'
import type { Mutation } from '../../src/replication/mutation'
import { Replicator } from '../../src/replication/replicator'
import { TEMP_PREFIX } from '../../src/replication/temp'

const uid = process.getuid?.() ?? 0
const gid = process.getgid?.() ?? 0

/**
 * `inner`, in the order calls are made, with the connection lost at call number `cut`: that
 * call is applied first when `appliedAtCut`, and the `lostBefore` calls before it are applied
 * but their answers are lost with it (they were on the wire). Every call after it fails until
 * the next connect, which closes the handles opened before (as a server does) and disarms the
 * cut. A handle of an earlier connection is refused.
 */
function flaky (inner: FileReplica, cut: number, appliedAtCut: boolean, lostBefore: number): { replica: Replica, calls: () => number } {
  let calls = 0
  let down = false
  let chain: Promise<unknown> = Promise.resolve()
  const opened = new Set<RemoteHandle>()
  const lost = () => new ReplicaError('connection lost (test)', E.EIO, 'transient')
  const replica = new Proxy(inner, {
    get (target, key) {
      if (key === 'ordered') return true
      const value = Reflect.get(target, key) as unknown
      if (typeof value !== 'function') return value
      const fn = value as (...args: unknown[]) => Promise<unknown>
      if (key === 'connect') {
        return async () => {
          await target.connect()
          for (const h of opened) await target.closeHandle(h).catch(() => {})
          opened.clear()
          down = false
          cut = Infinity
        }
      }
      if (key === 'close') return fn.bind(target)
      return (...args: unknown[]) => {
        const call = chain.then(async () => {
          if (down) throw lost()
          const handle = args[0] as RemoteHandle
          if (typeof handle === 'object' && handle !== null && !opened.has(handle) && key !== 'openWrite') {
            throw new ReplicaError(`a handle of an earlier connection (${String(key)})`, E.EBADF)
          }
          const n = ++calls
          if (n >= cut - lostBefore && n <= cut) {
            if (n === cut) down = true
            if (n < cut || appliedAtCut) {
              const r = await fn.apply(target, args).catch(() => null)
              if (key === 'openWrite' && r !== null) await target.closeHandle(r as RemoteHandle)
              if (key === 'closeHandle') opened.delete(handle)
            }
            throw lost()
          }
          const r = await fn.apply(target, args)
          if (key === 'openWrite') opened.add(r as RemoteHandle)
          if (key === 'closeHandle') opened.delete(handle)
          return r
        })
        chain = call.catch(() => {})
        return call
      }
    },
  })
  return { replica, calls: () => calls }
}

/**
 * Makes the source what a run of uploads leaves (as cp -a and FTP servers do it: create,
 * write, set the mode and times, close; a file uploaded again over itself with the same
 * descriptor number; renames before and after a release; an unlink; a directory renamed),
 * and returns the changes the mount would have handed on, in order.
 */
function uploads (src: string): Mutation[] {
  const ms: Mutation[] = []
  const who = { uid, gid }
  const at = (p: string) => join(src, p)
  const times = (p: string) => {
    const st = statSync(at(p))
    return { mtime: Math.floor(st.mtimeMs / 1000), atime: Math.floor(st.atimeMs / 1000) }
  }
  const file = (path: string, fh: number, parts: string[], opts: { truncate?: boolean, mode?: number, stamp?: number } = {}) => {
    ms.push(opts.truncate === true
      ? { op: 'open-truncate', path, fh, links: 1, ...who }
      : { op: 'create', path, mode: 0o644, flags: 0o101, fh, ...who })
    writeFileSync(at(path), parts.join(''))
    let offset = 0
    for (const p of parts) {
      ms.push({ op: 'write', path, fh, offset, data: Buffer.from(p), ...who })
      offset += p.length
    }
    if (opts.mode !== undefined) {
      chmodSync(at(path), opts.mode)
      ms.push({ op: 'chmod', path, mode: opts.mode, ...who })
    }
    if (opts.stamp !== undefined) {
      utimesSync(at(path), opts.stamp, opts.stamp)
      const ts = { sec: opts.stamp, nsec: 0 }
      ms.push({ op: 'utimens', path, atime: ts, mtime: ts, ...who })
    }
    ms.push({ op: 'flush', path, fh, ...who })
  }
  const release = (path: string, fh: number) => ms.push({ op: 'release', path, fh, ...times(path), ...who })
  const rename = (from: string, path: string) => {
    renameSync(at(from), at(path))
    ms.push({ op: 'rename', from, path, ...who })
  }

  mkdirSync(at('/d'))
  ms.push({ op: 'mkdir', path: '/d', mode: 0o755, ...who })
  file('/d/a', 5, ['alpha'], { mode: 0o640, stamp: 1_600_000_000 })
  release('/d/a', 5)
  file('/d/b', 5, ['bravo-1', '-2'])
  release('/d/b', 5)
  // More writes than a run sends ahead: some are answered before the rest go.
  file('/d/l', 10, Array.from({ length: 40 }, (_, i) => `line ${i}\n`))
  release('/d/l', 10)
  // Uploaded again: the same path and descriptor number, so the same temp name.
  file('/d/a', 5, ['alpha, again'], { truncate: true })
  release('/d/a', 5)
  // Renamed between its close and its release, and after its release.
  file('/d/c', 6, ['charlie'], { stamp: 1_600_000_100 })
  rename('/d/c', '/d/e')
  release('/d/e', 6)
  file('/d/g', 5, ['golf'])
  release('/d/g', 5)
  rename('/d/g', '/d/h')
  file('/d/f', 7, ['foxtrot'])
  release('/d/f', 7)
  unlinkSync(at('/d/f'))
  ms.push({ op: 'unlink', path: '/d/f', ...who })
  // Written in place (opened without O_TRUNC), then closed, its descriptor number reused at once.
  const append = (path: string, fh: number, text: string) => {
    const offset = statSync(at(path)).size
    writeFileSync(at(path), text, { flag: 'a' })
    ms.push({ op: 'write', path, fh, offset, data: Buffer.from(text), ...who })
    ms.push({ op: 'flush', path, fh, ...who })
  }
  append('/d/b', 8, '+more')
  release('/d/b', 8)
  file('/d/k', 8, ['kilo'])
  release('/d/k', 8)
  // Written in place, then renamed before its release.
  append('/d/h', 9, '+hotel')
  rename('/d/h', '/d/i')
  release('/d/i', 9)
  rename('/d', '/z')
  file('/z/b', 5, ['bravo, again'], { truncate: true, stamp: 1_600_000_200 })
  release('/z/b', 5)
  return ms
}

/** Every entry below `dir`: type, mode, mtime (seconds) and content, by path. */
function tree (dir: string, at = ''): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of readdirSync(join(dir, at)).sort()) {
    const p = `${at}/${name}`
    const st = lstatSync(join(dir, p))
    const head = `${st.isDirectory() ? 'dir' : 'file'} ${(st.mode & 0o7777).toString(8)}`
    if (st.isDirectory()) {
      out[p] = head
      Object.assign(out, tree(dir, p))
    } else {
      out[p] = `${head} ${Math.floor(st.mtimeMs / 1000)} ${readFileSync(join(dir, p), 'latin1')}`
    }
  }
  return out
}

/** The changes shipped to a fresh replica cut at `cut`: the replica's tree, and the calls made. */
async function ship (base: string, src: string, ms: Mutation[], cut: number, appliedAtCut: boolean, lostBefore: number): Promise<{ rep: string, calls: number, drained: boolean }> {
  const rep = mkdtempSync(join(base, 'rep-'))
  const f = flaky(new FileReplica(`file://${rep}`, rep), cut, appliedAtCut, lostBefore)
  const r = new Replicator([f.replica], {
    mode: 'async',
    quorum: 1,
    timeoutMs: 10_000,
    queueMaxBytes: 1 << 30,
    applier: { atomicPublish: true, daemonUid: uid, daemonGid: gid, sourceRoot: src, excludes: null },
    journal: null,
    log: silentLogger,
  })
  // All queued before the first is answered: the runs are as long as they get.
  for (const m of ms) void r.apply(m)
  // Every change applied, and the repairs they called for (queued after them) too.
  const drained = await r.drain(20_000) && await r.settle(20_000)
  await r.close()
  return { rep, calls: f.calls(), drained }
}

t.test('a lost connection at any request of a pipelined run leaves the replica as the source', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replicafs-pipeline-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const src = join(base, 'src')
  mkdirSync(src)
  const ms = uploads(src)
  const want = tree(src)

  const whole = await ship(base, src, ms, Infinity, false, 0)
  t.ok(whole.drained, 'with no loss, the replica applies every change')
  t.same(tree(whole.rep), want, 'and holds what the source does')
  t.ok(whole.calls > 20, `in ${whole.calls} calls`)

  let wrong = 0
  let runs = 0
  for (let cut = 1; cut <= whole.calls; cut++) {
    for (const lostBefore of [0, 2, 16]) {
      for (const applied of [false, true]) {
        const { rep, drained } = await ship(base, src, ms, cut, applied, lostBefore)
        runs++
        const got = tree(rep)
        const temps = Object.keys(got).filter(p => p.slice(p.lastIndexOf('/') + 1).startsWith(TEMP_PREFIX))
        const what = `lost at call ${cut}, ${applied ? 'after' : 'before'} the replica applied it, with the answers to the ${lostBefore} before it`
        if (!drained || temps.length > 0 || JSON.stringify(got) !== JSON.stringify(want)) {
          wrong++
          const differ = [...new Set([...Object.keys(got), ...Object.keys(want)])].filter(k => got[k] !== want[k])
          t.fail(what, { drained, temps, differ: differ.map(k => ({ path: k, got: got[k] ?? null, want: want[k] ?? null })) })
        }
        rmSync(rep, { recursive: true, force: true })
      }
    }
  }
  t.equal(wrong, 0, `every one of the ${runs} losses converged, with no temp file left`)
})
