#!/usr/bin/env bash
# The test command: the unit tests against transformers, then every notebook re-run and compared with its
# stored outputs by nbval, twice.
#
# Why twice: a stored output must hold on a learner's machine, not only on the one that stored it. Two
# things change the last bits of a float there: the number of threads (how sums are split) and the CPU
# kernels torch picks for the processor (avx512, avx2 or plain C++; ATEN_CPU_CAPABILITY forces one). The
# first pass runs the notebooks as they come; the second with one thread and another kernel capability
# than this machine picks by itself (avx2, or `default` where avx2 is already the machine's own choice).
# A notebook that prints rounding noise fails one of the two, here, before a learner finds it.
#
# Both passes always run; the script exits non-zero when either failed.
# Extra arguments go to both pytest runs (e.g. `bash scripts/test.sh -x`).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
NBVAL=(--nbval-sanitize-with notebooks/nbval_sanitize.cfg)

echo "== pass 1: unit tests and notebooks, this machine's defaults"
"$PY" -m pytest -q -p no:cacheprovider tests --nbval notebooks "${NBVAL[@]}" "$@"
first=$?

own=$("$PY" -c "import torch; print(torch.backends.cpu.get_cpu_capability())") || exit 1
case "$own" in
    AVX512*) other=avx2 ;;      # the usual case on recent x86: compare with the avx2 kernels
    *) other=default ;;         # AVX2 machines, and ARM/others: the plain C++ kernels
esac
echo "== pass 2: notebooks again, OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=$other (this machine picks $own)"
OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=$other "$PY" -m pytest -q -p no:cacheprovider --nbval notebooks "${NBVAL[@]}" "$@"
second=$?

echo "== pass 1 exit status $first, pass 2 exit status $second"
if [ "$first" -ne 0 ] || [ "$second" -ne 0 ]; then
    exit 1
fi
