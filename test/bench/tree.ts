import { mkdirSync, openSync, writeSync, closeSync, symlinkSync } from 'node:fs'
import { join, relative } from 'node:path'

/** mulberry32: a small, seeded, deterministic PRNG (uniform in [0, 1)). */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface TreeStats {
  /** Regular files, symlinks and directories (the root not counted). */
  files: number
  symlinks: number
  dirs: number
  bytes: number
}

const KiB = 1024
const MiB = 1024 * KiB
const EXT = ['html', 'css', 'js', 'png', 'jpg', 'svg', 'json', 'php', 'txt', 'woff2']

/**
 * A deterministic web tree of `entries` files and symlinks under `root` (which must not exist):
 * ~2% symlinks, a few (0.06%, at least 1) 20 MiB files, ~3% files of 32 KiB..2 MiB
 * (log-uniform), the rest 1..32 KiB (uniform), spread over nested directories.
 */
export function generateTree (root: string, entries: number, seed = 20240601): TreeStats {
  const rnd = prng(seed)
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1))
  // Content: slices of one seeded random pool, so no two files are the same and nothing compresses.
  const pool = Buffer.alloc(4 * MiB)
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE(Math.floor(rnd() * 4294967296), i)

  const stats: TreeStats = { files: 0, symlinks: 0, dirs: 0, bytes: 0 }
  mkdirSync(root)
  const dirs: string[] = [root]
  const nDirs = Math.max(4, Math.round(entries / 25))
  for (let i = 0; i < nDirs; i++) {
    const parent = dirs[int(0, dirs.length - 1)]!
    const d = join(parent, `d${i}`)
    mkdirSync(d)
    dirs.push(d)
    stats.dirs++
  }

  const nBig = Math.max(1, Math.round(entries * 0.0006))
  const nSymlinks = Math.round(entries * 0.02)
  const nMedium = Math.round(entries * 0.03)
  const kinds: Array<'big' | 'medium' | 'small' | 'link'> = []
  for (let i = 0; i < entries; i++) {
    kinds.push(i < nBig ? 'big' : i < nBig + nMedium ? 'medium' : i < nBig + nMedium + nSymlinks ? 'link' : 'small')
  }
  // Shuffle (Fisher-Yates), but keep symlinks after some files exist to point at.
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = int(0, i)
    const t = kinds[i]!; kinds[i] = kinds[j]!; kinds[j] = t
  }

  const files: string[] = []
  for (let i = 0; i < entries; i++) {
    const kind = kinds[i]!
    const dir = dirs[int(0, dirs.length - 1)]!
    if (kind === 'link' && files.length > 0) {
      const target = files[int(0, files.length - 1)]!
      symlinkSync(relative(dir, target), join(dir, `l${i}.lnk`))
      stats.symlinks++
      continue
    }
    const size = kind === 'big'
      ? 20 * MiB
      : kind === 'medium'
        ? Math.round(32 * KiB * Math.pow(64, rnd())) // 32 KiB .. 2 MiB
        : int(1 * KiB, 32 * KiB)
    const path = join(dir, `f${i}.${EXT[int(0, EXT.length - 1)]!}`)
    const fd = openSync(path, 'wx')
    try {
      let left = size
      while (left > 0) {
        const off = int(0, pool.length - 1)
        const n = Math.min(left, pool.length - off)
        writeSync(fd, pool, off, n)
        left -= n
      }
    } finally {
      closeSync(fd)
    }
    files.push(path)
    stats.files++
    stats.bytes += size
  }
  return stats
}
