import t from 'tap'
import { Client, type SFTPWrapper } from 'ssh2'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { hashedKnownHostsLine, startSshd, type Sshd } from '../helpers/sshd'

const execFileP = promisify(execFile)

/** base64 key blob of the known_hosts entry for [host]:port */
function knownKeyBlob(sshd: Sshd): string {
  const want = `[${sshd.host}]:${sshd.port}`
  for (const line of readFileSync(sshd.knownHosts, 'utf8').split('\n')) {
    const [hosts, type, blob] = line.trim().split(/\s+/)
    if (hosts?.split(',').includes(want) && type === 'ssh-ed25519' && blob) return blob
  }
  throw new Error(`no known_hosts entry for ${want}`)
}

function connect(sshd: Sshd): Promise<Client> {
  const expected = knownKeyBlob(sshd)
  return new Promise((resolve, reject) => {
    const c = new Client()
    // errors after 'ready' (e.g. the server killed at teardown) are expected
    c.on('error', reject)
    c.once('ready', () => resolve(c))
    c.connect({
      host: sshd.host,
      port: sshd.port,
      username: sshd.user,
      privateKey: readFileSync(sshd.identity),
      hostVerifier: (key: Buffer) => key.toString('base64') === expected,
      readyTimeout: 10_000,
    })
  })
}

function openSftp(c: Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => c.sftp((err, s) => (err ? reject(err) : resolve(s))))
}

const p = <T>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> =>
  new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))))

const sftpWrite = (s: SFTPWrapper, file: string, data: string) =>
  p<void>(cb => s.writeFile(file, data, err => cb(err)))
const sftpRead = (s: SFTPWrapper, file: string) =>
  p<Buffer>(cb => s.readFile(file, (err, b) => cb(err, b))).then(b => b.toString())
const sftpStat = (s: SFTPWrapper, file: string) => p<unknown>(cb => s.stat(file, (err, st) => cb(err, st)))

function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^\S+ \(.*\) [ZX] /.test(st)
  } catch {
    return false
  }
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

t.test('root login, sftp round trip, extensions, known_hosts', async t => {
  const sshd = await startSshd()
  t.teardown(() => sshd.cleanup())
  t.equal(sshd.host, '127.0.0.1')
  t.equal(sshd.user, 'root')
  t.match(sshd.hostPublicKey, /^ssh-ed25519 AAAA\S+$/)
  t.ok(sshd.port > 0)

  const c = await connect(sshd)
  t.teardown(() => c.end())
  const s = await openSftp(c)
  const file = join(sshd.dir, 'hello.txt')
  await sftpWrite(s, file, 'hello over sftp')
  t.equal(await sftpRead(s, file), 'hello over sftp')
  t.equal(await readFile(file, 'utf8'), 'hello over sftp')

  const ext = (s as unknown as { _extensions: Record<string, string> })._extensions
  for (const name of ['posix-rename@openssh.com', 'fsync@openssh.com', 'hardlink@openssh.com']) {
    t.ok(name in ext, `server advertises ${name}`)
  }
  c.end()

  // a wrong host key is rejected by the verifier
  await t.rejects(
    new Promise((resolve, reject) => {
      const bad = new Client()
      bad.once('ready', () => { bad.end(); resolve(undefined) })
      bad.on('error', reject) // may fire again (ECONNRESET) after the verifier failure
      bad.connect({
        host: sshd.host, port: sshd.port, username: sshd.user,
        privateKey: readFileSync(sshd.identity),
        hostVerifier: () => false,
      })
    }),
  )

  // the hashed form is understood by OpenSSH itself
  const hostStr = `[127.0.0.1]:${sshd.port}`
  const line = hashedKnownHostsLine(hostStr, sshd.hostPublicKey)
  t.match(line, /^\|1\|[A-Za-z0-9+/=]{28}\|[A-Za-z0-9+/=]{28} ssh-ed25519 AAAA/)
  const hashed = join(sshd.dir, 'known_hosts.hashed')
  await writeFile(hashed, line + '\n')
  const { stdout } = await execFileP('ssh-keygen', ['-F', hostStr, '-f', hashed])
  t.match(stdout, 'ssh-ed25519')
  await t.rejects(execFileP('ssh-keygen', ['-F', '[127.0.0.1]:1', '-f', hashed]))
})

