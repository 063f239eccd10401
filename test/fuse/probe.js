'use strict'
/*
 * Parity probe (a helper, not a test): runs a JSON list of filesystem steps under a base dir
 * with node:fs sync calls, in its own process (so that it can run as any uid), and prints one
 * JSON result per step: {ok: true, value} or {ok: false, code}. Values are normalised to what
 * must be equal on two filesystems (no inode, dev, absolute path; times only when asked).
 *
 *   node probe.js <base> <steps.json>
 *
 * Steps that node:fs cannot express go to tools: `mkfifo`, `touch` (utimensat with
 * UTIME_NOW / UTIME_OMIT) and probe.py (xattrs, utimensat with nanoseconds, statvfs, mknod).
 * Open fds and dirs are named by the steps ({fd: 'a'}), so a list can use them across steps.
 */
const fs = require('node:fs')
const { join } = require('node:path')
const { spawnSync } = require('node:child_process')

if (process.argv.length < 4) {
  // tap runs every .js file under test/: say that this one is not a test.
  process.stdout.write('TAP version 14\n1..0 # SKIP probe helper, not a test\n')
  process.exit(0)
}

const base = process.argv[2]
const steps = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'))
const PY = join(__dirname, 'probe.py')
const fds = new Map()
const dirs = new Map()

const MESSAGES = {
  'Permission denied': 'EACCES',
  'Operation not permitted': 'EPERM',
  'No such file or directory': 'ENOENT',
  'File exists': 'EEXIST',
  'Not a directory': 'ENOTDIR',
  'Is a directory': 'EISDIR',
  'Too many levels of symbolic links': 'ELOOP',
  'File name too long': 'ENAMETOOLONG',
}

function type (st) {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isCharacterDevice()) return 'chr'
  if (st.isBlockDevice()) return 'blk'
  if (st.isSocket()) return 'sock'
  return 'unknown'
}

/** A stat as it must be on both sides. times: 'exact' (ns), 'recent' (within 60 s), else none. */
function norm (st, times) {
  const o = {
    type: type(st),
    mode: '0' + (Number(st.mode) & 0o7777).toString(8),
    size: Number(st.size),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: Number(st.rdev),
    blocks: Number(st.blocks),
  }
  if (times === 'exact') {
    o.atimeNs = st.atimeNs.toString()
    o.mtimeNs = st.mtimeNs.toString()
  } else if (times === 'recent') {
    const wall = BigInt(Date.now()) * 1000000n
    const recent = t => (wall - t < 60n * 1000000000n && t - wall < 60n * 1000000000n)
    o.atimeRecent = recent(st.atimeNs)
    o.mtimeRecent = recent(st.mtimeNs)
    o.ctimeRecent = recent(st.ctimeNs)
  }
  return o
}

function flags (names) {
  if (typeof names === 'string') return names
  return names.reduce((acc, n) => acc | fs.constants[n], 0)
}

function accessMode (m) {
  let r = 0
  if (m.includes('R')) r |= fs.constants.R_OK
  if (m.includes('W')) r |= fs.constants.W_OK
  if (m.includes('X')) r |= fs.constants.X_OK
  return r === 0 ? fs.constants.F_OK : r
}

function fd (name) {
  const v = fds.get(name)
  if (v === undefined) throw new Error(`no fd named ${name}`)
  return v
}

/** A tool run: its exit status tells success, its message the errno. */
function tool (cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20000 })
  if (r.error) throw r.error
  if (r.status === 0) return undefined
  for (const [msg, code] of Object.entries(MESSAGES)) {
    if (r.stderr.includes(msg)) {
      const e = new Error(r.stderr)
      e.code = code
      throw e
    }
  }
  throw new Error(`${cmd} failed: ${r.stderr}`)
}

