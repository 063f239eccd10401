import type { ClientChannel } from 'ssh2'
import { E } from '../errors'
import { ReplicaError, type FileSink, type SinkEntry } from './replica'
import { TAR_END, header, padding, type TarType } from './tar'

const STDERR_MAX = 2000
const TYPE: Record<SinkEntry['type'], TarType> = { file: '0', link: '1', symlink: '2', dir: '5', fifo: '6' }
/** The largest SSH packet's data where the channel does not say (OpenSSH's sessions: 32 KiB). */
const PACKET = 32 * 1024

/**
 * Files streamed as a tar archive into `tar -x` running on the backup, over one SSH exec
 * channel: one stream for many files, where SFTP takes five requests (open, write, setstat,
 * close, rename) for each, and the backup's sshd and sftp-server a context switch for every
 * one of them. What `name` refuses (a path that could leave the root) is never sent.
 */
export class TarSink implements FileSink {
  readonly #url: string
  readonly #ch: ClientChannel
  readonly #name: (path: string) => string
  /** Bytes of the current file still to come. */
  #left = 0
  #size = 0
  #stderr = ''
  #code: number | null = null
  #ended = false
  #aborted = false
  /** Set once the channel is gone before it should be. */
  #failure: ReplicaError | null = null
  #drained: (() => void) | null = null
  /** The channel has more than it can send: wait for its drain. */
  #full = false
  /**
   * Small pieces (headers, padding, small files) are gathered and written in whole packets:
   * each write to the channel is at least one packet, encrypted and sent on its own.
   */
  readonly #gathered: Buffer[] = []
  #gatheredBytes = 0
  readonly #packet: number
  readonly #closed: Promise<void>

  constructor (url: string, ch: ClientChannel, name: (path: string) => string) {
    this.#url = url
    this.#ch = ch
    this.#name = name
    this.#packet = (ch as unknown as { outgoing?: { packetSize?: number } }).outgoing?.packetSize ?? PACKET
    ch.on('data', () => {}) // tar says nothing on stdout; the window must keep moving
    ch.stderr.on('data', (d: Buffer) => {
      if (this.#stderr.length < STDERR_MAX) this.#stderr += d.toString('utf8')
    })
    ch.on('exit', (code: number | null) => { this.#code = code })
    ch.on('drain', () => this.#wake())
    this.#closed = new Promise<void>(resolve => ch.on('close', () => {
      if (!this.#ended || this.#code !== 0) this.#failure ??= this.#failed()
      this.#wake()
      resolve()
    }))
  }

  #failed (): ReplicaError {
    const said = this.#stderr.trim().split('\n').slice(0, 3).join('; ')
    const how = this.#code === null ? 'the connection closed' : `tar exited with status ${this.#code}`
    return new ReplicaError(`${this.#url}: streaming files: ${how}${said !== '' ? `: ${said}` : ''}`, E.EIO, this.#code === null ? 'transient' : 'request')
  }

  #wake (): void {
    this.#full = false
    const w = this.#drained
    this.#drained = null
    w?.()
  }

  /** Gathers `data`; writes whole packets of what is gathered. */
  #send (data: Buffer): boolean {
    if (this.#failure !== null) throw this.#failure
    const packet = this.#packet
    if (this.#gatheredBytes + data.length < packet) {
      if (data.length > 0) this.#gathered.push(data)
      this.#gatheredBytes += data.length
      return !this.#full
    }
    // The gathered pieces and the head of `data` make one packet; whole packets of the rest
    // go as they are (no copy); the tail waits for what comes next.
    let p = 0
    if (this.#gatheredBytes > 0) {
      p = packet - this.#gatheredBytes
      this.#gathered.push(data.subarray(0, p))
      this.#put(Buffer.concat(this.#gathered, packet))
      this.#gathered.length = 0
      this.#gatheredBytes = 0
    }
    const whole = data.length - p - (data.length - p) % packet
    if (whole > 0) this.#put(data.subarray(p, p + whole))
    if (p + whole < data.length) {
      this.#gathered.push(data.subarray(p + whole))
      this.#gatheredBytes = data.length - p - whole
    }
    return !this.#full
  }

  #put (data: Buffer): void {
    if (!this.#ch.write(data)) this.#full = true
  }

  drained (): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure)
    if (!this.#full) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      this.#drained = () => this.#failure !== null ? reject(this.#failure) : resolve()
    })
  }

  accepts (path: string): void {
    this.#name(path)
  }

  add (path: string, f: SinkEntry): boolean {
    if (this.#left !== 0) throw new Error(`TarSink: ${this.#left} bytes of the previous file are missing`)
    const name = this.#name(path)
    const size = f.type === 'file' ? f.size : 0
    this.#left = this.#size = size
    // A hard link names an earlier entry, by its path; a symlink's target is sent as it is.
    const link = f.type === 'link' ? this.#name(f.target) : f.type === 'symlink' ? f.target : undefined
    return this.#send(header({ name, type: TYPE[f.type], mode: f.mode, uid: f.uid, gid: f.gid, size, mtime: f.mtime, link }))
  }

  write (data: Buffer): boolean {
    if (data.length > this.#left) throw new Error(`TarSink: ${data.length - this.#left} bytes more than the file's size`)
    this.#left -= data.length
    const more = this.#send(data)
    return this.#left === 0 ? this.#send(padding(this.#size)) : more
  }

  async end (): Promise<ReplicaError | null> {
    if (this.#left !== 0) throw new Error(`TarSink: ${this.#left} bytes of the last file are missing`)
    this.#send(TAR_END)
    if (this.#gatheredBytes > 0) this.#put(Buffer.concat(this.#gathered, this.#gatheredBytes))
    this.#gathered.length = 0
    this.#gatheredBytes = 0
    this.#ended = true
    this.#ch.end()
    await this.#closed
    if (this.#failure === null) return null
    // tar read the whole archive and failed some of it: what it did make is there.
    if (this.#code !== null && !this.#aborted) return this.#failure
    throw this.#failure
  }

  abort (): void {
    this.#aborted = true
    this.#failure ??= new ReplicaError(`${this.#url}: streaming files: given up`, E.ECANCELED)
    this.#ch.close()
  }
}
