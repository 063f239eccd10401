import { homedir } from 'node:os'
import { isAbsolute, join, normalize } from 'node:path'
import { EXIT, UserError } from '../errors'

export type ReplicaUrl =
  | { kind: 'file', url: string, root: string }
  | { kind: 'sftp', url: string, user: string | null, host: string, port: number, root: string }

const SFTP = /^sftp:\/\/(?:([^@/]+)@)?(\[[0-9a-fA-F:.]+\]|[^:/[\]]+)(?::(\d+))?(\/.*)$/

/**
 * Parses `sftp://[user@]host[:port]/abs/path` or `file:///abs/path`. The path is absolute
 * and normalised; `..` is refused rather than resolved, so the root a user wrote is the root.
 */
export function parseReplicaUrl (url: string): ReplicaUrl {
  const bad = (why: string) => new UserError(`--replica ${url}: ${why}; expected sftp://[user@]host[:port]/abs/path or file:///abs/path`, EXIT.usage)
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      throw bad('a % escape in the path is malformed')
    }
  }
  let root: string
  if (url.startsWith('file://')) {
    root = decode(url.slice('file://'.length))
    if (!isAbsolute(root)) throw bad('the path is not absolute')
    if (root.split('/').includes('..')) throw bad('the path contains ..')
    return { kind: 'file', url, root: trimSlash(normalize(root)) }
  }
  const m = SFTP.exec(url)
  if (!m) throw bad(url.startsWith('sftp://') ? 'malformed sftp URL' : 'unknown scheme')
  const [, user, hostRaw, portRaw, pathRaw] = m
  const port = portRaw === undefined ? 22 : Number(portRaw)
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`port ${portRaw} is out of range`)
  root = decode(pathRaw as string)
  if (root.split('/').includes('..')) throw bad('the path contains ..')
  const host = (hostRaw as string).replace(/^\[(.*)\]$/, '$1')
  return { kind: 'sftp', url, user: user ?? null, host, port, root: trimSlash(normalize(root)) }
}

function trimSlash (p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p
}

/** The keys tried where --identity is not given, in order. */
export function defaultIdentities (): string[] {
  return [join(homedir(), '.ssh', 'id_ed25519'), join(homedir(), '.ssh', 'id_rsa')]
}

export function defaultKnownHosts (): string {
  return join(homedir(), '.ssh', 'known_hosts')
}
