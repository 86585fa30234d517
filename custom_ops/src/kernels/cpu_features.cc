#include "kernels/cpu_features.h"

#include <stdexcept>

namespace fq {
namespace {

bool has_avx2_fma() {
#if defined(FQ_ONNX_HAVE_X86_SIMD) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's detection also checks XGETBV, i.e. that the OS saves the ymm/zmm state.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool has_avx512() {
#if defined(FQ_ONNX_HAVE_X86_SIMD) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && has_avx2_fma();
#else
  return false;
#endif
}

}  // namespace

int nchwc_block_guess() {
  if (has_avx512()) return 16;
  if (has_avx2_fma()) return 8;
  return 0;
}

const KernelTable* select_kernels(const std::string& choice) {
  if (choice == "scalar") return kernels_scalar();
#if defined(FQ_ONNX_HAVE_X86_SIMD)
  if (choice == "avx512") {
    if (!has_avx512()) throw std::invalid_argument("kernel 'avx512' requested but this CPU lacks AVX-512F");
    return kernels_avx512();
  }
  if (choice == "avx2") {
    if (!has_avx2_fma()) throw std::invalid_argument("kernel 'avx2' requested but this CPU lacks AVX2+FMA");
    return kernels_avx2();
  }
  if (choice == "auto") {
    if (has_avx512()) return kernels_avx512();
    if (has_avx2_fma()) return kernels_avx2();
    return kernels_scalar();
  }
#else
  if (choice == "avx2" || choice == "avx512") {
    throw std::invalid_argument("kernel '" + choice + "' requested but this build has no x86 SIMD kernels");
  }
  if (choice == "auto") return kernels_scalar();
#endif
  throw std::invalid_argument("unknown kernel choice '" + choice + "' (expected auto, scalar, avx2 or avx512)");
}

}  // namespace fq
