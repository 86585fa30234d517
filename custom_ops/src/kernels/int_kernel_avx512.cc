// AVX-512 integer path: the AVX2 path on 16 lanes with 32 registers (up to 8 vectors, 128 output
// pixels, per tile). Compiled with -mavx512f -ffp-contract=off; entered only after
// cpu_features.cc confirmed AVX-512F.
// GCC 12 flags the undefined pass-through operand inside its unmasked AVX-512 intrinsics
// (_mm512_sllv_epi32, _mm512_cvtps_epi32, ...) as maybe-uninitialized: GCC bug 105593.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/int_kernels.h"

namespace fq {
namespace {

struct IntAvx512 {
  static constexpr int kLanes = 16;
  using Reg = __m512i;
  static Reg zero() { return _mm512_setzero_si512(); }
  static Reg set1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static Reg load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static void store(int32_t* p, Reg r) { _mm512_storeu_si512(p, r); }
  static Reg add(Reg a, Reg b) { return _mm512_add_epi32(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_epi32(a, b); }
  static Reg sllv(Reg a, Reg s) { return _mm512_sllv_epi32(a, s); }
  static Reg mullo(Reg a, Reg b) { return _mm512_mullo_epi32(a, b); }  // low 32 bits: modular
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read (masked).
  static Reg load_lanes(const int32_t* p, int64_t stride, int lo, int hi) {
    const __mmask16 m = static_cast<__mmask16>(((1u << (hi - lo)) - 1u) << lo);
    if (stride == 1) return _mm512_maskz_loadu_epi32(m, p);
    const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(static_cast<int>(stride)));
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, p, 4);
  }
  static void quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax);
  static void store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi);
};

#include "kernels/int_kernel_impl.h"

void IntAvx512::quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax) {
  const __m512 vi = _mm512_set1_ps(inv_scale), vlo = _mm512_set1_ps(qmin), vhi = _mm512_set1_ps(qmax);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vi);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // NaN -> +0
    v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // half to even
    _mm512_storeu_si512(q + i, _mm512_cvtps_epi32(v));
  }
  quantize_scalar(x, q, i, n, inv_scale, qmin, qmax);
}

void IntAvx512::store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi) {
  const __m512 vs = _mm512_set1_ps(scale), vb = _mm512_set1_ps(b), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m512 a = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i));
    const __m512 x = _mm512_add_ps(_mm512_mul_ps(a, vs), vb);  // two roundings: -ffp-contract=off
    _mm512_storeu_ps(dst + i, _mm512_min_ps(vhi, _mm512_max_ps(vlo, x)));
  }
  int_store_scalar(acc, dst, i, len, scale, b, lo, hi);
}

const IntKernelTable kTable = make_int_table<IntAvx512, 8>("avx512");

}  // namespace

const IntKernelTable* int_kernels_avx512() { return &kTable; }

}  // namespace fq
