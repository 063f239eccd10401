#!/usr/bin/env node
import { truncate } from 'node:fs/promises'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EXIT, UserError } from './errors'
import { stderrLogger, type Logger } from './log'
import { MOUNT_OPTIONS, TREE_OPTIONS, defaultStateDir, mountConfig } from './config'
import { localOnly, type ReplicationHook } from './replication/mutation'
import { blameFile, merge, readConfigFile } from './configfile'
// Each command's modules are loaded when it runs: `status` has no use for ssh2, nor
// `resync` for the FUSE binding (a start in 40 ms less counts in a quick resync).

const USAGE = `usage:
  replicafs mount <source> <mountpoint> [--replica URL]... [--mode sync|async] [--quorum N]
                  [--identity FILE] [--known-hosts FILE] [--timeout SECONDS]
                  [--journal-max BYTES] [--state-dir DIR] [--in-place] [--allow-other]
                  [--no-reconcile] [--checksum] [--exclude GLOB]... [--config FILE]
                  [--metrics HOST:PORT]
  replicafs mount --config FILE
  replicafs unmount <mountpoint>
  replicafs verify <source> --replica URL... [--checksum] [--json] [--exclude GLOB]... [--config FILE]
  replicafs resync <source> --replica URL... [--checksum] [--dry-run] [--exclude GLOB]... [--config FILE]
  replicafs status <mountpoint> | --state-dir DIR [--json]
  replicafs wait <mountpoint> | --state-dir DIR [--timeout SECONDS]
  replicafs --help | <command> --help`

