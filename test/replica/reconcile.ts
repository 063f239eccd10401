/**
 * verify, resync and the reconcile on mount, against a file:// replica and a real sshd's
 * sftp replica: every kind of difference is found, --dry-run changes nothing, resync and the
 * mount make a divergent replica equal (verify exit 0 with --checksum), hard links stay links.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, linkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, cleanupDir, runCli as cli, startDaemon, stopDaemon, type Daemon } from '../helpers/mount'
import { startSshd, type Sshd } from '../helpers/sshd'

const T0 = 1_700_000_000

/** A file with content and mtime, the same on both sides unless told otherwise. */
function file (p: string, content: string, mtime = T0): void {
  writeFileSync(p, content)
  chmodSync(p, 0o644)
  utimesSync(p, mtime, mtime)
}

/**
 * A source, and a replica that differs from it in one way per name (the names say which),
 * plus a few that are equal.
 */
function divergent (src: string, rep: string): string[] {
  for (const d of [src, rep]) {
    mkdirSync(join(d, 'sub'), { recursive: true })
    file(join(d, 'same.txt'), 'same')
    file(join(d, 'sub', 'same-too.txt'), 'same too')
    symlinkSync('same.txt', join(d, 'same-link'))
  }
  file(join(src, 'missing.txt'), 'only on the source')
  file(join(rep, 'extra.txt'), 'only on the replica')
  mkdirSync(join(rep, 'extra-dir', 'deeper'), { recursive: true })
  file(join(rep, 'extra-dir', 'deeper', 'x'), 'x')
  file(join(src, 'file-not-dir'), 'a file')
  mkdirSync(join(rep, 'file-not-dir'))
  file(join(rep, 'file-not-dir', 'inside'), 'in a dir that should be a file')
  mkdirSync(join(src, 'dir-not-link'))
  file(join(src, 'dir-not-link', 'f'), 'in a dir')
  symlinkSync('sub', join(rep, 'dir-not-link'))
  file(join(src, 'size.txt'), 'twelve bytes')
  file(join(rep, 'size.txt'), 'eleven byte')
  file(join(src, 'content.txt'), 'AAAA', T0)
  file(join(rep, 'content.txt'), 'BBBB', T0 + 60)
  file(join(src, 'sneaky.txt'), 'CCCC')
  file(join(rep, 'sneaky.txt'), 'DDDD')
  file(join(src, 'mode.txt'), 'mode')
  file(join(rep, 'mode.txt'), 'mode')
  chmodSync(join(rep, 'mode.txt'), 0o600)
  file(join(src, 'mtime.txt'), 'mtime', T0)
  file(join(rep, 'mtime.txt'), 'mtime', T0 + 3600)
  symlinkSync('same.txt', join(src, 'link'))
  symlinkSync('sub', join(rep, 'link'))
  file(join(src, 'owner.txt'), 'owner')
  file(join(rep, 'owner.txt'), 'owner')
  chownSync(join(rep, 'owner.txt'), 65534, 65534)
  // setuid survives the copy (a chown clears it; it is set again after).
  file(join(src, 'suid.sh'), '#!/bin/sh\n')
  chmodSync(join(src, 'suid.sh'), 0o4755)
  // setuid where both the owner and the mode differ: the chown goes first, or it clears it.
  file(join(src, 'suid-owner.sh'), '#!/bin/sh\n')
  chmodSync(join(src, 'suid-owner.sh'), 0o4755)
  file(join(rep, 'suid-owner.sh'), '#!/bin/sh\n')
  chownSync(join(rep, 'suid-owner.sh'), 65534, 65534)
  // A hard link group on the source.
  file(join(src, 'hard-a'), 'one inode, two names')
  linkSync(join(src, 'hard-a'), join(src, 'hard-b'))
  return [
    'missing /missing.txt', 'extra /extra-dir', 'extra /extra.txt', 'type /file-not-dir', 'type /dir-not-link',
    'size /size.txt', 'content /content.txt', 'mode /mode.txt', 'mtime /mtime.txt', 'link target /link',
    'owner /owner.txt', 'missing /hard-a', 'missing /hard-b', 'missing /suid.sh', 'mode /suid-owner.sh', 'owner /suid-owner.sh',
    // What a dir of the wrong type should hold is missing too.
    'missing /dir-not-link/f',
  ].sort()
}

