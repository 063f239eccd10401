import { execFile } from 'node:child_process'
import { constants as fsc } from 'node:fs'
import { access, readFile, readdir, realpath, stat } from 'node:fs/promises'
import { sep } from 'node:path'
import { promisify } from 'node:util'
import { EXIT, UserError } from '../errors'
import type { Logger } from '../log'
import { native } from '../native'
import { localOnly, type ReplicationHook } from '../replication/mutation'
import { Changes } from '../source/changes'
import { makeOps } from './ops'

const run = promisify(execFile)

// Memory the native side points into (the fuse_thread_t, each thread's locals): it must
// outlive the mount, so it stays referenced from here until the process exits.
const pinned: unknown[] = []

/**
 * Kernel and libfuse options, and why each is there:
 * - default_permissions: the kernel checks modes and owners, as on a local disk (the daemon
 *   runs as root and would otherwise let anyone do anything);
 * - big_writes,max_write=131072: writes arrive in 128 KiB requests, not 4 KiB;
 * - hard_remove: unlink of an open file unlinks it, rather than renaming it to .fuse_hidden*
 *   (fd-based calls then reach us with a null path, see flag_nullpath_ok in the patch);
 * - use_ino: the source's inode numbers show through, so hard links look like hard links.
 * attr_timeout stays at libfuse's 1 s: with 0, fstat of an unlinked open file would always
 * fail (libfuse 2 looks it up by name); with 1 s, attributes seen through one name of a hard
 * link can lag a change made through another by up to 1 s (README, "Known limits").
 */
export function mountOptions (allowOther: boolean): string {
  const o = ['fsname=replicafs', 'subtype=replicafs', 'default_permissions', 'big_writes',
    'max_write=131072', 'hard_remove', 'use_ino']
  if (allowOther) o.push('allow_other')
  // libfuse prints every request to stderr: for debugging only, it is very slow.
  if (process.env.REPLICAFS_FUSE_DEBUG === '1') o.push('debug')
  return '-o' + o.join(',')
}

export interface MountOptions {
  /** As returned by checkPaths. */
  source: string
  mountpoint: string
  allowOther: boolean
  hook: ReplicationHook
  /** File for local.c to log each change's paths to before applying it; '' for none. */
  intents: string
  /** Per-op latency counters local.c adds to (--metrics; see src/metrics.ts), or null. */
  opTimes?: Buffer | null
  log: Logger
}

export interface Mounted {
  /** Resolves when the FUSE loop has ended (our unmount, or someone else's). */
  readonly ended: Promise<void>
  unmount (): Promise<void>
}

/** Octal escapes of /proc/self/mountinfo (space, tab, newline, backslash). */
function unescapeMountinfo (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** The filesystem type mounted at `path`, or null when nothing is. */
export async function mountedType (path: string): Promise<string | null> {
  const info = await readFile('/proc/self/mountinfo', 'latin1')
  let found: string | null = null
  for (const line of info.split('\n')) {
    const dash = line.indexOf(' - ')
    if (dash < 0) continue
    const fields = line.slice(0, dash).split(' ')
    if (fields[4] !== undefined && unescapeMountinfo(fields[4]) === path) {
      found = line.slice(dash + 3).split(' ')[0] ?? null
    }
  }
  return found
}

async function fusermountUnmount (path: string, lazy: boolean): Promise<void> {
  await run('fusermount', lazy ? ['-u', '-z', '--', path] : ['-u', '--', path])
}

/**
 * A FUSE mount left by a daemon that died (SIGKILL, crash) answers ENOTCONN to everything
 * and blocks a new mount: detach it. A mount whose daemon is alive is someone else's.
 */
async function clearStaleMount (mountpoint: string, log: Logger): Promise<void> {
  const type = await mountedType(mountpoint)
  if (type === null) return
  try {
    await stat(mountpoint)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTCONN') {
      log.info('fuse', `cleaning up the stale mount at ${mountpoint} left by a previous run`)
      await fusermountUnmount(mountpoint, true)
      return
    }
    throw err
  }
  throw new UserError(`mountpoint ${mountpoint} is already mounted (${type}): unmount it first`, EXIT.usage)
}

