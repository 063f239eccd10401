// The upload scene's hosts, for the end-to-end tests: each backup in its own network namespace
// (a veth pair, addresses from 198.18.0.0/15, used only between this machine and its
// namespaces) running OpenSSH's sshd and nginx over its replica directory; on the master, vsftpd
// with its local root on the mountpoint and a non-root local user; and curl as the FTP client.
// Everything started here is stopped by pid, and every namespace and link removed, by cleanup.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFileSync, chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { get, request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startSshd, type Sshd } from './sshd'

const run = promisify(execFile)
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
const START_MS = 10_000

/** The user vsftpd lets in: a local account with a password, no root. */
export const FTP_USER = 'rfsftpe2e'
/**
 * Its password: random, made once per machine and kept where only root reads it (not in the
 * repository: the account is a real local one). Test files running at once share it.
 */
const FTP_PASS_FILE = '/var/lib/replicafs-test/ftp-password'
export const FTP_PASS = ftpPassword()

function ftpPassword (): string {
  try {
    return readFileSync(FTP_PASS_FILE, 'utf8').trim()
  } catch {}
  mkdirSync('/var/lib/replicafs-test', { recursive: true, mode: 0o755 })
  const made = randomBytes(18).toString('base64url')
  try {
    // wx: of two test files making it at once, one wins and both read its.
    writeFileSync(FTP_PASS_FILE, made + '\n', { mode: 0o600, flag: 'wx' })
  } catch {}
  return readFileSync(FTP_PASS_FILE, 'utf8').trim()
}

/** curl's flags for every call: never through a proxy the environment names. */
export const CURL = ['-sS', '--noproxy', '*']

async function ip (...args: string[]): Promise<string> {
  return (await run('ip', args)).stdout
}

/** A free /24 in 198.18.0.0/15: the third and fourth octets of its two ends. */
async function freeSubnet (): Promise<string> {
  const used = await ip('-o', '-4', 'addr', 'show')
  for (let i = 0; i < 100; i++) {
    const net = `198.${18 + (Math.random() < 0.5 ? 0 : 1)}.${Math.floor(Math.random() * 256)}`
    if (!used.includes(`${net}.`)) return net
  }
  throw new Error('no free /24 in 198.18.0.0/15')
}

/** A network namespace joined to this one by a veth pair: `addr` inside, `peer` outside. */
export interface Netns {
  name: string
  addr: string
  peer: string
  /** The link inside the namespace goes down (the backup is cut off) or up again. */
  down (): Promise<void>
  up (): Promise<void>
  remove (): Promise<void>
}

export async function makeNetns (): Promise<Netns> {
  const tag = `${process.pid % 100000}${Math.floor(Math.random() * 1000)}`
  const name = `rfs-e2e-${tag}`
  const outside = `rfo${tag}`.slice(0, 15)
  const inside = `rfi${tag}`.slice(0, 15)
  const net = await freeSubnet()
  const addr = `${net}.2`
  const peer = `${net}.1`
  await ip('netns', 'add', name)
  const remove = async () => {
    await ip('link', 'del', outside).catch(() => {})
    await ip('netns', 'del', name).catch(() => {})
  }
  try {
    await ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside)
    await ip('link', 'set', inside, 'netns', name)
    await ip('addr', 'add', `${peer}/24`, 'dev', outside)
    await ip('link', 'set', outside, 'up')
    await ip('-n', name, 'addr', 'add', `${addr}/24`, 'dev', inside)
    await ip('-n', name, 'link', 'set', inside, 'up')
    await ip('-n', name, 'link', 'set', 'lo', 'up')
  } catch (err) {
    await remove()
    throw err
  }
  return {
    name,
    addr,
    peer,
    down: async () => { await ip('-n', name, 'link', 'set', inside, 'down') },
    up: async () => { await ip('-n', name, 'link', 'set', inside, 'up') },
    remove,
  }
}

