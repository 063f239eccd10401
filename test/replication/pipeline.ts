// The shipper's pipelined runs (Applier.now: writes, closes, setstats and publishes sent ahead
// of the answers) against a connection lost at each request in turn, the request itself applied
// or not. The replica is a real file:// directory, made to apply calls one at a time in the order
// sent (as an SFTP channel does) and to drop the connection on cue: the order and the loss
// are the only parts played.
import t from 'tap'
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { E } from '../../src/errors'
import { silentLogger } from '../../src/log'
import { FileReplica } from '../../src/replica/file'
import { ReplicaError, type RemoteHandle, type Replica } from '../../src/replica/replica'
import type { Mutation } from '../../src/replication/mutation'
import { Replicator } from '../../src/replication/replicator'
import { TEMP_PREFIX } from '../../src/replication/temp'

const uid = process.getuid?.() ?? 0
const gid = process.getgid?.() ?? 0

/** What goes wrong at call number `cut` (see flaky). */
interface Fault { cut: number, kind: 'lost' | 'refused', appliedAtCut: boolean, lostBefore: number }

/**
 * `inner`, in the order calls are made, with a fault at call number `cut`. 'refused': that call
 * is refused (EPERM), and not applied. 'lost': the connection is lost there; that call is
 * applied first when `appliedAtCut`, and the `lostBefore` calls before it are applied but their
 * answers are lost with it (they were on the wire). Every call after it fails until the next
 * connect, which closes the handles opened before (as a server does) and disarms the cut.
 * `onFault` is called at the refusal, or at that connect. A handle of an earlier connection is
 * refused.
 */