const HELP: Record<string, string> = {
  mount: `replicafs mount <source> <mountpoint> [options]

Serves the directory <source> at <mountpoint> through FUSE, in the foreground. Prints
"mounted <mountpoint>" once the mount is usable; SIGINT or SIGTERM unmount it and exit 0.
A stale mount left at <mountpoint> by a daemon that was killed is cleaned up first.

Every change made through the mount is applied to <source> and replicated to each
--replica, in order. Before the mount comes up, each replica replays what a killed run left
in the journal, then is reconciled: made identical to the source (types, content, modes,
owners, file mtimes, symlink targets, hard links; what the source lacks is deleted), files
compared by size and mtime, content where only the mtime differs.

options:
  --replica URL        a backup directory: sftp://[user@]host[:port]/abs/path (key auth,
                       host key checked against --known-hosts) or file:///abs/path.
                       Repeatable. default: none (a plain passthrough)
  --mode sync|async    sync: a call answers once --quorum replicas applied it.
                       async: a call answers at once; replicas follow in the background.
                       default: sync
  --quorum N           replicas that must apply a change before a sync call answers; a
                       replica that fails or is slower than --timeout is degraded and
                       catches up later; the call fails (EIO) only when fewer than N can
                       still apply it. default: all replicas
  --identity FILE      SSH private key. default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa
  --known-hosts FILE   OpenSSH known_hosts (plain, hashed |1| and [host]:port entries); an
                       unknown or changed host key refuses the mount. default: ~/.ssh/known_hosts
  --timeout SECONDS    sync deadline per call, and connect timeout. default: 10
  --journal-max BYTES  changes held for a replica that is behind (512M, 1G, ...) before
                       it is switched to a full resync. default: 1G
  --state-dir DIR      where the async journal and each replica's progress live.
                       default: /var/lib/replicafs/<mountpoint path with / as ->
  --in-place           stream new files into place on the replicas instead of writing
                       them under a hidden temp name and renaming at close. default: off
  --no-reconcile       mount without first making each replica identical to the source
                       (see below). default: reconcile
  --checksum           the reconcile compares every file's content, not only its size and
                       mtime. default: off
  --exclude GLOB       a gitignore-style pattern (*.part, .ftpquota, cache/, /tmp/**,
                       !keep.part) of paths that the mount serves but never replicates;
                       the reconcile leaves them alone on both sides. Repeatable.
                       default: none
  --config FILE        settings from a YAML (or JSON) file: one key per flag, named as the
                       flag without its dashes (known-hosts: ..., replica: [URL, ...],
                       exclude: [...]), plus source, mountpoint, and reconcile: false for
                       --no-reconcile. Flags on the command line win. An unknown key or a
                       bad value is an error naming the key (exit 2). default: none
  --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics: per replica
                       its lag, queue, changes and bytes applied, errors and state; the
                       latency of each changing call by op. Needs a --replica.
                       default: off
  --allow-other        let users other than the one running replicafs use the mount (an
                       FTP server's users); needs root or user_allow_other in
                       /etc/fuse.conf. default: off
  --promote            make <source> the master although its generation mark says a
                       newer master wrote it as a replica: the failover of a backup (see
                       fencing below). On the command line only (a one-time act, not a
                       config key). default: off
  -h, --help           this text

fencing: the root of the source and of each replica holds a symlink .replicafs-generation
(never replicated nor compared). The master marks its source replicafs:master:G and each
replica replicafs:replica:G before it writes there; --promote takes G one past the mark. A
source marked as a replica, a replica marked by a newer master, or a replica that is the
source of a master as new as this one, refuses the mount (exit 4) or, on a reconnect, stops
replication to that replica: a stale master coming back never overwrites a promoted backup.

exit codes: 0 unmounted cleanly; 2 bad usage (bad arguments, a source that is not a
directory, a mountpoint inside the source or not empty); 3 the mount or a replica could not
be reached (no /dev/fuse, the native binding missing, a host key unknown or changed, a key
refused, a port closed); 4 fenced: a generation mark says another master is newer.`,
  verify: `replicafs verify <source> --replica URL... [options]

Compares each replica with <source> and prints every difference, one per line:
"<replica> <kind> <path>: source <x>, replica <y>", kind one of missing, extra, type, size,
content, mode, mtime, link target, owner. Files are compared by size and mtime, and by
content (SHA-256 of streaming reads on both sides) where the size agrees and the mtime does
not. Directories' own mtimes are not compared. Nothing is changed.

options:
  --replica URL        as for mount; repeatable, at least one
  --checksum           compare every file's content. default: off
  --json               one JSON document on stdout instead of lines. default: off
  --exclude GLOB       paths not compared (as mount's --exclude). Repeatable. default: none
  --config FILE        mount's config file: its source, replica, identity, known-hosts,
                       timeout, exclude and checksum keys apply. default: none
  --identity FILE      SSH private key. default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa
  --known-hosts FILE   default: ~/.ssh/known_hosts
  --timeout SECONDS    connect timeout. default: 10
  -h, --help           this text

exit codes: 0 every replica equals the source; 1 some differ (or could not be read);
2 bad usage; 3 a replica could not be reached.`,
  resync: `replicafs resync <source> --replica URL... [options]

Makes each replica identical to <source>, as mount does before it mounts: what differs is
fixed (files copied under a hidden temp name and renamed into place, 16 at a time), what
the source lacks is deleted. Each fix is printed as "fixed: " + the verify line. Run it while
nothing changes <source> (not while it is mounted with replicas).

options:
  --replica URL        as for mount; repeatable, at least one
  --dry-run            print what would be fixed ("would fix: ..."), change nothing.
                       default: off
  --checksum           compare every file's content. default: off
  --exclude GLOB       paths neither copied nor removed (as mount's --exclude). Repeatable.
                       default: none
  --identity FILE, --known-hosts FILE, --timeout SECONDS, --config FILE: as for verify
  -h, --help           this text

exit codes: 0 done; 1 something could not be fixed (each logged); 2 bad usage; 3 a replica
could not be reached; 4 fenced (a replica is a newer master's, as for mount).`,
  status: `replicafs status <mountpoint> [--json]
replicafs status --state-dir DIR [--json]

Asks the daemon that serves <mountpoint> (over <state-dir>/control.sock, mode 0600) how each
replica is doing: its state (reconciling, in sync, catching up, degraded, offline, failed),
the changes and bytes queued for it, its lag (the age of the oldest change it has yet to
apply), what it applied and at what rate (over the last 5 s), its last error with the
time, and the paths where it differs from the source (a change there was refused, and
its repair waits its turn, or failed and is tried again).

options:
  --state-dir DIR      the daemon's --state-dir. default: the default for <mountpoint>
  --json               the daemon's answer as JSON. default: off
  -h, --help           this text

exit codes: 0 answered; 2 bad usage; 3 no daemon with replicas answers there.`,
  wait: `replicafs wait <mountpoint> [--timeout SECONDS]
replicafs wait --state-dir DIR [--timeout SECONDS]

Returns once every replica has applied every change made through the mount before the call,
and repaired every path where it refused one: the barrier a deploy script needs in async
mode (upload, then wait, then switch traffic).

options:
  --state-dir DIR      the daemon's --state-dir. default: the default for <mountpoint>
  --timeout SECONDS    how long to wait. default: 60
  -h, --help           this text

exit codes: 0 every replica has every change; 1 the timeout passed (the replicas still
behind, and the paths where one differs, are named on stderr); 2 bad usage; 3 no daemon
with replicas answers there.`,
  unmount: `replicafs unmount <mountpoint>

Unmounts a replicafs mount (the daemon then exits 0). Fails, exit 2, if it is not mounted.`,
}

