import { E } from '../errors'
import type { Logger } from '../log'
import type { NativeBinding } from '../native'
import type { Caller, Source } from '../source/source'

/**
 * The op table for the calls that change something: the one module that knows fuse-native's
 * calling convention. (The calls that change nothing, getattr, read, readdir, opendir,
 * readlink, statfs, access, getxattr, listxattr, never reach JS: native-deps/src/passthrough.c answers
 * them on libfuse's threads.) Each handler
 * unpacks the binding's arguments, calls the Source, and answers through the matching
 * `fuse_native_signal_*`, which must always receive arguments of the right type (a bad one
 * leaves the kernel request unanswered). Results are already `>= 0` or `-errno`: this is
 * the errno boundary, and a handler that throws answers EIO.
 *
 * `l` is the per-thread buffer of the binding; its first three words are the caller's uid,
 * gid and pid (native-deps/fuse-native.patch).
 */

// Fixed arity (at most six arguments after `op`): no rest array on the per-syscall path.
type Handler = (l: Buffer, op: number, a?: any, b?: any, c?: any, d?: any, e?: any, f?: any) => void

const TWO32 = 4294967296

function caller (l: Buffer): Caller {
  return { uid: l.readUInt32LE(0), gid: l.readUInt32LE(4) }
}

export interface OpTable {
  handlers: Handler[]
  implemented: Uint32Array
}

export function makeOps (b: NativeBinding, source: Source, log: Logger, onInit: () => void): OpTable {
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
        fail(signal, name, l, [a, b, c, d, e, f])
      }
    }
  }

  // An answer of the right shape for every op, for the EIO of a handler that threw.
  function fail (signal: Function, name: string, l: Buffer, args: any[]): void {
    switch (name) {
      case 'open': case 'create': return signal(l, -E.EIO, 0)
      case 'write': return signal(l, -E.EIO, 0, (args[2] as Buffer).buffer)
      case 'setxattr': return signal(l, -E.EIO, (args[2] as Buffer).buffer)
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
  on('open', (l, _op, path: string, flags: number) => {
    source.open(path, flags, caller(l), fd => sOpen(l, fd < 0 ? fd : 0, fd < 0 ? 0 : fd))
  })

  const sCreate = s('create')
  on('create', (l, _op, path: string, mode: number, flags: number) => {
    source.create(path, mode, flags, caller(l), fd => sCreate(l, fd < 0 ? fd : 0, fd < 0 ? 0 : fd))
  })

  const sWrite = s('write')
  on('write', (l, _op, path: string | null, fh: number, buf: Buffer, len: number, lo: number, hi: number) => {
    source.write(path, fh, buf, len, lo + hi * TWO32, caller(l), n => sWrite(l, n, 0, buf.buffer))
  })

  const sFlush = s('flush')
  on('flush', (l, _op, path: string | null, fh: number) => {
    source.flush(path, fh, caller(l), res => sFlush(l, res))
  })

  const sFsync = s('fsync')
  on('fsync', (l, _op, path: string | null, datasync: number, fh: number) => {
    source.fsync(path, fh, datasync !== 0, caller(l), res => sFsync(l, res))
  })

  const sRelease = s('release')
  on('release', (l, _op, path: string | null, fh: number) => {
    source.release(path, fh, caller(l), res => sRelease(l, res))
  })

  const sTruncate = s('truncate')
  on('truncate', (l, _op, path: string, lo: number, hi: number) => {
    source.truncate(path, lo + hi * TWO32, caller(l), res => sTruncate(l, res))
  })

  const sFtruncate = s('ftruncate')
  on('ftruncate', (l, _op, path: string | null, fh: number, lo: number, hi: number) => {
    source.ftruncate(path, fh, lo + hi * TWO32, caller(l), res => sFtruncate(l, res))
  })

  const sMkdir = s('mkdir')
  on('mkdir', (l, _op, path: string, mode: number) => {
    source.mkdir(path, mode, caller(l), res => sMkdir(l, res))
  })

  const sMknod = s('mknod')
  on('mknod', (l, _op, path: string, mode: number, rdev: number) => {
    source.mknod(path, mode, rdev, caller(l), res => sMknod(l, res))
  })

  const sSymlink = s('symlink')
  on('symlink', (l, _op, target: string, path: string) => {
    source.symlink(target, path, caller(l), res => sSymlink(l, res))
  })

  const sLink = s('link')
  on('link', (l, _op, from: string, path: string) => {
    source.link(from, path, caller(l), res => sLink(l, res))
  })

  const sRename = s('rename')
  on('rename', (l, _op, from: string, path: string) => {
    source.rename(from, path, caller(l), res => sRename(l, res))
  })

  const sUnlink = s('unlink')
  on('unlink', (l, _op, path: string) => {
    source.unlink(path, caller(l), res => sUnlink(l, res))
  })

  const sRmdir = s('rmdir')
  on('rmdir', (l, _op, path: string) => {
    source.rmdir(path, caller(l), res => sRmdir(l, res))
  })

  const sChmod = s('chmod')
  on('chmod', (l, _op, path: string, mode: number) => {
    source.chmod(path, mode, caller(l), res => sChmod(l, res))
  })

  const sChown = s('chown')
  on('chown', (l, _op, path: string, owner: number, group: number) => {
    source.chown(path, owner, group, caller(l), res => sChown(l, res))
  })

  const sUtimens = s('utimens')
  on('utimens', (l, _op, path: string, asec: number, ansec: number, msec: number, mnsec: number) => {
    source.utimens(path, asec, ansec, msec, mnsec, caller(l), res => sUtimens(l, res))
  })

  const sSetxattr = s('setxattr')
  on('setxattr', (l, _op, path: string, name: string, value: Buffer, _position: number, flags: number) => {
    source.setxattr(path, name, value, value.length, flags, caller(l), res => sSetxattr(l, res, value.buffer))
  })

  const sRemovexattr = s('removexattr')
  on('removexattr', (l, _op, path: string, name: string) => {
    source.removexattr(path, name, caller(l), res => sRemovexattr(l, res))
  })

  return { handlers, implemented }
}
