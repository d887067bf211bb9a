#!/usr/bin/env bash
# Runs the whole test suite that needs no GPU, on this source tree:
#   0. the layering of src/ (scripts/check_layers.py: no include goes up);
#   1. the C++ suite (GoogleTest + CTest) on the simulated driver, -Werror;
#   2. the Python tests (tests/python on the simulated driver; tests/gpu skip
#      themselves without CUDA) on python/ and build/ (needs pytest:
#      python3 -m pip install pytest);
#   3. the C++ suite again under AddressSanitizer + UndefinedBehaviorSanitizer,
#      and the concurrency tests under ThreadSanitizer (skip with --quick).
# Usage: scripts/test.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

echo "== Layers of src/ =="
python3 scripts/check_layers.py

echo "== C++ suite (simulated driver) =="
# Warnings are errors here (development and CI), never in package builds.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTMS_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure

echo "== Python tests =="
PYTHONPATH="$PWD/python" TMS_LIBRARY_PATH="$PWD/build/libtorch_memory_saver.so" \
  scripts/run_pytest.sh python3 -q tests/python tests/gpu

if (( quick )); then exit 0; fi

echo "== C++ suite under AddressSanitizer + UndefinedBehaviorSanitizer =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTMS_WERROR=ON -DTMS_SANITIZE=address,undefined \
  -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=all" -DCMAKE_C_FLAGS="-fno-sanitize-recover=all" >/dev/null
cmake --build build-asan -j "$jobs"
# The preload probes are uninstrumented programs: ASan cannot be preloaded
# into them, and they already ran above.
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan -j "$jobs" --output-on-failure -E '^(preload|dlopen)_'

echo "== Concurrency tests under ThreadSanitizer =="
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DTMS_WERROR=ON -DTMS_SANITIZE=thread >/dev/null
cmake --build build-tsan -j "$jobs" --target tms_concurrency_tests
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan -L concurrency -j "$jobs" --output-on-failure
