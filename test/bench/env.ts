import { execFileSync } from 'node:child_process'

/** Benchmark sizes from the environment: BENCH_QUICK=1 shrinks every run for a quick check. */
export const QUICK = process.env.BENCH_QUICK === '1'

export function envInt (name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: a positive integer is needed`)
  return n
}

/**
 * On SIGINT, SIGTERM or SIGHUP: `onAbort` (stop starting work), then `cleanup`, then exit
 * with the signal's conventional code. A second signal while cleaning is ignored.
 */
export function cleanUpOnSignals (onAbort: (signal: string) => void, cleanup: () => Promise<void>): void {
  let aborting = false
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (aborting) return
      aborting = true
      onAbort(sig)
      void cleanup().finally(() => process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)))
    })
  }
}

/** The command that reproduces this run: the BENCH_* settings in force, then `npm run <script>`. */
export function reproduceCommand (project: string, script: string): string {
  const env = Object.entries(process.env).filter(([k]) => k.startsWith('BENCH_')).map(([k, v]) => `${k}=${v ?? ''}`)
  return `cd ${project} && ${[...env, `npm run ${script}`].join(' ')}`
}

/** `fn`, run at most once: later calls get the first call's promise (cleanups, from a signal and from the end alike). */
export function once (fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null
  return () => (running ??= fn())
}

/**
 * Throws unless this runs as root (`why`: what needs it) and each tool can be started (a
 * tool's own exit status does not matter: `sftp -h` exits 1); `install` says how to get them.
 */
export function requireTools (why: string, tools: ReadonlyArray<readonly [string, readonly string[]]>, install: string): void {
  if (process.getuid?.() !== 0) throw new Error(`run as root (${why})`)
  for (const [cmd, args] of tools) {
    try { execFileSync(cmd, [...args], { stdio: 'ignore' }) } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${cmd} is needed: ${install}`)
    }
  }
}
