import { E } from '../errors'
import type { Logger } from '../log'
import type { Mutation, ReplicationHook } from '../replication/mutation'

/** Answers a FUSE call: res >= 0, or a negative errno. */
export type Done = (res: number) => void

/**
 * The changes made through the mount, as they reach JS: native-deps/src/local.c has applied
 * each to the source already (on libfuse's threads) and hands over only those that succeeded,
 * with their local result. Here each becomes one Mutation for the replication hook; the call
 * answers its local result once the hook accepted the change, or EIO if the hook failed (the
 * source keeps the change). Knows nothing of FUSE: testable without a mount.
 */
export class Changes {
  readonly #hook: ReplicationHook
  readonly #log: Logger

  constructor (hook: ReplicationHook, log: Logger) {
    this.#hook = hook
    this.#log = log
  }

  commit (res: number, m: Mutation, done: Done): void {
    let pending: void | Promise<void>
    try {
      pending = this.#hook.apply(m)
    } catch (err) {
      this.#log.error('replica', `replication of ${m.op} failed`, err)
      done(-E.EIO)
      return
    }
    if (pending === undefined) {
      done(res)
      return
    }
    pending.then(() => done(res), err => {
      this.#log.error('replica', `replication of ${m.op} failed`, err)
      done(-E.EIO)
    })
  }
}
