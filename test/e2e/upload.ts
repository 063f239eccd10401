// The upload scene, end to end: vsftpd writes FTP uploads onto the replicafs mount, each
// backup is its own network namespace serving its replica with nginx, and what the FTP client
// sees done is what every backup serves, compared by hash over HTTP.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { lstatSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ftpUser, type Backup } from '../helpers/hosts'
import { runCli } from '../helpers/mount'
import { scene, type Master } from '../helpers/scene'

const sha = (b: Buffer | null) => b === null ? 'missing' : createHash('sha256').update(b).digest('hex').slice(0, 16)

/** What every backup serves at `path`, as hashes (one per backup). */
async function served (bs: Backup[], path: string): Promise<string[]> {
  return Promise.all(bs.map(async b => sha(await b.fetch(path))))
}

/** Each FTP command the scene uses, then what the backups serve (after `settle`). */
async function uploadScene (t: tap.Test, m: Master, bs: Backup[], args: string[], settle: () => Promise<void>): Promise<void> {
  const { uid } = await ftpUser()
  const local = (name: string, data: Buffer) => {
    const p = join(m.upload, name)
    writeFileSync(p, data)
    return p
  }
  const same = async (path: string, want: Buffer | null, what: string) => {
    await settle()
    t.same(await served(bs, path), bs.map(() => sha(want)), what)
  }

  const first = randomBytes(300_000)
  await m.ftp.curl('site/index.html', '-T', local('index.html', first), '--ftp-create-dirs')
  await same('/site/index.html', first, 'STOR (and MKD of site/ on the way): every backup serves the new bytes')
  t.equal(lstatSync(join(bs[0]!.root, 'site', 'index.html')).uid, uid, 'the uploaded file belongs to the FTP user on the backup')

  const second = randomBytes(70_000)
  await m.ftp.curl('site/index.html', '-T', local('index2.html', second))
  await same('/site/index.html', second, 'STOR again (the user owns what it uploaded): the new bytes replace the old')

  const tail = randomBytes(40_000)
  await m.ftp.curl('site/index.html', '-T', local('tail', tail), '--append')
  await same('/site/index.html', Buffer.concat([second, tail]), 'APPE: the appended bytes follow')

  // curl sends -Q commands before it changes directory: names are from the FTP root.
  await m.ftp.curl('', '-Q', 'RNFR site/index.html', '-Q', 'RNTO site/home.html', '-o', '/dev/null')
  await same('/site/home.html', Buffer.concat([second, tail]), 'RNFR/RNTO: served under the new name')
  await same('/site/index.html', null, 'and not under the old one')

  await m.ftp.curl('', '-Q', 'MKD assets', '-o', '/dev/null')
  const logo = randomBytes(5_000)
  await m.ftp.curl('assets/logo.png', '-T', local('logo.png', logo))
  await same('/assets/logo.png', logo, 'MKD, then STOR into it')

  await m.ftp.curl('', '-Q', 'DELE site/home.html', '-o', '/dev/null')
  await same('/site/home.html', null, 'DELE: gone from every backup')

  await m.ftp.curl('', '-Q', 'DELE assets/logo.png', '-Q', 'RMD assets', '-o', '/dev/null')
  await settle()
  for (const b of bs) t.notOk(await exists(join(b.root, 'assets')), `RMD: the directory is gone from ${b.netns.addr}`)

  const verify = await runCli(['verify', m.src, ...args])
  t.equal(verify.code, 0, `verify: every backup equals the source${verify.code !== 0 ? `\n${verify.stdout}${verify.stderr}` : ''}`)
}

async function exists (path: string): Promise<boolean> {
  try {
    lstatSync(path)
    return true
  } catch {
    return false
  }
}

t.test('FTP uploads in sync mode: once each command completes, every backup serves the new bytes', async t => {
  const { bs, args, m } = await scene(t, { backups: 2, flags: ['--mode', 'sync'] })
  await uploadScene(t, m, bs, args, async () => {})
})

t.test('FTP uploads in async mode: after replicafs wait, every backup serves the new bytes', async t => {
  const { bs, args, m } = await scene(t, { backups: 2, flags: ['--mode', 'async'] })
  await uploadScene(t, m, bs, args, async () => {
    const w = await runCli(['wait', '--state-dir', m.state, '--timeout', '30'])
    if (w.code !== 0) throw new Error(`replicafs wait: exit ${w.code}: ${w.stderr}`)
  })
})

t.test('a backup cut off in the middle of a batch of uploads: the uploads go on, it catches up', async t => {
  const { bs, m } = await scene(t, { backups: 2, flags: ['--mode', 'sync', '--quorum', '1', '--timeout', '2'] })
  const files: Array<[string, Buffer]> = []
  const N = 24
  let failed = 0
  for (let i = 0; i < N; i++) {
    if (i === N / 3) await bs[1]!.netns.down()
    const data = randomBytes(20_000 + i * 1000)
    const p = join(m.upload, `u${i}`)
    writeFileSync(p, data)
    try {
      await m.ftp.curl(`batch/u${i}.bin`, '-T', p, '--ftp-create-dirs')
    } catch (err) {
      failed++
      t.comment((err as Error).message)
    }
    files.push([`/batch/u${i}.bin`, data])
  }
  t.equal(failed, 0, 'no upload failed while a backup was cut off (quorum 1 still met)')
  const live = await Promise.all(files.map(([p]) => bs[0]!.fetch(p)))
  t.same(live.map(sha), files.map(([, d]) => sha(d)), 'the backup still up serves every upload')

  await bs[1]!.netns.up()
  const w = await runCli(['wait', '--state-dir', m.state, '--timeout', '60'])
  t.equal(w.code, 0, `once its link is back, replicafs wait returns: it caught up${w.code !== 0 ? `: ${w.stderr}` : ''}`)
  const back = await Promise.all(files.map(([p]) => bs[1]!.fetch(p)))
  t.same(back.map(sha), files.map(([, d]) => sha(d)), 'the backup that was cut off serves every upload')
  const verify = await runCli(['verify', m.src, ...bs[1]!.replicaArgs])
  t.equal(verify.code, 0, `verify exit 0 for it${verify.code !== 0 ? `\n${verify.stdout}${verify.stderr}` : ''}`)
})
