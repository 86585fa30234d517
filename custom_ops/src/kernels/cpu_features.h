// Which microkernel table to use: CPU detection plus an explicit choice for tests/benchmarks.
#pragma once
#include <string>

#include "kernels/kernels.h"

namespace fq {

// "auto" picks the best the CPU supports; "scalar", "avx2", "avx512" force one (an ISA the
// CPU lacks is an error, never an illegal instruction). Throws std::invalid_argument.
const KernelTable* select_kernels(const std::string& choice);

// The NCHWc block size onnxruntime's MLAS picks on this CPU by the same rule (platform.cpp:
// AVX-512F with OS support 16, AVX2+FMA 8), 0 where MLAS has no NCHWc kernels. A prediction
// only: ort_delegate.cc checks it against the running onnxruntime before relying on it.
int nchwc_block_guess();

}  // namespace fq
