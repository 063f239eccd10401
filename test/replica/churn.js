'use strict'
// Child-process helper for test/replica/*.ts (not a test itself).
//
//   node churn.js run <root> <seed> <ops> <deadlineMs> [options]
//     options, comma-separated: 'big' (some files of several 128 KiB writes), 'skip=a+b' (leave
//     those calls out, e.g. skip=link+open+heldWrite+close).
//     A seeded random workload on <root> (a replicafs mount): create/write/O_TRUNC overwrite,
//     writes at offsets, append, truncate/ftruncate, rename (over existing files too, and of
//     dirs), unlink, mkdir, rmdir, symlink, link, chmod, utimens, and files held open while
//     other calls run. Ends with every file closed and a utimens of every entry (children
//     before their dir), so that mtimes are comparable. Prints one JSON line:
//     { ops, done, counts, errors: { CODE: n }, unexpected: [..] }.
//   node churn.js snapshot <dir>
//     Prints a JSON description of the tree under <dir> (root excluded): per relative path,
//     type, mode, uid, gid, mtime (whole seconds), size and sha256 (files), target (symlinks);
//     and the hard link groups (names sharing an inode).
//   node churn.js upload <file> <bytes> <chunk>
//     Writes <bytes> of seeded data to <file> in <chunk>-byte write(2) calls; prints its sha256.

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')

