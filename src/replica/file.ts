import { createHash } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import * as fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { E } from '../errors'
import { confine, ReplicaError, type RemoteHandle, type RemoteStat, type Replica } from './replica'

/** `file:///abs/path`: a directory on this machine (a second disk, an NFS mount). */
export class FileReplica implements Replica {
  /** Calls run on libuv's thread pool, several at once: not in the order sent. */
  readonly ordered = false
  readonly chownAtOnce = false
  readonly url: string
  readonly #root: string

  constructor (url: string, root: string) {
    this.url = url
    this.#root = Buffer.from(root, 'utf8').toString('latin1')
  }

  #p (path: string): Buffer {
    return Buffer.from(confine(this.#root, path), 'latin1')
  }

  async #do<T> (what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (err instanceof ReplicaError) throw err
      const code = (err as NodeJS.ErrnoException).code
      const errno = code !== undefined ? (E as Record<string, number | undefined>)[code] : undefined
      throw new ReplicaError(`${this.url}: ${what}: ${(err as Error).message}`, errno ?? E.EIO)
    }
  }

  async connect (): Promise<void> {
    const root = Buffer.from(this.#root, 'latin1')
    let st
    try {
      st = await fs.stat(root)
    } catch (err) {
      throw new ReplicaError(`${this.url}: the replica directory is not reachable (${(err as NodeJS.ErrnoException).code})`, E.ENOENT, 'transient')
    }
    if (!st.isDirectory()) throw new ReplicaError(`${this.url}: not a directory`, E.ENOTDIR, 'permanent')
  }

  /** Handles still open at close are closed there, as a server drops them at a disconnect. */
  async close (): Promise<void> {
    const open = [...this.#open]
    this.#open.clear()
    await Promise.all(open.map(h => h.fh.close().catch(() => {})))
  }

  readonly #open = new Set<FileRemoteHandle>()

  openWrite (path: string, create: boolean, truncate: boolean, mode: number): Promise<RemoteHandle> {
    const flags = fsc.O_WRONLY | (create ? fsc.O_CREAT : 0) | (truncate ? fsc.O_TRUNC : 0)
    return this.#do(`open ${path}`, async () => {
      const h = new FileRemoteHandle(path, await fs.open(this.#p(path), flags, mode))
      this.#open.add(h)
      return h
    })
  }

  write (h: RemoteHandle, offset: number, bytes: Buffer): Promise<void> {
    // The thread pool reads the buffer while the call may already have answered (a quorum
    // met without this replica, a deadline passed) and the kernel reused its memory: copy.
    const data = Buffer.from(bytes)
    return this.#do(`write ${h.path}`, async () => {
      const fh = (h as FileRemoteHandle).fh
      let done = 0
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done)
        done += bytesWritten
      }
    })
  }

  closeHandle (h: RemoteHandle): Promise<void> {
    this.#open.delete(h as FileRemoteHandle)
    return this.#do(`close ${h.path}`, () => (h as FileRemoteHandle).fh.close())
  }

  fsync (h: RemoteHandle): Promise<void> {
    return this.#do(`fsync ${h.path}`, () => (h as FileRemoteHandle).fh.sync())
  }

  ftruncate (h: RemoteHandle, size: number): Promise<void> {
    return this.#do(`truncate ${h.path}`, () => (h as FileRemoteHandle).fh.truncate(size))
  }

  truncate (path: string, size: number): Promise<void> {
    return this.#do(`truncate ${path}`, () => fs.truncate(this.#p(path), size))
  }

  mkdir (path: string, mode: number): Promise<void> {
    return this.#do(`mkdir ${path}`, () => fs.mkdir(this.#p(path), mode).then(() => fs.chmod(this.#p(path), mode)))
  }

  rmdir (path: string): Promise<void> {
    return this.#do(`rmdir ${path}`, () => fs.rmdir(this.#p(path)))
  }

  unlink (path: string): Promise<void> {
    return this.#do(`unlink ${path}`, () => fs.unlink(this.#p(path)))
  }

  rename (from: string, to: string): Promise<void> {
    return this.#do(`rename ${from}`, () => fs.rename(this.#p(from), this.#p(to)))
  }

  symlink (target: string, path: string): Promise<void> {
    return this.#do(`symlink ${path}`, () => fs.symlink(Buffer.from(target, 'latin1'), this.#p(path)))
  }

  link (from: string, to: string): Promise<void> {
    return this.#do(`link ${to}`, () => fs.link(this.#p(from), this.#p(to)))
  }

  mkfifo (path: string, mode: number): Promise<void> {
    return this.#do(`mkfifo ${path}`, async () => {
      const { execFile } = await import('node:child_process')
      await new Promise<void>((resolve, reject) => execFile('mkfifo', ['-m', (mode & 0o7777).toString(8), '--', this.#p(path).toString('latin1')], { encoding: 'latin1' }, err => err ? reject(Object.assign(new Error(err.message), { code: 'EIO' })) : resolve()))
    })
  }

  chmod (path: string, mode: number): Promise<void> {
    return this.#do(`chmod ${path}`, () => fs.chmod(this.#p(path), mode & 0o7777))
  }

  chown (path: string, uid: number, gid: number): Promise<void> {
    return this.#do(`chown ${path}`, () => fs.lchown(this.#p(path), uid, gid))
  }

  utimes (path: string, atime: number | null, mtime: number | null): Promise<void> {
    return this.#do(`utimes ${path}`, async () => {
      const p = this.#p(path)
      let a = atime
      let m = mtime
      if (a === null || m === null) {
        const st = await fs.lstat(p)
        a ??= st.atimeMs / 1000
        m ??= st.mtimeMs / 1000
      }
      await fs.lutimes(p, a, m)
    })
  }

  readdir (path: string): Promise<string[]> {
    return this.#do(`readdir ${path}`, () => fileReaddirBytes(this.#p(path)))
  }

  list (path: string): Promise<Array<{ name: string, stat: RemoteStat }>> {
    return this.#do(`readdir ${path}`, async () => {
      const dir = this.#p(path)
      const names = await fileReaddirBytes(dir)
      const out = await Promise.all(names.map(async name => {
        try {
          const st = await fs.lstat(Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'latin1')]))
          return { name, stat: { mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atime: Math.floor(st.atimeMs / 1000), mtime: Math.floor(st.mtimeMs / 1000) } }
        } catch {
          return null
        }
      }))
      return out.filter(e => e !== null)
    })
  }

  fsetattrs (h: RemoteHandle, a: { mode: number, uid: number, gid: number, atime: number, mtime: number }): Promise<void> {
    return this.#do(`setattrs ${h.path}`, async () => {
      const fh = (h as FileRemoteHandle).fh
      await fh.chown(a.uid, a.gid).catch(err => {
        if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
      })
      // After chown, which clears setuid/setgid bits.
      await fh.chmod(a.mode & 0o7777)
      await fh.utimes(a.atime, a.mtime)
    })
  }

  readlink (path: string): Promise<string> {
    return this.#do(`readlink ${path}`, async () => (await fs.readlink(this.#p(path), { encoding: 'buffer' })).toString('latin1'))
  }

  hash (path: string): Promise<string> {
    return this.#do(`read ${path}`, () => hashFile(this.#p(path)))
  }

  lstat (path: string): Promise<RemoteStat | null> {
    return this.#do(`lstat ${path}`, async () => {
      try {
        const st = await fs.lstat(this.#p(path))
        return { mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atime: Math.floor(st.atimeMs / 1000), mtime: Math.floor(st.mtimeMs / 1000) }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
        throw err
      }
    })
  }
}

/** SHA-256 of a local file, hex, read in 256 KiB chunks. */
export async function hashFile (path: Buffer): Promise<string> {
  const h = createHash('sha256')
  const fh = await fs.open(path, 'r')
  try {
    const buf = Buffer.allocUnsafe(256 * 1024)
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null)
      if (bytesRead === 0) break
      h.update(buf.subarray(0, bytesRead))
    }
  } finally {
    await fh.close()
  }
  return h.digest('hex')
}

export function fileReaddirBytes (dir: Buffer): Promise<string[]> {
  return fs.readdir(dir, { encoding: 'buffer' }).then(names => names.map(n => n.toString('latin1')))
}

class FileRemoteHandle implements RemoteHandle {
  constructor (readonly path: string, readonly fh: FileHandle) {}
}
