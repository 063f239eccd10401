import { chmod, unlink } from 'node:fs/promises'
import net from 'node:net'
import { join } from 'node:path'
import { EXIT, UserError } from './errors'
import type { Logger } from './log'
import type { Behind, LinkStatus, Replicator } from './replication/replicator'

/**
 * The daemon's control socket, `<state-dir>/control.sock` (mode 0600, in a 0700 dir): what
 * `replicafs status` and `replicafs wait` ask. One JSON request per line, one JSON answer
 * per line:
 *
 *   {"cmd":"status"}               -> {"mode":"sync","replicas":[LinkStatus + throughput]}
 *   {"cmd":"wait","timeoutMs":N}   -> {"behind":[url...],"differ":[Behind...]}
 *                                     (once all applied, or after N ms; `differ`: those of them
 *                                     that differ from the source at some path)
 */
export function controlPath (stateDir: string): string {
  return join(stateDir, 'control.sock')
}

/** A unix socket's path must fit in sockaddr_un.sun_path (108 bytes, NUL included). */
const SUN_PATH_MAX = 107
/** How often throughput is sampled: status shows the rate over the last window. */
const RATE_WINDOW_MS = 5000

export interface StatusAnswer {
  mode: string
  replicas: Array<LinkStatus & { bytesPerSecond: number, opsPerSecond: number }>
}

export class ControlServer {
  readonly #server: net.Server
  readonly #path: string
  readonly #timer: NodeJS.Timeout
  /** Connections open now: closed with the server, a pending wait included. */
  readonly #conns = new Set<net.Socket>()
  #last = new Map<string, { t: number, ops: number, bytes: number }>()
  #rates = new Map<string, { ops: number, bytes: number }>()

  private constructor (server: net.Server, path: string, replicator: Replicator) {
    this.#server = server
    this.#path = path
    this.#timer = setInterval(() => this.#sample(replicator), RATE_WINDOW_MS)
    this.#timer.unref()
    this.#sample(replicator)
  }

