// AVX-512F path (32 zmm registers: at most 24 accumulators). Compiled with -mavx512f and
// friends; entered only after cpu_features.cc confirmed AVX-512F and OS support for zmm state.
// GCC 12 reports its own _mm512_min_ps/_mm512_max_ps (an undefined pass-through under an
// all-ones mask) as "may be used uninitialized"; a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <utility>

#include "kernels/kernels.h"

namespace fq {
namespace {

struct Avx512 {
  static constexpr int kRegs = 32;
  static constexpr int kLanes = 16;
  using Reg = __m512;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float x) { return _mm512_set1_ps(x); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Reg r) { _mm512_storeu_ps(p, r); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  // Lanes whose bit is set in m hold p[i], the others zero (masked-off lanes are not read).
  static Reg maskz_load(uint32_t m, const float* p) { return _mm512_maskz_loadu_ps(__mmask16(m), p); }
  static Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  // max(lo, x) / min(hi, x) return x when x is NaN, like the scalar std::max / std::min form.
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read
  // (masked loads do not fault on masked-off elements).
  static Reg load_lanes(const float* p, int64_t stride, int lo, int hi) {
    const unsigned lanes = ((1u << unsigned(hi)) - 1u) & ~((1u << unsigned(lo)) - 1u);
    if (stride == 1) return _mm512_maskz_loadu_ps(__mmask16(lanes), p);
    if (stride == 2) {
      // Elements 2i for i in [lo, hi): e in [2 lo, 2 hi - 1) of the 32 after p.
      const uint64_t e = ((uint64_t(1) << (2 * hi - 1)) - 1u) & ~((uint64_t(1) << (2 * lo)) - 1u);
      const __m512 a = _mm512_maskz_loadu_ps(__mmask16(e & 0xFFFFu), p);
      const __m512 b = _mm512_maskz_loadu_ps(__mmask16((e >> 16) & 0xFFFFu), p + 16);
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      return _mm512_maskz_mov_ps(__mmask16(lanes), _mm512_permutex2var_ps(a, even, b));
    }
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(int(stride)));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(lanes), idx, p, 4);
  }
  // The plane as one flat run of output pixels q = oh * OW + ow, 16 at a time; (oh, ow) of every
  // lane are carried along in vectors, so a tap is 4 compares (padding) and one masked load:
  // contiguous for stride 1 with W == OW ("same" padding), a gather otherwise (small planes).
  static void depthwise_flat(const DepthwiseArgs& a) {
    const int64_t P = a.OH * a.OW;
    const int32_t OW = int32_t(a.OW);
    const bool contiguous = a.sh == 1 && a.sw == 1 && a.W == a.OW;
    const __m512i W = _mm512_set1_epi32(int32_t(a.W)), H = _mm512_set1_epi32(int32_t(a.H));
    const __m512i vOW = _mm512_set1_epi32(OW), sh = _mm512_set1_epi32(int32_t(a.sh)),
                  sw = _mm512_set1_epi32(int32_t(a.sw));
    const int32_t rows16 = OW > 16 ? 0 : 16 / OW;
    const __m512i step = _mm512_set1_epi32(16 - rows16 * OW), rows_step = _mm512_set1_epi32(rows16);
    __m512i ow, oh;
    {
      alignas(64) int32_t h[16], w[16];
      int32_t r = 0, c = 0;
      for (int i = 0; i < 16; ++i) {  // i / OW and i % OW without divisions
        h[i] = r;
        w[i] = c;
        if (++c == OW) {
          c = 0;
          ++r;
        }
      }
      oh = _mm512_load_si512(h);
      ow = _mm512_load_si512(w);
    }
    const __m512 vb = _mm512_set1_ps(a.b), vlo = _mm512_set1_ps(a.lo), vhi = _mm512_set1_ps(a.hi);
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t q0 = 0; q0 < P; q0 += 16) {
      __m512 acc = _mm512_setzero_ps();
      const __mmask16 live = P - q0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << unsigned(P - q0)) - 1u);
      const __m512i y0 = contiguous ? oh : _mm512_mullo_epi32(oh, sh);
      const __m512i x0 = contiguous ? ow : _mm512_mullo_epi32(ow, sw);
      for (size_t t = 0; t < a.n; ++t) {
        const int32_t ry = int32_t(a.dy[t] - a.pad_top), rx = int32_t(a.dx[t] - a.pad_left);
        const __m512i iy = _mm512_add_epi32(y0, _mm512_set1_epi32(ry));
        const __m512i ix = _mm512_add_epi32(x0, _mm512_set1_epi32(rx));
        __mmask16 m = _mm512_mask_cmpge_epi32_mask(live, iy, zero);
        m = _mm512_mask_cmplt_epi32_mask(m, iy, H);
        m = _mm512_mask_cmpge_epi32_mask(m, ix, zero);
        m = _mm512_mask_cmplt_epi32_mask(m, ix, W);
        if (!m) continue;
        __m512 v;
        if (contiguous) {
          v = _mm512_maskz_loadu_ps(m, a.x + q0 + int64_t(ry) * a.W + rx);
        } else {
          const __m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(iy, W), ix);
          v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a.x, 4);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(a.w[t]), v, acc);
      }
      const __m512 y = _mm512_min_ps(vhi, _mm512_max_ps(vlo, _mm512_add_ps(acc, vb)));
      _mm512_mask_storeu_ps(a.y + q0, live, y);
      // Advance every lane by 16 pixels: 16 = rows_step * OW + step.
      ow = _mm512_add_epi32(ow, step);
      oh = _mm512_add_epi32(oh, rows_step);
      const __mmask16 wrap = _mm512_cmpge_epi32_mask(ow, vOW);
      ow = _mm512_mask_sub_epi32(ow, wrap, ow, vOW);
      oh = _mm512_mask_add_epi32(oh, wrap, oh, _mm512_set1_epi32(1));
    }
  }
  static void store_run(const float* src, float* dst, int64_t len, float b, float lo, float hi) {
    const __m512 vb = _mm512_set1_ps(b), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      const __m512 x = _mm512_add_ps(_mm512_loadu_ps(src + i), vb);
      _mm512_storeu_ps(dst + i, _mm512_min_ps(vhi, _mm512_max_ps(vlo, x)));
    }
    if (i < len) {
      const __mmask16 m = __mmask16((1u << unsigned(len - i)) - 1u);
      const __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + i), vb);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_min_ps(vhi, _mm512_max_ps(vlo, x)));
    }
  }
  // Rows of a stride-2 conv are short (16 packed floats per phase at 28 -> 14): the per-row
  // cost, not the copy, was the time. Per block of 16 packed columns the masks are fixed for all
  // rows (input columns outside the row are masked out of the loads and read as zero), so a row
  // is two masked loads, two permutes (even and odd lanes) and two masked stores, no branches.
  static void deinterleave(const float* src, int64_t src_stride, int64_t rows, int64_t W, int64_t pl, float* r0,
                           float* r1, int64_t Wq) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // Lanes l of 16 starting at input column b that lie inside [0, W).
    auto inside = [W](int64_t b) -> __mmask16 {
      const int64_t lo = b < 0 ? -b : 0, hi = W - b < 16 ? W - b : 16;
      if (hi <= lo) return 0;
      return __mmask16(((1u << unsigned(hi)) - 1u) & ~((1u << unsigned(lo)) - 1u));
    };
    for (int64_t k = 0; k < Wq; k += 16) {
      const int64_t b = 2 * k - pl;  // input column of lane 0 of the first load
      const __mmask16 ma = inside(b), mb = inside(b + 16);
      const __mmask16 mo = __mmask16(Wq - k >= 16 ? 0xFFFFu : (1u << unsigned(Wq - k)) - 1u);
      // Addresses only: masked-off lanes (columns before 0 or past W) are never read.
      const uintptr_t base = reinterpret_cast<uintptr_t>(src) + uintptr_t(b) * sizeof(float);
      for (int64_t i = 0; i < rows; ++i) {
        const float* s = reinterpret_cast<const float*>(base + uintptr_t(i * src_stride) * sizeof(float));
        const __m512 x = _mm512_maskz_loadu_ps(ma, s);
        const __m512 y = _mm512_maskz_loadu_ps(mb, s + 16);
        if (r0) _mm512_mask_storeu_ps(r0 + i * Wq + k, mo, _mm512_permutex2var_ps(x, even, y));
        if (r1) _mm512_mask_storeu_ps(r1 + i * Wq + k, mo, _mm512_permutex2var_ps(x, odd, y));
      }
    }
  }
};

#include "kernels/kernel_impl.h"

const KernelTable kTable = make_table<Avx512, 24, 2, 12>("avx512");

}  // namespace

const KernelTable* kernels_avx512() { return &kTable; }

}  // namespace fq
