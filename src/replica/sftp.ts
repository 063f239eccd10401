import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Socket } from 'node:net'
import { userInfo } from 'node:os'
import { Client, type ClientChannel, type SFTPWrapper } from 'ssh2'
import { E } from '../errors'
import type { Logger } from '../log'
import { checkHostKey, fingerprint, hostName } from './knownhosts'
import { confine, ReplicaError, type FileSink, type RemoteHandle, type RemoteStat, type Replica } from './replica'
import { TarSink } from './tarsink'

/** SFTP status codes (draft-ietf-secsh-filexfer-02) to errno: sshfs's sftp_error_to_errno. */
const STATUS_ERRNO: Record<number, number> = {
  0: 0,
  1: E.ENODATA, // EOF
  2: E.ENOENT, // NO_SUCH_FILE
  3: E.EACCES, // PERMISSION_DENIED
  4: E.EPERM, // FAILURE
  5: E.EBADMSG, // BAD_MESSAGE
  6: E.ENOTCONN, // NO_CONNECTION
  7: E.ECONNABORTED, // CONNECTION_LOST
  8: E.EOPNOTSUPP, // OP_UNSUPPORTED
}

/**
 * How a failure of ssh2 is classified, once: by `err.level` for connection errors (ssh2 tags
 * them), by SFTP status for request errors.
 */
const LEVEL_KIND: Record<string, 'transient' | 'permanent'> = {
  'client-socket': 'transient',
  'client-timeout': 'transient',
  'client-dns': 'transient',
  'protocol': 'transient',
  'handshake': 'permanent',
  'client-authentication': 'permanent',
}

/** The extensions replication relies on, and what their absence costs. */
const EXTENSIONS: Array<[string, string]> = [
  ['posix-rename@openssh.com', 'rename over an existing file is not atomic (unlink, then rename)'],
  ['hardlink@openssh.com', 'hard links are replicated as separate copies'],
  ['fsync@openssh.com', "a writer's fsync does not reach the replica's disk"],
  ['lsetstat@openssh.com', 'owner and times of symlinks are not replicated'],
]

/** SFTP channels per connection: the first for everything in order, all for bulk copies. */
const CHANNELS = 4
/** Data that one write request may carry on any server: its packet of 34,000 bytes holds it. */
const MIN_WRITE = 32768
/** An SFTP hello: SSH_FXP_INIT, version 3 (uint32 length 5, byte 1, uint32 3). */
const SFTP_INIT = Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3])
/** What the first stream's command says before it runs tar. */
const TAR_READY = 'GNU tar\n'

export interface SftpOptions {
  url: string
  user: string | null
  host: string
  port: number
  root: string
  /** Private key files to try, in order (the first that exists is used). */
  identities: string[]
  knownHosts: string
  /** Connect and handshake deadline, ms. */
  timeoutMs: number
  log: Logger
}

/**
 * Paths over SFTP travel as UTF-8 strings (ssh2 encodes them): a byte-string path converts
 * exactly when its bytes are valid UTF-8. Other names cannot be spelled over ssh2's SFTP.
 */
function wire (bytes: string): string {
  const utf8 = Buffer.from(bytes, 'latin1').toString('utf8')
  if (Buffer.from(utf8, 'utf8').toString('latin1') !== bytes) {
    throw new ReplicaError(`name ${JSON.stringify(bytes)} is not valid UTF-8: SFTP replicas cannot carry it`, E.EILSEQ)
  }
  return utf8
}

/**
 * Makes a connected socket send what is written to it in one turn of the event loop as one
 * writev: ssh2 writes each packet on its own, and a walk, a stream of files or a burst of
 * replicated calls makes many at once. Nagle's algorithm is off (a lone request leaves at
 * once), so without this each packet would be its own send, which on loopback also runs the
 * receiver's side. (A subclass cannot do it: connect() resets the socket's write.)
 */
function coalesceWrites (sock: Socket): void {
  const write = sock.write
  let corked = false
  const uncork = () => {
    corked = false
    sock.uncork()
  }
  sock.write = function (this: Socket, ...args: unknown[]): boolean {
    if (!corked) {
      corked = true
      sock.cork()
      process.nextTick(uncork)
    }
    return (write as (...a: unknown[]) => boolean).apply(sock, args)
  } as Socket['write']
}

