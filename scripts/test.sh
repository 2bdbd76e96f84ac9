#!/usr/bin/env bash
# The test command: unit tests, then every notebook re-run and compared by nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pytest -q tests "$@"
