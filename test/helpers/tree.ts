import { execFile } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
/** The churn workload, whose `snapshot` command describes a tree (test/replica/churn.js). */
export const CHURN = resolve(__dirname, '..', 'replica', 'churn.js')
/** A temp name the applier writes under. */
export const TEMP = /^\.replicafs\..+\.tmp$/

/** The hidden temp names the applier writes under, anywhere below `dir`. */
export function temps (dir: string): string[] {
  return (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[])
    .filter(p => TEMP.test(p.split('/').pop() ?? ''))
}

/** The errno code of a rejected promise, or 'ok'. */
export async function code (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}

export interface Snapshot { entries: Record<string, Record<string, unknown>>, linkGroups: string[] }

/** Every node below `dir` (type, content hash, mode, owner, mtime, link target) and its hard link groups. */
export async function snapshot (dir: string): Promise<Snapshot> {
  const { stdout } = await run(process.execPath, [CHURN, 'snapshot', dir], { maxBuffer: 64 * 1024 ** 2, timeout: 60_000 })
  return JSON.parse(stdout) as Snapshot
}

/** Differences of `got` from `want`, one short line per path (empty: equal); `ignore`: fields not compared. */
export function diff (want: Snapshot, got: Snapshot, ignore: string[] = []): string[] {
  const out: string[] = []
  for (const p of [...new Set([...Object.keys(want.entries), ...Object.keys(got.entries)])].sort()) {
    const a = want.entries[p]
    const b = got.entries[p]
    if (a === undefined || b === undefined) {
      out.push(`${p}: ${a === undefined ? `only on the replica (${String(b?.type)})` : `missing on the replica (${String(a.type)})`}`)
      continue
    }
    const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(k => !ignore.includes(k) && a[k] !== b[k])
    if (fields.length > 0) out.push(`${p}: ${fields.map(k => k === 'sha256' ? 'content' : `${k} ${String(a[k])}≠${String(b[k])}`).join(', ')}`)
  }
  const wg = new Set(want.linkGroups)
  const gg = new Set(got.linkGroups)
  for (const g of wg) if (!gg.has(g)) out.push(`hard link group missing on the replica: ${g}`)
  for (const g of gg) if (!wg.has(g)) out.push(`hard link group only on the replica: ${g}`)
  return out
}
