import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'

/** Children running right now, so that a signal handler can kill them. */
export const running = new Set<ChildProcess>()

export interface RunResult {
  ms: number
  stdout: string
}

/**
 * Runs `cmd args` (no shell), timing it with hrtime from just before spawn until it exits.
 * Rejects on a non-zero exit or when it has not finished within `timeoutMs` (it is then killed).
 */
export function run (cmd: string, args: string[], timeoutMs: number, opts: { cwd?: string, captureStdout?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', opts.captureStdout === true ? 'pipe' : 'ignore', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout?.setEncoding('utf8').on('data', (s: string) => { stdout += s })
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 4000) stderr += s })
    let timedOut = false
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, timeoutMs)
    child.once('error', err => { clearTimeout(timer); running.delete(child); reject(err) })
    child.once('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      clearTimeout(timer)
      running.delete(child)
      const what = `${cmd} ${args.join(' ')}`
      if (timedOut) reject(new Error(`timed out after ${timeoutMs / 1000} s: ${what}`))
      else if (code !== 0) reject(new Error(`${what}: exit ${code ?? signal}\n${stderr.trim()}`))
      else resolve({ ms, stdout })
    })
  })
}

/** Runs several commands at once; the time is from the first spawn to the last exit. */
export async function runParallel (cmds: Array<[string, string[]]>, timeoutMs: number): Promise<RunResult> {
  const t0 = process.hrtime.bigint()
  await Promise.all(cmds.map(([c, a]) => run(c, a, timeoutMs)))
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, stdout: '' }
}

// --- process trees (lsyncd's rsync/ssh children), signalled by pid + start time ---------------

export interface ProcId { pid: number, start: string }
export function procStat (pid: number): { ppid: number, start: string, state: string } | undefined {
  let s: string
  try { s = readFileSync(`/proc/${pid}/stat`, 'utf8') } catch { return undefined }
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return { ppid: Number(rest[1]), start: rest[19] ?? '', state: rest[0] ?? '' }
}
export function procAlive (p: ProcId): boolean {
  const st = procStat(p.pid)
  return st !== undefined && st.start === p.start && st.state !== 'Z' && st.state !== 'X'
}
export function descendantsOf (pid: number): ProcId[] {
  const kids = new Map<number, ProcId[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const st = procStat(Number(name))
    if (st === undefined) continue
    const l = kids.get(st.ppid) ?? []
    l.push({ pid: Number(name), start: st.start })
    kids.set(st.ppid, l)
  }
  const out: ProcId[] = []
  const q = [pid]
  while (q.length > 0) {
    for (const c of kids.get(q.shift()!) ?? []) { out.push(c); q.push(c.pid) }
  }
  return out
}
export function signalProc (p: ProcId, sig: NodeJS.Signals): void {
  if (!procAlive(p)) return
  try { process.kill(p.pid, sig) } catch {}
}

