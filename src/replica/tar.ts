/**
 * Just enough of the POSIX tar format (pax, IEEE Std 1003.1-2001) to stream a tree to a
 * backup's `tar -x`: a ustar header per entry, a pax extended header before it where a field
 * does not fit (a name or link over 100 bytes, a size of 8 GiB or more, a uid or gid over
 * 2,097,151), a file's data padded to 512 bytes, and two zero blocks at the end.
 */

export const BLOCK = 512
/** The end of an archive: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK)

/** Entry types: a file, a hard link to an earlier entry, a symlink, a directory, a FIFO. */
export type TarType = '0' | '1' | '2' | '5' | '6'

export interface TarEntry {
  /** Relative to the extraction directory, as bytes (latin1 string): no leading '/'. */
  name: string
  type: TarType
  mode: number
  uid: number
  gid: number
  /** Bytes of data that follow (files only; 0 for the others). */
  size: number
  /** Seconds since the epoch. */
  mtime: number
  /** A symlink's target, or the earlier entry a hard link names. */
  link?: string
}

const NAME_MAX = 100
/** The largest values the octal fields hold: 7 digits for ids, 11 for size and time. */
const ID_MAX = 0o7777777
const SIZE_MAX = 0o77777777777

/** Zero bytes that pad `size` bytes of data to a whole block. */
export function padding (size: number): Buffer {
  const rest = size % BLOCK
  return rest === 0 ? EMPTY : ZEROS.subarray(0, BLOCK - rest)
}

const EMPTY = Buffer.alloc(0)
const ZEROS = Buffer.alloc(BLOCK)

/** The header block(s) of one entry: pax records first where ustar cannot say it. */
export function header (f: TarEntry): Buffer {
  const name = Buffer.from(f.name, 'latin1')
  const link = Buffer.from(f.link ?? '', 'latin1')
  const pax: string[] = []
  if (name.length > NAME_MAX) pax.push(`path=${f.name}`)
  if (link.length > NAME_MAX) pax.push(`linkpath=${f.link ?? ''}`)
  if (f.size > SIZE_MAX) pax.push(`size=${f.size}`)
  if (f.uid > ID_MAX) pax.push(`uid=${f.uid}`)
  if (f.gid > ID_MAX) pax.push(`gid=${f.gid}`)
  const ustar = block(name.subarray(0, NAME_MAX), f.type, f.mode & 0o7777, Math.min(f.uid, ID_MAX),
    Math.min(f.gid, ID_MAX), Math.min(f.size, SIZE_MAX), f.mtime, link.subarray(0, NAME_MAX))
  if (pax.length === 0) return ustar
  const records = Buffer.concat(pax.map(record))
  const paxHeader = block(Buffer.from('PaxHeader'), 'x', 0o644, 0, 0, records.length, f.mtime, EMPTY)
  return Buffer.concat([paxHeader, records, padding(records.length), ustar])
}

/** One pax record: "<length> <key>=<value>\n", the length counting itself (in bytes). */
function record (kv: string): Buffer {
  const body = Buffer.from(` ${kv}\n`, 'latin1')
  let n = body.length + 1
  while (String(n).length + body.length > n) n++
  return Buffer.concat([Buffer.from(String(n)), body])
}

function block (name: Buffer, type: string, mode: number, uid: number, gid: number, size: number, mtime: number, link: Buffer): Buffer {
  const b = Buffer.alloc(BLOCK)
  name.copy(b, 0)
  link.copy(b, 157)
  octal(b, 100, 8, mode)
  octal(b, 108, 8, uid)
  octal(b, 116, 8, gid)
  octal(b, 124, 12, size)
  octal(b, 136, 12, Math.max(0, Math.floor(mtime)))
  b.write(type, 156, 'latin1')
  b.write('ustar\u000000', 257, 'latin1')
  // The checksum is summed with its own field as spaces.
  b.fill(0x20, 148, 156)
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += b[i]!
  octal(b, 148, 7, sum)
  return b
}

/** `value` in octal, zero-padded to fill `width - 1` digits, then a NUL. */
function octal (b: Buffer, at: number, width: number, value: number): void {
  b.write(value.toString(8).padStart(width - 1, '0'), at, 'latin1')
  b[at + width - 1] = 0
}