function flaky (inner: FileReplica, fault: Fault, onFault: () => void): { replica: Replica, calls: () => number } {
  let { cut } = fault
  const { kind, appliedAtCut, lostBefore } = fault
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
          if (cut !== Infinity) onFault()
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
          if (kind === 'refused' && n === cut) {
            cut = Infinity
            // After the refusal's repair is queued.
            setTimeout(onFault, 0)
            throw new ReplicaError(`refused (test): ${String(key)}`, E.EPERM)
          }
          if (kind === 'lost' && n >= cut - lostBefore && n <= cut) {
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
 * A run of uploads made on the source (as cp -a and FTP servers do them: create, write, set
 * the mode and times, close; a file uploaded again over itself with the same descriptor
 * number; renames before and after a release; in-place appends; an unlink; a directory
 * renamed), in two parts: each makes its changes on the source and returns the changes the
 * mount would have handed on, in order.
 */
function uploads (src: string): { first: () => Mutation[], rest: () => Mutation[] } {
  let ms: Mutation[] = []
  const who = { uid, gid }
  const at = (p: string) => join(src, p)
  const times = (p: string) => {
    const st = statSync(at(p))
    return { mtime: Math.floor(st.mtimeMs / 1000), atime: Math.floor(st.atimeMs / 1000) }
  }
  const create = (path: string, fh: number) => {
    writeFileSync(at(path), '')
    ms.push({ op: 'create', path, mode: 0o644, flags: 0o101, fh, ...who })
  }
  const write = (path: string, fh: number, text: string) => {
    const offset = statSync(at(path)).size
    writeFileSync(at(path), text, { flag: 'a' })
    ms.push({ op: 'write', path, fh, offset, data: Buffer.from(text), ...who })
  }
  const flush = (path: string, fh: number) => ms.push({ op: 'flush', path, fh, ...who })
  const file = (path: string, fh: number, parts: string[], opts: { truncate?: boolean, mode?: number, stamp?: number } = {}) => {
    if (opts.truncate === true) {
      writeFileSync(at(path), '')
      ms.push({ op: 'open-truncate', path, fh, links: 1, ...who })
    } else {
      create(path, fh)
    }
    for (const p of parts) write(path, fh, p)
    if (opts.mode !== undefined) {
      chmodSync(at(path), opts.mode)
      ms.push({ op: 'chmod', path, mode: opts.mode, ...who })
    }
    if (opts.stamp !== undefined) {
      utimesSync(at(path), opts.stamp, opts.stamp)
      const ts = { sec: opts.stamp, nsec: 0 }
      ms.push({ op: 'utimens', path, atime: ts, mtime: ts, ...who })
    }
    flush(path, fh)
  }
  const release = (path: string, fh: number) => ms.push({ op: 'release', path, fh, ...times(path), ...who })
  const rename = (from: string, path: string) => {
    renameSync(at(from), at(path))
    ms.push({ op: 'rename', from, path, ...who })
  }
  const done = () => {
    const out = ms
    ms = []
    return out
  }

  const first = () => {
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
    // Closed (flushed) through one descriptor while another goes on writing (below).
    create('/d/m', 11)
    write('/d/m', 11, 'hello')
    flush('/d/m', 11)
    // Two changes that are safe to send again, then a file created last, whose life ends below.
    for (const p of ['/d/l', '/d/e']) {
      chmodSync(at(p), 0o600)
      ms.push({ op: 'chmod', path: p, mode: 0o600, ...who })
    }
    create('/d/f', 7)
    return done()
  }
  // At a refusal (after its repair is queued), at the reconnect after a loss (so compaction
  // meets the changes to be sent again), or once the first part is applied.
  const rest = () => {
    write('/d/m', 11, ' world')
    flush('/d/m', 11)
    release('/d/m', 11)
    write('/d/f', 7, 'foxtrot')
    flush('/d/f', 7)
    release('/d/f', 7)
    unlinkSync(at('/d/f'))
    ms.push({ op: 'unlink', path: '/d/f', ...who })
    // Written in place (opened without O_TRUNC), then closed, its descriptor number reused.
    write('/d/b', 8, '+more')
    flush('/d/b', 8)
    release('/d/b', 8)
    file('/d/k', 8, ['kilo'])
    release('/d/k', 8)
    // Written in place, then renamed before its release.
    write('/d/h', 9, '+hotel')
    flush('/d/h', 9)
    rename('/d/h', '/d/i')
    release('/d/i', 9)
    rename('/d', '/z')
    file('/z/b', 5, ['bravo, again'], { truncate: true, stamp: 1_600_000_200 })
    release('/z/b', 5)
    return done()
  }
  return { first, rest }
}

/**
 * A folder wrapped in a new folder of its own name (site/ moved to site/site/), queued after
 * the changes to a file in it: a repair of that file follows both renames, once.
 */
function wrapped (src: string): { first: () => Mutation[], rest: () => Mutation[] } {
  const who = { uid, gid }
  const at = (p: string) => join(src, p)
  const first = (): Mutation[] => {
    mkdirSync(at('/site'))
    writeFileSync(at('/site/i.html'), 'index')
    const st = statSync(at('/site/i.html'))
    mkdirSync(at('/w'))
    renameSync(at('/site'), at('/w/site'))
    renameSync(at('/w'), at('/site'))
    return [
      { op: 'mkdir', path: '/site', mode: 0o755, ...who },
      { op: 'create', path: '/site/i.html', mode: 0o644, flags: 0o101, fh: 5, ...who },
      { op: 'write', path: '/site/i.html', fh: 5, offset: 0, data: Buffer.from('index'), ...who },
      { op: 'flush', path: '/site/i.html', fh: 5, ...who },
      { op: 'release', path: '/site/i.html', fh: 5, mtime: Math.floor(st.mtimeMs / 1000), atime: Math.floor(st.atimeMs / 1000), ...who },
      { op: 'mkdir', path: '/w', mode: 0o755, ...who },
      { op: 'rename', from: '/site', path: '/w/site', ...who },
      { op: 'rename', from: '/w', path: '/site', ...who },
    ]
  }
  return { first, rest: () => [] }
}

/**
 * A killed run's journal past the cursor: the end of a file whose create and write the replica
 * applied before the kill (in place, at its own clock), then a rename of it into a directory.
 * The replay never sees it opened: it copies it at the end, under the name it has then.
 */
function renamedOrphan (src: string): { first: () => Mutation[], rest: () => Mutation[] } {
  const who = { uid, gid }
  const at = (p: string) => join(src, p)
  const rep = join(dirname(src), 'rep')
  const first = (): Mutation[] => {
    mkdirSync(at('/d'))
    writeFileSync(at('/d/a'), 'alpha')
    const day = Math.floor(Date.now() / 1000) - 86_400
    utimesSync(at('/d/a'), day, day)
    // What the replica had applied: the directory, and the file with its bytes, not its times.
    mkdirSync(join(rep, 'd'))
    writeFileSync(join(rep, 'a'), 'alpha')
    return [
      { op: 'flush', path: '/a', fh: 5, ...who },
      { op: 'release', path: '/a', fh: 5, mtime: day, atime: day, ...who },
      { op: 'rename', from: '/a', path: '/d/a', ...who },
    ]
  }
  return { first, rest: () => [] }
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

/**
 * The uploads made on a fresh source and shipped to a fresh replica with `fault`: the trees
 * of both at the end, and the calls made.
 */
async function ship (base: string, fault: Fault, script: (src: string) => { first: () => Mutation[], rest: () => Mutation[] } = uploads, replay = false): Promise<{ got: Record<string, string>, want: Record<string, string>, calls: number, drained: boolean }> {
  const dir = mkdtempSync(join(base, 'run-'))
  const src = join(dir, 'src')
  const rep = join(dir, 'rep')
  mkdirSync(src)
  mkdirSync(rep)
  const u = script(src)
  let later = true
  const more = () => {
    if (!later) return
    later = false
    for (const m of u.rest()) void r.apply(m)
  }
  const f = flaky(new FileReplica(`file://${rep}`, rep), fault, more)
  const r = new Replicator([f.replica], {
    mode: 'async',
    quorum: 1,
    timeoutMs: 10_000,
    queueMaxBytes: 1 << 30,
    applier: { atomicPublish: true, daemonUid: uid, daemonGid: gid, sourceRoot: src, excludes: null },
    journal: null,
    log: silentLogger,
  })
  try {
    // All queued before the first is answered: the runs are as long as they get. Or, as after
    // a restart, replayed from the journal: then the files it left open are copied whole.
    if (replay) r.restore(u.first().map((m, i) => ({ seq: i + 1, m })), {})
    else for (const m of u.first()) void r.apply(m)
    let drained = await r.drain(20_000)
    more()
    // Every change applied, and the repairs they called for (queued after them) too.
    drained &&= await r.drain(20_000) && await r.settle(20_000)
    return { got: tree(rep), want: tree(src), calls: f.calls(), drained }
  } finally {
    await r.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

t.test('a lost connection or a refusal at any request of a pipelined run leaves the replica as the source', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replicafs-pipeline-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))

  const whole = await ship(base, { cut: Infinity, kind: 'lost', appliedAtCut: false, lostBefore: 0 })
  t.ok(whole.drained, 'with no fault, the replica applies every change')
  t.same(whole.got, whole.want, 'and holds what the source does')
  t.ok(whole.calls > 20, `in ${whole.calls} calls`)

  const faults: Fault[] = []
  for (let cut = 1; cut <= whole.calls; cut++) {
    faults.push({ cut, kind: 'refused', appliedAtCut: false, lostBefore: 0 })
    for (const lostBefore of [0, 2, 16]) {
      for (const appliedAtCut of [false, true]) faults.push({ cut, kind: 'lost', appliedAtCut, lostBefore })
    }
  }
  let wrong = 0
  for (const fault of faults) {
    const { got, want, drained } = await ship(base, fault)
    const temps = Object.keys(got).filter(p => p.slice(p.lastIndexOf('/') + 1).startsWith(TEMP_PREFIX))
    if (!drained || temps.length > 0 || JSON.stringify(got) !== JSON.stringify(want)) {
      wrong++
      const differ = [...new Set([...Object.keys(got), ...Object.keys(want)])].filter(k => got[k] !== want[k])
      const what = fault.kind === 'refused'
        ? `refused at call ${fault.cut}`
        : `lost at call ${fault.cut}, ${fault.appliedAtCut ? 'after' : 'before'} the replica applied it, with the answers to the ${fault.lostBefore} before it`
      t.fail(what, { drained, temps, differ: differ.map(k => ({ path: k, got: got[k] ?? null, want: want[k] ?? null })) })
    }
  }
  t.equal(wrong, 0, `every one of the ${faults.length} faults converged, with no temp file left`)
})

t.test('a repair follows the renames queued after it, each once', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replicafs-pipeline-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const whole = await ship(base, { cut: Infinity, kind: 'lost', appliedAtCut: false, lostBefore: 0 }, wrapped)
  t.same(whole.got, whole.want, `with no fault, in ${whole.calls} calls`)
  for (let cut = 1; cut <= whole.calls; cut++) {
    const { got, want, drained } = await ship(base, { cut, kind: 'refused', appliedAtCut: false, lostBefore: 0 }, wrapped)
    t.ok(drained && JSON.stringify(got) === JSON.stringify(want), `refused at call ${cut}: the replica is the source`, { got, want })
  }
})

t.test('a replay after a restart: a refusal or a lost connection at any request, the files it left open included', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replicafs-pipeline-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  // The first part of the uploads, as a killed run's journal: two files are still open at its end.
  // One of them was opened and written before the replayed part (its create and write are
  // not replayed, its flush is): it is copied whole at the end. Their times are set back a day after the journal's end: a copy
  // whose utimes is refused shows.
  const journaled = (src: string) => {
    const u = uploads(src)
    const first = () => {
      const ms = u.first().filter(m => !((m.op === 'create' || m.op === 'write') && m.path === '/d/m'))
      const day = Date.now() / 1000 - 86_400
      for (const p of ['/d/m', '/d/f']) utimesSync(join(src, p), day, day)
      return ms
    }
    return { first, rest: () => [] }
  }
  const whole = await ship(base, { cut: Infinity, kind: 'lost', appliedAtCut: false, lostBefore: 0 }, journaled, true)
  t.same(whole.got, whole.want, `with no fault, in ${whole.calls} calls`)
  let wrong = 0
  let faults = 0
  for (let cut = 1; cut <= whole.calls; cut++) {
    for (const fault of [{ cut, kind: 'refused', appliedAtCut: false, lostBefore: 0 }, { cut, kind: 'lost', appliedAtCut: true, lostBefore: 2 }] as Fault[]) {
      faults++
      const { got, want, drained } = await ship(base, fault, journaled, true)
      if (drained && JSON.stringify(got) === JSON.stringify(want)) continue
      wrong++
      t.fail(`${fault.kind} at call ${cut}`, { drained, got, want })
    }
  }
  t.equal(wrong, 0, `every one of the ${faults} faults converged`)
})

t.test('a replay: a file it never saw opened, renamed after its release, is copied under its new name', async t => {
  const base = mkdtempSync(join(tmpdir(), 'replicafs-pipeline-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const whole = await ship(base, { cut: Infinity, kind: 'lost', appliedAtCut: false, lostBefore: 0 }, renamedOrphan, true)
  t.ok(whole.drained, 'the replay ends')
  t.same(whole.got, whole.want, `with no fault, in ${whole.calls} calls: its bytes and the source's times`)
  for (let cut = 1; cut <= whole.calls; cut++) {
    for (const fault of [{ cut, kind: 'refused', appliedAtCut: false, lostBefore: 0 }, { cut, kind: 'lost', appliedAtCut: true, lostBefore: 2 }] as Fault[]) {
      const { got, want, drained } = await ship(base, fault, renamedOrphan, true)
      t.ok(drained && JSON.stringify(got) === JSON.stringify(want), `${fault.kind} at call ${cut}: the replica is the source`, { got, want })
    }
  }
})