t.test('pause / resume freezes existing sessions', async t => {
  const sshd = await startSshd()
  t.teardown(() => sshd.cleanup())
  const c = await connect(sshd)
  t.teardown(() => c.end())
  const s = await openSftp(c)
  await sftpStat(s, '/')
  const kids = childPids(sshd.pid)
  t.ok(kids.length > 0, 'listener has per-connection children')

  sshd.pause()
  const pending = sftpStat(s, '/')
  const raced = await Promise.race([
    pending.then(() => 'answered'),
    new Promise(r => setTimeout(() => r('timeout'), 1000)),
  ])
  t.equal(raced, 'timeout', 'stat does not answer while paused')
  sshd.resume()
  const raced2 = await Promise.race([
    pending.then(() => 'answered'),
    new Promise(r => setTimeout(() => r('timeout'), 5000)),
  ])
  t.equal(raced2, 'answered', 'stat answers after resume')

  // stop while paused still terminates everything, including sessions
  sshd.pause()
  const pid = sshd.pid
  await sshd.cleanup()
  t.notOk(alive(pid), 'listener gone')
  for (const k of kids) t.notOk(alive(k), `session process ${k} gone`)
  t.notOk(existsSync(sshd.dir), 'temp dir removed')
})

t.test('restart keeps port and keys', async t => {
  const sshd = await startSshd()
  t.teardown(() => sshd.cleanup())
  const { port, pid } = sshd
  const c = await connect(sshd)
  const closed = new Promise<void>(r => c.once('close', () => r()))
  c.on('error', () => {})
  await sshd.restart()
  await closed
  t.pass('old connection closed by restart')
  t.equal(sshd.port, port)
  t.not(sshd.pid, pid)
  t.notOk(alive(pid), 'old listener gone')

  const c2 = await connect(sshd) // same host key
  t.teardown(() => c2.end())
  const s = await openSftp(c2)
  await sftpStat(s, '/')
  t.pass('new connection works')
})

t.test('chroot sftp-only user', async t => {
  const sshd = await startSshd({ chrootSftpOnly: true })
  t.teardown(() => sshd.cleanup())
  t.equal(sshd.user, 'rfsftp')
  const dataPath = sshd.chrootDataPath
  if (!dataPath) throw new Error('chrootDataPath missing')

  const c = await connect(sshd)
  t.teardown(() => c.end())
  const s = await openSftp(c)
  t.equal(await p<string>(cb => s.realpath('.', cb)), '/data', 'starts in /data')
  const names = await p<{ filename: string }[]>(cb => s.readdir('/', cb))
  t.same(names.map(n => n.filename).sort(), ['data'], 'only /data is visible')
  await sftpWrite(s, '/data/x.txt', 'in the jail')
  t.equal(await readFile(join(dataPath, 'x.txt'), 'utf8'), 'in the jail')
  await t.rejects(sftpWrite(s, '/y.txt', 'no'), 'chroot root is not writable')

  // exec: ForceCommand internal-sftp replaces the command, so it never runs;
  // Debian's internal-sftp answers a non-subsystem session with
  // "This service allows sftp connections only." and exit status 1.
  const res = await new Promise<{ out: string; code?: number; err?: Error }>(resolve => {
    c.exec('echo pwned', (err, ch) => {
      if (err) return resolve({ out: '', err })
      let out = ''
      let code: number | undefined
      ch.on('data', (d: Buffer) => { out += d.toString() })
      ch.stderr.on('data', (d: Buffer) => { out += d.toString() })
      ch.on('exit', (c: number | null) => { code = c ?? undefined })
      ch.on('close', () => resolve({ out, code }))
      ch.end('garbage\n')
    })
  })
  t.notMatch(res.out, 'pwned', 'exec command did not run')
  if (!res.err) t.not(res.code, 0, `exec refused: ${JSON.stringify(res.out.trim())} exit ${res.code}`)

  // the data dir belongs to the sftp user on the host side
  const { stdout } = await execFileP('stat', ['-c', '%U', dataPath])
  t.equal(stdout.trim(), 'rfsftp')
  const root = join(dataPath, '..')
  await sshd.cleanup()
  t.notOk(existsSync(root), 'chroot removed')
})
