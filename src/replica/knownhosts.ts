import { createHash, createHmac } from 'node:crypto'

/**
 * OpenSSH known_hosts matching, for ssh2's hostVerifier: plain entries (comma-separated host
 * patterns, `[host]:port` for a non-default port), hashed entries (`|1|salt|hmac`, HMAC-SHA1
 * of the host name keyed by the salt), and `@revoked` markers. Wildcards and negations are
 * not supported (a pattern with `*`, `?` or `!` never matches: refusing is the safe side).
 */
export type HostKeyVerdict = 'match' | 'mismatch' | 'unknown' | 'revoked'

export function hostName (host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`
}

export function fingerprint (key: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(key).digest('base64').replace(/=+$/, '')
}

function nameMatches (field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|')
    if (!salt || !hash) return false
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64')
    return mac === hash
  }
  return field.split(',').some(p => !/[*?!]/.test(p) && p.toLowerCase() === name.toLowerCase())
}

/**
 * The verdict for `key` (the raw public key blob the server offered) as `host`:`port`.
 * 'mismatch' when the host is known with other keys only: a changed key.
 */
export function checkHostKey (knownHosts: string, host: string, port: number, key: Buffer): HostKeyVerdict {
  const name = hostName(host, port)
  const offered = key.toString('base64')
  let known = false
  let matched = false
  for (const raw of knownHosts.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const fields = line.split(/\s+/)
    let marker: string | null = null
    if (fields[0]?.startsWith('@')) marker = fields.shift() ?? null
    const [names, , blob] = fields
    if (names === undefined || blob === undefined || !nameMatches(names, name)) continue
    if (marker === '@revoked') {
      if (blob === offered) return 'revoked'
      continue
    }
    if (marker !== null) continue // @cert-authority: not supported
    if (blob === offered) matched = true
    else known = true
  }
  return matched ? 'match' : known ? 'mismatch' : 'unknown'
}
