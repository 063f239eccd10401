import { EXIT, UserError } from '../errors'
import type { Logger } from '../log'
import type { ReplicaUrl } from '../replica/url'
import { FileReplica } from '../replica/file'
import { ReplicaError, type Replica } from '../replica/replica'
import { SftpReplica } from '../replica/sftp'
import { countTree, progress } from '../progress'
import { Reconciler, type ReconcileOptions, type ReconcileStats } from './reconcile'

/** How each replica is reached: the part of the config that verify and resync share. */
export interface ReplicaConfig {
  replicas: ReplicaUrl[]
  identities: string[]
  knownHosts: string
  timeoutSeconds: number
}

/**
 * Builds and connects every replica. One that cannot be reached, or whose host key is unknown
 * or changed, refuses the command (exit 3) with its reason: nothing is ever accepted on first
 * use.
 */
export async function connectReplicas (c: ReplicaConfig, log: Logger): Promise<Replica[]> {
  const replicas: Replica[] = c.replicas.map(u => u.kind === 'file'
    ? new FileReplica(u.url, u.root)
    : new SftpReplica({ ...u, identities: c.identities, knownHosts: c.knownHosts, timeoutMs: c.timeoutSeconds * 1000, log }))
  for (const r of replicas) {
    try {
      await r.connect()
    } catch (err) {
      await Promise.all(replicas.map(x => x.close()))
      throw new UserError((err as Error).message, EXIT.unreachable)
    }
    if (r instanceof SftpReplica) {
      for (const missing of r.missingExtensions()) log.warn('replica', `${r.url}: the server lacks ${missing}`)
    }
    log.info('replica', `${r.url}: connected`)
  }
  return replicas
}

/**
 * Makes `replica` identical to the source (`fix`), or lists how it differs, showing progress
 * (a bar on a terminal, a log line every few seconds otherwise). Resolves with the statistics.
 */
export async function reconcile (sourceBytes: string, replica: Replica, o: Omit<ReconcileOptions, 'parallel'>, log: Logger): Promise<ReconcileStats> {
  const r = new Reconciler(sourceBytes, replica, { ...o, parallel: RECONCILE_PARALLEL })
  const category = o.fix ? 'reconcile' : 'verify'
  const stop = progress(category, `${category} ${replica.url}`, () => r.stats, () => countTree(Buffer.from(sourceBytes, 'latin1')), log)
  try {
    return await r.run()
  } catch (err) {
    // The walk itself failed (the replica's root is gone, the connection dropped): a replica
    // that cannot be reached, not a bug.
    if (err instanceof ReplicaError) throw new UserError(`${category} ${replica.url}: ${err.message}`, EXIT.unreachable)
    throw err
  } finally {
    stop()
  }
}

/** Files copied at once by a reconcile, per replica. */
const RECONCILE_PARALLEL = 16