/** Waits until `host:port` accepts a connection. */
async function listening (host: string, port: number, what: string, proc: ChildProcess, log: () => string): Promise<void> {
  const end = Date.now() + START_MS
  while (Date.now() < end) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited during startup:\n${log()}`)
    const ok = await new Promise<boolean>(resolve => {
      const s = connect({ host, port })
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await sleep(50)
  }
  throw new Error(`${what} did not listen on ${host}:${port} within ${START_MS} ms:\n${log()}`)
}

async function stop (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise(resolve => proc.once('exit', resolve))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/** A backup web server: its namespace, its sshd (root, key only) and nginx over `root`. */
export interface Backup {
  netns: Netns
  sshd: Sshd
  /** The replica directory nginx serves. */
  root: string
  /** --replica URL, --identity and --known-hosts for this backup alone. */
  replicaArgs: string[]
  url: string
  /** GET http://addr/path from its nginx: the body, or null on 404. */
  fetch (path: string): Promise<Buffer | null>
  /** HEAD http://addr/path: the Content-Length nginx would serve, or null on 404. */
  length (path: string): Promise<number | null>
  cleanup (): Promise<void>
}

/** `chrootSftpOnly`: the backup's account is chrooted and SFTP-only (startSshd's option). */
export async function startBackup (o: { chrootSftpOnly?: boolean } = {}): Promise<Backup> {
  const netns = await makeNetns()
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-backup-'))
  chmodSync(dir, 0o755)
  let sshd: Sshd | undefined
  let nginx: ChildProcess | undefined
  const cleanup = async () => {
    if (nginx !== undefined) await stop(nginx)
    await sshd?.cleanup()
    await netns.remove()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    sshd = await startSshd({ netns: netns.name, host: netns.addr, chrootSftpOnly: o.chrootSftpOnly })
    const root = sshd.chrootDataPath ?? join(dir, 'www')
    mkdirSync(root, { recursive: true, mode: 0o755 })
    const conf = join(dir, 'nginx.conf')
    const logFile = join(dir, 'nginx.log')
    writeFileSync(conf, [
      'daemon off;',
      'master_process off;',
      'user root;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${logFile} warn;`,
      'events { worker_connections 256; }',
      'http {',
      '  access_log off;',
      `  client_body_temp_path ${dir}/body;`,
      `  proxy_temp_path ${dir}/proxy;`,
      `  fastcgi_temp_path ${dir}/fastcgi;`,
      `  uwsgi_temp_path ${dir}/uwsgi;`,
      `  scgi_temp_path ${dir}/scgi;`,
      '  open_file_cache off;',
      '  etag off;',
      `  server { listen ${netns.addr}:80; root ${root}; location / { } }`,
      '}',
    ].join('\n') + '\n')
    nginx = spawn('ip', ['netns', 'exec', netns.name, '/usr/sbin/nginx', '-c', conf, '-e', logFile], { stdio: 'ignore' })
    await listening(netns.addr, 80, 'nginx', nginx, () => { try { return readFileSync(logFile, 'utf8') } catch { return '' } })
    // A chrooted account sees its data directory as /data.
    const url = `sftp://${sshd.user}@${netns.addr}:22${sshd.chrootDataPath !== undefined ? '/data' : root}`
    return {
      netns,
      sshd,
      root,
      url,
      replicaArgs: ['--replica', url, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts],
      fetch: path => httpGet(netns.addr, path),
      length: path => httpHead(netns.addr, path),
      cleanup,
    }
  } catch (err) {
    await cleanup()
    throw err
  }
}

/**
 * `n` backups that one key logs in to and one known_hosts file knows (a mount takes a single
 * --identity and --known-hosts for all its replicas): `args` are those two flags and each
 * backup's --replica. Cleaned up by `cleanup`, also where starting one failed.
 */
export async function startBackups (n: number, o: { chrootSftpOnly?: boolean } = {}): Promise<{ backups: Backup[], args: string[], cleanup: () => Promise<void> }> {
  const backups: Backup[] = []
  const cleanup = async () => { await Promise.all(backups.map(b => b.cleanup())) }
  try {
    for (let i = 0; i < n; i++) backups.push(await startBackup(o))
  } catch (err) {
    await cleanup()
    throw err
  }
  const first = backups[0]!.sshd
  for (const b of backups.slice(1)) {
    appendFileSync(join(b.sshd.dir, 'authorized_keys'), readFileSync(`${first.identity}.pub`))
    appendFileSync(first.knownHosts, readFileSync(b.sshd.knownHosts))
  }
  return {
    backups,
    args: ['--identity', first.identity, '--known-hosts', first.knownHosts, ...backups.flatMap(b => ['--replica', b.url])],
    cleanup,
  }
}

function httpHead (host: string, path: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port: 80, path: encodeURI(path), method: 'HEAD', agent: false, timeout: 10_000 }, res => {
      res.resume()
      res.on('end', () => {
        if (res.statusCode === 404) resolve(null)
        else if (res.statusCode === 200) resolve(Number(res.headers['content-length']))
        else reject(new Error(`HEAD http://${host}${path}: ${res.statusCode}`))
      })
    })
    req.on('timeout', () => req.destroy(new Error(`HEAD http://${host}${path}: timed out`)))
    req.on('error', reject)
    req.end()
  })
}

