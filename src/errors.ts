import { constants } from 'node:os'

/** Exit codes of the command line (SPEC "Command line"). */
export const EXIT = {
  ok: 0,
  differences: 1,
  usage: 2,
  unreachable: 3,
  /** A generation mark says another master is newer (fence.ts). */
  fenced: 4,
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

/** Errno numbers by name (positive, as the kernel defines them). */
export const E = constants.errno