const STATUS_OPTIONS = { 'state-dir': { type: 'string' }, json: { type: 'boolean' } } as const
const WAIT_OPTIONS = { 'state-dir': { type: 'string' }, timeout: { type: 'string' } } as const
const WAIT_DEFAULT_SECONDS = 60

/** The state dir of the daemon that status and wait ask: --state-dir, or the mountpoint's default. */
function controlStateDir (command: string, positionals: string[], stateDir: string | undefined): string {
  if (positionals.length > 1) throw new UserError(`${command} takes one mountpoint\n${USAGE}`, EXIT.usage)
  // Given both, --state-dir says where the daemon listens.
  if (stateDir !== undefined) return stateDir
  const mountpoint = positionals[0]
  if (mountpoint === undefined) throw new UserError(`${command} takes a mountpoint or --state-dir DIR\n${USAGE}`, EXIT.usage)
  return defaultStateDir(mountpoint)
}

function parse (args: string[], options: ParseArgsConfig['options'], command: string) {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err)
    throw new UserError(`${command}: ${why}\n${USAGE}`, EXIT.usage)
  }
}

async function mountCommand (args: string[], log: Logger): Promise<number> {
  const { values, positionals } = parse(args, MOUNT_OPTIONS, 'mount')
  if (values.help) {
    process.stdout.write(HELP.mount + '\n')
    return EXIT.ok
  }
  const configFile = (values as Record<string, unknown>).config as string | undefined
  const file = configFile !== undefined ? await readConfigFile(configFile) : null
  const [source = file?.source, mountpoint = file?.mountpoint, extra] = positionals
  if (source === undefined || mountpoint === undefined || extra !== undefined) {
    throw new UserError(`mount takes a source and a mountpoint\n${USAGE}`, EXIT.usage)
  }

  // A log that cannot be written (stderr's reader gone) must not become an error to log.
  process.stderr.on('error', () => {})
  process.on('uncaughtException', err => log.error('main', 'uncaught exception (the mount stays up)', err))
  process.on('unhandledRejection', err => log.error('main', 'unhandled rejection (the mount stays up)', err))

  const { values: merged, fromFile } = merge(file, values as Record<string, unknown>)
  let config
  try {
    config = mountConfig(source, mountpoint, merged)
  } catch (err) {
    throw blameFile(err, configFile ?? '', fromFile)
  }
  const { checkPaths, mount } = await import('./fuse/mount')
  const { intentsPath, keepIntents, startReplication } = await import('./replication/setup')
  const paths = await checkPaths(source, mountpoint, log)
  const replication = await startReplication(config, paths.source, log)
  const replicator = replication?.replicator ?? null
  const intents = replicator !== null ? intentsPath(config.stateDir) : ''
  const m = await mount({ ...paths, allowOther: config.allowOther, hook: faultInjection() ?? replication?.hook ?? localOnly, intents, opTimes: replication?.metrics?.opTimes ?? null, log })
  process.stdout.write(`mounted ${mountpoint}\n`)

  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    log.info('main', `${signal}: unmounting ${mountpoint}`)
    m.unmount().catch(err => log.error('main', `unmount of ${mountpoint} failed`, err))
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGHUP', () => stop('SIGHUP'))

  await m.ended
  log.info('main', `unmounted ${mountpoint}`)
  if (replicator !== null) {
    const drained = await replicator.drain(config.timeoutSeconds * 1000)
    // The journal's cursors have passed the changes refused there: the intents keep them (but
    // the whole tree, which the next start's reconcile goes through anyway).
    const differing = replicator.differing().filter(p => p !== '/' || !config.reconcile)
    if (!drained) log.warn('main', 'some replicas had not applied every change at exit')
    if (differing.length > 0) {
      const n = differing.length === 1 ? '1 path' : `${differing.length} paths`
      log.warn('main', `some replica differs from the source at ${n} (a change refused there, its repair failed or not run yet): the next start resyncs ${differing.length === 1 ? 'it' : 'them'}`)
      await keepIntents(config.stateDir, differing, drained).catch(err => log.error('main', `cannot keep the paths to resync in ${intents}`, err))
    } else if (drained) {
      // Nothing is in flight any more: the next start has nothing to resync.
      await truncate(intents).catch(() => {})
    }
    await replication?.control?.close()
    await replication?.metrics?.close()
    await replicator.close()
  }
  return EXIT.ok
}

