import t from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, writeFileSync, readFileSync, symlinkSync } from 'node:fs'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { CLI, cleanupDir, isMounted, mountFixture, startDaemon, stopDaemon } from '../helpers/mount'

const run = promisify(execFile)

/** Runs the CLI to completion; returns its exit code and output. */
function cli (args: string[], opts: { cwdCli?: string, env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(process.execPath, [opts.cwdCli ?? CLI, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...opts.env } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function tempDirs (t: { teardown (fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'replicafs-life-'))
  const source = join(dir, 'source')
  const mnt = join(dir, 'mnt')
  mkdirSync(source)
  mkdirSync(mnt)
  t.teardown(() => cleanupDir(dir, mnt))
  return { dir, source, mnt }
}

t.test('SIGTERM unmounts and exits 0', async t => {
  const f = await mountFixture()
  t.teardown(() => f.teardown())
  t.match(f.daemon.stdout, `mounted ${f.mnt}\n`)
  t.ok(isMounted(f.mnt), 'mounted while running')
  f.daemon.child.kill('SIGTERM')
  const { code } = await f.daemon.exited
  t.equal(code, 0, 'exit 0')
  t.notOk(isMounted(f.mnt), 'nothing left mounted')
})

t.test('SIGINT unmounts and exits 0', async t => {
  const f = await mountFixture()
  t.teardown(() => f.teardown())
  f.daemon.child.kill('SIGINT')
  t.equal((await f.daemon.exited).code, 0)
  t.notOk(isMounted(f.mnt))
})

t.test('replicafs unmount ends the daemon with exit 0', async t => {
  const f = await mountFixture()
  t.teardown(() => f.teardown())
  const r = cli(['unmount', f.mnt])
  t.equal(r.code, 0, r.stderr)
  t.equal((await f.daemon.exited).code, 0)
  t.notOk(isMounted(f.mnt))
  const again = cli(['unmount', f.mnt])
  t.equal(again.code, 2)
  t.match(again.stderr, /is not a replicafs mount/)
})

t.test('SIGKILL leaves a stale mount that the next start cleans up', async t => {
  const { source, mnt } = tempDirs(t)
  writeFileSync(join(source, 'kept.txt'), 'still here')
  const first = await startDaemon(['mount', source, mnt])
  first.child.kill('SIGKILL')
  await first.exited
  t.ok(isMounted(mnt), 'the killed daemon left its mount')
  await t.rejects(stat(join(mnt, 'kept.txt')), { code: 'ENOTCONN' }, 'and it is dead')

  const second = await startDaemon(['mount', source, mnt])
  t.teardown(() => stopDaemon(second))
  t.match(second.stderr, /cleaning up the stale mount/)
  t.equal(await readFile(join(mnt, 'kept.txt'), 'utf8'), 'still here', 'the new mount serves the source')
  await stopDaemon(second)
  t.notOk(isMounted(mnt))
})

t.test('a mountpoint served by a live daemon is refused', async t => {
  const f = await mountFixture()
  t.teardown(() => f.teardown())
  const other = mkdtempSync(join(tmpdir(), 'replicafs-other-'))
  t.teardown(() => cleanupDir(other))
  const r = cli(['mount', other, f.mnt])
  t.equal(r.code, 2)
  t.match(r.stderr, /is already mounted/)
  t.ok(isMounted(f.mnt), 'the first mount is untouched')
})

t.test('bad arguments: one sentence and exit 2', async t => {
  const { dir, source, mnt } = tempDirs(t)
  const file = join(dir, 'file')
  writeFileSync(file, 'x')
  const inner = join(source, 'inner')
  mkdirSync(inner)
  const full = join(dir, 'full')
  mkdirSync(full)
  writeFileSync(join(full, 'x'), 'x')
  const outerMnt = join(dir, 'outer')
  mkdirSync(outerMnt)

  const cases: Array<[string, string[], RegExp]> = [
    ['no command', [], /no command given/],
    ['unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['missing mountpoint', ['mount', source], /takes a source and a mountpoint/],
    ['unknown option', ['mount', source, mnt, '--bogus'], /Unknown option '--bogus'/],
    ['source missing', ['mount', join(dir, 'nope'), mnt], /source .* does not exist/],
    ['source is a file', ['mount', file, mnt], /source .* is not a directory/],
    ['mountpoint missing', ['mount', source, join(dir, 'nope')], /mountpoint .* does not exist/],
    ['mountpoint is a file', ['mount', source, file], /mountpoint .* is not a directory/],
    ['mountpoint inside the source', ['mount', source, inner], /is inside the source/],
    ['source inside the mountpoint', ['mount', inner, dir], /is inside the mountpoint/],
    ['mountpoint not empty', ['mount', source, full], /is not empty/],
  ]
  for (const [name, args, message] of cases) {
    const r = cli(args)
    t.equal(r.code, 2, `${name}: exit 2`)
    t.match(r.stderr, message, `${name}: says why`)
    t.notMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`)
  }
  t.notOk(isMounted(mnt) || isMounted(inner) || isMounted(outerMnt), 'nothing got mounted')
})

t.test('--help documents the options, exit 0', async t => {
  const r = cli(['mount', '--help'])
  t.equal(r.code, 0)
  t.match(r.stdout, /--allow-other/)
  t.equal(cli(['--help']).code, 0)
})

t.test('no /dev/fuse: exit 3 with a clear sentence', async t => {
  const { source, mnt } = tempDirs(t)
  // A private mount namespace whose /dev lacks fuse: the rest of the machine is untouched.
  const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /dev && exec "$0" "$@"', process.execPath, CLI, 'mount', source, mnt], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 3, r.stderr)
  t.match(r.stderr, /\/dev\/fuse is missing/)
})

t.test('native binding missing: exit 3 with a clear sentence', async t => {
  const { dir, source, mnt } = tempDirs(t)
  // The CLI copied where native-deps/build is not beside it.
  const copy = join(dir, 'copy')
  cpSync(resolve(CLI, '..', '..', '..', 'dist'), join(copy, 'dist'), { recursive: true })
  symlinkSync(resolve(CLI, '..', '..', '..', 'node_modules'), join(copy, 'node_modules'))
  const r = cli(['mount', source, mnt], { cwdCli: join(copy, 'dist', 'src', 'cli.js') })
  t.equal(r.code, 3, r.stderr)
  t.match(r.stderr, /native FUSE binding is not built/)
})

t.test('an internal error answers EIO and the daemon stays up', async t => {
  const { source, mnt } = tempDirs(t)
  const d = await startDaemon(['mount', source, mnt], undefined, { REPLICAFS_FAULT_INJECT: 'mkdir' })
  t.teardown(() => stopDaemon(d))
  await t.rejects(mkdir(join(mnt, 'boom')), { code: 'EIO' }, 'the call fails with EIO')
  t.match(d.stderr, /fault injected on mkdir/, 'the error is logged')
  t.match(d.stderr, /\n\s+at /, 'with its stack')
  await writeFile(join(mnt, 'after.txt'), 'alive')
  t.equal(readFileSync(join(source, 'after.txt'), 'utf8'), 'alive', 'the daemon still serves')
  await stopDaemon(d)
  t.equal((await d.exited).code, 0)
})

t.test('the mount is usable as soon as "mounted" is printed', async t => {
  const { source, mnt } = tempDirs(t)
  const d = await startDaemon(['mount', source, mnt])
  t.teardown(() => stopDaemon(d))
  const { stdout } = await run('ls', ['-la', mnt])
  t.match(stdout, /\.\./)
})
