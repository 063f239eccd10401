import { E } from '../errors'
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
 * then renamed into place. false where the replica cannot link (no hardlink@openssh.com):
 * a copy will do.
 */
export async function linkOver (r: Replica, first: string, temp: string, path: string): Promise<boolean> {
  try {
    await r.link(first, temp)
    await r.rename(temp, path)
    return true
  } catch (err) {
    if (err instanceof ReplicaError && err.errno === E.EOPNOTSUPP) return false
    throw err
  }
}
