#!/usr/bin/env bash
# Installs llama-cpp-python, the Python binding of llama.cpp, which tests/test_gguf.py and
# benchmarks/bench_gguf.py use to run the exported GGUF files. PyPI has no CPU wheel for it: pip compiles
# llama.cpp from the source package, which needs cmake and a C/C++ compiler and takes minutes (measured
# here: 37 minutes on 2 heavily shared cores, building also the multimodal library skipped below).
# Whatever stops it (no compiler, no network, a failed build), this script says so and exits 0: the
# llama.cpp tests are then skipped with their reason, and everything else still runs.
#   GGML_NATIVE=OFF: build for any x86-64 with AVX2/FMA/F16C instead of this exact CPU.
#   LLAVA_BUILD=OFF, no tests/examples/tools: only the library the binding loads.
set -uo pipefail
PY=${PYTHON:-python3}
VERSION=0.3.36  # the version the GGUF tests were verified with

if "$PY" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "llama-cpp-python $VERSION is already installed"
  exit 0
fi
for tool in cmake cc c++; do
  if ! command -v "$tool" >/dev/null; then
    echo "llama-cpp-python not installed: no $tool on PATH to compile llama.cpp (the llama.cpp tests will be skipped)"
    exit 0
  fi
done
start=$(date +%s)
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF ${CMAKE_ARGS:-}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
# Its dependencies (numpy, jinja2, diskcache, typing-extensions) never include torch.
# At most LLAMA_CPP_BUILD_TIMEOUT seconds (25 minutes by default), so a slow machine still leaves CI time
# for the tests: past it the build stops and the llama.cpp tests skip.
if timeout "${LLAMA_CPP_BUILD_TIMEOUT:-1500}" nice "$PY" -m pip install -q "llama-cpp-python==$VERSION"; then
  echo "llama-cpp-python $VERSION built and installed in $(( $(date +%s) - start )) s"
else
  echo "llama-cpp-python not installed: the build failed or ran out of time (the llama.cpp tests will be skipped)"
fi
exit 0
