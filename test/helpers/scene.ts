// The master side of the upload scene, for the end-to-end tests: backups (hosts.ts), a source
// the FTP user owns, mounted through replicafs with those backups as replicas, and vsftpd on
// the mountpoint. Everything is stopped and removed by the test's teardown, also where
// starting some of it failed.
import { chmodSync, chownSync, mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ftpUser, startBackups, startFtp, type Backup, type Ftp } from './hosts'
import { cleanupDir, startDaemon, stopDaemon, type Daemon } from './mount'

export interface Master {
  dir: string
  src: string
  mnt: string
  state: string
  /** Where a test writes the files it uploads. */
  upload: string
  daemon: Daemon
  ftp: Ftp
}

export interface SceneOptions {
  backups: number
  /** mount's flags besides the source, mountpoint, --state-dir and the replicas. */
  flags?: string[]
  /** Each backup's account chrooted and SFTP-only (startSshd's option). */
  chrootSftpOnly?: boolean
}

export async function scene (t: tap.Test, o: SceneOptions): Promise<{ bs: Backup[], args: string[], m: Master }> {
  const { backups, args, cleanup } = await startBackups(o.backups, { chrootSftpOnly: o.chrootSftpOnly })
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-e2e-'))
  chmodSync(dir, 0o755)
  const m = { dir, src: join(dir, 'src'), mnt: join(dir, 'mnt'), state: join(dir, 'state'), upload: join(dir, 'upload') } as Master
  let daemon: Daemon | undefined
  let ftp: Ftp | undefined
  t.teardown(async () => {
    await ftp?.cleanup()
    if (daemon !== undefined) await stopDaemon(daemon)
    cleanupDir(dir, m.mnt)
    await cleanup()
  })
  mkdirSync(m.src, { mode: 0o755 })
  mkdirSync(m.mnt)
  mkdirSync(m.upload)
  // A non-root backup account cannot give files away: there the replica's root stays its own.
  if (o.chrootSftpOnly !== true) {
    const { uid, gid } = await ftpUser()
    chownSync(m.src, uid, gid)
  }
  daemon = await startDaemon(['mount', m.src, m.mnt, '--allow-other', '--state-dir', m.state, ...args, ...(o.flags ?? [])])
  m.daemon = daemon
  m.ftp = ftp = await startFtp(m.mnt)
  return { bs: backups, args, m }
}
