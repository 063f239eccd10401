/** Benchmark sizes from the environment: BENCH_QUICK=1 shrinks every run for a quick check. */
export const QUICK = process.env.BENCH_QUICK === '1'

export function envInt (name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v}: a positive integer is needed`)
  return n
}
