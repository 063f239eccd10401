import { readdir } from 'node:fs/promises'
import type { Category, Logger } from './log'

/** How often a progress line is logged when stderr is not a terminal. */
const LOG_EVERY_MS = 5000
/** How often the bar is redrawn on a terminal. */
const DRAW_EVERY_MS = 200
const COUNT_AFTER_MS = 250

/** Nodes below `dir` (a byte path), walked without following symlinks: a reconcile's total. */
export async function countTree (dir: Buffer): Promise<number> {
  let n = 0
  const walk = async (d: Buffer): Promise<void> => {
    let entries
    try {
      entries = await readdir(d, { withFileTypes: true, encoding: 'buffer' })
    } catch {
      return
    }
    n += entries.length
    for (const e of entries) {
      if (e.isDirectory()) await walk(Buffer.concat([d, Buffer.from('/'), e.name]))
    }
  }
  await walk(dir)
  return n
}

export interface Done { checked: number, bytes: number }

/**
 * Shows a long walk's progress until the returned function is called: on a terminal a bar
 * (cli-progress: nodes checked of the total, bytes copied, rate, ETA), otherwise a log line
 * every few seconds. `total` counts the source, alongside the walk, once it has taken a while.
 */
export function progress (category: Category, label: string, done: () => Done, total: () => Promise<number>, log: Logger): () => void {
  const started = Date.now()
  let known: number | null = null
  // Counted only once the walk has taken a while: a quick one (a pass that finds nothing to
  // do) would spend a good part of its time counting.
  const counting = setTimeout(() => { void total().then(n => { known = n }) }, COUNT_AFTER_MS)
  const rate = (bytes: number) => (bytes / 1e6 / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1)

  if (process.stderr.isTTY === true) {
    // Loaded only on a terminal.
    const { SingleBar } = require('cli-progress') as typeof import('cli-progress')
    const bar = new SingleBar({
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {value}/{total} checked | {mb} MB copied, {rate} MB/s | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    })
    bar.start(1, 0, { mb: '0.0', rate: '0.0' })
    const draw = () => {
      const d = done()
      if (known !== null) bar.setTotal(Math.max(known, d.checked))
      bar.update(d.checked, { mb: (d.bytes / 1e6).toFixed(1), rate: rate(d.bytes) })
    }
    const timer = setInterval(draw, DRAW_EVERY_MS)
    return () => {
      clearTimeout(counting)
      clearInterval(timer)
      draw()
      bar.stop()
    }
  }

  const timer = setInterval(() => {
    const d = done()
    const secs = (Date.now() - started) / 1000
    const of = known !== null && known > 0 ? `/${known} (${Math.min(100, 100 * d.checked / known).toFixed(0)}%)` : ''
    const eta = known !== null && d.checked > 0 && known > d.checked ? `, ETA ${Math.round(secs * (known - d.checked) / d.checked)} s` : ''
    log.info(category, `${label}: ${d.checked}${of} checked, ${(d.bytes / 1e6).toFixed(1)} MB copied, ${rate(d.bytes)} MB/s${eta}`)
  }, LOG_EVERY_MS)
  return () => {
    clearTimeout(counting)
    clearInterval(timer)
  }
}
