import t from 'tap'
import { createHmac, randomBytes } from 'node:crypto'
import { checkHostKey, fingerprint, hostName } from '../../src/replica/knownhosts'
import { parseReplicaUrl } from '../../src/replica/url'
import { confine } from '../../src/replica/replica'

t.test('replica URLs', async t => {
  t.same(parseReplicaUrl('sftp://backup@web2.example:2222/srv/www/'), { kind: 'sftp', url: 'sftp://backup@web2.example:2222/srv/www/', user: 'backup', host: 'web2.example', port: 2222, root: '/srv/www' })
  t.same(parseReplicaUrl('sftp://[::1]/srv/www'), { kind: 'sftp', url: 'sftp://[::1]/srv/www', user: null, host: '::1', port: 22, root: '/srv/www' })
  t.same(parseReplicaUrl('file:///mnt/disk2/www'), { kind: 'file', url: 'file:///mnt/disk2/www', root: '/mnt/disk2/www' })
  for (const bad of ['ftp://x/y', 'sftp://host', 'sftp://host:0/x', 'sftp://host:70000/x', 'file://relative/x', 'file:///a/../b', 'sftp://h/a/../../etc']) {
    t.throws(() => parseReplicaUrl(bad), { code: 2, message: /expected sftp:\/\/\[user@\]host\[:port\]\/abs\/path or file:\/\/\/abs\/path/ }, bad)
  }
})

t.test('paths are confined to the replica root', async t => {
  t.equal(confine('/srv/www', '/a/b c'), '/srv/www/a/b c')
  t.equal(confine('/srv/www', '/'), '/srv/www')
  t.equal(confine('/srv/www', '/-rf'), '/srv/www/-rf')
  for (const bad of ['/..', '/a/../../etc', '/./a', 'a', '//etc', '/a/\0b', '/a/..']) {
    t.throws(() => confine('/srv/www', bad), { message: /could leave the replica root/ }, JSON.stringify(bad))
  }
})

t.test('known_hosts: plain, [host]:port, hashed, changed, revoked, unknown', async t => {
  const key = randomBytes(51)
  const other = randomBytes(51)
  const b64 = key.toString('base64')
  const salt = randomBytes(20)
  const hashed = (name: string) => `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`

  t.equal(hostName('h', 22), 'h')
  t.equal(hostName('h', 2222), '[h]:2222')
  t.equal(checkHostKey(`web2,10.0.0.2 ssh-ed25519 ${b64}\n`, 'web2', 22, key), 'match')
  t.equal(checkHostKey(`# comment\n\n[127.0.0.1]:2222 ssh-ed25519 ${b64} root@x\n`, '127.0.0.1', 2222, key), 'match')
  t.equal(checkHostKey(`127.0.0.1 ssh-ed25519 ${b64}\n`, '127.0.0.1', 2222, key), 'unknown', 'the port is part of the name')
  t.equal(checkHostKey(`${hashed('[127.0.0.1]:2222')} ssh-ed25519 ${b64}\n`, '127.0.0.1', 2222, key), 'match', 'hashed entry')
  t.equal(checkHostKey(`${hashed('[127.0.0.1]:2222')} ssh-ed25519 ${other.toString('base64')}\n`, '127.0.0.1', 2222, key), 'mismatch', 'changed key')
  t.equal(checkHostKey(`web2 ssh-ed25519 ${b64}\n@revoked web2 ssh-ed25519 ${b64}\n`, 'web2', 22, key), 'revoked')
  t.equal(checkHostKey(`*.example ssh-ed25519 ${b64}\n`, 'web2.example', 22, key), 'unknown', 'wildcards are not trusted')
  t.equal(checkHostKey('', 'web2', 22, key), 'unknown')
  t.match(fingerprint(key), /^SHA256:[A-Za-z0-9+/]{43}$/)
})
