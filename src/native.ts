import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { EXIT, UserError } from './errors'
import type { SharedAppends } from './replication/journal'

/**
 * The addon built from native-deps/ (patched fuse-native binding + local.c). Typed loosely on
 * purpose: src/fuse/ is the only code that calls into it.
 */
export interface NativeBinding extends SharedAppends {
  sizeof_fuse_thread_t: number
  fuse_native_mount (mnt: string, opts: string, thread: Buffer, ctx: object,
    malloc: (size: number) => Buffer, handlers: Function[], implemented: Uint32Array,
    onExit: () => void, root: string, replicate: boolean, intents: string, opTimes: Buffer | null): void
  fuse_native_unmount (mnt: string, thread: Buffer): void
  [name: string]: any
}

const addonPath = join(__dirname, '..', '..', 'native-deps', 'build', 'Release', 'replicafs_fuse.node')

let binding: NativeBinding | undefined

export function native (): NativeBinding {
  if (binding) return binding
  if (!existsSync(addonPath)) {
    throw new UserError(`the native FUSE binding is not built (${addonPath} is missing): run ./mount.sh once, or npm run build`, EXIT.unreachable)
  }
  try {
    binding = require(addonPath) as NativeBinding
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err)
    throw new UserError(`cannot load the native FUSE binding (${why}): install Debian's libfuse2 and fuse packages, or run ./mount.sh`, EXIT.unreachable)
  }
  return binding
}