/** "kind path" of each verify line. */
function kinds (stdout: string): string[] {
  return stdout.split('\n').filter(Boolean).map(l => {
    const m = /^\S+ (missing|extra|type|size|content|mode|mtime|link target|owner) (\S+?)(?::? |:?$)/.exec(l.replace(/^(fixed|would fix): /, ''))
    return m ? `${m[1]} ${m[2]}` : `unparsed: ${l}`
  }).sort()
}

/** A temp dir and a harness sshd, both gone at teardown. */
async function dirAndSshd (t: { teardown (fn: () => unknown): void }): Promise<{ dir: string, sshd: Sshd }> {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-reconcile-'))
  let sshd: Sshd | undefined
  t.teardown(async () => {
    await sshd?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  sshd = await startSshd()
  return { dir, sshd }
}

t.test('verify, resync --dry-run, resync: file:// and sftp replicas', async t => {
  const { dir, sshd: s } = await dirAndSshd(t)
  const kinds_: Array<[string, (rep: string) => string[]]> = [
    ['file', rep => ['--replica', `file://${rep}`]],
    ['sftp', rep => ['--replica', `sftp://root@${s.host}:${s.port}${rep}`, '--identity', s.identity, '--known-hosts', s.knownHosts]],
  ]
  for (const [kind, replicaArgs] of kinds_) {
    t.test(kind, async t => {
      const src = join(dir, `${kind}-source`)
      const rep = join(dir, `${kind}-replica`)
      const want = divergent(src, rep)
      const r = replicaArgs(rep)

      const v = await cli(['verify', src, ...r])
      t.equal(v.code, 1, 'verify exits 1 when the replica differs')
      t.same(kinds(v.stdout), want, 'every kind of difference, each once (nothing below an extra dir is listed)')
      const sum = await cli(['verify', src, ...r, '--checksum'])
      t.same(kinds(sum.stdout), [...want, 'content /sneaky.txt'].sort(), '--checksum also finds equal size and mtime with other bytes')
      const j = await cli(['verify', src, ...r, '--json'])
      const doc = JSON.parse(j.stdout) as { equal: boolean, replicas: Array<{ differences: Array<{ kind: string, path: string }> }> }
      t.equal(doc.equal, false, '--json: not equal')
      t.same(doc.replicas[0]?.differences.map(d => `${d.kind} ${d.path}`).sort(), want, '--json lists the same differences')

      const dry = await cli(['resync', src, ...r, '--dry-run'])
      t.equal(dry.code, 0, 'resync --dry-run exits 0')
      t.same(kinds(dry.stdout), want, 'resync --dry-run prints what it would fix')
      t.match(dry.stdout, /^would fix: /m)
      t.same(kinds((await cli(['verify', src, ...r])).stdout), want, 'and changes nothing')

      const fix = await cli(['resync', src, ...r, '--checksum'])
      t.equal(fix.code, 0, `resync exits 0 ${fix.stderr}`)
      const after = await cli(['verify', src, ...r, '--checksum'])
      t.equal(after.code, 0, `verify --checksum exits 0 after resync: ${after.stdout}`)
      t.equal(after.stdout, '', 'and prints no difference')
      t.equal(lstatSync(join(rep, 'hard-a')).ino, lstatSync(join(rep, 'hard-b')).ino, 'a hard link group stays one inode on the replica')
      t.equal(readFileSync(join(rep, 'file-not-dir'), 'utf8'), 'a file', 'a dir where a file should be became the file')
      t.ok(lstatSync(join(rep, 'dir-not-link')).isDirectory(), 'a symlink where a dir should be became the dir')

      const again = await cli(['resync', src, ...r])
      t.equal(again.stdout, '', 'a second resync finds nothing to fix')
    })
  }
})

/** The processes an sshd listener has started: one per connection (and theirs below). */
function sessions (pid: number): number {
  let n = 0
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) n++
    } catch {}
  }
  return n
}

