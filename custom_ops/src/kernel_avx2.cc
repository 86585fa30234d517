// AVX2 + FMA path (16 ymm registers: at most 12 accumulators). Compiled with -mavx2 -mfma;
// entered only after cpu_features.cc confirmed both.
#include <immintrin.h>

#include "kernels.h"

namespace fq {
namespace {

struct Avx2 {
  static constexpr int kLanes = 8;
  using Reg = __m256;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float x) { return _mm256_set1_ps(x); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Reg r) { _mm256_storeu_ps(p, r); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
};

#include "kernel_impl.h"

const KernelTable kTable = make_table<Avx2, 12>("avx2");

}  // namespace

const KernelTable* kernels_avx2() { return &kTable; }

}  // namespace fq
