import { EXIT, UserError } from '../errors'
import type { Logger } from '../log'
import type { MountConfig } from '../config'
import { FileReplica } from '../replica/file'
import type { Replica } from '../replica/replica'
import { SftpReplica } from '../replica/sftp'
import { Journal } from './journal'
import { Replicator } from './replicator'

/**
 * Builds and connects every replica of the config. A replica that cannot be reached, or
 * whose host key is unknown or changed, refuses the mount (exit 3) with its reason: nothing
 * is ever accepted on first use.
 */
export async function startReplication (c: MountConfig, log: Logger): Promise<Replicator | null> {
  if (c.replicas.length === 0) return null
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

  const opened = c.mode === 'async' ? await Journal.open(c.stateDir, log) : null
  const replicator = new Replicator(replicas, {
    mode: c.mode,
    quorum: c.quorum,
    // The kernel waits for a sync call without limit: the deadline is ours alone.
    timeoutMs: c.timeoutSeconds * 1000,
    queueMaxBytes: c.journalMax,
    applier: { atomicPublish: !c.inPlace, daemonUid: process.getuid?.() ?? 0, daemonGid: process.getgid?.() ?? 0 },
    journal: opened?.journal ?? null,
    log,
  })
  if (opened !== null) replicator.restore(opened.records, opened.cursors)
  return replicator
}
