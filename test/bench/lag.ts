// Child process of the replication benchmark: N times, writes a fresh 4 KiB file of random
// bytes into <writeDir> and closes it, then polls <readDir> for the same name (every ~1 ms,
// read + compare) until it holds identical content. Prints one JSON line:
// {"ms": [lag per sample in ms, or null when it did not arrive within <timeoutMs>],
//  "writeMs": [open + write + close of each sample, in ms]}.
// The lag runs from close() returning to the first poll that sees the same bytes.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'

const [writeDir, readDir, nArg, timeoutArg, gapArg] = process.argv.slice(2)
if (writeDir === undefined && process.env.TAP_CHILD_ID !== undefined) {
  process.stdout.write('1..0 # a benchmark helper, run by test/bench/replication.ts\n')
  process.exit(0)
}
const n = Number(nArg)
const timeoutMs = Number(timeoutArg ?? 10_000)
const gapMs = Number(gapArg ?? 10)
if (writeDir === undefined || readDir === undefined || !Number.isInteger(n) || n <= 0 || !(timeoutMs > 0) || !(gapMs >= 0)) {
  process.stderr.write('usage: lag <writeDir> <readDir> <samples> [timeoutMs] [gapMs]\n')
  process.exit(2)
}

const cell = new Int32Array(new SharedArrayBuffer(4))
const sleep = (ms: number) => { if (ms > 0) Atomics.wait(cell, 0, 0, ms) }
const now = () => Number(process.hrtime.bigint()) / 1e6

const out: Array<number | null> = []
const writeMs: number[] = []
const tag = `${process.pid}-${randomBytes(4).toString('hex')}`
for (let i = 0; i < n; i++) {
  const name = `lag-${tag}-${i}.bin`
  const data = randomBytes(4096)
  const tw = now()
  const fd = openSync(join(writeDir, name), 'wx', 0o644)
  try {
    writeSync(fd, data, 0, data.length, 0)
  } finally {
    closeSync(fd)
  }
  const t0 = now()
  writeMs.push(t0 - tw)
  let lag: number | null = null
  for (;;) {
    let got: Buffer | null = null
    try { got = readFileSync(join(readDir, name)) } catch {}
    const t = now()
    if (got !== null && got.equals(data)) { lag = t - t0; break }
    if (t - t0 > timeoutMs) break
    sleep(1)
  }
  out.push(lag)
  sleep(gapMs)
}
process.stdout.write(JSON.stringify({ ms: out, writeMs }) + '\n')
