/** The hidden names replicas write new files under until they are published. */
export const TEMP_PREFIX = '.replicafs.'
export const TEMP_SUFFIX = '.tmp'

/** True for the hidden names replicafs writes under; a resync sweeps them away. */
export function isTempName (name: string): boolean {
  return name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX)
}
