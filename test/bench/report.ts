export function median (xs: number[]): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export function fmt (x: number | null): string {
  if (x === null || !Number.isFinite(x)) return 'n/a'
  return x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1)
}

export function fmtRatio (x: number | null): string {
  return x === null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)}x`
}

/** A markdown table whose columns are padded to line up; numeric-looking columns right-aligned. */
export function markdownTable (header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const right = header.map((_, i) => i > 0 && rows.every(r => /^[\d.,]+x?$|^n\/a$|^-$/.test(r[i] ?? '')))
  const line = (cells: string[]) => '| ' + cells.map((c, i) => right[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!)).join(' | ') + ' |'
  const sep = '|' + w.map((n, i) => right[i] ? '-'.repeat(n + 1) + ':' : '-'.repeat(n + 2)).join('|') + '|'
  return [line(header), sep, ...rows.map(line)].join('\n')
}
