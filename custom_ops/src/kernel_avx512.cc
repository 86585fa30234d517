// AVX-512F path (32 zmm registers: at most 24 accumulators). Compiled with -mavx512f and
// friends; entered only after cpu_features.cc confirmed AVX-512F and OS support for zmm state.
#include <immintrin.h>

#include "kernels.h"

namespace fq {
namespace {

struct Avx512 {
  static constexpr int kLanes = 16;
  using Reg = __m512;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float x) { return _mm512_set1_ps(x); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Reg r) { _mm512_storeu_ps(p, r); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
};

#include "kernel_impl.h"

const KernelTable kTable = make_table<Avx512, 24>("avx512");

}  // namespace

const KernelTable* kernels_avx512() { return &kTable; }

}  // namespace fq
