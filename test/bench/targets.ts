import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CLI, startDaemon, stopDaemon, isMounted, type Daemon } from '../helpers/mount'

const execFileP = promisify(execFile)


export interface Target {
  name: 'native' | 'bindfs' | 'replicafs'
  /** Where the workloads run. */
  dir: string
  /** Mountpoint, when there is one (for cleanup). */
  mnt?: string
  /** Starts the filesystem (no-op for native). */
  setup (): Promise<void>
  /** Unmounts and stops the daemon this run started; idempotent; never throws. */
  teardown (): Promise<void>
  /** A short description for the report. */
  describe: string
}

function waitFor (cond: () => boolean, ms: number, what: string, alive: () => boolean): Promise<void> {
  return new Promise((res, rej) => {
    const t0 = Date.now()
    const tick = () => {
      if (cond()) return res()
      if (!alive()) return rej(new Error(`${what}: the process exited`))
      if (Date.now() - t0 > ms) return rej(new Error(`${what}: not ready in ${ms / 1000} s`))
      setTimeout(tick, 50)
    }
    tick()
  })
}

function childAlive (c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null
}

export function nativeTarget (work: string): Target {
  const dir = join(work, 'native')
  return {
    name: 'native',
    dir,
    describe: `plain directory ${dir}`,
    async setup () { mkdirSync(dir) },
    async teardown () {},
  }
}

export function bindfsTarget (work: string): Target {
  const src = join(work, 'bindfs-src')
  const mnt = join(work, 'bindfs-mnt')
  let child: ChildProcess | null = null
  let exited: Promise<void> = Promise.resolve()
  let stderr = ''
  return {
    name: 'bindfs',
    dir: mnt,
    mnt,
    describe: 'bindfs -f -o big_writes (Debian package; -f keeps it in the foreground so its pid is ours)',
    async setup () {
      mkdirSync(src)
      mkdirSync(mnt)
      const c = spawn('bindfs', ['-f', '-o', 'big_writes', src, mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
      child = c
      exited = new Promise(res => c.once('exit', () => res()))
      c.stderr!.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 4000) stderr += s })
      try {
        await waitFor(() => isMounted(mnt), 20_000, 'bindfs mount', () => childAlive(c))
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${stderr}`)
      }
    },
    async teardown () {
      const c = child
      if (c === null) return
      child = null
      if (isMounted(mnt)) {
        try { await execFileP('fusermount', ['-u', '--', mnt], { timeout: 30_000 }) } catch {
          try { await execFileP('fusermount', ['-u', '-z', '--', mnt], { timeout: 30_000 }) } catch {}
        }
      }
      if (childAlive(c)) {
        const timer = setTimeout(() => c.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(timer)
      }
    },
  }
}


export function replicafsTarget (work: string): Target & { daemon (): Daemon | null } {
  const src = join(work, 'replicafs-src')
  const mnt = join(work, 'replicafs-mnt')
  let daemon: Daemon | null = null
  let starting: Promise<Daemon> | null = null
  return {
    name: 'replicafs',
    dir: mnt,
    mnt,
    describe: `node ${CLI} mount (no replica)`,
    daemon: () => daemon,
    async setup () {
      mkdirSync(src)
      mkdirSync(mnt)
      starting = startDaemon(['mount', src, mnt])
      daemon = await starting
    },
    async teardown () {
      if (daemon === null && starting !== null) {
        try { daemon = await starting } catch { starting = null; return }
      }
      const d = daemon
      daemon = null
      starting = null
      if (d !== null) await stopDaemon(d) // SIGTERM: the daemon unmounts and exits 0
    },
  }
}
