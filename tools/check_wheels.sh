#!/usr/bin/env bash
# CI check of the install paths that need no compiler (issue: wheels and the runtime package):
#   1. build both wheels (tools/build_wheels.sh);
#   2. a fresh venv where no compiler can be found (CC/CXX=false, PATH = the venv only) installs
#      them from binaries only, converts the bundled model and evaluates it;
#   3. another fresh venv installs only the runtime wheel (onnxruntime, onnx, numpy; no scikit-learn,
#      typer or converter) and runs that compressed model, matching the full install's outputs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bash "$root/tools/build_wheels.sh" "$work/dist" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; echo "check_wheels: building the wheels failed" >&2; exit 1; }
ls "$work/dist"

# A PATH with every tool of this machine except compilers and build systems.
mkdir -p "$work/bin"
for tool in /usr/local/bin/* /usr/bin/* /bin/*; do
  name="${tool##*/}"
  case "$name" in
    cc|c++|cpp|gcc*|g++*|clang*|cmake*|ninja|make|ld|ld.*|*-linux-gnu-*) continue ;;
  esac
  [ -e "$work/bin/$name" ] || ln -s "$tool" "$work/bin/$name"
done
no_compiler() {  # run a command of venv $1 where no compiler can be found
  local venv="$1"; shift
  PATH="$venv/bin:$work/bin" CC=false CXX=false "$@"
}
if no_compiler /nonexistent sh -c 'command -v gcc || command -v cc || command -v c++ || command -v cmake' >/dev/null; then
  echo "check_wheels: a compiler is still on the restricted PATH" >&2; exit 1
fi

python3 -m venv "$work/full"
no_compiler "$work/full" pip install -q --only-binary=:all: "$work"/dist/*.whl
cd "$work"
model="$("$work/full/bin/python" -c 'from fq_onnx.digits import default_model_path as p; print(p())')"
no_compiler "$work/full" fq-onnx convert "$model" -o "$work/digits.fq.onnx" --sparsity 0.5 --bits 5
no_compiler "$work/full" fq-onnx evaluate "$work/digits.fq.onnx" --reference "$model"
no_compiler "$work/full" python - "$work" <<'PY'
import sys
import numpy as np
from fq_onnx import runtime
from fq_onnx.digits import load_digits_split
x, _ = load_digits_split("val")
np.save(f"{sys.argv[1]}/x.npy", x[:32])
np.save(f"{sys.argv[1]}/y_full.npy", runtime.session(f"{sys.argv[1]}/digits.fq.onnx").run(None, {"input": x[:32]})[0])
PY

python3 -m venv "$work/deploy"
no_compiler "$work/deploy" pip install -q --only-binary=:all: "$work"/dist/fq_onnx_runtime-*.whl
no_compiler "$work/deploy" python - "$work" <<'PY'
import importlib.util, sys
import numpy as np
import fq_onnx_runtime
w = sys.argv[1]
y = fq_onnx_runtime.session(f"{w}/digits.fq.onnx", threads=2).run(None, {"input": np.load(f"{w}/x.npy")})[0]
assert np.array_equal(y, np.load(f"{w}/y_full.npy")), "runtime-only outputs differ from the full install's"
for name in ("sklearn", "typer", "fq_onnx"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed in the runtime-only venv"
print("runtime-only install: outputs match the full install")
PY
echo "check_wheels: OK"
