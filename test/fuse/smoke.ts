import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { mountFixture } from '../helpers/mount'

t.test('a file written through the mount lands in the source', async t => {
  const f = await mountFixture()
  t.teardown(() => f.teardown())
  await writeFile(join(f.mnt, 'a.txt'), 'hello')
  t.equal(await readFile(join(f.source, 'a.txt'), 'utf8'), 'hello')
})
