import { readFile } from 'node:fs/promises'
import { EXIT, UserError } from './errors'

/**
 * `--config FILE`: YAML (or JSON, which YAML reads too) with one key per flag, named as the
 * flag without its dashes (`known-hosts: ~/.ssh/known_hosts`, `replica: [sftp://...]`), plus
 * `source` and `mountpoint`, and `reconcile: false` for --no-reconcile. Flags given on the
 * command line override the file's (a list flag replaces the file's list).
 */
type Kind = 'string' | 'boolean' | 'number' | 'list'

/** Every key a config file may hold, with the form it must have. */
const KEYS: Record<string, Kind> = {
  source: 'string',
  mountpoint: 'string',
  replica: 'list',
  mode: 'string',
  quorum: 'number',
  identity: 'string',
  'known-hosts': 'string',
  timeout: 'number',
  'journal-max': 'string',
  'state-dir': 'string',
  'in-place': 'boolean',
  'allow-other': 'boolean',
  reconcile: 'boolean',
  checksum: 'boolean',
  exclude: 'list',
  metrics: 'string',
}

const FORM: Record<Kind, string> = {
  string: 'a string',
  boolean: 'true or false',
  number: 'a number',
  list: 'a string or a list of strings',
}

export interface FileConfig {
  /** The file's settings as the flags' values (argv form: strings, booleans, string lists). */
  values: Record<string, unknown>
  source?: string
  mountpoint?: string
}

/** Reads and checks a config file: an unknown key or a bad value names the key (exit 2). */
export async function readConfigFile (file: string): Promise<FileConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new UserError(`--config ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, EXIT.usage)
  }
  let doc: unknown
  try {
    // Loaded only for --config: every other start stays without it.
    doc = (await import('yaml')).parse(text)
  } catch (err) {
    throw new UserError(`--config ${file}: not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`, EXIT.usage)
  }
  if (doc === null || doc === undefined) return { values: {} }
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UserError(`--config ${file}: expected a mapping of keys to values at the top`, EXIT.usage)

  const out: FileConfig = { values: {} }
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    const kind = KEYS[key]
    if (kind === undefined) {
      throw new UserError(`--config ${file}: unknown key '${key}'; the keys are ${Object.keys(KEYS).join(', ')}`, EXIT.usage)
    }
    const bad = () => new UserError(`--config ${file}: key '${key}': expected ${FORM[kind]}, got ${JSON.stringify(value)}`, EXIT.usage)
    let v: unknown
    switch (kind) {
      case 'string':
        if (typeof value === 'number' && key === 'journal-max') v = String(value)
        else if (typeof value !== 'string' || value === '') throw bad()
        else v = value
        break
      case 'boolean':
        if (typeof value !== 'boolean') throw bad()
        v = value
        break
      case 'number':
        if (typeof value !== 'number' || !Number.isFinite(value)) throw bad()
        v = String(value)
        break
      case 'list':
        if (typeof value === 'string') v = [value]
        else if (Array.isArray(value) && value.every(x => typeof x === 'string')) v = value
        else throw bad()
        break
    }
    if (key === 'source') out.source = v as string
    else if (key === 'mountpoint') out.mountpoint = v as string
    else if (key === 'reconcile') out.values['no-reconcile'] = !(v as boolean)
    else out.values[key] = v
  }
  return out
}

/**
 * The file's values under the command line's: a flag given on the command line wins. A value
 * from the file that the checks refuse is named by its key and file.
 */
export function merge (file: FileConfig | null, flags: Record<string, unknown>): { values: Record<string, unknown>, fromFile: Set<string> } {
  const values: Record<string, unknown> = { ...(file?.values ?? {}) }
  const fromFile = new Set(Object.keys(values))
  for (const [k, v] of Object.entries(flags)) {
    if (v === undefined || k === 'config') continue
    values[k] = v
    fromFile.delete(k)
  }
  return { values, fromFile }
}

/** Rewrites a check's "--key value: expected ..." into one that names the file's key. */
export function blameFile (err: unknown, file: string, fromFile: Set<string>): unknown {
  if (!(err instanceof UserError)) return err
  const m = /^--([a-z-]+) /.exec(err.message)
  if (m === null || !fromFile.has(m[1] as string)) return err
  return new UserError(`--config ${file}: key '${m[1]}': ${err.message.slice(m[0].length)}`, err.code)
}
