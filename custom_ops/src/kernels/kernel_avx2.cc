// AVX2 + FMA path (16 ymm registers: at most 12 accumulators). Compiled with -mavx2 -mfma;
// entered only after cpu_features.cc confirmed both.
#include <immintrin.h>

#include <utility>

#include "kernels/kernels.h"
#include "kernels/scalar_loops.h"

namespace fq {
namespace {

struct Avx2 {
  static constexpr int kRegs = 16;
  static constexpr int kLanes = 8;
  using Reg = __m256;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float x) { return _mm256_set1_ps(x); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Reg r) { _mm256_storeu_ps(p, r); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  // Lanes whose bit is set in m hold p[i], the others zero (vmaskmovps does not read them).
  static Reg maskz_load(uint32_t m, const float* p) {
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sel = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int(m)), bits), bits);
    return _mm256_maskload_ps(p, sel);
  }
  static Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  // max(lo, x) / min(hi, x) return x when x is NaN, like the scalar std::max / std::min form.
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read.
  static Reg load_lanes(const float* p, int64_t stride, int lo, int hi) {
    if (stride == 1 && lo == 0 && hi == kLanes) return load(p);
    alignas(64) float t[kLanes] = {};
    for (int i = lo; i < hi; ++i) t[i] = p[i * stride];
    return load(t);
  }
  static constexpr DepthwiseFn depthwise_flat = nullptr;
  static void store_run(const float* src, float* dst, int64_t len, float b, float lo, float hi) {
    const __m256 vb = _mm256_set1_ps(b), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
      const __m256 x = _mm256_add_ps(_mm256_loadu_ps(src + i), vb);
      _mm256_storeu_ps(dst + i, _mm256_min_ps(vhi, _mm256_max_ps(vlo, x)));
    }
    store_run_scalar(src, dst, i, len, b, lo, hi);
  }
  static constexpr DeinterleaveFn deinterleave = &deinterleave_rows_scalar;
};

#include "kernels/kernel_impl.h"

const KernelTable kTable = make_table<Avx2, 12, 2, 6>("avx2");

}  // namespace

const KernelTable* kernels_avx2() { return &kTable; }

}  // namespace fq
