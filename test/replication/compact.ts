import t from 'tap'
import { cancelled, type Queued } from '../../src/replication/compact'
import { UTIME_OMIT, type Mutation } from '../../src/replication/mutation'

const who = { uid: 0, gid: 0 }
const q = (...ms: Mutation[]): Queued[] => ms.map(m => ({ m, waiter: null }))
const chmod = (path: string, mode: number): Mutation => ({ op: 'chmod', path, mode, ...who })
const create = (path: string, fh: number): Mutation => ({ op: 'create', path, mode: 0o644, flags: 0, fh, ...who })
const write = (path: string | null, fh: number): Mutation => ({ op: 'write', path, fh, offset: 0, data: Buffer.from('x'), ...who })
const release = (path: string | null, fh: number): Mutation => ({ op: 'release', path, fh, mtime: 0, atime: 0, ...who })
const unlink = (path: string): Mutation => ({ op: 'unlink', path, ...who })
const rename = (from: string, path: string): Mutation => ({ op: 'rename', from, path, ...who })
const times = (path: string, atimeNsec: number): Mutation => ({ op: 'utimens', path, atime: { sec: 1, nsec: atimeNsec }, mtime: { sec: 2, nsec: 0 }, ...who })

t.test('a chmod replaces the chmod of the same path before it', async t => {
  t.same(cancelled(q(chmod('/a', 0o600), chmod('/b', 0o600)), 0, chmod('/a', 0o644)), [0], 'the earlier chmod of /a goes')
  t.same(cancelled(q(chmod('/a', 0o600), rename('/a', '/b')), 0, chmod('/a', 0o644)), [], 'not across a rename of the path')
  t.same(cancelled(q(chmod('/d/a', 0o600), rename('/d', '/e')), 0, chmod('/d/a', 0o644)), [], 'nor across a rename of a dir above it')
  t.same(cancelled(q(chmod('/a', 0o600)), 1, chmod('/a', 0o644)), [], 'the running head stays')
  t.same(cancelled([{ m: chmod('/a', 0o600), waiter: {} }], 0, chmod('/a', 0o644)), [], 'a change a caller waits for stays')
})

t.test('utimens replaces utimens only when it sets both times', async t => {
  t.same(cancelled(q(times('/a', 0)), 0, times('/a', 5)), [0])
  t.same(cancelled(q(times('/a', 0)), 0, times('/a', UTIME_OMIT)), [], 'an omitted atime keeps the earlier one')
})

t.test('an unlink cancels the life of a file created while queued', async t => {
  const life = q(create('/f', 3), write('/f', 3), chmod('/g', 0o600), chmod('/f', 0o600), write('/f', 3), release('/f', 3))
  t.same(cancelled(life, 0, unlink('/f')), [0, 1, 3, 4, 5], 'create, writes, its chmod and release go; the other path stays')
  t.same(cancelled(q(create('/f', 3), write('/f', 3)), 0, unlink('/f')), [0, 1], 'still open: its later writes carry no path and find no handle')
  t.same(cancelled(q(write('/f', 3), release('/f', 3)), 0, unlink('/f')), [], 'a file that existed before stays (another link may name it)')
  t.same(cancelled(q(create('/f', 3), release('/f', 3), write('/f', 4)), 0, unlink('/f')), [], 'another descriptor wrote it: nothing goes')
  t.same(cancelled(q(create('/f', 3), release('/f', 3), create('/x', 3), write('/x', 3)), 0, unlink('/f')), [0, 1], 'a reused descriptor is another file')
  t.same(cancelled(q(create('/f', 3), rename('/f', '/g')), 0, unlink('/g')), [], 'a renamed file is left alone')
  t.same(cancelled(q(create('/f', 3), write('/f', 3)), 1, unlink('/f')), [], 'a create already running stays')
  t.same(cancelled([{ m: create('/f', 3), waiter: {} }], 0, unlink('/f')), [], 'a create a caller waits for stays')
})
