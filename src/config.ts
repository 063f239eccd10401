import { join, resolve } from 'node:path'
import { EXIT, UserError } from './errors'
import type { Mode } from './replication/replicator'
import { defaultIdentities, defaultKnownHosts, parseReplicaUrl, type ReplicaUrl } from './replica/url'


/** Everything `replicafs mount` runs with. Defaults live here and nowhere else. */
export interface MountConfig {
  source: string
  mountpoint: string
  allowOther: boolean
  replicas: ReplicaUrl[]
  /** sync (default): a call answers once `quorum` replicas applied it. */
  mode: Mode
  /** Replicas that must apply a change before a sync call answers; default: all. */
  quorum: number
  /** Private keys to try, in order; default ~/.ssh/id_ed25519 then ~/.ssh/id_rsa. */
  identities: string[]
  /** default ~/.ssh/known_hosts */
  knownHosts: string
  /** Sync deadline and connect timeout, seconds; default 10. */
  timeoutSeconds: number
  /** Bytes of changes held for a replica that is behind before it is switched to a resync; default 1 GiB. */
  journalMax: number
  /** Stream files into place instead of writing them under a temp name; default off. */
  inPlace: boolean
  /** Where the async journal and replica progress live; default /var/lib/replicafs/<mountpoint>. */
  stateDir: string
  /** Make each replica identical to the source before mounting; default on. */
  reconcile: boolean
  /** Reconcile compares every file's content, not only size and mtime; default off. */
  checksum: boolean
  /** gitignore-style patterns of paths served but never replicated; default none. */
  excludes: string[]
  /** Where the Prometheus endpoint listens; default none (off). */
  metrics: { host: string, port: number } | null
  /** Make this source the master past the generation its mark says (a failover); default off. */
  promote: boolean
}

export const DEFAULTS = {
  mode: 'sync' as Mode,
  timeoutSeconds: 10,
  journalMax: 1024 ** 3,
}

/** The options `replicafs mount` accepts, for node:util parseArgs. */
export const MOUNT_OPTIONS = {
  'allow-other': { type: 'boolean' },
  replica: { type: 'string', multiple: true },
  mode: { type: 'string' },
  quorum: { type: 'string' },
  identity: { type: 'string' },
  'known-hosts': { type: 'string' },
  timeout: { type: 'string' },
  'journal-max': { type: 'string' },
  'in-place': { type: 'boolean' },
  'state-dir': { type: 'string' },
  'no-reconcile': { type: 'boolean' },
  checksum: { type: 'boolean' },
  exclude: { type: 'string', multiple: true },
  config: { type: 'string' },
  metrics: { type: 'string' },
  promote: { type: 'boolean' },
} as const

/** The options of `replicafs verify` and `replicafs resync`. */
export const TREE_OPTIONS = {
  replica: { type: 'string', multiple: true },
  identity: { type: 'string' },
  'known-hosts': { type: 'string' },
  timeout: { type: 'string' },
  checksum: { type: 'boolean' },
  json: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  exclude: { type: 'string', multiple: true },
  config: { type: 'string' },
} as const

const SIZE = /^(\d+)([KMGT]i?B?|B)?$/i
const UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }

function bad (option: string, value: string, expected: string): UserError {
  return new UserError(`--${option} ${value}: expected ${expected}`, EXIT.usage)
}

export function parseSize (option: string, value: string): number {
  const m = SIZE.exec(value.trim())
  if (!m) throw bad(option, value, 'a size in bytes, such as 1073741824, 512M or 1G')
  const unit = m[2]?.[0]?.toUpperCase()
  return Number(m[1]) * (unit !== undefined && unit !== 'B' ? UNITS[unit] ?? 1 : 1)
}

export function mountConfig (source: string, mountpoint: string, v: Record<string, unknown>): MountConfig {
  const replicas = ((v.replica as string[] | undefined) ?? []).map(parseReplicaUrl)
  const mode = (v.mode as string | undefined) ?? DEFAULTS.mode
  if (mode !== 'sync' && mode !== 'async') throw bad('mode', mode, 'sync or async')

  let quorum = replicas.length
  if (v.quorum !== undefined) {
    quorum = Number(v.quorum)
    if (!Number.isInteger(quorum) || quorum < 1 || quorum > replicas.length) {
      throw bad('quorum', String(v.quorum), `a whole number from 1 to the number of --replica (${replicas.length})`)
    }
  }

  const timeoutSeconds = timeout(v)

  return {
    source,
    mountpoint,
    allowOther: v['allow-other'] === true,
    replicas,
    mode,
    quorum,
    identities: v.identity !== undefined ? [v.identity as string] : defaultIdentities(),
    knownHosts: (v['known-hosts'] as string | undefined) ?? defaultKnownHosts(),
    timeoutSeconds,
    journalMax: v['journal-max'] !== undefined ? parseSize('journal-max', v['journal-max'] as string) : DEFAULTS.journalMax,
    inPlace: v['in-place'] === true,
    stateDir: (v['state-dir'] as string | undefined) ?? defaultStateDir(mountpoint),
    reconcile: v['no-reconcile'] !== true,
    checksum: v.checksum === true,
    excludes: (v.exclude as string[] | undefined) ?? [],
    metrics: metrics(v, replicas.length),
    promote: v.promote === true,
  }
}

/** `--metrics HOST:PORT`: where the Prometheus endpoint listens. */
export function parseListen (value: string): { host: string, port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(value)
  const port = Number(m?.[3])
  if (m === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UserError(`--metrics ${value}: expected HOST:PORT, such as 127.0.0.1:9469 or [::1]:9469`, EXIT.usage)
  }
  return { host: (m[1] ?? m[2]) as string, port }
}

function metrics (v: Record<string, unknown>, replicas: number): { host: string, port: number } | null {
  if (v.metrics === undefined) return null
  const listen = parseListen(v.metrics as string)
  if (replicas === 0) throw new UserError('--metrics needs at least one --replica: without replicas no call leaves the C layer to be measured', EXIT.usage)
  return listen
}

/** How `verify` and `resync` reach the replicas: at least one --replica. */
export function treeConfig (command: string, v: Record<string, unknown>): { replicas: ReplicaUrl[], identities: string[], knownHosts: string, timeoutSeconds: number, checksum: boolean, excludes: string[] } {
  const replicas = ((v.replica as string[] | undefined) ?? []).map(parseReplicaUrl)
  if (replicas.length === 0) throw new UserError(`${command} needs at least one --replica URL`, EXIT.usage)
  return {
    replicas,
    identities: v.identity !== undefined ? [v.identity as string] : defaultIdentities(),
    knownHosts: (v['known-hosts'] as string | undefined) ?? defaultKnownHosts(),
    timeoutSeconds: timeout(v),
    checksum: v.checksum === true,
    excludes: (v.exclude as string[] | undefined) ?? [],
  }
}

function timeout (v: Record<string, unknown>): number {
  if (v.timeout === undefined) return DEFAULTS.timeoutSeconds
  const t = Number(v.timeout)
  if (!Number.isFinite(t) || t <= 0 || t > 3600) throw bad('timeout', String(v.timeout), 'a number of seconds above 0 and at most 3600')
  return t
}

/** /var/lib/replicafs/<name>, the name made from the mountpoint's absolute path. */
export function defaultStateDir (mountpoint: string): string {
  const name = resolve(mountpoint).replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]+/g, '-') || 'root'
  return join('/var/lib/replicafs', name)
}
