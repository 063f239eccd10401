"""Parity probe, python side (a helper of probe.js, not a test): the calls node:fs lacks.

    python3 probe.py <base> '<step json>'

Prints {"ok": true, "value": ...} or {"ok": false, "code": "ENODATA"}.
"""
import errno
import json
import os
import stat
import sys


def run(base, s):
    p = os.path.join(base, s['path']) if 'path' in s else None
    call = s['call']
    follow = not s.get('nofollow', False)
    if call == 'setxattr':
        flags = {'create': os.XATTR_CREATE, 'replace': os.XATTR_REPLACE}.get(s.get('flags'), 0)
        os.setxattr(p, s['name'], s['value'].encode('latin1'), flags, follow_symlinks=follow)
        return None
    if call == 'getxattr':
        return os.getxattr(p, s['name'], follow_symlinks=follow).decode('latin1')
    if call == 'listxattr':
        return sorted(os.listxattr(p, follow_symlinks=follow))
    if call == 'removexattr':
        os.removexattr(p, s['name'], follow_symlinks=follow)
        return None
    if call == 'utime':
        # utimensat with both times given to the nanosecond.
        os.utime(p, ns=(int(s['atime']), int(s['mtime'])), follow_symlinks=follow)
        return None
    if call == 'statvfs':
        v = os.statvfs(p)
        return {'bsize': v.f_bsize, 'frsize': v.f_frsize, 'blocks': v.f_blocks,
                'files': v.f_files, 'namemax': v.f_namemax}
    if call == 'mknod':
        kind = {'fifo': stat.S_IFIFO, 'chr': stat.S_IFCHR, 'reg': stat.S_IFREG}[s['kind']]
        os.mknod(p, kind | int(s['mode'], 8), os.makedev(s.get('major', 0), s.get('minor', 0)))
        return None
    raise ValueError('unknown call ' + call)


def main():
    base, step = sys.argv[1], json.loads(sys.argv[2])
    try:
        value = run(base, step)
        out = {'ok': True} if value is None else {'ok': True, 'value': value}
    except OSError as e:
        out = {'ok': False, 'code': errno.errorcode.get(e.errno, str(e.errno))}
    print(json.dumps(out))


main()