  /** Listens on the state dir's socket; null (with a warning) where it cannot. */
  static async start (stateDir: string, replicator: Replicator, mode: string, log: Logger): Promise<ControlServer | null> {
    const path = controlPath(stateDir)
    if (Buffer.byteLength(path) > SUN_PATH_MAX) {
      log.warn('main', `${path} is too long for a unix socket: status and wait are not available (use a shorter --state-dir)`)
      return null
    }
    // A socket left by a killed run.
    await unlink(path).catch(() => {})
    let control: ControlServer | null = null
    const server = net.createServer(conn => {
      if (control === null) {
        conn.destroy()
        return
      }
      const c = control
      c.#conns.add(conn)
      conn.on('close', () => c.#conns.delete(conn))
      conn.setEncoding('utf8')
      let buf = ''
      conn.on('error', () => {})
      conn.on('data', (chunk: string) => {
        buf += chunk
        if (buf.length > 4096) conn.destroy()
        const nl = buf.indexOf('\n')
        if (nl < 0) return
        const line = buf.slice(0, nl)
        buf = ''
        void c.#answer(line, replicator, mode).then(a => conn.end(JSON.stringify(a) + '\n'), err => {
          log.error('main', 'control request failed', err)
          conn.end(JSON.stringify({ error: String(err) }) + '\n')
        })
      })
    })
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(path, () => resolve())
      })
      await chmod(path, 0o600)
    } catch (err) {
      log.warn('main', `cannot serve status on ${path}: ${(err as Error).message}`)
      server.close()
      return null
    }
    control = new ControlServer(server, path, replicator)
    return control
  }

  #sample (replicator: Replicator): void {
    const t = Date.now()
    const next = new Map<string, { t: number, ops: number, bytes: number }>()
    for (const s of replicator.status()) {
      const prev = this.#last.get(s.url)
      if (prev !== undefined && t > prev.t) {
        const dt = (t - prev.t) / 1000
        this.#rates.set(s.url, { ops: (s.appliedOps - prev.ops) / dt, bytes: (s.appliedBytes - prev.bytes) / dt })
      }
      next.set(s.url, { t, ops: s.appliedOps, bytes: s.appliedBytes })
    }
    this.#last = next
  }

  async #answer (line: string, replicator: Replicator, mode: string): Promise<unknown> {
    let req: { cmd?: unknown, timeoutMs?: unknown }
    try {
      req = JSON.parse(line) as typeof req
    } catch {
      return { error: 'not JSON' }
    }
    if (req.cmd === 'status') {
      const answer: StatusAnswer = {
        mode,
        replicas: replicator.status().map(s => ({ ...s, bytesPerSecond: this.#rates.get(s.url)?.bytes ?? 0, opsPerSecond: this.#rates.get(s.url)?.ops ?? 0 })),
      }
      return answer
    }
    if (req.cmd === 'wait') {
      const ms = typeof req.timeoutMs === 'number' && req.timeoutMs >= 0 ? req.timeoutMs : 0
      const behind = await replicator.barrier(ms)
      return { behind: behind.map(b => b.url), differ: behind.filter(b => b.differsCount > 0) }
    }
    return { error: `unknown command ${JSON.stringify(req.cmd)}` }
  }

  async close (): Promise<void> {
    clearInterval(this.#timer)
    for (const c of this.#conns) c.destroy()
    await new Promise<void>(resolve => this.#server.close(() => resolve()))
    await unlink(this.#path).catch(() => {})
  }
}

/** Sends one request to the daemon behind `stateDir` and resolves with its answer (or gives up after `timeoutMs`). */
export function ask (stateDir: string, request: object, what: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const path = controlPath(stateDir)
  return new Promise((resolve, reject) => {
    const conn = net.connect(path)
    conn.setTimeout(timeoutMs, () => {
      conn.destroy()
      reject(new UserError(`${what}: the daemon on ${path} did not answer in ${timeoutMs / 1000} s`, EXIT.unreachable))
    })
    let buf = ''
    conn.setEncoding('utf8')
    conn.on('connect', () => conn.write(JSON.stringify(request) + '\n'))
    conn.on('data', (s: string) => { buf += s })
    conn.on('end', () => {
      try {
        resolve(JSON.parse(buf) as Record<string, unknown>)
      } catch {
        reject(new UserError(`${what}: the daemon answered something that is not JSON`, EXIT.unreachable))
      }
    })
    conn.on('error', (err: NodeJS.ErrnoException) => {
      reject(new UserError(`${what}: no replicafs daemon with replicas answers on ${path} (${err.code ?? err.message}); ` +
        'is it mounted with --replica, and with another --state-dir?', EXIT.unreachable))
    })
  })
}

function mb (bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`
}

/** `replicafs status`: each replica's state, one line each (or the daemon's JSON). */
export async function statusCommand (stateDir: string, json: boolean): Promise<number> {
  const a = await ask(stateDir, { cmd: 'status' }, 'status') as unknown as StatusAnswer
  if (json) {
    process.stdout.write(JSON.stringify(a, null, 2) + '\n')
    return EXIT.ok
  }
  const lines = [`mode ${a.mode}`]
  for (const r of a.replicas) {
    lines.push(`${r.url}: ${r.state}; queued ${r.queued} changes (${mb(r.queuedBytes)}); lag ${r.lagSeconds.toFixed(1)} s; ` +
      `applied ${r.appliedOps} changes (${mb(r.appliedBytes)}), now ${mb(r.bytesPerSecond)}/s; ` +
      `last error: ${r.lastError === null ? 'none' : `${r.lastErrorAt} ${r.lastError}`}` +
      (r.differsCount > 0 ? `; ${differsText(r)}` : ''))
  }
  process.stdout.write(lines.join('\n') + '\n')
  return EXIT.ok
}

/** '2 paths differ from the source: "/a", "/b" (a change there was refused; their repair ...)'. */
function differsText (d: Pick<Behind, 'differs' | 'differsCount'>): string {
  const one = d.differsCount === 1
  const more = d.differsCount > d.differs.length ? `, and ${d.differsCount - d.differs.length} more` : ''
  return `${d.differsCount} path${one ? '' : 's'} differ${one ? 's' : ''} from the source: ${d.differs.map(p => JSON.stringify(p)).join(', ')}${more} ` +
    `(a change there was refused; ${one ? 'its' : 'their'} repair waits its turn, or failed and is tried again: the daemon's log says why)`
}

/**
 * `replicafs wait`: 0 once every replica applied every change made before it (and holds no
 * path whose repair failed); 1 on timeout.
 */
export async function waitCommand (stateDir: string, timeoutMs: number): Promise<number> {
  const a = await ask(stateDir, { cmd: 'wait', timeoutMs }, 'wait', timeoutMs + 10_000)
  const behind = Array.isArray(a.behind) ? a.behind as string[] : null
  if (behind === null) throw new UserError(`wait: the daemon answered ${JSON.stringify(a)}`, EXIT.unreachable)
  if (behind.length === 0) return EXIT.ok
  const lines = [`replicafs: wait: still behind after ${timeoutMs / 1000} s: ${behind.join(', ')}`]
  for (const d of Array.isArray(a.differ) ? a.differ as Behind[] : []) lines.push(`replicafs: wait: ${d.url}: ${differsText(d)}`)
  process.stderr.write(lines.join('\n') + '\n')
  return 1
}
