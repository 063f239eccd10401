// Child process of the benchmark: N create+unlink pairs in <dir>, then prints the loop's
// elapsed milliseconds (node's start-up time is not part of the measure).
import { openSync, closeSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'

const [dir, nArg] = process.argv.slice(2)
const n = Number(nArg)
if (dir === undefined && process.env.TAP_CHILD_ID !== undefined) {
  // Picked up by tap as a test file (dist/test/bench/ is not in its exclude): not a test.
  process.stdout.write('1..0 # a benchmark helper, run by test/bench/run.ts\n')
  process.exit(0)
}
if (dir === undefined || !Number.isInteger(n) || n <= 0) {
  process.stderr.write('usage: create-unlink <dir> <pairs>\n')
  process.exit(2)
}
const t0 = process.hrtime.bigint()
for (let i = 0; i < n; i++) {
  const p = join(dir, `cu${i}`)
  closeSync(openSync(p, 'wx', 0o644))
  unlinkSync(p)
}
process.stdout.write(`${Number(process.hrtime.bigint() - t0) / 1e6}\n`)
