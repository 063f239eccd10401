#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EXIT, UserError } from './errors'
import { stderrLogger, type Logger } from './log'
import { mount } from './fuse/mount'
import { localOnly, type ReplicationHook } from './replication/mutation'
import { unmountCommand } from './unmount'

const USAGE = `usage:
  replicafs mount <source> <mountpoint> [--allow-other]
  replicafs unmount <mountpoint>
  replicafs --help | <command> --help`

const HELP: Record<string, string> = {
  mount: `replicafs mount <source> <mountpoint> [options]

Serves the directory <source> at <mountpoint> through FUSE, in the foreground. Prints
"mounted <mountpoint>" once the mount is usable; SIGINT or SIGTERM unmount it and exit 0.
A stale mount left at <mountpoint> by a daemon that was killed is cleaned up first.

options:
  --allow-other   let users other than the one running replicafs use the mount (an FTP
                  server's users); needs root or user_allow_other in /etc/fuse.conf.
                  default: off
  -h, --help      this text

exit codes: 0 unmounted cleanly; 2 bad usage (bad arguments, a source that is not a
directory, a mountpoint inside the source or not empty); 3 the mount could not be made
(no /dev/fuse, the native binding missing).`,
  unmount: `replicafs unmount <mountpoint>

Unmounts a replicafs mount (the daemon then exits 0). Fails, exit 2, if it is not mounted.`,
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
  const { values, positionals } = parse(args, { 'allow-other': { type: 'boolean' } }, 'mount')
  if (values.help) {
    process.stdout.write(HELP.mount + '\n')
    return EXIT.ok
  }
  const [source, mountpoint, extra] = positionals
  if (source === undefined || mountpoint === undefined || extra !== undefined) {
    throw new UserError(`mount takes a source and a mountpoint\n${USAGE}`, EXIT.usage)
  }

  process.on('uncaughtException', err => log.error('main', 'uncaught exception (the mount stays up)', err))
  process.on('unhandledRejection', err => log.error('main', 'unhandled rejection (the mount stays up)', err))

  const m = await mount({ source, mountpoint, allowOther: (values as Record<string, unknown>)['allow-other'] === true, hook: faultInjection() ?? localOnly, log })
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
      await unmountCommand(positionals[0] as string)
      return EXIT.ok
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
