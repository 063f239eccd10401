/*
 * SftpReplica against a real sshd: a write longer than the server takes in one request goes
 * out in parts, all before a request sent after it (the shipper pipelines a close or a publish
 * right behind a file's last write, without waiting for its answer).
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { SftpReplica } from '../../src/replica/sftp'
import { silentLogger } from '../../src/log'
import { startSshd } from '../helpers/sshd'

t.test('a write over the server\'s limit, then a close and a rename sent without waiting: the file is whole', async t => {
  const sshd = await startSshd()
  t.teardown(() => sshd.cleanup())
  const root = join(sshd.dir, 'replica')
  mkdirSync(root)
  const r = new SftpReplica({ url: `sftp://${sshd.user}@${sshd.host}:${sshd.port}${root}`, user: sshd.user, host: sshd.host, port: sshd.port, root, identities: [sshd.identity], knownHosts: sshd.knownHosts, timeoutMs: 10_000, log: silentLogger })
  await r.connect()
  t.teardown(() => r.close())

  // OpenSSH's sftp-server takes 255 KiB of data per write: 1 MiB + 5 bytes is five parts.
  for (const size of [1, 256 * 1024, 1024 * 1024 + 5]) {
    const data = randomBytes(size)
    const h = await r.openWrite('/.tmp-file', true, true, 0o644)
    const sent = [r.write(h, 3, data), r.closeHandle(h), r.rename('/.tmp-file', '/file')]
    await Promise.all(sent)
    const got = readFileSync(join(root, 'file'))
    t.equal(got.length, size + 3, `${size} bytes: the file has all of them`)
    t.ok(got.subarray(3).equals(data), `${size} bytes: in order, at their offset`)
  }
})
