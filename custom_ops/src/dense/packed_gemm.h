// Dense-kind layers (Gemm / MatMul) too dense for the sparse kernels, at few rows of X: the
// weight decoded once into column panels for the small-M GEMM microkernel (kernels.h: GemmFn).
//
// Why our own: onnxruntime's MatMul called through OrtApi::CreateOp never gets a prepacked
// weight (1.3-1.7x slower per call than the session's own Gemm from 2 rows on), and the sparse
// tile kernel is weight-stationary over a pixel axis of only `rows` entries. Here the weight
// streams once per call through registers holding up to gemm_mr rows x gemm_nr outputs.
#pragma once
#include <cstdint>

#include "format/decode.h"
#include "kernels/kernels.h"
#include "plan/execute.h"

namespace fq {

class PackedGemm {
 public:
  // W [M, K] (row m = output feature m) into panels [M / nr][K][nr], nr = kt.gemm_nr, zero
  // padded past M. Levels are DecodedWeight::level, bit-exact with fmt.dequantize. Throws
  // std::invalid_argument if w is not M x K, std::bad_alloc.
  PackedGemm(const DecodedWeight& w, int64_t M, int64_t K, const KernelTable& kt);

  int64_t panels() const { return panels_; }
  // FMA-vectors of a call with `rows` rows (to decide whether threads pay).
  double work(int64_t rows) const { return double(rows) * double(K_) * double(panels_) * double(nr_ / kt_->lanes); }

  // Y[r][m] = clamp(bias[m] + sum_k X[r][k] W[m][k]) for r < rows and the outputs of panels
  // [p_begin, p_end). X is [rows][K], Y [rows][M]; reentrant.
  void run(const float* x, int64_t rows, int64_t p_begin, int64_t p_end, const Epilogue& ep, float* y) const;

 private:
  const KernelTable* kt_;
  int64_t M_, K_, nr_, panels_, k_block_ = 0;
  AlignedFloats data_;
};

}  // namespace fq
