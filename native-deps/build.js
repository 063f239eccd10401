#!/usr/bin/env node
// Builds native-deps/build/Release/replicafs_fuse.node: fuse-native 2.2.6's C binding with
// fuse-native.patch applied, plus src/local.c, linked against Debian's libfuse2 (libfuse-dev).
// Idempotent: skips the build when its inputs have not changed since the last one.
'use strict'
const { execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')

const here = __dirname
const out = path.join(here, 'build', 'Release', 'replicafs_fuse.node')
const stamp = path.join(here, 'build', 'inputs.sha256')

function fail (message) {
  process.stderr.write(`replicafs: ${message}\n`)
  process.exit(3)
}

if (!fs.existsSync('/usr/include/fuse/fuse.h')) {
  fail('libfuse-dev is not installed (apt-get install libfuse-dev fuse libfuse2): the FUSE binding cannot be built')
}

const upstream = path.dirname(require.resolve('fuse-native/package.json'))
const upstreamVersion = require('fuse-native/package.json').version
if (upstreamVersion !== '2.2.6') {
  fail(`fuse-native.patch is written for fuse-native 2.2.6, found ${upstreamVersion}`)
}

const inputs = [
  path.join(upstream, 'fuse-native.c'),
  path.join(here, 'fuse-native.patch'),
  path.join(here, 'binding.gyp'),
  path.join(here, 'src', 'local.c'),
  path.join(here, 'src', 'local.h'),
  path.join(here, 'src', 'journal.c'),
  path.join(here, 'src', 'journal.h'),
  __filename
]
const hash = crypto.createHash('sha256')
for (const file of inputs) hash.update(fs.readFileSync(file))
hash.update(process.version)
const digest = hash.digest('hex')

if (fs.existsSync(out) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === digest) {
  process.exit(0)
}

const src = path.join(here, 'build-src')
fs.rmSync(src, { recursive: true, force: true })
fs.mkdirSync(src, { recursive: true })
fs.copyFileSync(path.join(upstream, 'fuse-native.c'), path.join(src, 'fuse-native.c'))
execFileSync('patch', ['--quiet', '-p1', '-d', src, '-i', path.join(here, 'fuse-native.patch')], { stdio: 'inherit' })

const gyp = require.resolve('node-gyp/bin/node-gyp.js')
execFileSync(process.execPath, [gyp, 'rebuild', '--silent', ...nodedir()], { cwd: here, stdio: 'inherit' })
fs.writeFileSync(stamp, digest)

// node-gyp downloads Node's headers unless told where they are; this machine (and Debian's
// nodejs package) ships them under /usr/include/node.
function nodedir () {
  const dir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : '')
  return dir ? [`--nodedir=${dir}`] : []
}
