import { randomBytes } from 'node:crypto'
import { readlinkSync, renameSync, symlinkSync, unlinkSync } from 'node:fs'
import { EXIT, E, UserError } from '../errors'
import { ReplicaError, type Replica } from '../replica/replica'
import { TEMP_PREFIX, TEMP_SUFFIX } from './temp'

/**
 * Fencing, as DRBD keeps generation ids: the root of every tree replicafs writes holds a mark,
 * a symlink whose target says who wrote the tree last and in which generation. A master marks
 * its own source `master:G`; it marks each replica `replica:G` before it writes anything there.
 * A backup made the master (`mount --promote`) takes the generation past every one it has seen.
 * So a master that comes back stale finds either its own source marked as a newer master's
 * replica, or its replica marked as a newer master: it refuses, and never overwrites the
 * promoted backup. The mark is never replicated, compared nor deleted (a built-in exclude);
 * a symlink's target is not served by a web server as content.
 */
export const MARK = '/.replicafs-generation'
const MARK_NAME = MARK.slice(1)

export interface Mark { role: 'master' | 'replica', generation: number }

export function parseMark (target: string): Mark | null {
  const m = /^replicafs:(master|replica):(\d{1,15})$/.exec(target)
  return m === null ? null : { role: m[1] as Mark['role'], generation: Number(m[2]) }
}

export function formatMark (m: Mark): string {
  return `replicafs:${m.role}:${m.generation}`
}

function tempName (): string {
  return `${TEMP_PREFIX}${randomBytes(8).toString('hex')}${TEMP_SUFFIX}`
}

function notOurs (where: string, target: string): string {
  return `${where} holds ${MARK_NAME} -> ${JSON.stringify(target)}, which is not a replicafs generation mark (replicafs:master:N or replicafs:replica:N); remove it if nothing else uses it`
}

/**
 * The mark at the root of the local tree `source`; null where it has none. Something else
 * under the mark's name is the user's to sort out (UserError, exit 2).
 */
export function sourceMark (source: string): Mark | null {
  let target: string
  try {
    target = readlinkSync(`${source}/${MARK_NAME}`, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return null
    if (code === 'EINVAL') throw new UserError(notOurs(source, '(not a symlink)'), EXIT.usage)
    throw new UserError(`${source}: cannot read its generation mark: ${(err as Error).message}`, EXIT.usage)
  }
  const mark = parseMark(target)
  if (mark === null) throw new UserError(notOurs(source, target), EXIT.usage)
  return mark
}

/** Marks the local tree `source` as the master of `generation` (a rename: atomic). */
export function markSource (source: string, generation: number): void {
  const target = formatMark({ role: 'master', generation })
  const temp = `${source}/${tempName()}`
  try {
    symlinkSync(target, temp)
    renameSync(temp, `${source}/${MARK_NAME}`)
  } catch (err) {
    try { unlinkSync(temp) } catch {}
    throw new UserError(`${source}: cannot set its generation mark: ${(err as Error).message}`, EXIT.usage)
  }
}

/** The mark at a replica's root; null where it has none. Something else there: refused. */
export async function replicaMark (r: Replica): Promise<Mark | null> {
  const st = await r.lstat(MARK)
  if (st === null) return null
  if ((st.mode & 0o170000) !== 0o120000) throw new ReplicaError(notOurs(r.url, '(not a symlink)'), E.EEXIST, 'permanent')
  const target = await r.readlink(MARK)
  const mark = parseMark(target)
  if (mark === null) throw new ReplicaError(notOurs(r.url, target), E.EEXIST, 'permanent')
  return mark
}

/**
 * Marks `r` as this master's replica of `generation`, after checking that no newer master has
 * it: a replica marked by a newer master, or the live source of a master as new as this one,
 * is refused (a ReplicaError that needs a human: replication to it stops).
 */
export async function claim (r: Replica, generation: number): Promise<void> {
  const mark = await replicaMark(r)
  if (mark !== null && mark.role === 'replica' && mark.generation > generation) {
    throw new ReplicaError(`${r.url}: fenced: a master of generation ${mark.generation} has written to it since this one (generation ${generation}) did; this master is stale and does not write there`, E.EPERM, 'permanent')
  }
  if (mark !== null && mark.role === 'master' && mark.generation >= generation) {
    throw new ReplicaError(`${r.url}: fenced: it is the source of a master of generation ${mark.generation} (this one: ${generation}); a master never writes over another as new as itself (where that tree was copied from this master, with cp -a or rsync, remove its ${MARK_NAME})`, E.EPERM, 'permanent')
  }
  if (mark?.role === 'replica' && mark.generation === generation) return
  const temp = `/${tempName()}`
  await r.symlink(formatMark({ role: 'replica', generation }), temp)
  try {
    await r.rename(temp, MARK)
  } catch (err) {
    await r.unlink(temp).catch(() => {})
    throw err
  }
}

/**
 * The generation a master writes in, once every replica is marked as its own (then its source
 * is marked too). Its source's mark says it: 1 where there is none. A source marked as a
 * replica (a newer master has written it since: a failover) is refused unless `promote`,
 * which takes the generation one past every mark it finds, its own and its replicas'. A
 * replica that is a newer master's is refused (exit 4; a replica that cannot be reached:
 * exit 3); every replica is then closed. `markOwn: false` (a one-shot resync) leaves the
 * source as it is: only a mount makes it a master.
 */
export async function fence (source: string, promote: boolean, replicas: Replica[], markOwn = true): Promise<number> {
  try {
    const own = sourceMark(source)
    if (own?.role === 'replica' && !promote) {
      throw new UserError(`${source} was last written as a replica by a master of generation ${own.generation}: it is a backup now, and mounting it as the master would overwrite that master's newer data on its replicas; to make it the master (a failover), mount it with --promote`, EXIT.fenced)
    }
    let generation = own?.generation ?? 1
    if (promote) {
      let seen = own?.generation ?? 0
      for (const r of replicas) seen = Math.max(seen, (await replicaMark(r))?.generation ?? 0)
      generation = seen + 1
    }
    for (const r of replicas) await claim(r, generation)
    if (markOwn && (own?.role !== 'master' || own.generation !== generation)) markSource(source, generation)
    return generation
  } catch (err) {
    await Promise.all(replicas.map(x => x.close()))
    if (err instanceof ReplicaError) throw new UserError(err.message, err.permanent ? EXIT.fenced : EXIT.unreachable)
    throw err
  }
}
