#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, builds, runs.
set -euo pipefail
cd "$(dirname "$0")/.."
native-deps/setup.sh --test
exec npx tap
