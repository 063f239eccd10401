import { E } from '../errors'
import type { Logger } from '../log'
import type { NativeBinding } from '../native'
import type { Changes } from '../source/changes'

/**
 * The op table for changes: the one module that knows fuse-native's calling convention.
 * native-deps/src/local.c applies every call to the source itself; only a change that
 * succeeded, and only when there are replicas, reaches a handler here. Each handler reads the
 * local result and the caller from `l` (the binding's per-thread buffer: words 0-2 are the
 * caller's uid, gid and pid, word 3 the local result, words 4-5 extra facts about it), makes one Mutation, and answers
 * through the matching `fuse_native_signal_*`, which must always receive arguments of the
 * right type (a bad one leaves the kernel request unanswered). This is the errno boundary: a
 * handler that throws answers EIO.
 */

// Fixed arity (at most six arguments after `op`): no rest array on the per-syscall path.
type Handler = (l: Buffer, op: number, a?: any, b?: any, c?: any, d?: any, e?: any, f?: any) => void

const TWO32 = 4294967296

const result = (l: Buffer): number => l.readInt32LE(12)
const extra = (l: Buffer): number => l.readUInt32LE(16)
const extra2 = (l: Buffer): number => l.readUInt32LE(20)
const uid = (l: Buffer): number => l.readUInt32LE(0)
const gid = (l: Buffer): number => l.readUInt32LE(4)

export interface OpTable {
  handlers: Handler[]
  implemented: Uint32Array
}

