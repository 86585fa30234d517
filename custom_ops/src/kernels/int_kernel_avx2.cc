// AVX2 integer path: vpaddd per nonzero, vpsllvd (variable shift) + vpaddd/vpsubd per distinct
// code. 16 ymm registers: V sums + V accumulators + V component sums + the shift count, so at most 5 vectors (40
// output pixels) per tile. Compiled with -mavx2 -ffp-contract=off; entered only after
// cpu_features.cc confirmed AVX2.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/int_kernels.h"

namespace fq {
namespace {

struct IntAvx2 {
  static constexpr int kLanes = 8;
  using Reg = __m256i;
  static Reg zero() { return _mm256_setzero_si256(); }
  static Reg set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static Reg load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(int32_t* p, Reg r) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), r); }
  static Reg add(Reg a, Reg b) { return _mm256_add_epi32(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_epi32(a, b); }
  static Reg sllv(Reg a, Reg s) { return _mm256_sllv_epi32(a, s); }
  static Reg mullo(Reg a, Reg b) { return _mm256_mullo_epi32(a, b); }  // low 32 bits: modular
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read.
  static Reg load_lanes(const int32_t* p, int64_t stride, int lo, int hi) {
    if (stride == 1 && lo == 0 && hi == kLanes) return load(p);
    alignas(32) int32_t t[kLanes] = {};
    for (int i = lo; i < hi; ++i) t[i] = p[i * stride];
    return load(t);
  }
  static void quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax);
  static void store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi);
};

#include "kernels/int_kernel_impl.h"

void IntAvx2::quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax) {
  const __m256 vi = _mm256_set1_ps(inv_scale), vlo = _mm256_set1_ps(qmin), vhi = _mm256_set1_ps(qmax);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vi);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> +0
    v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
    // Explicit round-half-even (not MXCSR's mode); the value is then integral, so the
    // conversion is exact.
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_cvtps_epi32(v));
  }
  quantize_scalar(x, q, i, n, inv_scale, qmin, qmax);
}

void IntAvx2::store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi) {
  const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(b), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 a = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)));
    const __m256 x = _mm256_add_ps(_mm256_mul_ps(a, vs), vb);  // two roundings: -ffp-contract=off
    _mm256_storeu_ps(dst + i, _mm256_min_ps(vhi, _mm256_max_ps(vlo, x)));
  }
  int_store_scalar(acc, dst, i, len, scale, b, lo, hi);
}

const IntKernelTable kTable = make_int_table<IntAvx2, 5>("avx2");

}  // namespace

const IntKernelTable* int_kernels_avx2() { return &kTable; }

}  // namespace fq