function prng (seed) {
  // mulberry32
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function bytes (rand, n) {
  const b = Buffer.allocUnsafe(n)
  let i = 0
  for (; i + 4 <= n; i += 4) b.writeUInt32LE((rand() * 4294967296) >>> 0, i)
  for (; i < n; i++) b[i] = (rand() * 256) >>> 0
  return b
}

/** Expected failures of a random call on a real tree (a dir not empty, a name taken...). */
const EXPECTED = new Set(['ENOENT', 'EEXIST', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'EINVAL'])

function run (root, seed, maxOps, deadlineMs, big, skip) {
  const rand = prng(seed)
  const int = n => Math.floor(rand() * n)
  const pick = arr => arr.length === 0 ? undefined : arr[int(arr.length)]
  const end = Date.now() + deadlineMs
  /** relative path -> 'f' | 'd' | 'l' */
  const model = new Map()
  const held = [] // { fd, rel, size }
  const counts = {}
  const errors = {}
  const unexpected = []
  const abs = rel => path.join(root, rel)

  const refresh = rel => {
    try {
      const st = fs.lstatSync(abs(rel))
      model.set(rel, st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f')
    } catch {
      model.delete(rel)
    }
  }
  const rescan = rel => {
    for (const k of [...model.keys()]) if (k === rel || k.startsWith(rel + '/')) model.delete(k)
    refresh(rel)
    if (model.get(rel) === 'd') {
      for (const name of fs.readdirSync(abs(rel))) rescan(rel + '/' + name)
    }
  }
  const rescanAll = () => {
    model.clear()
    for (const name of fs.readdirSync(root)) rescan(name)
  }
  const of = type => [...model].filter(([, t]) => t === type).map(([k]) => k)
  const dirs = () => ['', ...of('d')]
  const newName = () => {
    const d = pick(dirs())
    const prefix = rand() < 0.12 ? 'd' : 'n'
    return (d === '' ? '' : d + '/') + prefix + int(300)
  }
  const fileSize = () => {
    const r = rand()
    if (big && r < 0.03) return 100_000 + int(300_000) // several 128 KiB writes
    if (r < 0.1) return 0
    return int(9000)
  }

  const ops = {
    create () {
      const rel = newName()
      fs.writeFileSync(abs(rel), bytes(rand, fileSize()), { mode: 0o600 | (int(8) << 3) | int(8) })
      refresh(rel)
    },
    overwrite () { // O_TRUNC on an existing file (maybe one of several hard links)
      const rel = pick(of('f'))
      if (rel === undefined) return ops.create()
      fs.writeFileSync(abs(rel), bytes(rand, fileSize()))
    },
    pwrite () { // at an offset, maybe past the end (a hole)
      const rel = pick(of('f'))
      if (rel === undefined) return ops.create()
      const fd = fs.openSync(abs(rel), 'r+')
      try {
        const size = fs.fstatSync(fd).size
        fs.writeSync(fd, bytes(rand, 1 + int(5000)), 0, undefined, int(size + 20_000))
      } finally {
        fs.closeSync(fd)
      }
    },
    append () {
      const rel = pick(of('f'))
      if (rel === undefined) return ops.create()
      fs.appendFileSync(abs(rel), bytes(rand, 1 + int(3000)))
    },
    truncate () {
      const rel = pick(of('f'))
      if (rel === undefined) return
      const size = int(12_000)
      if (rand() < 0.5) {
        fs.truncateSync(abs(rel), size)
      } else {
        const fd = fs.openSync(abs(rel), 'r+')
        try { fs.ftruncateSync(fd, size) } finally { fs.closeSync(fd) }
      }
    },
    rename () {
      const from = rand() < 0.85 ? pick([...of('f'), ...of('l')]) : pick(of('d'))
      if (from === undefined) return
      // over an existing file half of the time
      const to = rand() < 0.5 && model.get(from) !== 'd' ? (pick(of('f')) ?? newName()) : newName()
      fs.renameSync(abs(from), abs(to))
      if (model.get(from) === 'd') {
        rescan(from)
        rescan(to)
      } else {
        refresh(from)
        refresh(to)
      }
    },
    unlink () {
      const rel = pick([...of('f'), ...of('l')])
      if (rel === undefined) return
      fs.unlinkSync(abs(rel))
      refresh(rel)
    },
    mkdir () {
      if (of('d').length >= 40) return
      const rel = newName()
      fs.mkdirSync(abs(rel), { mode: 0o700 | (int(8) << 3) | int(8) })
      refresh(rel)
    },
    rmdir () {
      const all = of('d')
      const empty = all.filter(d => ![...model.keys()].some(k => k.startsWith(d + '/')))
      const rel = rand() < 0.8 ? pick(empty) : pick(all)
      if (rel === undefined) return
      fs.rmdirSync(abs(rel))
      refresh(rel)
    },
    symlink () {
      const rel = newName()
      const target = rand() < 0.5 ? (pick(of('f')) ?? 'dangling') : `../x/${int(1000)}`
      fs.symlinkSync(target, abs(rel))
      refresh(rel)
    },
    link () {
      const from = pick(of('f'))
      if (from === undefined) return
      const rel = newName()
      fs.linkSync(abs(from), abs(rel))
      refresh(rel)
    },
    chmod () {
      const rel = pick([...of('f'), ...of('d')])
      if (rel === undefined) return
      const dir = model.get(rel) === 'd'
      fs.chmodSync(abs(rel), (dir ? 0o700 : 0o600) | int(0o100) | (rand() < 0.05 ? 0o1000 : 0))
    },
    utimens () {
      const rel = pick([...of('f'), ...of('d'), ...of('l')])
      if (rel === undefined) return
      const t = 1_500_000_000 + int(100_000_000) + int(1000) / 1000
      fs.lutimesSync(abs(rel), t, t)
    },
    open () { // a new file held open while other calls run
      if (held.length >= 4) return ops.close()
      const rel = newName()
      const fd = fs.openSync(abs(rel), 'wx', 0o644)
      refresh(rel)
      const b = bytes(rand, int(6000))
      fs.writeSync(fd, b)
      held.push({ fd, rel, size: b.length })
    },
    heldWrite () {
      const h = pick(held)
      if (h === undefined) return ops.open()
      const b = bytes(rand, 1 + int(6000))
      fs.writeSync(h.fd, b, 0, b.length, rand() < 0.7 ? h.size : int(h.size + 1))
      h.size = Math.max(h.size, b.length)
    },
    close () {
      const h = held.splice(int(held.length), 1)[0]
      if (h !== undefined) fs.closeSync(h.fd)
    },
  }
  const weights = [
    ['create', 14], ['overwrite', 7], ['pwrite', 6], ['append', 7], ['truncate', 5], ['rename', 10],
    ['unlink', 7], ['mkdir', 5], ['rmdir', 3], ['symlink', 4], ['link', 5], ['chmod', 5], ['utimens', 5],
    ['open', 3], ['heldWrite', 6], ['close', 3],
  ]
  for (const w of weights) if (skip.has(w[0])) w[1] = 0
  const total = weights.reduce((s, [, w]) => s + w, 0)
  const choose = () => {
    let r = rand() * total
    for (const [name, w] of weights) if ((r -= w) < 0) return name
    return 'create'
  }

  let n = 0
  while (n < maxOps && Date.now() < end) {
    const name = choose()
    n++
    counts[name] = (counts[name] ?? 0) + 1
    try {
      ops[name]()
    } catch (err) {
      const code = err.code ?? String(err)
      errors[`${name} ${code}`] = (errors[`${name} ${code}`] ?? 0) + 1
      if (!EXPECTED.has(code) && unexpected.length < 20) unexpected.push(`${name}: ${err.message}`)
      // a failed call changes nothing we track, except a dir rename: rescan to be sure
      if (name === 'rename') rescanAll()
    }
  }
  for (const h of held.splice(0)) fs.closeSync(h.fd)

  // Final pass: set every mtime (deepest first), so that the trees can be compared to the second.
  const all = [...model.keys()].sort((a, b) => b.split('/').length - a.split('/').length || (a < b ? -1 : 1))
  for (const rel of all) {
    const t = 1_600_000_000 + int(10_000_000)
    try {
      fs.lutimesSync(abs(rel), t + 0.5, t + int(1000) / 1000)
    } catch (err) {
      const code = err.code ?? String(err)
      errors[code] = (errors[code] ?? 0) + 1
      if (unexpected.length < 20) unexpected.push(`final utimens ${rel}: ${err.message}`)
    }
  }
  return { ops: n, done: n >= maxOps, counts, errors, unexpected, entries: model.size }
}

function snapshot (dir) {
  const entries = {}
  const byIno = new Map()
  const walk = rel => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      // Each tree's own generation mark (fence.ts): never replicated, different by design.
      if (rel === '' && name === '.replicafs-generation') continue
      const r = rel === '' ? name : rel + '/' + name
      const p = path.join(dir, r)
      const st = fs.lstatSync(p)
      const e = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other',
        mode: (st.mode & 0o7777).toString(8),
        uid: st.uid,
        gid: st.gid,
        mtime: Math.floor(st.mtimeMs / 1000),
      }
      if (e.type === 'file') {
        e.size = st.size
        e.sha256 = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')
        const g = byIno.get(st.ino) ?? []
        g.push(r)
        byIno.set(st.ino, g)
      } else if (e.type === 'symlink') {
        e.target = fs.readlinkSync(p)
        delete e.mode // symlink modes are always 777
      }
      entries[r] = e
      if (e.type === 'dir') walk(r)
    }
  }
  walk('')
  const linkGroups = [...byIno.values()].filter(g => g.length > 1).map(g => g.sort().join(' = ')).sort()
  return { entries, linkGroups }
}