export function makeOps (b: NativeBinding, changes: Changes, log: Logger, onInit: () => void): OpTable {
  const handlers: Handler[] = []
  const implemented = new Uint32Array(35)

  const on = (name: string, handler: Handler) => {
    const op = b[`op_${name}`] as number
    const signal = b[`fuse_native_signal_${name}`] as Function
    implemented[op] = 1
    handlers[op] = function guarded (l, opcode, a, b, c, d, e, f) {
      try {
        handler(l, opcode, a, b, c, d, e, f)
      } catch (err) {
        log.error('fuse', `${name} handler threw`, err)
        fail(signal, name, l, a, b, c)
      }
    }
  }

  // An answer of the right shape for every op, for the EIO of a handler that threw.
  function fail (signal: Function, name: string, l: Buffer, a: unknown, b: unknown, c: unknown): void {
    switch (name) {
      case 'open': case 'create': return signal(l, -E.EIO, 0)
      case 'write': return signal(l, -E.EIO, 0, (c as Buffer).buffer)
      case 'setxattr': return signal(l, -E.EIO, (c as Buffer).buffer)
      default: return signal(l, -E.EIO)
    }
  }

  const s = (name: string) => b[`fuse_native_signal_${name}`] as Function

  const sInit = s('init')
  on('init', (l) => {
    sInit(l, 0)
    onInit()
  })

  const sOpen = s('open')
  on('open', (l, _op, path: string) => {
    const fh = result(l)
    changes.commit(0, { op: 'open-truncate', path, fh, links: extra(l), uid: uid(l), gid: gid(l) }, res => sOpen(l, res, fh))
  })

  const sCreate = s('create')
  on('create', (l, _op, path: string, mode: number, flags: number) => {
    const fh = result(l)
    changes.commit(0, { op: 'create', path, mode, flags, fh, uid: uid(l), gid: gid(l) }, res => sCreate(l, res, fh))
  })

  const sWrite = s('write')
  on('write', (l, _op, path: string | null, fh: number, buf: Buffer, len: number, lo: number, hi: number) => {
    changes.commit(result(l), { op: 'write', path, fh, offset: lo + hi * TWO32, data: buf.subarray(0, len), uid: uid(l), gid: gid(l) }, n => sWrite(l, n, 0, buf.buffer))
  })

  const sFlush = s('flush')
  on('flush', (l, _op, path: string | null, fh: number) => {
    changes.commit(0, { op: 'flush', path, fh, uid: uid(l), gid: gid(l) }, res => sFlush(l, res))
  })

  const sFsync = s('fsync')
  on('fsync', (l, _op, path: string | null, datasync: number, fh: number) => {
    changes.commit(0, { op: 'fsync', path, fh, datasync: datasync !== 0, uid: uid(l), gid: gid(l) }, res => sFsync(l, res))
  })

  const sRelease = s('release')
  on('release', (l, _op, path: string | null, fh: number) => {
    changes.commit(0, { op: 'release', path, fh, mtime: extra(l), atime: extra2(l), uid: uid(l), gid: gid(l) }, res => sRelease(l, res))
  })

  const sTruncate = s('truncate')
  on('truncate', (l, _op, path: string, lo: number, hi: number) => {
    changes.commit(0, { op: 'truncate', path, fh: null, size: lo + hi * TWO32, uid: uid(l), gid: gid(l) }, res => sTruncate(l, res))
  })

  const sFtruncate = s('ftruncate')
  on('ftruncate', (l, _op, path: string | null, fh: number, lo: number, hi: number) => {
    changes.commit(0, { op: 'truncate', path, fh, size: lo + hi * TWO32, uid: uid(l), gid: gid(l) }, res => sFtruncate(l, res))
  })

  const sMkdir = s('mkdir')
  on('mkdir', (l, _op, path: string, mode: number) => {
    changes.commit(0, { op: 'mkdir', path, mode, uid: uid(l), gid: gid(l) }, res => sMkdir(l, res))
  })

  const sMknod = s('mknod')
  on('mknod', (l, _op, path: string, mode: number, rdev: number) => {
    changes.commit(0, { op: 'mknod', path, mode, rdev, uid: uid(l), gid: gid(l) }, res => sMknod(l, res))
  })

  const sSymlink = s('symlink')
  on('symlink', (l, _op, target: string, path: string) => {
    changes.commit(0, { op: 'symlink', path, target, uid: uid(l), gid: gid(l) }, res => sSymlink(l, res))
  })

  const sLink = s('link')
  on('link', (l, _op, from: string, path: string) => {
    changes.commit(0, { op: 'link', from, path, uid: uid(l), gid: gid(l) }, res => sLink(l, res))
  })

  const sRename = s('rename')
  on('rename', (l, _op, from: string, path: string) => {
    changes.commit(0, { op: 'rename', from, path, uid: uid(l), gid: gid(l) }, res => sRename(l, res))
  })

  const sUnlink = s('unlink')
  on('unlink', (l, _op, path: string) => {
    changes.commit(0, { op: 'unlink', path, uid: uid(l), gid: gid(l) }, res => sUnlink(l, res))
  })

  const sRmdir = s('rmdir')
  on('rmdir', (l, _op, path: string) => {
    changes.commit(0, { op: 'rmdir', path, uid: uid(l), gid: gid(l) }, res => sRmdir(l, res))
  })

  const sChmod = s('chmod')
  on('chmod', (l, _op, path: string, mode: number) => {
    changes.commit(0, { op: 'chmod', path, mode, uid: uid(l), gid: gid(l) }, res => sChmod(l, res))
  })

  const sChown = s('chown')
  on('chown', (l, _op, path: string, owner: number, group: number) => {
    changes.commit(0, { op: 'chown', path, owner, group, uid: uid(l), gid: gid(l) }, res => sChown(l, res))
  })

  const sUtimens = s('utimens')
  on('utimens', (l, _op, path: string, asec: number, ansec: number, msec: number, mnsec: number) => {
    changes.commit(0, {
      op: 'utimens',
      path,
      atime: { sec: asec, nsec: ansec },
      mtime: { sec: msec, nsec: mnsec },
      uid: uid(l),
      gid: gid(l),
    }, res => sUtimens(l, res))
  })

  const sSetxattr = s('setxattr')
  on('setxattr', (l, _op, path: string, name: string, value: Buffer, _position: number, flags: number) => {
    changes.commit(0, { op: 'setxattr', path, name, value, flags, uid: uid(l), gid: gid(l) }, res => sSetxattr(l, res, value.buffer))
  })

  const sRemovexattr = s('removexattr')
  on('removexattr', (l, _op, path: string, name: string) => {
    changes.commit(0, { op: 'removexattr', path, name, uid: uid(l), gid: gid(l) }, res => sRemovexattr(l, res))
  })

  return { handlers, implemented }
}
