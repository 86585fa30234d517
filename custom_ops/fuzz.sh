#!/usr/bin/env bash
# Sanitizer run of the custom-op library: an ASan + UBSan build of custom_ops/ (every report
# fatal), its ctest, the decoder fuzzer for SECONDS on the seeds and regression inputs, then the
# Python malformed-model tests (each case on a float and on an integer-mode node) and
# blob-corruption tests against the sanitized library.
#
#   custom_ops/fuzz.sh [SECONDS]            (default 60; run from anywhere)
#
# Environment: FQ_FUZZ_BUILD_DIR (default <repo>/build-fuzz), FQ_FUZZ_SEED (the fuzzer's RNG
# seed; default: the time, printed so a run can be repeated), FQ_FUZZ_PYTEST=0 skips the
# Python step, PYTHON (default python3, with fq_onnx and pytest installed). onnxruntime headers
# come from the same discovery as `pip install ./runtime` (cmake/FindOrtHeaders.cmake).
# FQ_FUZZ_ENGINE=libfuzzer builds the fuzzer with clang's coverage-guided libFuzzer instead of
# the mutation driver (Debian: apt-get install clang libclang-rt-14-dev; default build dir
# build-fuzz-clang; no Python step: the module is built with gcc).
# A crashing input is saved as <build>/artifacts/crash-*.fqw: add it to
# custom_ops/tests/regressions/ (replayed by ctest and tests/test_malformed.py) and fix the bug.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
engine="${FQ_FUZZ_ENGINE:-driver}"
case "$engine" in
  driver) build="${FQ_FUZZ_BUILD_DIR:-$root/build-fuzz}"; cmake_extra=(); targets=() ;;
  libfuzzer) build="${FQ_FUZZ_BUILD_DIR:-$root/build-fuzz-clang}"
    cmake_extra=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DFQ_ONNX_LIBFUZZER=ON)
    targets=(--target fuzz_decode) ;;
  *) echo "fuzz.sh: FQ_FUZZ_ENGINE must be driver or libfuzzer, got '$engine'" >&2; exit 2 ;;
esac
seed="${FQ_FUZZ_SEED:-$(date +%s)}"
python="${PYTHON:-python3}"

die() {
  echo "fuzz.sh: FAILED: $*" >&2
  exit 1
}

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ -f "$build/CMakeCache.txt" ]] && ! grep -q '^FQ_ONNX_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
  die "$build holds a build without FQ_ONNX_SANITIZE=ON; remove it or set FQ_FUZZ_BUILD_DIR"
fi

mkdir -p "$build"
echo "== configure + build (ASan + UBSan) in $build"
cmake -S "$root" -B "$build" "${generator[@]}" -DFQ_ONNX_SANITIZE=ON -DFQ_ONNX_BUILD_TESTS=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_extra[@]}" >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log" >&2; die "cmake configure"; }
grep -m1 "onnxruntime headers:" "$build/configure.log" || true
cmake --build "$build" "${targets[@]}" --parallel "$(nproc 2>/dev/null || echo 2)" >"$build/build.log" 2>&1 \
  || { tail -n 60 "$build/build.log" >&2; die "build"; }

# halt_on_error and abort_on_error: any report ends the process with a non-zero status.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"

echo "== ctest"
ctest --test-dir "$build" --output-on-failure || die "ctest (see the output above)"

echo "== fuzz_decode for ${seconds} s, RNG seed $seed (FQ_FUZZ_SEED=$seed repeats it)"
corpus="$build/corpus"
artifacts="$build/artifacts"
rm -rf "$corpus"
mkdir -p "$corpus" "$artifacts"
cp "$root/custom_ops/tests/seeds/"* "$corpus/"
if compgen -G "$root/custom_ops/tests/regressions/*" >/dev/null; then
  cp "$root/custom_ops/tests/regressions/"* "$corpus/"
fi
if [[ "$engine" == libfuzzer ]]; then
  fuzz=("$build/custom_ops/tests/fuzz_decode" -max_total_time="$seconds" -seed="$seed"
        -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus")
else
  fuzz=("$build/custom_ops/tests/fuzz_decode" "$corpus" -1 "$seed" "$seconds")
fi
FQ_FUZZ_ARTIFACTS="$artifacts" "${fuzz[@]}" \
  || die "fuzz_decode crashed; the input is in $artifacts (add it to custom_ops/tests/regressions/)"

if [[ "$engine" == libfuzzer ]]; then
  echo "== (no pytest step with FQ_FUZZ_ENGINE=libfuzzer: run fuzz.sh without it for that)"
elif [[ "${FQ_FUZZ_PYTEST:-1}" != 0 ]]; then
  echo "== pytest against the sanitized library (malformed models on float and integer nodes, corrupted blobs)"
  "$python" -P -c "import fq_onnx, pytest" 2>/dev/null \
    || die "$python cannot import fq_onnx and pytest (install '.[test]', or FQ_FUZZ_PYTEST=0)"
  # The interpreter is not instrumented: load the runtimes first, and leave leak checking to
  # the C++ runs above (CPython keeps memory alive at exit by design).
  preload="$(${CXX:-c++} -print-file-name=libasan.so) $(${CXX:-c++} -print-file-name=libubsan.so)"
  (cd "$root" && LD_PRELOAD="$preload" ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}" \
    FQ_ONNX_OPS_LIBRARY="$build/custom_ops/libfq_onnx_ops.so" \
    "$python" -P -m pytest -q -p no:cacheprovider tests/test_malformed.py \
      tests/test_custom_ops.py -k "malformed or corrupt or disagreeing or non_constant or huge") \
    || die "pytest under ASan + UBSan"
fi
echo "fuzz.sh: OK"
