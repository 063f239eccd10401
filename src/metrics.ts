import http from 'node:http'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { EXIT, UserError } from './errors'
import type { Logger } from './log'
import type { Mutation, ReplicationHook } from './replication/mutation'
import type { LinkState, Replicator } from './replication/replicator'

const STATES: LinkState[] = ['reconciling', 'in sync', 'catching up', 'degraded', 'offline', 'failed']

/** The ops local.c times, in its row order (native-deps/src/local.h, enum RFS_OP_*). */
const OPS = ['getattr', 'fgetattr', 'access', 'readlink', 'read', 'statfs', 'readdir', 'opendir',
  'releasedir', 'fsyncdir', 'getxattr', 'listxattr', 'open', 'create', 'write', 'flush', 'release',
  'fsync', 'truncate', 'ftruncate', 'mkdir', 'mknod', 'symlink', 'link', 'rename', 'unlink', 'rmdir',
  'chmod', 'chown', 'utimens', 'setxattr', 'removexattr'] as const
/** local.c's bucket bounds, seconds (its bucket_ns), and a row's words: buckets, +Inf, count, sum (ns). */
const BOUNDS = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]
const ROW = BOUNDS.length + 3

/**
 * The Prometheus endpoint (prom-client's registry and text format): per replica its lag,
 * queue, changes and bytes applied, errors and state, read from the replicator at each
 * scrape; and the latency of each changing call the mount handed to replication, by op
 * (reads never reach the JS side: libfuse's threads answer them in C).
 */
export class Metrics {
  readonly registry = new Registry()
  /** The counters local.c adds each call's latency to (passed to the mount). */
  readonly opTimes = Buffer.alloc(OPS.length * ROW * 8)
  readonly #calls: Histogram<'op'>
  #server: http.Server | null = null

  constructor (replicator: Replicator) {
    const r = this.registry
    const status = () => replicator.status()
    const gauge = (name: string, help: string, value: (s: ReturnType<typeof status>[number]) => number) => new Gauge({
      name, help, labelNames: ['replica'], registers: [r],
      collect () {
        this.reset()
        for (const s of status()) this.set({ replica: s.url }, value(s))
      },
    })
    const counter = (name: string, help: string, value: (s: ReturnType<typeof status>[number]) => number) => new Counter({
      name, help, labelNames: ['replica'], registers: [r],
      collect () {
        // The replicator keeps the totals; a scrape reports them as they are.
        this.reset()
        for (const s of status()) this.inc({ replica: s.url }, value(s))
      },
    })
    gauge('replicafs_replica_lag_seconds', 'Age of the oldest change the replica has yet to apply.', s => s.lagSeconds)
    gauge('replicafs_replica_queued_changes', 'Changes queued for the replica.', s => s.queued)
    gauge('replicafs_replica_queued_bytes', 'Data bytes queued for the replica.', s => s.queuedBytes)
    gauge('replicafs_replica_differing_paths', 'Paths where the replica holds something else than the source: a change there was refused, and its repair waits its turn or failed (and is tried again).', s => s.differsCount)
    counter('replicafs_replica_applied_changes_total', 'Changes the replica applied.', s => s.appliedOps)
    counter('replicafs_replica_applied_bytes_total', 'Data bytes the replica applied.', s => s.appliedBytes)
    counter('replicafs_replica_errors_total', 'Changes the replica failed (each retried or repaired).', s => s.errors)
    new Gauge({
      name: 'replicafs_replica_state', help: 'The replica\'s state: 1 for the current one.', labelNames: ['replica', 'state'], registers: [r],
      collect () {
        this.reset()
        for (const s of status()) for (const st of STATES) this.set({ replica: s.url, state: st }, s.state === st ? 1 : 0)
      },
    })
    // Every call of the mount, reads included, timed in C on libfuse's threads: a histogram
    // read from local.c's counters at each scrape (prom-client's Histogram only observes).
    const counters = new BigUint64Array(this.opTimes.buffer, this.opTimes.byteOffset, OPS.length * ROW)
    const name = 'replicafs_op_duration_seconds'
    const help = 'Time the daemon took to answer each call of the mount, by op (sync mode: the quorum\'s wait included).'
    r.registerMetric({
      name,
      help,
      type: 'histogram',
      get: async () => {
        const values: Array<{ metricName: string, labels: Record<string, string | number>, value: number }> = []
        OPS.forEach((op, i) => {
          const row = i * ROW
          const count = Number(counters[row + BOUNDS.length + 1])
          if (count === 0) return
          let cumulative = 0
          BOUNDS.forEach((le, b) => {
            cumulative += Number(counters[row + b])
            values.push({ metricName: `${name}_bucket`, labels: { le, op }, value: cumulative })
          })
          values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf', op }, value: count })
          values.push({ metricName: `${name}_sum`, labels: { op }, value: Number(counters[row + BOUNDS.length + 2]) / 1e9 })
          values.push({ metricName: `${name}_count`, labels: { op }, value: count })
        })
        return { name, help, type: 'histogram', values, aggregator: 'sum' }
      },
    } as never)
    this.#calls = new Histogram({
      name: 'replicafs_call_duration_seconds',
      help: 'Time from a changing call reaching replication to its answer (sync: the quorum\'s wait), by op.',
      labelNames: ['op'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
      registers: [r],
    })
  }

  /** Wraps the mount's hook: each call's time to its answer lands in the histogram. */
  timed (inner: ReplicationHook): ReplicationHook {
    const calls = this.#calls
    return {
      apply (m: Mutation) {
        const end = calls.startTimer({ op: m.op })
        let out
        try {
          out = inner.apply(m)
        } catch (err) {
          end()
          throw err
        }
        if (out === undefined) {
          end()
          return
        }
        return out.finally(() => { end() })
      },
    }
  }

  async listen (host: string, port: number, log: Logger): Promise<void> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404).end('see /metrics\n')
        return
      }
      this.registry.metrics().then(text => {
        res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text)
      }, err => {
        log.error('main', 'metrics scrape failed', err)
        res.writeHead(500).end()
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => resolve())
    }).catch(err => {
      throw new UserError(`--metrics ${host}:${port}: cannot listen (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, EXIT.unreachable)
    })
    this.#server = server
    log.info('main', `metrics on http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics`)
  }

  async close (): Promise<void> {
    const s = this.#server
    this.#server = null
    if (s !== null) await new Promise<void>(resolve => s.close(() => resolve()))
  }
}
