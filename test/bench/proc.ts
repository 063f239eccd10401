import { spawn, type ChildProcess } from 'node:child_process'

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
