#!/usr/bin/env bash
# The test command: the unit tests against transformers, then every notebook re-run and compared with
# its stored outputs by nbval, in one pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pytest -q -p no:cacheprovider tests --nbval notebooks \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg "$@"