/** `s` as one word for a POSIX shell. */
function shellQuote (s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

export class SftpReplica implements Replica {
  readonly url: string
  /** Every call on a handle, and every call by path, goes over one channel, answered in turn. */
  readonly ordered = true
  readonly #o: SftpOptions
  readonly #root: string
  #client: Client | null = null
  /**
   * SFTP channels (sessions) on the one connection: each is its own sftp-server process on the
   * backup, which answers its requests one after another. The first carries everything by
   * path; a handle stays on the channel it was opened on. More channels let bulk copies (a
   * reconcile) run side by side on the server.
   */
  #channels: SFTPWrapper[] = []
  /** Opens the channels after the first, once; null when done (or not connected). */
  #more: (() => Promise<void>) | null = null
  #opening: Promise<void> | null = null
  #extensions = new Set<string>()
  /** The most data one write request carries (the server's limit). */
  #maxWrite = MIN_WRITE
  #warned = new Set<string>()
  /**
   * Whether the backup can take files as a tar stream: true where the account runs GNU tar,
   * false where it cannot (an SFTP-only account, no shell, no tar); asked once per connection.
   */
  #tar: boolean | Promise<unknown> | null = null

  constructor (o: SftpOptions) {
    this.url = o.url
    this.#o = o
    this.#root = Buffer.from(o.root, 'utf8').toString('latin1')
  }

  /** The extensions the server lacks, with their cost: for the operator, once per connect. */
  missingExtensions (): string[] {
    return EXTENSIONS.filter(([name]) => !this.#extensions.has(name)).map(([name, cost]) => `${name} (${cost})`)
  }

  #p (path: string): string {
    return wire(confine(this.#root, path))
  }

  async connect (): Promise<void> {
    await this.close()
    const o = this.#o
    let key: Buffer | null = null
    let keyFile = ''
    for (const file of o.identities) {
      try {
        key = await readFile(file)
        keyFile = file
        break
      } catch {}
    }
    if (key === null) {
      throw new ReplicaError(`${this.url}: no identity file (tried ${o.identities.join(', ')})`, E.ENOENT, 'permanent')
    }
    let knownHosts: string
    try {
      knownHosts = await readFile(o.knownHosts, 'utf8')
    } catch {
      knownHosts = ''
    }

    const client = new Client()
    let hostProblem: string | null = null
    const username = o.user ?? userInfo().username
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error & { level?: string }) => {
        client.removeAllListeners('ready')
        if (hostProblem !== null) return reject(new ReplicaError(hostProblem, E.EACCES, 'permanent'))
        const kind = LEVEL_KIND[err.level ?? ''] ?? 'transient'
        const what = err.level === 'client-authentication'
          ? `the server refused the key ${keyFile} for user ${username}`
          : err.message
        reject(new ReplicaError(`${this.url}: ${what}`, kind === 'permanent' ? E.EACCES : E.ECONNREFUSED, kind))
      }
      client.once('error', fail)
      client.once('ready', () => {
        client.removeListener('error', fail)
        resolve()
      })
      try {
        const sock = new Socket()
        // From the first byte: the handshake is a dozen small exchanges, and Nagle's algorithm
        // would hold some of them for the peer's delayed ACK (it took 100-180 ms, now 55).
        sock.setNoDelay(true)
        sock.connect({ host: o.host, port: o.port })
        coalesceWrites(sock)
        client.connect({
          sock,
          username,
          privateKey: key as Buffer,
          readyTimeout: o.timeoutMs,
          keepaliveInterval: 5000,
          keepaliveCountMax: 3,
          hostVerifier: (offered: Buffer) => {
            const verdict = checkHostKey(knownHosts, o.host, o.port, offered)
            if (verdict === 'match') return true
            const fp = fingerprint(offered)
            const name = hostName(o.host, o.port)
            hostProblem = verdict === 'mismatch'
              ? `${this.url}: the host key of ${name} has CHANGED (offered ${fp}); it does not match ${o.knownHosts}. Refusing to connect.`
              : verdict === 'revoked'
                ? `${this.url}: the host key of ${name} (${fp}) is marked @revoked in ${o.knownHosts}`
                : `${this.url}: ${name} is not in ${o.knownHosts} (offered ${fp}); add its key there (ssh-keyscan, checked out of band) to trust it`
            return false
          },
        })
      } catch (err) {
        reject(new ReplicaError(`${this.url}: ${(err as Error).message}`, E.EINVAL, 'permanent'))
      }
    })
    client.on('error', err => o.log.warn('replica', `${this.url}: ${err.message}`))
    client.on('close', () => {
      if (this.#client === client) {
        this.#client = null
        this.#channels = []
      }
    })
    const channel = () => new Promise<SFTPWrapper>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer in ${o.timeoutMs} ms`)), o.timeoutMs)
      client.sftp((err, s) => {
        clearTimeout(timer)
        if (err) reject(err)
        else resolve(s)
      })
    })
    let sftp: SFTPWrapper
    try {
      sftp = await channel()
      sftp.on('error', () => {})
    } catch (err) {
      client.end()
      throw new ReplicaError(`${this.url}: cannot open the sftp subsystem: ${(err as Error).message}`, E.EIO, 'transient')
    }
    this.#client = client
    this.#channels = [sftp]
    this.#tar = null
    // The others are opened when a bulk copy first asks for them (each is a process on the
    // backup), and are a bonus: a server that limits sessions (MaxSessions) gets fewer.
    this.#more = async () => {
      const more = await Promise.allSettled(Array.from({ length: CHANNELS - 1 }, channel))
      if (this.#client !== client) return
      for (const r of more) {
        if (r.status !== 'fulfilled') continue
        // Errors surface through the requests; a channel's own 'error' must not crash us.
        r.value.on('error', () => {})
        this.#channels.push(r.value)
      }
    }
    const limits = sftp as unknown as { _extensions?: Record<string, string>, _maxWriteLen?: number }
    this.#extensions = new Set(Object.keys(limits._extensions ?? {}))
    // What ssh2 learned (limits@openssh.com, or its guess from the server's version string).
    this.#maxWrite = typeof limits._maxWriteLen === 'number' && limits._maxWriteLen >= 1024 ? limits._maxWriteLen : MIN_WRITE
  }

  async close (): Promise<void> {
    const c = this.#client
    this.#client = null
    this.#channels = []
    this.#more = null
    this.#opening = null
    c?.end()
  }

  get lanes (): number {
    return Math.max(1, this.#channels.length)
  }

  #s (lane: number): SFTPWrapper {
    const s = this.#channels[lane] ?? this.#channels[0]
    if (s === undefined) throw new ReplicaError(`${this.url}: not connected`, E.ENOTCONN, 'transient')
    return s
  }

  /**
   * Runs one SFTP request on channel `lane`, mapping its status to an errno, and a lost
   * connection to transient.
   */
  #req<T> (what: string, fn: (s: SFTPWrapper, cb: (err: (Error & { code?: number | string }) | null | undefined, value?: T) => void) => void, lane = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let s: SFTPWrapper
      try {
        s = this.#s(lane)
      } catch (err) {
        reject(err)
        return
      }
      try {
        fn(s, (err, value) => {
          if (!err) return resolve(value as T)
          const status = typeof err.code === 'number' ? err.code : undefined
          const errno = status !== undefined ? (STATUS_ERRNO[status] ?? E.EIO) : E.ECONNABORTED
          const transient = status === undefined || status === 6 || status === 7
          reject(new ReplicaError(`${this.url}: ${what}: ${err.message}`, errno, transient ? 'transient' : 'request'))
        })
      } catch (err) {
        reject(err instanceof ReplicaError ? err : new ReplicaError(`${this.url}: ${what}: ${(err as Error).message}`, E.EIO))
      }
    })
  }

  #warnOnce (key: string, message: string): void {
    if (this.#warned.has(key)) return
    this.#warned.add(key)
    this.#o.log.warn('replica', `${this.url}: ${message}`)
  }

  async openWrite (path: string, create: boolean, truncate: boolean, mode: number, lane = 0): Promise<RemoteHandle> {
    const p = this.#p(path)
    if (lane > 0 && this.#more !== null) {
      this.#opening ??= this.#more()
      await this.#opening
    }
    const l = lane % this.lanes
    // SSH2_FXF_WRITE | CREAT | TRUNC
    const flags = 0x02 | (create ? 0x08 : 0) | (truncate ? 0x10 : 0)
    const handle = await this.#req<Buffer>(`open ${path}`, (s, cb) => s.open(p, flags, { mode: mode & 0o7777 }, cb as never), l)
    return new SftpHandle(path, handle, l)
  }

  /**
   * A write longer than the server takes in one request (its limits@openssh.com, else the
   * 34,000-byte packet every server must take) goes out here as parts, all at once and in
   * order. ssh2 would send each part only when the one before it is answered, so that a change
   * sent after the write (pipelined: a close, the publish) would overtake the rest of it.
   */
  write (h: RemoteHandle, offset: number, data: Buffer): Promise<void> {
    const x = h as SftpHandle
    if (data.length <= this.#maxWrite) return this.#req(`write ${h.path}`, (s, cb) => s.write(x.handle, data, 0, data.length, offset, cb), x.lane)
    const parts: Array<Promise<void>> = []
    for (let at = 0; at < data.length; at += this.#maxWrite) {
      const len = Math.min(this.#maxWrite, data.length - at)
      parts.push(this.#req(`write ${h.path}`, (s, cb) => s.write(x.handle, data, at, len, offset + at, cb), x.lane))
    }
    return Promise.all(parts).then(() => {})
  }

  closeHandle (h: RemoteHandle): Promise<void> {
    const x = h as SftpHandle
    return this.#req(`close ${h.path}`, (s, cb) => s.close(x.handle, cb), x.lane)
  }

  async fsync (h: RemoteHandle): Promise<void> {
    if (!this.#extensions.has('fsync@openssh.com')) return
    const x = h as SftpHandle
    await this.#req(`fsync ${h.path}`, (s, cb) => s.ext_openssh_fsync(x.handle, cb), x.lane)
  }

  ftruncate (h: RemoteHandle, size: number): Promise<void> {
    const x = h as SftpHandle
    return this.#req(`truncate ${h.path}`, (s, cb) => s.fsetstat(x.handle, { size }, cb), x.lane)
  }

  truncate (path: string, size: number): Promise<void> {
    const p = this.#p(path)
    return this.#req(`truncate ${path}`, (s, cb) => s.setstat(p, { size }, cb))
  }

  /**
   * OpenSSH's sftp-server answers FAILURE (EPERM here) when the target of mkdir, symlink or
   * link exists: tell EEXIST apart, so that a replay after a reconnect counts as applied.
   */
  async #exists (path: string, err: unknown): Promise<never> {
    if (err instanceof ReplicaError && err.errno === E.EPERM && (await this.lstat(path).catch(() => null)) !== null) {
      throw new ReplicaError(err.message, E.EEXIST)
    }
    throw err
  }

  async mkdir (path: string, mode: number): Promise<void> {
    const p = this.#p(path)
    await this.#req(`mkdir ${path}`, (s, cb) => s.mkdir(p, { mode: mode & 0o7777 }, cb)).catch(err => this.#exists(path, err))
    // sftp-server applies its own umask to mkdir's mode: set it exactly.
    await this.#req(`chmod ${path}`, (s, cb) => s.chmod(p, mode & 0o7777, cb))
  }

  rmdir (path: string): Promise<void> {
    const p = this.#p(path)
    return this.#req(`rmdir ${path}`, (s, cb) => s.rmdir(p, cb))
  }

  unlink (path: string): Promise<void> {
    const p = this.#p(path)
    return this.#req(`unlink ${path}`, (s, cb) => s.unlink(p, cb))
  }

  async rename (from: string, to: string): Promise<void> {
    const a = this.#p(from)
    const b = this.#p(to)
    if (this.#extensions.has('posix-rename@openssh.com')) {
      await this.#req(`rename ${from}`, (s, cb) => s.ext_openssh_rename(a, b, cb))
      return
    }
    // Plain SFTP rename refuses an existing target: the unlink goes first, sent with it (the
    // server applies them in turn), so that both are sent before this returns, as a pipelined
    // run needs (Applier.now). The rename's answer is the one that counts.
    const unlinked = this.#req(`unlink ${to}`, (s, cb) => s.unlink(b, cb)).catch(() => {})
    const renamed = this.#req<void>(`rename ${from}`, (s, cb) => s.rename(a, b, cb))
    await Promise.all([unlinked, renamed])
  }

  /** chown by path is one request (lsetstat@openssh.com), sent before it returns. */
  get chownAtOnce (): boolean {
    return this.#extensions.has('lsetstat@openssh.com')
  }

  symlink (target: string, path: string): Promise<void> {
    const p = this.#p(path)
    const t = wire(target)
    // OpenSSH's sftp-server takes SYMLINK's arguments in the opposite order of the draft,
    // and ssh2 follows OpenSSH: (targetPath, linkPath).
    return this.#req<void>(`symlink ${path}`, (s, cb) => s.symlink(t, p, cb)).catch(err => this.#exists(path, err))
  }

  async link (from: string, to: string): Promise<void> {
    const a = this.#p(from)
    const b = this.#p(to)
    if (!this.#extensions.has('hardlink@openssh.com')) {
      throw new ReplicaError(`${this.url}: the server lacks hardlink@openssh.com`, E.EOPNOTSUPP)
    }
    await this.#req(`link ${to}`, (s, cb) => s.ext_openssh_hardlink(a, b, cb)).catch(err => this.#exists(to, err))
  }

  async mkfifo (path: string): Promise<void> {
    this.#warnOnce('mkfifo', `SFTP cannot make fifos: ${path} and any later fifo are not replicated`)
  }

  chmod (path: string, mode: number): Promise<void> {
    const p = this.#p(path)
    return this.#req(`chmod ${path}`, (s, cb) => s.chmod(p, mode & 0o7777, cb))
  }

  async chown (path: string, uid: number, gid: number): Promise<void> {
    const p = this.#p(path)
    const attrs: { uid?: number, gid?: number } = {}
    if (uid !== 0xffffffff && uid !== -1) attrs.uid = uid
    if (gid !== 0xffffffff && gid !== -1) attrs.gid = gid
    try {
      if (this.#extensions.has('lsetstat@openssh.com')) {
        await this.#req(`chown ${path}`, (s, cb) => s.ext_openssh_lsetstat(p, attrs as never, cb))
      } else {
        // SETSTAT follows a symlink: it would chown the link's target. Symlinks keep the
        // account's owner here (the missing extension was named at connect).
        const st = await this.lstat(path)
        if (st === null || (st.mode & 0o170000) === 0o120000) return
        await this.#req(`chown ${path}`, (s, cb) => s.setstat(p, attrs as never, cb))
      }
    } catch (err) {
      if (err instanceof ReplicaError && (err.errno === E.EPERM || err.errno === E.EACCES)) {
        this.#warnOnce('chown', `this account may not chown (${path}): owners are not replicated`)
        return
      }
      throw err
    }
  }

  async utimes (path: string, atime: number | null, mtime: number | null): Promise<void> {
    const p = this.#p(path)
    let a = atime
    let m = mtime
    if (a === null || m === null) {
      const st = await this.lstat(path)
      if (st === null) throw new ReplicaError(`${this.url}: utimes ${path}: no such file`, E.ENOENT)
      a ??= st.atime
      m ??= st.mtime
    }
    const attrs = { atime: Math.floor(a), mtime: Math.floor(m) }
    if (this.#extensions.has('lsetstat@openssh.com')) {
      await this.#req(`utimes ${path}`, (s, cb) => s.ext_openssh_lsetstat(p, attrs, cb))
    } else {
      await this.#req(`utimes ${path}`, (s, cb) => s.setstat(p, attrs, cb))
    }
  }

  async readdir (path: string): Promise<string[]> {
    const p = this.#p(path)
    const list = await this.#req<Array<{ filename: string }>>(`readdir ${path}`, (s, cb) => s.readdir(p, cb as never))
    return list.map(e => Buffer.from(e.filename, 'utf8').toString('latin1')).filter(n => n !== '.' && n !== '..')
  }

  async list (path: string): Promise<Array<{ name: string, stat: RemoteStat }>> {
    const p = this.#p(path)
    // sftp-server's READDIR carries each entry's lstat: no round trip per entry.
    const list = await this.#req<Array<{ filename: string, attrs: Partial<RemoteStat> | undefined }>>(`readdir ${path}`, (s, cb) => s.readdir(p, cb as never))
    const out: Array<{ name: string, stat: RemoteStat }> = []
    for (const e of list) {
      if (e.filename === '.' || e.filename === '..') continue
      const name = Buffer.from(e.filename, 'utf8').toString('latin1')
      const a = e.attrs
      if (a?.mode !== undefined && a.uid !== undefined && a.gid !== undefined && a.size !== undefined && a.atime !== undefined && a.mtime !== undefined) {
        out.push({ name, stat: { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, atime: a.atime, mtime: a.mtime } })
        continue
      }
      // A server whose READDIR leaves attributes out: ask for them.
      const st = await this.lstat(path === '/' ? `/${name}` : `${path}/${name}`)
      if (st !== null) out.push({ name, stat: st })
    }
    return out
  }

  async fsetattrs (h: RemoteHandle, a: { mode: number, uid: number, gid: number, atime: number, mtime: number }): Promise<void> {
    const { handle, lane } = h as SftpHandle
    const attrs = { mode: a.mode & 0o7777, uid: a.uid, gid: a.gid, atime: a.atime, mtime: a.mtime }
    if (!this.#warned.has('chown')) {
      try {
        await this.#req(`setattrs ${h.path}`, (s, cb) => s.fsetstat(handle, attrs, cb), lane)
        // sftp-server chowns after its chmod, and a chown clears setuid/setgid: set them again.
        if ((attrs.mode & 0o6000) !== 0) await this.#req(`chmod ${h.path}`, (s, cb) => s.fsetstat(handle, { mode: attrs.mode }, cb), lane)
        return
      } catch (err) {
        if (!(err instanceof ReplicaError && (err.errno === E.EPERM || err.errno === E.EACCES))) throw err
        this.#warnOnce('chown', `this account may not chown (${h.path}): owners are not replicated`)
      }
    }
    await this.#req(`setattrs ${h.path}`, (s, cb) => s.fsetstat(handle, { mode: attrs.mode, atime: a.atime, mtime: a.mtime }, cb), lane)
  }

  readlink (path: string): Promise<string> {
    const p = this.#p(path)
    return this.#req<string>(`readlink ${path}`, (s, cb) => s.readlink(p, cb as never)).then(t => Buffer.from(t, 'utf8').toString('latin1'))
  }

  async hash (path: string): Promise<string> {
    const p = this.#p(path)
    const handle = await this.#req<Buffer>(`open ${path}`, (s, cb) => s.open(p, 'r', cb as never))
    const h = createHash('sha256')
    try {
      // A few reads in flight: sftp-server answers them in turn, with no round trip between.
      const CHUNK = 64 * 1024
      const AHEAD = 8
      let offset = 0
      let eof = false
      const read = (at: number) => this.#req<Buffer>(`read ${path}`, (s, cb) => {
        const buf = Buffer.allocUnsafe(CHUNK)
        s.read(handle, buf, 0, CHUNK, at, (err, n) => cb(err, buf.subarray(0, n)))
      }).catch(err => {
        // End of file: SFTP answers EOF (ENODATA here) to a read past it.
        if (err instanceof ReplicaError && err.errno === E.ENODATA) return Buffer.alloc(0)
        throw err
      })
      const pending: Array<Promise<Buffer>> = []
      while (!eof || pending.length > 0) {
        while (!eof && pending.length < AHEAD) {
          const r = read(offset)
          r.catch(() => {}) // awaited in turn; not "unhandled" while an earlier one is awaited
          pending.push(r)
          offset += CHUNK
        }
        const chunk = await (pending.shift() as Promise<Buffer>)
        if (chunk.length < CHUNK) eof = true
        h.update(chunk)
        if (eof) {
          await Promise.allSettled(pending)
          pending.length = 0
        }
      }
    } finally {
      await this.#req(`close ${path}`, (s, cb) => s.close(handle, cb)).catch(() => {})
    }
    return h.digest('hex')
  }

  async files (): Promise<FileSink | null> {
    // One probe at a time: a second stream asked for meanwhile waits for its answer.
    while (this.#tar instanceof Promise) await this.#tar
    if (this.#tar === false) return null
    const command = `tar -x -b 256 -B -f - -p --numeric-owner -C ${shellQuote(wire(this.#root))}`
    let ch: ClientChannel | null
    if (this.#tar === true) {
      ch = await this.#exec(`exec ${command}`)
    } else {
      const probe = this.#probeTar(command)
      this.#tar = probe
      try {
        ch = await probe
      } catch (err) {
        // Asked again next time.
        if (this.#tar === probe) this.#tar = null
        throw err
      }
      if (this.#tar === probe) this.#tar = ch !== null
    }
    if (ch === null) return null
    return new TarSink(this.url, ch, path => {
      // Refused as any other path would be; the name is relative to the root tar runs in.
      wire(confine('', path))
      return path.slice(1)
    })
  }

  /**
   * The first stream of a connection: a channel running `command` (tar reading the archive
   * from its input), where the backup runs GNU tar for this account; null otherwise. The check
   * and the stream are one command, as each command starts a login shell on the backup, which
   * can take a tenth of a second (a shell rc file that sets up a language's version manager).
   * An SFTP-only account (ForceCommand internal-sftp) runs an SFTP server instead of any
   * command, and says nothing until asked: the channel's first bytes are an SFTP hello
   * (SSH_FXP_INIT), which the command drops and an SFTP server answers. Either way an answer
   * comes, and nothing of the archive is sent before it says tar runs there. tar keeps the
   * archive's numeric owners where it runs as root, and gives the account's own to the files
   * otherwise (its defaults: --same-owner for root only).
   */
  async #probeTar (command: string): Promise<ClientChannel | null> {
    let ch: ClientChannel
    try {
      ch = await this.#exec(`dd bs=${SFTP_INIT.length} count=1 iflag=fullblock >/dev/null 2>&1 && case "$(tar --version 2>/dev/null)" in "tar (GNU tar)"*) echo '${TAR_READY.trim()}' && exec ${command};; esac`)
    } catch {
      return null
    }
    const ready = await new Promise<boolean>(resolve => {
      let out = ''
      const done = (ok: boolean) => {
        clearTimeout(timer)
        ch.off('data', onData)
        ch.off('close', onClose)
        resolve(ok)
      }
      const onData = (d: Buffer) => {
        out += d.toString('latin1')
        if (out.length >= TAR_READY.length || !TAR_READY.startsWith(out)) done(out === TAR_READY)
      }
      const onClose = () => done(false)
      const timer = setTimeout(() => done(false), this.#o.timeoutMs)
      ch.on('data', onData)
      ch.on('close', onClose)
      ch.stderr.resume()
      ch.write(SFTP_INIT)
    })
    if (ready) return ch
    ch.close()
    if (!this.#warned.has('tar')) {
      this.#warned.add('tar')
      this.#o.log.info('replica', `${this.url}: no GNU tar for this account on the backup: bulk copies go file by file over SFTP`)
    }
    return null
  }

  #exec (command: string): Promise<ClientChannel> {
    const c = this.#client
    if (c === null) return Promise.reject(new ReplicaError(`${this.url}: not connected`, E.ENOTCONN, 'transient'))
    return new Promise((resolve, reject) => c.exec(command, (err, ch) => {
      if (err) reject(new ReplicaError(`${this.url}: ${command}: ${err.message}`, E.EIO))
      else resolve(ch)
    }))
  }

  async lstat (path: string): Promise<RemoteStat | null> {
    const p = this.#p(path)
    try {
      const st = await this.#req<{ mode: number, uid: number, gid: number, size: number, atime: number, mtime: number }>(`lstat ${path}`, (s, cb) => s.lstat(p, cb as never))
      return { mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atime: st.atime, mtime: st.mtime }
    } catch (err) {
      if (err instanceof ReplicaError && err.errno === E.ENOENT) return null
      throw err
    }
  }
}

class SftpHandle implements RemoteHandle {
  constructor (readonly path: string, readonly handle: Buffer, readonly lane: number) {}
}
