import { stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { treeConfig } from './config'
import { EXIT, UserError } from './errors'
import type { Logger } from './log'
import { blameFile, merge, readConfigFile } from './configfile'
import { Excludes } from './replication/exclude'
import type { Difference } from './replication/reconcile'
import { fence } from './replication/fence'
import { connectReplicas, reconcile } from './replication/replicas'

/** A byte-string path (latin1) as the bytes it names. */
const bytes = (s: string) => Buffer.from(s, 'latin1')
/** ... and as readable text for JSON (names that are not UTF-8 get U+FFFD). */
const text = (s: string) => bytes(s).toString('utf8')

async function sourceDir (source: string | undefined, command: string): Promise<string> {
  if (source === undefined) throw new UserError(`${command} takes a source directory`, EXIT.usage)
  const abs = resolve(source)
  let isDir = false
  try {
    isDir = (await stat(abs)).isDirectory()
  } catch {}
  if (!isDir) throw new UserError(`source ${source} is not a directory`, EXIT.usage)
  return abs
}

function line (url: string, d: Difference, prefix = ''): Buffer {
  const detail = d.kind === 'missing' || d.kind === 'extra'
    ? ` (${d.source || d.replica})`
    : `: source ${d.source}, replica ${d.replica}`
  return Buffer.concat([Buffer.from(`${prefix}${url} ${d.kind} `), bytes(d.path), bytes(`${detail}\n`)])
}

/**
 * `replicafs verify` (fix: false) and `replicafs resync` (fix: true, or false with
 * --dry-run): each replica against the source, every difference on stdout.
 */
export async function treeCommand (command: 'verify' | 'resync', positionals: string[], v: Record<string, unknown>, log: Logger): Promise<number> {
  if (positionals.length > 1) throw new UserError(`${command} takes one source directory`, EXIT.usage)
  const configFile = v.config as string | undefined
  const file = configFile !== undefined ? await readConfigFile(configFile) : null
  const source = await sourceDir(positionals[0] ?? file?.source, command)
  const { values, fromFile } = merge(file, v)
  let c
  try {
    c = treeConfig(command, values)
  } catch (err) {
    throw blameFile(err, configFile ?? '', fromFile)
  }
  const json = command === 'verify' && v.json === true
  const fix = command === 'resync' && v['dry-run'] !== true
  const prefix = command === 'resync' ? (fix ? 'fixed: ' : 'would fix: ') : ''
  const out = new LineBuffer()
  const replicas = await connectReplicas(c, log)
  // A resync writes as a master does: not over a newer master's tree (fence.ts); it leaves
  // the source's own mark alone.
  if (fix) await fence(source, false, replicas, false)
  const report: Array<{ url: string, equal: boolean, differences: Difference[], errors: string[] }> = []
  let status: number = EXIT.ok
  try {
    for (const r of replicas) {
      const differences: Difference[] = []
      const s = await reconcile(Buffer.from(source, 'utf8').toString('latin1'), r, {
        fix,
        checksum: c.checksum,
        excludes: new Excludes(c.excludes),
        found: d => {
          if (json) differences.push({ ...d, path: text(d.path), source: text(d.source), replica: text(d.replica) })
          else out.push(line(r.url, d, prefix))
        },
      }, log)
      out.flush()
      for (const e of s.errors) log.error(command === 'verify' ? 'verify' : 'reconcile', `${r.url}: ${e}`)
      const equal = s.differences === 0 && s.errors.length === 0
      report.push({ url: r.url, equal, differences, errors: s.errors })
      if (command === 'verify' ? !equal : s.errors.length > 0) status = 1
      if (!json) {
        const what = command === 'verify'
          ? (equal ? 'equal to the source' : `${s.differences} differences`)
          : `${s.differences} differences ${fix ? 'fixed' : 'found'}, ${s.copied} files copied (${(s.bytes / 1e6).toFixed(1)} MB)`
        log.info(command === 'verify' ? 'verify' : 'reconcile', `${r.url}: ${s.checked} checked, ${what}${s.errors.length > 0 ? `, ${s.errors.length} errors` : ''}`)
      }
    }
  } finally {
    out.flush()
    await Promise.all(replicas.map(r => r.close()))
  }
  if (json) process.stdout.write(JSON.stringify({ equal: report.every(r => r.equal), replicas: report }, null, 2) + '\n')
  return status
}

/**
 * Lines for stdout, written a few dozen KiB at a time (and at least every 200 ms): a resync
 * to an empty replica reports every file, and a write each would cost a system call each.
 */
class LineBuffer {
  readonly #lines: Buffer[] = []
  #bytes = 0
  #timer: NodeJS.Timeout | null = null

  push (line: Buffer): void {
    this.#lines.push(line)
    this.#bytes += line.length
    if (this.#bytes >= 64 * 1024) this.flush()
    else this.#timer ??= setTimeout(() => this.flush(), 200)
  }

  flush (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (this.#lines.length === 0) return
    process.stdout.write(Buffer.concat(this.#lines, this.#bytes))
    this.#lines.length = 0
    this.#bytes = 0
  }
}
