#!/usr/bin/env bash
# Installs what replicafs needs on Debian 12 and builds it. Safe to run any number of times:
# each step is skipped when already done.
#
#   native-deps/setup.sh          runtime: FUSE, the build toolchain, npm packages, the build
#   native-deps/setup.sh --test   also what the test suite drives: OpenSSH's sshd and ssh-keygen
#                                 for the replicas, python3 for the xattr/mmap probes; for the
#                                 end-to-end upload scene vsftpd, nginx, curl and iproute2
#                                 (network namespaces), installed without starting the services
#   native-deps/setup.sh --bench  also what the benchmarks compare against: bindfs, OpenSSH's
#                                 sftp, rsync, lsyncd
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse libfuse2 libfuse-dev pkg-config python3 make g++ patch)
for arg in "$@"; do
  case "$arg" in
    --test) packages+=(openssh-server openssh-client procps vsftpd nginx-light curl iproute2) ;;
    --bench) packages+=(bindfs openssh-server openssh-client rsync lsyncd) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "replicafs: these Debian packages are missing: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 3
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  # Packages with a service (sshd, vsftpd, nginx) are installed without starting it: the tests
  # start their own, on addresses of their own. A policy-rc.d there already is left as it is.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# replicafs setup.sh: no service starts while it installs packages\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || status=$?
  if [ -n "$made_policy" ]; then rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then exit "$status"; fi
fi

if ! command -v node >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "replicafs: Node.js 20 or later is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 3
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
fi

npm run --silent build >&2
