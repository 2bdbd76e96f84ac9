#!/usr/bin/env bash
# Installs what the course needs into the current Python (activate a venv first if you want one).
# torch is installed on its own first: pinning a version lets pip take a local CPU build where the
# machine has one, and the platform's normal wheel (CUDA on Linux) everywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps -e .
