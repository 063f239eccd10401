/**
 * Logging by category, to stderr. Nothing here is called on the per-syscall path unless
 * tracing is on (REPLICAFS_TRACE=1), and then once per op, at the FUSE wrapper.
 */
export type Category = 'main' | 'fuse' | 'source' | 'replica' | 'journal' | 'reconcile' | 'verify'

export interface Logger {
  info (category: Category, message: string): void
  warn (category: Category, message: string): void
  /** An internal error: logged with its stack. */
  error (category: Category, message: string, err?: unknown): void
}

function stamp (): string {
  return new Date().toISOString()
}

export const stderrLogger: Logger = {
  info (category, message) {
    process.stderr.write(`${stamp()} ${category}: ${message}\n`)
  },
  warn (category, message) {
    process.stderr.write(`${stamp()} ${category}: warning: ${message}\n`)
  },
  error (category, message, err) {
    const detail = err instanceof Error ? `\n${err.stack ?? err.message}` : err === undefined ? '' : `\n${String(err)}`
    process.stderr.write(`${stamp()} ${category}: error: ${message}${detail}\n`)
  },
}

export const silentLogger: Logger = {
  info () {},
  warn () {},
  error () {},
}

export const tracing = process.env.REPLICAFS_TRACE === '1'
