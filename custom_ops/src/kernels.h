// The microkernel interface shared by the per-ISA translation units. Kept to plain C types on
// purpose: kernel_avx2.cc / kernel_avx512.cc are compiled with AVX flags, and any inline function
// or template they shared with the rest of the library could be emitted there with AVX
// instructions and then picked by the linker for callers on CPUs without AVX.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fq {

// Accumulates one sub-tile of V vectors of output pixels for a group of g output channels that
// share the same input taps:
//   acc[j * acc_stride + i] (+)= sum_t w[t * g + j] * in[off[t] + i],  0 <= i < V * lanes
// The sums stay in registers for the whole tap list; `accumulate` = 0 starts from zero,
// otherwise from the values already in acc (input-channel chunks after the first).
using TileFn = void (*)(const float* in, const int32_t* off, const float* w, size_t n, float* acc,
                        size_t acc_stride, int accumulate);

struct KernelTable {
  const char* name;   // "scalar", "avx2", "avx512"
  int lanes;          // floats per vector register
  int max_vectors;    // vectors in the widest tile (the tile size is max_vectors * lanes)
  // fn[log2 g][log2 V] for g in {1, 2, 4, 8} and V in {1, 2, 4, 8, 16}; null where g * V
  // accumulators would not fit the register file (the driver then uses a smaller V).
  TileFn fn[4][5];
};

const KernelTable* kernels_scalar();
#if defined(FQ_ONNX_HAVE_X86_SIMD)
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
#endif

}  // namespace fq
