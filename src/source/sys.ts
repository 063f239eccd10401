import { native } from '../native'

/**
 * The single seam over the syscalls applied to the source directory (native-deps/src/
 * sysops.c, on libuv's thread pool). Paths are byte strings: one JS char per byte (latin1),
 * so any name the kernel accepts can be spelled. `done` gets a result >= 0 or a negative
 * errno, which keeps the per-syscall path free of Error objects.
 */
export const enum Op {
  open = 0, close, pwrite, fsync, ftruncate, truncate, unlink, rmdir, mkdir, rename, link,
  symlink, chmod, lchown, utimens, mknod, setxattr, removexattr,
}

/** `-1` as uid: leave the owner to the daemon (the caller is the daemon's own user). */
export const NO_OWNER = -1

export type Done = (res: number) => void

export interface Sys {
  call (op: Op, s1: string | null, s2: string | null, i1: number, i2: number, i3: number,
    i4: number, buf: ArrayBufferView | null, done: Done): void
}

export function nativeSys (): Sys {
  const call = native().sys_call
  return { call }
}