function py (step) {
  const r = spawnSync('python3', [PY, base, JSON.stringify(step)], { encoding: 'utf8', timeout: 20000 })
  if (r.error) throw r.error
  if (r.status !== 0) throw new Error(`probe.py failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

function run (s) {
  const p = s.path === undefined ? undefined : join(base, s.path)
  const q = s.to === undefined ? undefined : join(base, s.to)
  switch (s.op) {
    case 'umask': process.umask(parseInt(s.mask, 8)); return undefined
    case 'stat': return norm(fs.statSync(p, { bigint: true }), s.times)
    case 'lstat': return norm(fs.lstatSync(p, { bigint: true }), s.times)
    case 'fstat': return norm(fs.fstatSync(fd(s.fd), { bigint: true }), s.times)
    case 'access': return fs.accessSync(p, accessMode(s.mode))
    case 'statfs': {
      const v = fs.statfsSync(p)
      return { bsize: v.bsize, blocks: v.blocks, files: v.files }
    }
    case 'readdir': return fs.readdirSync(p).sort()
    case 'readdirTypes':
      return fs.readdirSync(p, { withFileTypes: true }).map(d => [d.name, type(d)]).sort()
    case 'opendir': dirs.set(s.dir, fs.opendirSync(p)); return undefined
    case 'dirread': {
      const d = dirs.get(s.dir)
      const names = []
      for (let e = d.readSync(); e !== null; e = d.readSync()) names.push(e.name)
      return names.sort()
    }
    case 'closedir': dirs.get(s.dir).closeSync(); dirs.delete(s.dir); return undefined
    case 'open': fds.set(s.fd, fs.openSync(p, flags(s.flags), s.mode === undefined ? 0o666 : parseInt(s.mode, 8))); return undefined
    case 'close': fs.closeSync(fd(s.fd)); return undefined
    case 'read': {
      const buf = Buffer.alloc(s.len)
      const n = fs.readSync(fd(s.fd), buf, 0, s.len, s.pos === undefined ? null : s.pos)
      return buf.subarray(0, n).toString('latin1')
    }
    case 'write': return fs.writeSync(fd(s.fd), Buffer.from(s.data, 'latin1'), 0, undefined, s.pos === undefined ? null : s.pos)
    case 'fsync': return fs.fsyncSync(fd(s.fd))
    case 'fdatasync': return fs.fdatasyncSync(fd(s.fd))
    case 'ftruncate': return fs.ftruncateSync(fd(s.fd), s.len)
    case 'truncate': return fs.truncateSync(p, s.len)
    case 'readFile': return fs.readFileSync(p, 'latin1')
    case 'writeFile': return fs.writeFileSync(p, s.data, { encoding: 'latin1', flag: s.flag ?? 'w', mode: s.mode === undefined ? 0o666 : parseInt(s.mode, 8) })
    case 'unlink': return fs.unlinkSync(p)
    case 'rmdir': return fs.rmdirSync(p)
    case 'mkdir': fs.mkdirSync(p, s.mode === undefined ? 0o777 : parseInt(s.mode, 8)); return undefined
    case 'rename': return fs.renameSync(p, q)
    case 'symlink': return fs.symlinkSync(s.target, p)
    case 'readlink': return fs.readlinkSync(p)
    case 'link': return fs.linkSync(p, q)
    case 'chmod': return fs.chmodSync(p, parseInt(s.mode, 8))
    case 'chown': return fs.chownSync(p, s.uid, s.gid)
    case 'lchown': return fs.lchownSync(p, s.uid, s.gid)
    case 'mkfifo': return tool('mkfifo', ['-m', s.mode ?? '0644', '--', p])
    case 'touch': return tool('touch', [...(s.args ?? []), '--', p])
    case 'py': return py(s)
    default: throw new Error(`unknown step ${s.op}`)
  }
}

const out = []
for (const s of steps) {
  try {
    const value = run(s)
    if (s.op === 'py') out.push(value)
    else out.push(value === undefined ? { ok: true } : { ok: true, value })
  } catch (err) {
    if (typeof err.code !== 'string' || !/^E[A-Z]+$/.test(err.code)) {
      out.push({ ok: false, code: 'PROBE', message: String(err && err.message) })
    } else {
      out.push({ ok: false, code: err.code })
    }
  }
}
for (const f of fds.values()) { try { fs.closeSync(f) } catch {} }
for (const d of dirs.values()) { try { d.closeSync() } catch {} }
process.stdout.write(JSON.stringify(out) + '\n')
