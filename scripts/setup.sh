#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine: Debian packages the tests use, then hubbot with
# its test extras. Safe to rerun: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Debian packages: a C/C++ toolchain and cmake build llama.cpp (the engine, and llama.cpp's own
# perplexity/imatrix tools the parity tests compare against); headless Chromium renders the card
# preview in the tests.
missing=""
for pair in cmake:cmake g++:g++ chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian packages:$missing" >&2
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# llama-cpp-python builds llama.cpp for this CPU (-march=native). Some virtual machines report
# Intel AMX in /proc/cpuinfo but fault on AMX instructions (SIGILL in every quantized matmul), so
# the AMX kernels are compiled out; AVX2/AVX-512 paths stay.
if [ "$(uname -m)" = x86_64 ]; then
  export CFLAGS="${CFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  export CXXFLAGS="${CXXFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"

"$PYTHON" -m pip install -q -e '.[test]'

# A quantized matmul must run: if an AMX build slipped in (e.g. an old wheel in pip's cache),
# rebuild llama-cpp-python from source once.
if ! "$PYTHON" -m hubbot.llama.selfcheck >/dev/null 2>&1; then
  echo "setup: llama-cpp-python failed its self-check; rebuilding it from source" >&2
  "$PYTHON" -m pip install -q --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==0.3.36"
  "$PYTHON" -m hubbot.llama.selfcheck
fi

# Test prerequisites fetched from PyPI here, so the test run itself never leaves 127.0.0.1:
# llama.cpp's reference tools for the parity tests, built once from the same llama.cpp sources,
# and the isolated venv of llama.cpp's HF->GGUF converter (hubbot would create it on first use).
"$PYTHON" tests/support/llamacpp_tools.py >/dev/null
"$PYTHON" -c "from hubbot.source.convert import ConverterEnv, default_venv_path; ConverterEnv(default_venv_path()).ensure()" >/dev/null
