// Plain loops shared by the scalar path and the tails of the AVX2 path.
// Internal linkage on purpose: every kernel_*.cc is compiled with its own -m flags, and an
// inline function with external linkage could be merged across them by the linker (an AVX-512
// copy then running on a CPU without it).
#pragma once

#include <cstdint>

namespace fq {
namespace {

// dst[i] = clamp(src[i] + b, lo, hi) for i in [begin, len).
void store_run_scalar(const float* src, float* dst, int64_t begin, int64_t len, float b, float lo, float hi) {
  for (int64_t i = begin; i < len; ++i) {
    const float x = src[i] + b;
    const float y = x < lo ? lo : x;
    dst[i] = hi < y ? hi : y;
  }
}

// r0[k] = s[2k], r1[k] = s[2k+1] (either output may be null).
void deinterleave_scalar(const float* s, float* r0, float* r1, int64_t n) {
  if (r0 && r1) {
    for (int64_t k = 0; k < n; ++k) {
      r0[k] = s[2 * k];
      r1[k] = s[2 * k + 1];
    }
  } else if (r0) {
    for (int64_t k = 0; k < n; ++k) r0[k] = s[2 * k];
  } else if (r1) {
    for (int64_t k = 0; k < n; ++k) r1[k] = s[2 * k + 1];
  }
}

}  // namespace
}  // namespace fq