/**
 * REPLICAFS_FAULT_INJECT=<op>: a hook that throws on that op, so that tests can prove on a
 * real mount that an internal error answers EIO and leaves the daemon up.
 */
function faultInjection (): ReplicationHook | null {
  const op = process.env.REPLICAFS_FAULT_INJECT
  if (!op) return null
  return {
    apply (m) {
      if (m.op === op) throw new Error(`fault injected on ${op} (REPLICAFS_FAULT_INJECT)`)
    },
  }
}

export async function main (argv: string[], log: Logger = stderrLogger): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'mount':
      return mountCommand(rest, log)
    case 'unmount':
    case 'umount': {
      const { values, positionals } = parse(rest, {}, 'unmount')
      if (values.help) {
        process.stdout.write(HELP.unmount + '\n')
        return EXIT.ok
      }
      if (positionals.length !== 1) throw new UserError(`unmount takes one mountpoint\n${USAGE}`, EXIT.usage)
      await (await import('./unmount')).unmountCommand(positionals[0] as string)
      return EXIT.ok
    }
    case 'verify':
    case 'resync': {
      const parsed = parse(rest, TREE_OPTIONS, command)
      const positionals = parsed.positionals
      const values = parsed.values as Record<string, unknown>
      if (values.help) {
        process.stdout.write(HELP[command] + '\n')
        return EXIT.ok
      }
      if (command === 'resync' && values.json) throw new UserError(`resync: --json is for verify\n${USAGE}`, EXIT.usage)
      if (command === 'verify' && values['dry-run']) throw new UserError(`verify: --dry-run is for resync (verify changes nothing)\n${USAGE}`, EXIT.usage)
      return (await import('./tree')).treeCommand(command, positionals, values, log)
    }
    case 'status':
    case 'wait': {
      const parsed = parse(rest, command === 'status' ? STATUS_OPTIONS : WAIT_OPTIONS, command)
      const values = parsed.values as Record<string, unknown>
      if (values.help) {
        process.stdout.write(HELP[command] + '\n')
        return EXIT.ok
      }
      const stateDir = controlStateDir(command, parsed.positionals, values['state-dir'] as string | undefined)
      const { statusCommand, waitCommand } = await import('./control')
      if (command === 'status') return statusCommand(stateDir, values.json === true)
      const seconds = values.timeout === undefined ? WAIT_DEFAULT_SECONDS : Number(values.timeout)
      if (!Number.isFinite(seconds) || seconds < 0) throw new UserError(`--timeout ${String(values.timeout)}: expected a number of seconds`, EXIT.usage)
      return waitCommand(stateDir, seconds * 1000)
    }
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n')
      return EXIT.ok
    case undefined:
      throw new UserError(`no command given\n${USAGE}`, EXIT.usage)
    default:
      throw new UserError(`unknown command '${command}'\n${USAGE}`, EXIT.usage)
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(code => process.exit(code), err => {
    if (err instanceof UserError) {
      process.stderr.write(`replicafs: ${err.message}\n`)
      process.exit(err.code)
    }
    process.stderr.write(`replicafs: internal error (a bug, please report it):\n${err instanceof Error ? err.stack : String(err)}\n`)
    process.exit(70)
  })
}