t.test('an interrupted resync resumes: the next run copies only what is left', async t => {
  const { dir, sshd } = await dirAndSshd(t)
  const src = join(dir, 'source')
  const rep = join(dir, 'replica')
  const FILES = 3000
  for (let d = 0; d < 30; d++) {
    mkdirSync(join(src, `d${d}`), { recursive: true })
    // 20 KB each: the second stream takes long enough to be killed in (small files go in a blink).
    for (let f = 0; f < FILES / 30; f++) file(join(src, `d${d}`, `f${f}`), `file ${d}/${f} `.repeat(1600))
  }
  mkdirSync(rep)
  const r = ['--replica', `sftp://root@${sshd.host}:${sshd.port}${rep}`, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts]
  const count = () => {
    let n = 0
    for (let d = 0; d < 30; d++) {
      try { n += readdirSync(join(rep, `d${d}`)).filter(x => !x.startsWith('.replicafs.')).length } catch {}
    }
    return n
  }
  // Killed once a tenth of the files are there (bounded: 60 s).
  const child = spawn(process.execPath, [CLI, 'resync', src, ...r], { stdio: 'ignore' })
  const exited = new Promise(res => child.once('exit', res))
  const end = Date.now() + 60_000
  while (count() < FILES / 10 && Date.now() < end && child.exitCode === null) await new Promise(res => setTimeout(res, 10))
  child.kill('SIGKILL')
  await exited
  // The backup's side of the killed connection (its sshd session, a tar still extracting what
  // was sent) winds down on its own: the next run starts once it has, as a later run would.
  const end2 = Date.now() + 20_000
  while (sessions(sshd.pid) > 0 && Date.now() < end2) await new Promise(res => setTimeout(res, 20))
  const before = count()
  t.ok(before >= FILES / 10 && before < FILES, `killed half way (${before} of ${FILES} files there)`)

  const again = await cli(['resync', src, ...r])
  t.equal(again.code, 0, 'the second run exits 0')
  const copied = Number(/(\d+) files copied/.exec(again.stderr)?.[1])
  t.ok(copied <= FILES - before + 4, `it copies only what was left (${copied} files; ${FILES - before} missing; what was in flight at the kill, under temporary names, is copied again)`)
  const verify = await cli(['verify', src, ...r])
  t.equal(verify.code, 0, `verify: equal${verify.code !== 0 ? `\n${verify.stdout}${verify.stderr}` : ''}`)
  t.same(readdirSync(join(rep, 'd0')).filter(x => x.startsWith('.replicafs.')), [], 'the killed run\'s temp files are gone')
})

t.test('bad usage and an unreachable replica', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-reconcile-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const noReplica = await cli(['verify', dir])
  t.equal(noReplica.code, 2, 'verify with no --replica: exit 2')
  t.match(noReplica.stderr, /needs at least one --replica/)
  const notDir = await cli(['verify', join(dir, 'nope'), '--replica', `file://${dir}`])
  t.equal(notDir.code, 2, 'a source that is not a directory: exit 2')
  const gone = await cli(['resync', dir, '--replica', `file://${join(dir, 'nope')}`])
  t.equal(gone.code, 3, 'a replica that cannot be reached: exit 3')
  const dry = await cli(['verify', dir, '--replica', `file://${dir}`, '--dry-run'])
  t.equal(dry.code, 2, 'verify --dry-run: exit 2 (verify changes nothing)')
})

t.test('mount reconciles a divergent sftp replica before it comes up; --no-reconcile does not', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-reconcile-'))
  let sshd: Sshd | undefined
  let daemon: Daemon | undefined
  const mnt = join(dir, 'mnt')
  t.teardown(async () => {
    if (daemon) await stopDaemon(daemon)
    await sshd?.cleanup()
    cleanupDir(dir, mnt)
  })
  sshd = await startSshd()
  const src = join(dir, 'source')
  const rep = join(dir, 'replica')
  mkdirSync(mnt)
  divergent(src, rep)
  const r = ['--replica', `sftp://root@${sshd.host}:${sshd.port}${rep}`, '--identity', sshd.identity, '--known-hosts', sshd.knownHosts]
  const mount = (...extra: string[]) => startDaemon(['mount', src, mnt, ...r, '--state-dir', join(dir, 'state'), ...extra])

  daemon = await mount('--no-reconcile')
  await stopDaemon(daemon)
  daemon = undefined
  t.equal((await cli(['verify', src, ...r])).code, 1, '--no-reconcile leaves the replica as it was')

  // --checksum: equal size and mtime with other bytes (sneaky.txt) is found too.
  daemon = await mount('--checksum')
  t.match(daemon.stderr, /reconcile: .*: \d+ checked, \d+ differences fixed/, 'the reconcile is logged before the mount is up')
  writeFileSync(join(mnt, 'after-mount.txt'), 'made through the mount')
  await stopDaemon(daemon)
  daemon = undefined
  const v = await cli(['verify', src, ...r, '--checksum'])
  t.equal(v.code, 0, `verify --checksum exits 0: ${v.stdout}`)
  t.equal(readFileSync(join(rep, 'after-mount.txt'), 'utf8'), 'made through the mount', 'changes after the reconcile replicate as usual')
})
