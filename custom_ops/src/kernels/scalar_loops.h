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

// KernelTable::deinterleave (kernels.h) as plain loops: edge columns checked, the inside of each
// row copied without checks.
void deinterleave_rows_scalar(const float* src, int64_t src_stride, int64_t rows, int64_t W, int64_t pl, float* r0,
                              float* r1, int64_t Wq) {
  // Packed column j reads input columns 2j - pl and 2j + 1 - pl: both inside the row for j in
  // [j_lo, j_hi).
  int64_t j_lo = (pl + 1) / 2, j_hi = (W + pl) / 2;
  j_lo = j_lo < Wq ? j_lo : Wq;
  j_hi = j_hi < Wq ? j_hi : Wq;
  j_hi = j_hi > j_lo ? j_hi : j_lo;
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * src_stride;
    float* d0 = r0 ? r0 + i * Wq : nullptr;
    float* d1 = r1 ? r1 + i * Wq : nullptr;
    auto edge = [&](int64_t k) {
      const int64_t a = 2 * k - pl, b = a + 1;
      if (d0) d0[k] = (a >= 0 && a < W) ? s[a] : 0.0f;
      if (d1) d1[k] = (b >= 0 && b < W) ? s[b] : 0.0f;
    };
    for (int64_t k = 0; k < j_lo; ++k) edge(k);
    for (int64_t k = j_lo; k < j_hi; ++k) {
      if (d0) d0[k] = s[2 * k - pl];
      if (d1) d1[k] = s[2 * k + 1 - pl];
    }
    for (int64_t k = j_hi; k < Wq; ++k) edge(k);
  }
}

}  // namespace
}  // namespace fq
