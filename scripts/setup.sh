#!/usr/bin/env bash
# Installs what the course needs into the current Python (activate a venv first if you want one), and
# brings an older environment up to the minimum versions, which pyproject.toml states once.
#  1. pip >= 23.1 (requirements.txt gives its editable install a per-requirement --config-settings).
#  2. torch on its own, pinned, when it is missing or older than pyproject.toml's floor: the pin lets pip
#     take a local CPU build where the machine has one; left to the resolver, an upgrade would pull the
#     newest CUDA wheel on Linux (several GB).
#  3. requirements.txt: the package, editable in compat mode, with its `course` extra; pip upgrades
#     anything below its floor (transformers, tokenizers, huggingface_hub, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PIN=2.13.0

if ! "$PY" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (23, 1))' 2>/dev/null; then
  "$PY" -m pip install -q -U "pip>=23.1"
fi

# exit status 0 when torch is missing or older than the floor in pyproject.toml
if "$PY" -c '
import re, sys
floor = re.search(r"\"torch>=([0-9.]+)\"", open("pyproject.toml").read()).group(1)
def version(text):
    return tuple(int(part) for part in re.match(r"[0-9]+(\.[0-9]+)*", text).group(0).split("."))
try:
    import torch
except ImportError:
    sys.exit(0)
sys.exit(0 if version(torch.__version__) < version(floor) else 1)
'; then
  "$PY" -m pip install -q "torch==$TORCH_PIN"
fi

"$PY" -m pip install -q -r requirements.txt
