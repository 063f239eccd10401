// Load: 8 FTP clients uploading at once, in sync mode, to a mount with two backups: no client
// sees an error, both backups verify equal, and the run reports uploads/s and MB/s.
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CURL, FTP_PASS, FTP_USER } from '../helpers/hosts'
import { runCli } from '../helpers/mount'
import { scene } from '../helpers/scene'

const run = promisify(execFile)
const CLIENTS = 8
const FILES = 300
/** The whole run's bound: uploads that take longer fail the test. */
const RUN_MS = 240_000

t.test(`${CLIENTS} FTP clients upload ${FILES} files each at once, sync mode, two backups`, async t => {
  const { bs: backups, args, m } = await scene(t, { backups: 2, flags: ['--mode', 'sync'] })
  const { dir, src, ftp } = m

  // Mixed sizes: mostly small pages and assets, some images, a few large files.
  let bytes = 0
  const sizes = (i: number) => [2_000, 15_000, 60_000, 250_000, 1_200_000][[0, 0, 1, 1, 1, 2, 2, 3, 3, 4][i % 10]!]!
  const lists: string[][] = []
  for (let c = 0; c < CLIENTS; c++) {
    const local = join(dir, `client${c}`)
    mkdirSync(local)
    const pairs: string[] = []
    for (let i = 0; i < FILES; i++) {
      const size = sizes(i + c) + i
      bytes += size
      writeFileSync(join(local, `f${i}`), randomBytes(size))
      pairs.push('-T', join(local, `f${i}`), `ftp://127.0.0.1:${ftp.port}/c${c}/f${i}.bin`)
    }
    lists.push(pairs)
  }
  const t0 = Date.now()
  // One curl per client, one FTP session each, its files one after another.
  const results = await Promise.allSettled(lists.map(pairs => run('curl', [...CURL, '--ftp-create-dirs', '--user', `${FTP_USER}:${FTP_PASS}`, '--max-time', String(RUN_MS / 1000), ...pairs], { maxBuffer: 1 << 20 })))
  const s = (Date.now() - t0) / 1000
  const failed = results.filter(r => r.status === 'rejected') as PromiseRejectedResult[]
  t.same(failed.map(f => (f.reason as { stderr?: string }).stderr ?? String(f.reason)), [], 'no FTP client saw an error')
  t.comment(`${CLIENTS * FILES} uploads, ${(bytes / 1e6).toFixed(1)} MB in ${s.toFixed(1)} s: ${(CLIENTS * FILES / s).toFixed(0)} uploads/s, ${(bytes / 1e6 / s).toFixed(1)} MB/s (sync mode, two backups)`)
  const verify = await runCli(['verify', src, ...args], 120_000)
  t.equal(verify.code, 0, `both backups verify equal${verify.code !== 0 ? `\n${verify.stdout.slice(0, 2000)}${verify.stderr}` : ''}`)
  const served = await backups[1]!.fetch(`/c${CLIENTS - 1}/f${FILES - 1}.bin`)
  t.equal(served?.length, sizes(FILES - 1 + CLIENTS - 1) + FILES - 1, 'the last upload is served by a backup\'s nginx, whole')
})
