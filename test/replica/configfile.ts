/**
 * --config FILE: YAML or JSON, one key per flag; flags win; an unknown key or a bad value is
 * an error naming the key (exit 2). A real mount from a config file alone.
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { replicaDirs, runCli as cli } from '../helpers/mount'

t.test('config errors name the key, exit 2', async t => {
  const { dir, source: src, mnt } = replicaDirs(t, 'config')
  const cases: Array<[string, string, RegExp]> = [
    ['unknown key', 'replicas: [file:///x]\n', /unknown key 'replicas'; the keys are .*replica/],
    ['bad value', 'mode: fast\n', /key 'mode': fast: expected sync or async/],
    ['wrong type', 'quorum: two\n', /key 'quorum': expected a number, got "two"/],
    ['bad list', 'exclude: {a: 1}\n', /key 'exclude': expected a string or a list of strings/],
    ['bad replica URL', 'replica: ftp://host/x\n', /key 'replica': ftp:\/\/host\/x: unknown scheme/],
    ['bad size', 'journal-max: lots\n', /key 'journal-max': lots: expected a size/],
    ['not a mapping', '- a\n- b\n', /expected a mapping/],
    ['not YAML', 'a: [1, 2\n', /not valid YAML or JSON/],
  ]
  for (const [what, text, message] of cases) {
    const file = join(dir, `${what.replace(/ /g, '-')}.yaml`)
    writeFileSync(file, text)
    const r = await cli(['mount', src, mnt, '--config', file])
    t.equal(r.code, 2, `${what}: exit 2`)
    t.match(r.stderr, message, `${what}: the message names the key and the expected form`)
  }
  const missing = await cli(['mount', src, mnt, '--config', join(dir, 'nope.yaml')])
  t.equal(missing.code, 2, 'a config file that cannot be read: exit 2')
})

t.test('a mount from a config file alone; flags win over the file', async t => {
  const { dir, source: src, mnt, replica: rep, start, stop } = replicaDirs(t, 'config')
  const yaml = join(dir, 'replicafs.yaml')
  writeFileSync(yaml, [
    '# the whole mount, for a systemd unit',
    `source: ${src}`,
    `mountpoint: ${mnt}`,
    'replica:',
    `  - file://${rep}`,
    'mode: async',
    'timeout: 5',
    'journal-max: 512M',
    `state-dir: ${join(dir, 'state')}`,
    'exclude: ["*.part"]',
    '',
  ].join('\n'))
  await start(['mount', '--config', yaml, '--mode', 'sync'])
  const status = JSON.parse((await cli(['status', '--state-dir', join(dir, 'state'), '--json'])).stdout) as { mode: string }
  t.equal(status.mode, 'sync', '--mode on the command line wins over the file')
  writeFileSync(join(mnt, 'page.html'), 'from the config')
  writeFileSync(join(mnt, 'upload.part'), 'excluded by the file')
  t.equal(readFileSync(join(rep, 'page.html'), 'utf8'), 'from the config', 'the replica from the file gets changes (sync: at once)')
  t.notOk(existsSync(join(rep, 'upload.part')), "the file's exclude applies")
  await stop()

  const json = join(dir, 'verify.json')
  writeFileSync(json, JSON.stringify({ source: src, replica: [`file://${rep}`], exclude: ['*.part'] }))
  t.equal((await cli(['verify', '--config', json])).code, 0, 'verify from a JSON config (source, replica, exclude): equal')
  t.equal((await cli(['verify', '--config', json, '--exclude', 'nothing-matches'])).code, 1, 'a flag replaces the file\'s list: *.part is compared again')
})
