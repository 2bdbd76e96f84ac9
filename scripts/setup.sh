#!/usr/bin/env bash
# Installs what the course needs into the current Python (activate a venv first if you want one), and
# brings an older environment up to the minimum versions, which pyproject.toml states once.
#  1. pip >= 23.1, which hands --config-settings to the editable build.
#  2. torch on its own, pinned, when it is missing or older than pyproject.toml's floor: the pin lets pip
#     take a local CPU build where the machine has one; left to the resolver, an upgrade would pull the
#     newest CUDA wheel on Linux (several GB).
#  3. setuptools >= 70.1 (which builds wheels by itself) when this Python has neither it nor the `wheel`
#     package, as in a fresh Python 3.11 venv (setuptools 65): tests/test_install.py builds the package
#     offline with the setuptools it finds here.
#  4. requirements.txt's one line, the package (editable) with its `course` extra, given on the command
#     line because pip passes --config-settings to neither an editable line of a requirements file nor
#     (pip 23.2) anything -r reads. pip upgrades whatever is below its floor (transformers, tokenizers,
#     huggingface_hub, ...). Compat mode puts the clone on sys.path, so the package wins over a folder
#     named `minicohere` holding the clone, next to a learner's script.
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

if ! "$PY" -c '
import importlib.util, re, sys
import setuptools
version = tuple(int(part) for part in re.findall(r"[0-9]+", setuptools.__version__)[:2])
sys.exit(0 if version >= (70, 1) or importlib.util.find_spec("wheel") else 1)
' 2>/dev/null; then
  "$PY" -m pip install -q "setuptools>=70.1"
fi

"$PY" -m pip install -q -e ".[course]" --config-settings editable_mode=compat
