#!/usr/bin/env bash
# ./mount.sh ARGS     is `replicafs mount ARGS`, after making sure that the native
#                     dependencies are installed and the code is built.
# ./mount.sh --demo   mounts a small demo document root (demo/source served at demo/www),
#                     replicated to a local directory (demo/replica).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/native-deps/setup.sh"

if [ "${1:-}" = "--demo" ]; then
  shift
  demo="$here/demo"
  mkdir -p "$demo/source/css" "$demo/source/img" "$demo/www" "$demo/replica"
  if [ ! -f "$demo/source/index.html" ]; then
    printf '<!doctype html>\n<title>replicafs demo</title>\n<link rel="stylesheet" href="css/site.css">\n<h1>It works</h1>\n' > "$demo/source/index.html"
    printf 'body { font-family: sans-serif; }\n' > "$demo/source/css/site.css"
    head -c 4096 /dev/urandom > "$demo/source/img/noise.bin"
    ln -sf index.html "$demo/source/home.html"
  fi
  cat >&2 <<MSG
replicafs demo: $demo/source (the real files) is served at $demo/www,
and every change made there is replicated, synchronously, to $demo/replica
(made identical to the source first, before the mount comes up).
Try, from another terminal:
  echo hello > $demo/www/hello.txt && cat $demo/replica/hello.txt
Stop with Ctrl-C (it unmounts).
MSG
  exec node "$here/dist/src/cli.js" mount "$demo/source" "$demo/www" --replica "file://$demo/replica" "$@"
fi

exec node "$here/dist/src/cli.js" mount "$@"
