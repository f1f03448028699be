#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up (idempotent), build, then every test
# (unit, end-to-end, parity against the Python references). Exit status 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
