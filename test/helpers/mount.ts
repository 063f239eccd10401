import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, mkdirSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'

/** The project root, whether this runs from test/ (tap) or from dist/test/ (the benchmark). */
const HERE = resolve(__dirname, '..', '..')
const ROOT = basename(HERE) === 'dist' ? dirname(HERE) : HERE

/** The compiled CLI: tests drive the real product, in its own process. */
export const CLI = join(ROOT, 'dist', 'src', 'cli.js')

export interface Daemon {
  child: ChildProcess
  stdout: string
  stderr: string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** Runs `replicafs <args>` and resolves once `waitFor` shows up on stdout (or it exits). */
export function startDaemon (args: string[], waitFor = /^mounted /m, env: NodeJS.ProcessEnv = {}): Promise<Daemon> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  const d: Daemon = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise(res => child.once('exit', (code, signal) => res({ code, signal }))),
  }
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { d.stdout += s })
  // Bounded: a long run must not grow the daemon's log in memory without limit.
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { d.stderr = (d.stderr + s).slice(-200_000) })
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`daemon did not start in 20 s:\n${d.stderr}`)), 20_000)
    const check = () => {
      if (waitFor.test(d.stdout)) {
        clearTimeout(timer)
        res(d)
      }
    }
    child.stdout!.on('data', check)
    void d.exited.then(({ code, signal }) => {
      clearTimeout(timer)
      if (waitFor.test(d.stdout)) return
      rej(new Error(`daemon exited (${code ?? signal}) before it was ready:\n${d.stderr}`))
    })
  })
}

/** True when something is mounted at `path` (per /proc/self/mountinfo). */
export function isMounted (path: string): boolean {
  const info = readFileSync('/proc/self/mountinfo', 'utf8')
  return info.split('\n').some(line => line.split(' ')[4] === path)
}

export interface Fixture {
  dir: string
  source: string
  mnt: string
  daemon: Daemon
  /** Stops the daemon (SIGTERM, then SIGKILL), unmounts whatever is left, removes the dir. */
  teardown (): Promise<void>
}

/**
 * A fresh source dir and mountpoint under one temp dir, mounted by a replicafs daemon.
 * Teardown always leaves no mount, no process and no directory behind, even after a failure.
 */
export async function mountFixture (extraArgs: string[] = [], prefix = 'replicafs-test-'): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const source = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  mkdirSync(source)
  mkdirSync(mnt)
  let daemon: Daemon
  try {
    daemon = await startDaemon(['mount', source, mnt, ...extraArgs])
  } catch (err) {
    cleanupDir(dir, mnt)
    throw err
  }
  return {
    dir,
    source,
    mnt,
    daemon,
    async teardown () {
      await stopDaemon(daemon)
      cleanupDir(dir, mnt)
    },
  }
}

export async function stopDaemon (d: Daemon, timeoutMs = 10_000): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return
  d.child.kill('SIGTERM')
  const timer = setTimeout(() => d.child.kill('SIGKILL'), timeoutMs)
  await d.exited
  clearTimeout(timer)
}

export function cleanupDir (dir: string, ...mounts: string[]): void {
  for (const m of mounts) {
    if (isMounted(m)) {
      try { execFileSync('fusermount', ['-u', '-z', '--', m], { stdio: 'ignore' }) } catch {}
    }
  }
  rmSync(dir, { recursive: true, force: true })
}

export interface CliResult { code: number | null, stdout: string, stderr: string, ms: number }

/** Runs `replicafs <args>` to its end (SIGKILLed after `timeoutMs`): exit code, output, duration. */
export function runCli (args: string[], timeoutMs = 60_000): Promise<CliResult> {
  const started = Date.now()
  return new Promise(res => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s })
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('close', code => {
      clearTimeout(timer)
      res({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
}

export interface ReplicaDirs {
  dir: string
  source: string
  mnt: string
  replica: string
  state: string
  /** The daemon started by `start`, if it is running. */
  daemon: Daemon | null
  /** `replicafs <args>` until it says "mounted"; stopped at teardown if still running. */
  start (args: string[]): Promise<Daemon>
  stop (): Promise<void>
}

/**
 * A source, a mountpoint and a replica dir under one temp dir (and a state dir path), with a
 * teardown that stops the daemon, unmounts what is left and removes the dir.
 */
export function replicaDirs (t: { teardown (fn: () => unknown): void }, prefix: string): ReplicaDirs {
  const dir = mkdtempSync(join(tmpdir(), `replicafs-${prefix}-`))
  const f: ReplicaDirs = {
    dir,
    source: join(dir, 'source'),
    mnt: join(dir, 'mnt'),
    replica: join(dir, 'replica'),
    state: join(dir, 'state'),
    daemon: null,
    async start (args) {
      f.daemon = await startDaemon(args)
      return f.daemon
    },
    async stop () {
      const d = f.daemon
      f.daemon = null
      if (d !== null) await stopDaemon(d)
    },
  }
  for (const d of [f.source, f.mnt, f.replica]) mkdirSync(d)
  t.teardown(async () => {
    await f.stop()
    cleanupDir(dir, f.mnt)
  })
  return f
}
