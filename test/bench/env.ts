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