function httpGet (host: string, path: string): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port: 80, path: encodeURI(path), agent: false, timeout: 10_000 }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        if (res.statusCode === 404) resolve(null)
        else if (res.statusCode === 200) resolve(Buffer.concat(chunks))
        else reject(new Error(`GET http://${host}${path}: ${res.statusCode}`))
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET http://${host}${path}: timed out`)))
    req.on('error', reject)
  })
}

/** vsftpd on 127.0.0.1, its local root on `root`, for FTP_USER. */
export interface Ftp {
  port: number
  /** curl as FTP_USER: `args` after the URL (ftp://127.0.0.1:port/`path`). Rejects on failure. */
  curl (path: string, ...args: string[]): Promise<string>
  cleanup (): Promise<void>
}

let ftpUserMade: Promise<{ uid: number, gid: number }> | null = null

/** The FTP user, made where missing, its password set (once per process). */
function ensureFtpUser (): Promise<{ uid: number, gid: number }> {
  return ftpUserMade ??= makeFtpUser()
}

async function makeFtpUser (): Promise<{ uid: number, gid: number }> {
  const ids = async () => {
    const { stdout } = await run('id', [FTP_USER])
    return { uid: Number(/uid=(\d+)/.exec(stdout)![1]), gid: Number(/gid=(\d+)/.exec(stdout)![1]) }
  }
  try {
    await ids()
  } catch {
    // vsftpd enters the home directory before local_root: one that exists.
    await run('useradd', ['--system', '--no-create-home', '--home-dir', '/', '--shell', '/bin/bash', FTP_USER])
  }
  const child = spawn('chpasswd', [], { stdio: ['pipe', 'ignore', 'inherit'] })
  child.stdin!.end(`${FTP_USER}:${FTP_PASS}\n`)
  const code = await new Promise(resolve => child.once('exit', resolve))
  if (code !== 0) throw new Error(`chpasswd for ${FTP_USER} exited ${String(code)}`)
  return ids()
}

/** The uid and gid FTP uploads are owned by. */
export async function ftpUser (): Promise<{ uid: number, gid: number }> {
  return ensureFtpUser()
}

export async function startFtp (root: string): Promise<Ftp> {
  await ensureFtpUser()
  // A random port (and passive range) that may be taken: a few tries.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startFtpOn(root, 20000 + Math.floor(Math.random() * 20000))
    } catch (err) {
      if (attempt >= 5) throw err
    }
  }
}

async function startFtpOn (root: string, port: number): Promise<Ftp> {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-ftp-'))
  mkdirSync('/var/run/vsftpd/empty', { recursive: true })
  const pasv = port + 1
  const conf = join(dir, 'vsftpd.conf')
  const logFile = join(dir, 'vsftpd.log')
  writeFileSync(conf, [
    'listen=YES',
    'listen_ipv6=NO',
    'listen_address=127.0.0.1',
    `listen_port=${port}`,
    'background=NO',
    'anonymous_enable=NO',
    'local_enable=YES',
    'write_enable=YES',
    'local_umask=022',
    `local_root=${root}`,
    'pasv_enable=YES',
    'pasv_address=127.0.0.1',
    `pasv_min_port=${pasv}`,
    `pasv_max_port=${pasv + 20}`,
    'pam_service_name=vsftpd',
    'secure_chroot_dir=/var/run/vsftpd/empty',
    'seccomp_sandbox=NO',
    'max_clients=50',
    'max_per_ip=50',
    'xferlog_enable=NO',
    'dual_log_enable=NO',
    `vsftpd_log_file=${logFile}`,
    'log_ftp_protocol=NO',
    'userlist_enable=NO',
    'connect_from_port_20=NO',
  ].join('\n') + '\n')
  chmodSync(conf, 0o600)
  chownSync(conf, 0, 0)
  const proc = spawn('/usr/sbin/vsftpd', [conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const cleanup = async () => {
    await stop(proc)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await listening('127.0.0.1', port, 'vsftpd', proc, () => stderr)
  } catch (err) {
    await cleanup()
    throw err
  }
  return {
    port,
    curl: async (path, ...args) => {
      const url = `ftp://127.0.0.1:${port}/${path.replace(/^\//, '')}`
      try {
        return (await run('curl', [...CURL, '--user', `${FTP_USER}:${FTP_PASS}`, '--max-time', '60', url, ...args], { maxBuffer: 16 * 1024 * 1024 })).stdout
      } catch (err) {
        throw new Error(`curl ${url} ${args.join(' ')}: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`)
      }
    },
    cleanup,
  }
}
