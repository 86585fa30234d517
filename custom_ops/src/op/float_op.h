// The float arithmetic of ShiftConv (docs/SHIFTCONV.md): which path runs a node (our sparse
// kernel, the packed dense GEMM or onnxruntime's own kernel; dense_path.h), and per run the
// plans, the threading over onnxruntime's intra-op pool and the kernels (execute.h). The node
// frame (node_frame.h) has already checked the attributes, decoded the weight and checked the
// bias and the empty input.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dense/ort_delegate.h"
#include "dense/packed_gemm.h"
#include "kernels/kernels.h"
#include "op/node_frame.h"
#include "op/ort_api.h"
#include "plan/conv_geometry.h"
#include "plan/execute.h"
#include "plan/plan.h"

namespace fq {

class FloatShiftConv {
 public:
  // Chooses the path and sets it up. dense_choice: dense_path.h's mode name ("" = the frame's
  // FQ_ONNX_DENSE or auto). threads: the session's intra-op threads (0: unknown).
  FloatShiftConv(const NodeFrame& frame, const OrtKernelInfo* info, const DecodedWeight& dw, const KernelTable* kernels,
                 const std::string& dense_choice, int64_t threads);
  FloatShiftConv(const FloatShiftConv&) = delete;
  FloatShiftConv& operator=(const FloatShiftConv&) = delete;
  // X non-empty.
  void compute(Ort::KernelContext& ctx, const Ort::ConstValue& xv, const std::vector<int64_t>& x_shape,
               const RunBias& bias);

 private:
  std::shared_ptr<const Plan> plan_for(const std::vector<int64_t>& x_shape);
  int64_t images_per_run(const Plan& p) const;
  // Packs X for `plan` and runs every tile task (Y for the plan's images), over the intra-op
  // pool, or all on this thread when ctx is null.
  void run_plan(Ort::KernelContext* ctx, const Plan& plan, const float* x, float* y, const float* bias);
  // run_plan with more than one thread: a task per thread packs and computes a run of tiles, or
  // of row groups.
  void run_per_thread(Ort::KernelContext& ctx, const Plan& plan, const TaskGrid& grid, const float* x, float* y,
                      const Epilogue& epilogue);
  // Dense kind: Y from `rows` rows of X by the packed GEMM (packed) or sparse_matvec.
  void compute_rows(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, int64_t rows, const float* bias,
                    bool packed);
  void compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias);
  bool small_depthwise_ok(const ConvShape& cs) const;
  bool run_small_depthwise(Ort::KernelContext& ctx, const ConvShape& cs, const float* bias, float* y);

  const NodeFrame& frame_;
  SparseWeight weight_;
  const KernelTable* kernels_ = nullptr;
  int max_vectors_ = 8;  // widest tile in vectors (FQ_ONNX_TILE_VECTORS)
  // Threads the sub-batch and tile splits plan for: the session's (fq_onnx.threads), else the
  // CPUs the process may use; FQ_ONNX_THREADS overrides both (tests).
  int64_t threads_ = 1;
  // With several threads: run_per_thread's row-group runs, one per thread (cut_groups).
  std::vector<size_t> group_cut_;
  // Depthwise convs (one input channel per output channel) run straight from X, unpacked:
  // per tap of weight_.taps its row and column offset (depthwise_tap_offsets).
  bool depthwise_ = false;
  std::vector<int32_t> tap_dy_, tap_dx_;
  std::vector<uint32_t> tap_ptr_;  // depthwise: channel m's taps are [tap_ptr_[m], tap_ptr_[m + 1])
  // A layer too dense for our kernel runs in onnxruntime's own (dense_path.h); weight_ then
  // keeps only its shape, unless both are kept and chosen per input shape.
  std::unique_ptr<OrtDelegate> delegate_;
  bool choose_per_shape_ = false;  // both paths kept (depthwise, dense kind): picked per input shape
  // Dense kind too dense for the sparse kernels: the packed small-M GEMM (packed_gemm.h).
  std::unique_ptr<PackedGemm> packed_;
  PlanCache plans_;
};

}  // namespace fq
