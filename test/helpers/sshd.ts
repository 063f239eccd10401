// Test harness: runs a private OpenSSH sshd (not the system one) on a random
// 127.0.0.1 port with throwaway host/user keys in a temp dir.
//
// Only processes that are the sshd we spawned, or descendants of it, are ever
// signalled. Pids are tracked together with their /proc start time so a
// recycled pid is never hit.

import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createHmac, randomBytes } from 'node:crypto'
import { promises as fsp, readFileSync, readdirSync, openSync, closeSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

const SSHD = '/usr/sbin/sshd'
const HOST = '127.0.0.1'
const CHROOT_BASE = '/var/lib/replicafs-test'
const START_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 5_000

export interface SshdOptions {
  /** Create/use a system user confined by ChrootDirectory + ForceCommand internal-sftp. */
  chrootSftpOnly?: boolean
  /** Login user. Default 'root', or 'rfsftp' with chrootSftpOnly. */
  user?: string
  /** Run inside this network namespace (ip netns), listening on `host` port 22. */
  netns?: string
  /** The address to listen on (default 127.0.0.1). */
  host?: string
}

export interface Sshd {
  dir: string
  port: number
  host: string
  user: string
  /** path of the private user key (ed25519, no passphrase) */
  identity: string
  /** path of a known_hosts file with a plain `[127.0.0.1]:PORT ssh-ed25519 ...` line */
  knownHosts: string
  /** 'ssh-ed25519 AAAA...' (no comment) */
  hostPublicKey: string
  /** pid of the listening sshd (changes on restart) */
  pid: number
  /** with chrootSftpOnly: host path that the sftp user sees as /data */
  chrootDataPath?: string
  /** path of the sshd stderr log */
  logFile: string
  stop(): Promise<void>
  pause(): void
  resume(): void
  restart(): Promise<void>
  cleanup(): Promise<void>
  /** current contents of the sshd log */
  log(): string
}

/** `|1|salt|hash keytype base64` as in OpenSSH hostfile.c (HMAC-SHA1 keyed with the salt). */
export function hashedKnownHostsLine(host: string, publicKeyLine: string): string {
  const salt = randomBytes(20)
  const hash = createHmac('sha1', salt).update(host).digest()
  return `|1|${salt.toString('base64')}|${hash.toString('base64')} ${publicKeyLine.trim()}`
}

/** host string as written in known_hosts: bare for port 22, else `[host]:port` */
export function knownHostsHost(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`
}

// ---------------------------------------------------------------- processes

interface ProcId {
  pid: number
  start: string // starttime field of /proc/<pid>/stat
}

function readStat(pid: number): { ppid: number; start: string; state: string } | undefined {
  let s: string
  try {
    s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // comm may contain spaces/parens: fields start after the last ')'
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // rest[0]=state(3) rest[1]=ppid(4) ... starttime is field 22 -> rest[19]
  const state = rest[0] ?? ''
  const ppid = Number(rest[1])
  const start = rest[19] ?? ''
  return { ppid, start, state }
}

function alive(p: ProcId): boolean {
  const st = readStat(p.pid)
  return st !== undefined && st.start === p.start && st.state !== 'Z' && st.state !== 'X'
}

/** all live descendants of root (excluding root), parents before children */
function descendants(root: ProcId): ProcId[] {
  if (!alive(root)) return []
  const children = new Map<number, ProcId[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    const st = readStat(pid)
    if (!st) continue
    const list = children.get(st.ppid) ?? []
    list.push({ pid, start: st.start })
    children.set(st.ppid, list)
  }
  const out: ProcId[] = []
  const queue: number[] = [root.pid]
  while (queue.length) {
    const p = queue.shift() as number
    for (const c of children.get(p) ?? []) {
      out.push(c)
      queue.push(c.pid)
    }
  }
  return out
}

function signal(p: ProcId, sig: NodeJS.Signals): void {
  if (!alive(p)) return
  try {
    process.kill(p.pid, sig)
  } catch {
    /* already gone */
  }
}

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))

// Safety net: if the test process exits without cleanup, kill what we started.
const liveTrees = new Set<() => ProcId[]>()
process.once('exit', () => {
  for (const tree of liveTrees) for (const p of tree()) signal(p, 'SIGKILL')
})

// ---------------------------------------------------------------- helpers

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, HOST, () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

function tcpProbe(port: number, host = HOST): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.connect({ host, port })
    const done = (ok: boolean) => {
      s.removeAllListeners()
      s.destroy()
      resolve(ok)
    }
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
    s.setTimeout(1000, () => done(false))
  })
}

async function sshdVersion(): Promise<[number, number]> {
  // `sshd -V` prints the version on stderr (exit status varies by version)
  let text = ''
  try {
    const r = await execFileP(SSHD, ['-V'])
    text = r.stderr + r.stdout
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string }
    text = (err.stderr ?? '') + (err.stdout ?? '')
  }
  const m = /OpenSSH_(\d+)\.(\d+)/.exec(text)
  return m ? [Number(m[1]), Number(m[2])] : [0, 0]
}

async function ensureSftpUser(user: string): Promise<void> {
  try {
    await execFileP('id', ['-u', user])
  } catch {
    try {
      await execFileP('useradd', [
        '--system', '--no-create-home', '--home-dir', '/data',
        '--shell', '/usr/sbin/nologin', user,
      ])
    } catch (e) {
      // a concurrent test may have created it meanwhile
      await execFileP('id', ['-u', user]).catch(() => { throw e })
    }
  }
  // useradd leaves the password field as '!' which, with UsePAM no, sshd
  // treats as a locked account and refuses even key logins. '*' = no
  // password, not locked.
  const shadow = await fsp.readFile('/etc/shadow', 'utf8')
  const line = shadow.split('\n').find(l => l.startsWith(`${user}:`))
  const pw = line?.split(':')[1] ?? ''
  if (pw.startsWith('!')) await execFileP('usermod', ['-p', '*', user])
}

async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  const uid = Number((await execFileP('id', ['-u', user])).stdout.trim())
  const gid = Number((await execFileP('id', ['-g', user])).stdout.trim())
  return { uid, gid }
}

// ---------------------------------------------------------------- main

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  const chroot = opts.chrootSftpOnly === true
  const user = opts.user ?? (chroot ? 'rfsftp' : 'root')
  const host = opts.host ?? HOST

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'replicafs-sshd-'))
  // non-root users must be able to read authorized_keys (sshd reads it with
  // the user's privileges); private keys stay 0600.
  await fsp.chmod(dir, 0o755)
  let chrootRoot: string | undefined
  let killStarted: (() => Promise<void>) | undefined
  try {
    const hostKey = path.join(dir, 'host_ed25519')
    const identity = path.join(dir, 'user_ed25519')
    await Promise.all([
      execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'replicafs-test-host', '-f', hostKey]),
      execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'replicafs-test-user', '-f', identity]),
    ])
    const hostPublicKey = (await fsp.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ')
    const userPub = (await fsp.readFile(`${identity}.pub`, 'utf8')).trim()
    const authorizedKeys = path.join(dir, 'authorized_keys')
    await fsp.writeFile(authorizedKeys, userPub + '\n', { mode: 0o644 })

    let chrootDataPath: string | undefined
    if (chroot) {
      await ensureSftpUser(user)
      // every component of ChrootDirectory must be root-owned and not
      // group/world-writable: /tmp and /var/tmp (1777) are rejected.
      await fsp.mkdir(CHROOT_BASE, { recursive: true, mode: 0o755 })
      await fsp.chmod(CHROOT_BASE, 0o755)
      chrootRoot = await fsp.mkdtemp(path.join(CHROOT_BASE, 'chroot-'))
      await fsp.chmod(chrootRoot, 0o755)
      chrootDataPath = path.join(chrootRoot, 'data')
      await fsp.mkdir(chrootDataPath, { mode: 0o755 })
      const { uid, gid } = await userIds(user)
      await fsp.chown(chrootDataPath, uid, gid)
    }

    const [maj, min] = await sshdVersion()
    const configFile = path.join(dir, 'sshd_config')
    const knownHosts = path.join(dir, 'known_hosts')
    const logFile = path.join(dir, 'sshd.log')
    const pidFile = path.join(dir, 'sshd.pid')
    await fsp.mkdir('/run/sshd', { recursive: true, mode: 0o755 })

    const writeConfig = async (port: number) => {
      const lines = [
        `ListenAddress ${host}`,
        `Port ${port}`,
        `HostKey ${hostKey}`,
        `PidFile ${pidFile}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'UsePAM no',
        'StrictModes no',
        'UseDNS no',
        'Subsystem sftp internal-sftp',
        'LogLevel VERBOSE',
        'MaxSessions 32',
        'MaxStartups 100',
      ]
      // OpenSSH >= 9.8 penalises sources that connect without authenticating
      // (our readiness probes, killed sessions): disable for tests.
      if (maj > 9 || (maj === 9 && min >= 8)) lines.push('PerSourcePenalties no')
      if (chroot && chrootRoot) {
        lines.push(
          `Match User ${user}`,
          `  ChrootDirectory ${chrootRoot}`,
          '  ForceCommand internal-sftp',
          '  AllowTcpForwarding no',
          '  X11Forwarding no',
        )
      }
      await fsp.writeFile(configFile, lines.join('\n') + '\n')
      await fsp.writeFile(knownHosts, `${knownHostsHost(host, port)} ${hostPublicKey}\n`)
    }

    let child: ChildProcess | undefined
    let root: ProcId | undefined
    let exited: Promise<void> = Promise.resolve()
    const tree = (): ProcId[] => (root ? [root, ...descendants(root)] : [])

    const readLog = (): string => {
      try {
        return readFileSync(logFile, 'utf8')
      } catch {
        return ''
      }
    }

    /** spawn once on `port`; 'ok' | 'inuse' (sshd could not bind) ; throws otherwise */
    const spawnOnce = async (port: number): Promise<'ok' | 'inuse'> => {
      await writeConfig(port)
      const logStart = readLog().length
      const fd = openSync(logFile, 'a')
      const args = ['-D', '-e', '-f', configFile]
      // ip netns exec execs sshd itself: the pid is sshd's.
      const c = opts.netns !== undefined
        ? spawn('ip', ['netns', 'exec', opts.netns, SSHD, ...args], { stdio: ['ignore', fd, fd] })
        : spawn(SSHD, args, { stdio: ['ignore', fd, fd] })
      closeSync(fd)
      let exitCode: number | null | undefined
      let exitSignal: NodeJS.Signals | null = null
      let spawnError: Error | undefined
      c.once('error', e => { spawnError = e })
      exited = new Promise<void>(resolve => {
        c.once('exit', (code, sig) => {
          exitCode = code
          exitSignal = sig
          resolve()
        })
      })
      child = c
      if (c.pid !== undefined) {
        const st = readStat(c.pid)
        root = { pid: c.pid, start: st?.start ?? '' }
      }
      const deadline = Date.now() + START_TIMEOUT_MS
      while (Date.now() < deadline) {
        if (spawnError) throw spawnError
        if (exitCode !== undefined) {
          const log = readLog().slice(logStart)
          if (/Address already in use|Cannot bind any address/.test(log)) return 'inuse'
          throw new Error(`sshd exited (code ${exitCode}, signal ${exitSignal}) during startup:\n${log}`)
        }
        if (await tcpProbe(port, host)) return 'ok'
        await sleep(50)
      }
      await stopProcs()
      throw new Error(`sshd did not accept connections on port ${port} within ${START_TIMEOUT_MS} ms:\n${readLog()}`)
    }

    const stopProcs = async (): Promise<void> => {
      if (!root || !child) return
      const procs = tree()
      // SIGTERM first, then SIGCONT so paused processes can act on it
      for (const p of procs) signal(p, 'SIGTERM')
      for (const p of procs) signal(p, 'SIGCONT')
      const deadline = Date.now() + STOP_GRACE_MS
      const all = () => [...procs, ...tree()]
      while (Date.now() < deadline && all().some(alive)) await sleep(25)
      for (const p of all()) {
        signal(p, 'SIGKILL')
      }
      await exited
      while (procs.some(alive)) await sleep(25) // orphans reaped by init
      root = undefined
      child = undefined
    }

    const start = async (fixedPort?: number): Promise<number> => {
      const deadline = Date.now() + START_TIMEOUT_MS
      for (;;) {
        const port = fixedPort ?? (opts.netns !== undefined ? 22 : await freePort())
        const r = await spawnOnce(port)
        if (r === 'ok') return port
        if (Date.now() > deadline) {
          throw new Error(`sshd could not bind ${host}:${port}:\n${readLog()}`)
        }
        await sleep(fixedPort ? 200 : 10)
      }
    }

    liveTrees.add(tree)
    killStarted = async () => {
      await stopProcs()
      liveTrees.delete(tree)
    }
    const port = await start()

    let cleaned = false
    const sshd: Sshd = {
      dir,
      port,
      host,
      user,
      identity,
      knownHosts,
      hostPublicKey,
      pid: root ? (root as ProcId).pid : -1,
      logFile,
      log: readLog,
      async stop() {
        await stopProcs()
      },
      pause() {
        // stop top-down, rescan until no new descendants appear
        const stopped = new Set<number>()
        for (let i = 0; i < 10; i++) {
          const procs = tree().filter(p => !stopped.has(p.pid))
          if (procs.length === 0) break
          for (const p of procs) {
            signal(p, 'SIGSTOP')
            stopped.add(p.pid)
          }
        }
      },
      resume() {
        for (const p of tree()) signal(p, 'SIGCONT')
      },
      async restart() {
        await stopProcs()
        await start(sshd.port)
        sshd.pid = root ? root.pid : -1
      },
      async cleanup() {
        if (cleaned) return
        cleaned = true
        await stopProcs()
        liveTrees.delete(tree)
        await fsp.rm(dir, { recursive: true, force: true })
        if (chrootRoot) {
          await fsp.rm(chrootRoot, { recursive: true, force: true })
          await fsp.rmdir(CHROOT_BASE).catch(() => {}) // only if empty
        }
      },
    }
    if (chrootDataPath !== undefined) sshd.chrootDataPath = chrootDataPath
    return sshd
  } catch (e) {
    await killStarted?.()
    await fsp.rm(dir, { recursive: true, force: true })
    if (chrootRoot) {
      await fsp.rm(chrootRoot, { recursive: true, force: true })
      await fsp.rmdir(CHROOT_BASE).catch(() => {})
    }
    throw e
  }
}
