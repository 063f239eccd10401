import { ReplicaError, type Replica } from '../replica/replica'

/** The hidden names replicas write new files under until they are published. */
export const TEMP_PREFIX = '.replicafs.'
export const TEMP_SUFFIX = '.tmp'

/** True for the hidden names replicafs writes under; a resync sweeps them away. */
export function isTempName (name: string): boolean {
  return name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX)
}

/**
 * `path` on the replica becomes another name of `first`, atomically: linked under `temp`,
 * then renamed into place. false where the replica will not link them (no
 * hardlink@openssh.com, a filesystem without links, `first` missing): a copy will do. The
 * temp name is gone either way (a rename onto a name of the same file leaves it).
 */
export async function linkOver (r: Replica, first: string, temp: string, path: string): Promise<boolean> {
  let linked = false
  try {
    await r.link(first, temp)
    linked = true
    await r.rename(temp, path)
    await r.unlink(temp).catch(() => {})
    return true
  } catch (err) {
    if (!(err instanceof ReplicaError) || err.transient) throw err
    if (linked) await r.unlink(temp).catch(() => {})
    return false
  }
}
