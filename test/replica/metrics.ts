/** --metrics: a real mount's Prometheus endpoint scrapes, and its usage errors. */
import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cleanupDir, replicaDirs, runCli as cli } from '../helpers/mount'

/** A port free now; the daemon binds it next (a race no other test runs into: ports are random). */
function freePort (): Promise<number> {
  return new Promise((res, rej) => {
    const srv = net.createServer()
    srv.once('error', rej)
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address()
      srv.close(() => res(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

t.test('the endpoint scrapes: replica gauges and counters, call latency by op', async t => {
  const { source: src, mnt, replica: rep, state, start } = replicaDirs(t, 'metrics')
  const port = await freePort()
  await start(['mount', src, mnt, '--replica', `file://${rep}`, '--state-dir', state, '--metrics', `127.0.0.1:${port}`])
  for (let i = 0; i < 3; i++) writeFileSync(join(mnt, `f${i}.txt`), 'x'.repeat(1000))
  // Reads never leave the C layer: they are timed there.
  for (let i = 0; i < 3; i++) readFileSync(join(mnt, `f${i}.txt`))
  statSync(join(mnt, 'f0.txt'))
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(res.status, 200, 'GET /metrics: 200')
  t.match(res.headers.get('content-type') ?? '', /^text\/plain/, 'Prometheus text format')
  const text = await res.text()
  const url = `file://${rep}`
  const value = (name: string, labels: string) => {
    const line = text.split('\n').find(l => l.startsWith(`${name}{${labels}}`))
    return line === undefined ? NaN : Number(line.split(' ').pop())
  }
  t.ok(value('replicafs_replica_applied_changes_total', `replica="${url}"`) >= 9, 'changes applied (3 files: create, write, flush, release each)')
  t.equal(value('replicafs_replica_applied_bytes_total', `replica="${url}"`), 3000, 'bytes applied')
  t.equal(value('replicafs_replica_queued_changes', `replica="${url}"`), 0, 'queue: empty (sync mode)')
  t.equal(value('replicafs_replica_errors_total', `replica="${url}"`), 0, 'no errors')
  t.equal(value('replicafs_replica_differing_paths', `replica="${url}"`), 0, 'no path differs')
  t.equal(value('replicafs_replica_state', `replica="${url}",state="in sync"`), 1, 'state: in sync')
  t.equal(value('replicafs_replica_state', `replica="${url}",state="degraded"`), 0, 'not degraded')
  t.equal(value('replicafs_call_duration_seconds_count', 'op="write"'), 3, 'three writes timed')
  t.match(text, /replicafs_call_duration_seconds_bucket\{le="0\.001",op="create"\} \d+/, 'latency buckets by op')
  t.match(text, /# TYPE replicafs_op_duration_seconds histogram/, 'every call of the mount, timed in C: a histogram')
  t.ok(value('replicafs_op_duration_seconds_count', 'op="read"') >= 3, `reads are timed (${value('replicafs_op_duration_seconds_count', 'op="read"')})`)
  t.ok(value('replicafs_op_duration_seconds_count', 'op="getattr"') >= 1, 'getattr too')
  t.equal(value('replicafs_op_duration_seconds_count', 'op="write"'), 3, 'and the writes, once each')
  t.equal(value('replicafs_op_duration_seconds_bucket', 'le="+Inf",op="write"'), 3, '+Inf bucket = count')
  t.ok(value('replicafs_op_duration_seconds_sum', 'op="write"') > 0, 'a sum in seconds')
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404, 'anything else: 404')
})

t.test('--metrics usage errors', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-metrics-'))
  const src = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  for (const d of [src, mnt]) mkdirSync(d)
  const busy = net.createServer()
  await new Promise<void>(res => busy.listen(0, '127.0.0.1', () => res()))
  const busyPort = (busy.address() as net.AddressInfo).port
  t.teardown(() => {
    busy.close()
    cleanupDir(dir, mnt)
  })
  const r = ['--replica', `file://${dir}`, '--state-dir', join(dir, 'state')]
  for (const bad of ['9469', 'localhost:', 'host:99999', '[::1]9469']) {
    const x = await cli(['mount', src, mnt, ...r, '--metrics', bad])
    t.equal(x.code, 2, `--metrics ${bad}: exit 2`)
    t.match(x.stderr, /expected HOST:PORT/)
  }
  const none = await cli(['mount', src, mnt, '--metrics', '127.0.0.1:9469'])
  t.equal(none.code, 2, '--metrics with no replica: exit 2')
  const taken = await cli(['mount', src, mnt, ...r, '--metrics', `127.0.0.1:${busyPort}`])
  t.equal(taken.code, 3, 'a port in use: exit 3')
  t.match(taken.stderr, /cannot listen \(EADDRINUSE\)/)
})
