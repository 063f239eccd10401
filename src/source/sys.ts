import { native } from '../native'

/**
 * The single seam over the syscalls applied to the source directory (native-deps/src/
 * sysops.c, on libuv's thread pool). Paths are byte strings: one JS char per byte (latin1),
 * so any name the kernel accepts can be spelled. Each call resolves to a result >= 0 or
 * rejects with nothing: callers get the negative errno as the result instead, which keeps
 * the per-syscall path free of Error objects.
 */
export const enum Op {
  open = 0, close, pread, pwrite, fsync, ftruncate, truncate, lstat, fstat, statvfs, access,
  readdir, readlink, unlink, rmdir, mkdir, rename, link, symlink, chmod, lchown, utimens,
  mknod, setxattr, getxattr, listxattr, removexattr, opendir, fchown,
}

/** Length of the Uint32Array a stat is written into (layout: native-deps/src/sysops.c). */
export const STAT_WORDS = 22
export const STATVFS_WORDS = 17

/** `-1` as uid: leave the owner to the daemon (the caller is the daemon's own user). */
export const NO_OWNER = -1

export type Done = (res: number, value?: any) => void

export interface Sys {
  call (op: Op, s1: string | null, s2: string | null, i1: number, i2: number, i3: number,
    i4: number, buf: ArrayBufferView | null, done: Done): void
}

export function nativeSys (): Sys {
  const call = native().sys_call
  return { call }
}

/** Promise form, for code off the hot path. Resolves to [res, value]. */
export function sysAsync (sys: Sys, op: Op, s1: string | null, s2: string | null = null,
  i1 = 0, i2 = 0, i3 = 0, i4 = 0, buf: ArrayBufferView | null = null): Promise<[number, any]> {
  return new Promise(resolve => sys.call(op, s1, s2, i1, i2, i3, i4, buf, (res, value) => resolve([res, value])))
}
