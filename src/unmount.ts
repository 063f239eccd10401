import { execFile } from 'node:child_process'
import { resolve } from 'node:path'
import { promisify } from 'node:util'
import { EXIT, UserError } from './errors'
import { mountedType } from './fuse/mount'

const run = promisify(execFile)

/** `replicafs unmount`: the daemon notices the end of its FUSE loop and exits 0. */
export async function unmountCommand (mountpoint: string): Promise<void> {
  const path = resolve(mountpoint)
  const type = await mountedType(path)
  if (type !== 'fuse.replicafs') {
    throw new UserError(`${mountpoint} is not a replicafs mount`, EXIT.usage)
  }
  try {
    await run('fusermount', ['-u', '--', path])
  } catch (err) {
    const why = (err as { stderr?: string }).stderr?.trim() || String(err)
    throw new UserError(`cannot unmount ${mountpoint}: ${why}`, EXIT.unreachable)
  }
}