function upload (file, size, chunk) {
  const rand = prng(42)
  const data = bytes(rand, size)
  const fd = fs.openSync(file, 'w', 0o644)
  for (let off = 0; off < size; off += chunk) fs.writeSync(fd, data, off, Math.min(chunk, size - off), off)
  fs.closeSync(fd)
  return crypto.createHash('sha256').update(data).digest('hex')
}

const [cmd, ...args] = process.argv.slice(2)
if (cmd === 'run') {
  const [root, seed, ops, deadline, options = ''] = args
  const opts = options.split(',')
  const skip = new Set(opts.filter(o => o.startsWith('skip=')).flatMap(o => o.slice(5).split('+')))
  process.stdout.write(JSON.stringify(run(root, Number(seed), Number(ops), Number(deadline), opts.includes('big'), skip)) + '\n')
} else if (cmd === 'snapshot') {
  process.stdout.write(JSON.stringify(snapshot(args[0])) + '\n')
} else if (cmd === 'upload') {
  process.stdout.write(upload(args[0], Number(args[1]), Number(args[2])) + '\n')
} else {
  process.stderr.write('usage: churn.js run <root> <seed> <ops> <deadlineMs> [big,skip=a+b] | snapshot <dir> | upload <file> <bytes> <chunk>\n')
  process.exit(2)
}
