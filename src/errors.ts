import { constants } from 'node:os'

/** Exit codes of the command line (SPEC "Command line"). */
export const EXIT = {
  ok: 0,
  differences: 1,
  usage: 2,
  unreachable: 3,
} as const

/**
 * A mistake of the user's (a bad flag, a source that is not a directory, a missing
 * dependency): printed as one sentence, no stack, and the process exits with `code`.
 */
export class UserError extends Error {
  readonly code: number
  constructor (message: string, code: number = EXIT.usage) {
    super(message)
    this.name = 'UserError'
    this.code = code
  }
}

/**
 * A failed filesystem call, carrying a positive errno. Core code throws these; the FUSE
 * boundary (src/fuse/ops.ts) is the one place that turns them into negative numbers.
 */
export class FsError extends Error {
  readonly errno: number
  constructor (errno: number, syscall: string) {
    super(`${syscall}: ${errnoName(errno)}`)
    this.name = 'FsError'
    this.errno = errno
  }
}

const names = new Map<number, string>()
for (const [name, value] of Object.entries(constants.errno)) names.set(value, name)

export function errnoName (errno: number): string {
  return names.get(errno) ?? `errno ${errno}`
}

export const E = constants.errno

/**
 * The errno to answer for any thrown value: FsError and Node's system errors carry their
 * own (Node's `err.errno` is negative; its `err.code` names it); anything else is a bug in
 * replicafs and answers EIO.
 */
export function toErrno (err: unknown): number {
  if (err instanceof FsError) return err.errno
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') {
    const n = (E as Record<string, number | undefined>)[err.code]
    if (n !== undefined) return n
  }
  return E.EIO
}

/** True when `err` is a bug rather than an errno the caller should see. */
export function isInternal (err: unknown): boolean {
  if (err instanceof FsError) return false
  return !(err && typeof err === 'object' && 'code' in err &&
    typeof err.code === 'string' && err.code in E)
}