function inside (child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent.endsWith(sep) ? parent : parent + sep)
}

/** Checks what a user can get wrong, each with one sentence and its exit code. */
export async function checkPaths (sourceArg: string, mountArg: string, log: Logger): Promise<{ source: string, mountpoint: string }> {
  let source: string
  try {
    source = await realpath(sourceArg)
  } catch {
    throw new UserError(`source ${sourceArg} does not exist`, EXIT.usage)
  }
  if (!(await stat(source)).isDirectory()) throw new UserError(`source ${sourceArg} is not a directory`, EXIT.usage)
  if (source === '/') throw new UserError('source cannot be / (the whole filesystem)', EXIT.usage)

  let mountpoint: string
  try {
    await clearStaleMount(mountArg, log)
    mountpoint = await realpath(mountArg)
  } catch (err) {
    if (err instanceof UserError) throw err
    throw new UserError(`mountpoint ${mountArg} does not exist`, EXIT.usage)
  }
  if (!(await stat(mountpoint)).isDirectory()) throw new UserError(`mountpoint ${mountArg} is not a directory`, EXIT.usage)
  if (inside(mountpoint, source)) throw new UserError(`mountpoint ${mountArg} is inside the source ${sourceArg}: the mount would contain itself`, EXIT.usage)
  if (inside(source, mountpoint)) throw new UserError(`source ${sourceArg} is inside the mountpoint ${mountArg}: the mount would hide it`, EXIT.usage)
  if ((await readdir(mountpoint)).length > 0) throw new UserError(`mountpoint ${mountArg} is not empty: the mount would hide its files`, EXIT.usage)

  try {
    await access('/dev/fuse', fsc.R_OK | fsc.W_OK)
  } catch {
    throw new UserError('/dev/fuse is missing or not accessible: load the fuse module (modprobe fuse) or give the container the device', EXIT.unreachable)
  }
  return { source, mountpoint }
}

/**
 * Mounts `source` at `mountpoint` and resolves once the kernel has initialised the mount
 * (its first request), so that the mount is usable when this returns.
 */
export async function mount (o: MountOptions): Promise<Mounted> {
  const b = native()
  // Checked by checkPaths, before anything else was started.
  const root = o.source
  const mountpoint = o.mountpoint

  // The kernel already applied the caller's umask to every mode it sends.
  process.umask(0)
  // Byte-string form of the root, the same encoding as the paths the binding passes.
  const rootBytes = Buffer.from(root, 'utf8').toString('latin1')
  const replicate = o.hook !== localOnly

  let onInit!: () => void
  const ready = new Promise<void>(resolve => { onInit = resolve })
  let onEnded!: () => void
  const ended = new Promise<void>(resolve => { onEnded = resolve })

  const { handlers, implemented } = makeOps(b, new Changes(o.hook, o.log), o.log, () => onInit())
  const thread = Buffer.alloc(b.sizeof_fuse_thread_t)
  // Thread-locals of each FUSE worker thread: kept referenced for the life of the mount.
  const locals: Buffer[] = []
  const ctx = {}
  pinned.push(thread, locals, ctx, handlers, implemented, o.opTimes ?? null)
  try {
    b.fuse_native_mount(mountpoint, mountOptions(o.allowOther), thread, ctx, (size: number) => {
      const buf = Buffer.alloc(size)
      locals.push(buf)
      return buf
    }, handlers, implemented, () => onEnded(), rootBytes, replicate, Buffer.from(o.intents, 'utf8').toString('latin1'), o.opTimes ?? null)
  } catch (err) {
    const why = (err as Error).message === 'fuse failed' ? "libfuse's reason is above" : (err as Error).message
    throw new UserError(`cannot mount ${mountpoint} (${why})`, EXIT.unreachable)
  }
  await ready

  let unmounting: Promise<void> | null = null
  return {
    ended,
    unmount () {
      unmounting ??= (async () => {
        if (await mountedType(mountpoint) !== null) await fusermountUnmount(mountpoint, true)
      })()
      return unmounting
    },
  }
}
