// Which microkernel table to use: CPU detection plus an explicit choice for tests/benchmarks.
#pragma once
#include <string>

#include "kernels.h"

namespace fq {

// "auto" picks the best the CPU supports; "scalar", "avx2", "avx512" force one (an ISA the
// CPU lacks is an error, never an illegal instruction). Throws std::invalid_argument.
const KernelTable* select_kernels(const std::string& choice);

// The choice from the environment variable FQ_ONNX_KERNEL, or "auto".
std::string kernel_choice_from_env();

}  // namespace fq
