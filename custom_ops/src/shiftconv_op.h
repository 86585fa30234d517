// The fq_onnx.ShiftConv custom op (docs/SHIFTCONV.md): onnxruntime glue around the decoder
// (decode.h), the planner (plan.h) and the kernels (execute.h).
#pragma once
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "conv_geometry.h"
#include "execute.h"
#include "kernels.h"
#include "ort_api.h"
#include "ort_delegate.h"
#include "packed_gemm.h"
#include "plan.h"

namespace fq {

class IntShiftConv;  // int_op.h: integer mode, when the node has act_bits

class ShiftConvKernel {
 public:
  // Decodes and validates the weight once. Throws std::exception with a message naming the node.
  // dense_choice: dense_path.h's mode name ("" = FQ_ONNX_DENSE or auto).
  // threads: the session's intra-op threads (0: unknown).
  ShiftConvKernel(const OrtKernelInfo* info, const std::string& kernel_choice, const std::string& dense_choice,
                  int64_t threads = 0);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);
  std::shared_ptr<const Plan> plan_for(const std::vector<int64_t>& x_shape);

  std::string name_;
  bool dense_ = false;
  float act_lo_ = -std::numeric_limits<float>::infinity();  // activation as a clamp
  float act_hi_ = std::numeric_limits<float>::infinity();
  ConvAttrs attrs_;
  ConvWeightShape wshape_;
  SparseWeight weight_;
  std::vector<float> bias_;      // constant bias, or empty
  bool bias_at_run_ = false;     // bias is an input that is not a constant initializer
  const KernelTable* kernels_ = nullptr;
  int64_t chunk_bytes_ = 32 * 1024;
  int max_vectors_ = 8;  // widest tile in vectors (FQ_ONNX_TILE_VECTORS)
  // Images per pack-and-compute run (FQ_ONNX_SUB_BATCH: 0 the whole batch, n > 0 n images);
  // -1: the rule in images_per_run.
  int64_t sub_batch_ = -1;
  // Threads the sub-batch and tile splits plan for: the session's (fq_onnx.threads), else the
  // CPUs the process may use; FQ_ONNX_THREADS overrides both (tests).
  int64_t threads_ = 1;
  // Convs of fewer FMA-vectors run on the calling thread (FQ_ONNX_INLINE_WORK overrides it, for
  // tests: 0 sends every conv through the pool).
  double inline_work_ = 0;
  // run_per_thread's split (FQ_ONNX_THREAD_SPLIT, for tests): 't' tiles where there are enough,
  // 'r' row groups, else the rule.
  char thread_split_ = 'a';
  // With several threads: run_per_thread's row-group runs, one per thread (cut_groups).
  std::vector<size_t> group_cut_;
  // Depthwise convs (one input channel per output channel) run straight from X, unpacked:
  // per tap of weight_.taps its row and column offset (ky * dh, kx * dw).
  bool depthwise_ = false;
  // Dense kind: inputs of at most this many rows use sparse_matvec (FQ_ONNX_MATVEC_ROWS).
  int matvec_rows_ = 2;
  bool flat_depthwise_ = true;         // FQ_ONNX_DEPTHWISE=rows: always the per-row kernel
  bool force_flat_depthwise_ = false;  // FQ_ONNX_DEPTHWISE=flat: flat kernel on long rows too
  std::vector<int32_t> tap_dy_, tap_dx_;
  std::vector<uint32_t> tap_ptr_;  // depthwise: channel m's taps are [tap_ptr_[m], tap_ptr_[m + 1])
  int small_depthwise_ = 1;        // 0: FQ_ONNX_DEPTHWISE=rows/flat/0 (the other kernels only)
  bool small_depthwise_ok(const ConvShape& cs) const;
  bool run_small_depthwise(Ort::KernelContext& ctx, const ConvShape& cs, const float* bias, float* y);
  // A layer too dense for our kernel runs in onnxruntime's own (dense_path.h); weight_ then
  // keeps only its shape, unless both are kept and chosen per input shape.
  std::unique_ptr<OrtDelegate> delegate_;
  bool choose_per_shape_ = false;  // both paths kept (depthwise, dense kind): picked per input shape
  // Dense kind too dense for the sparse kernels: the packed small-M GEMM (packed_gemm.h).
  std::unique_ptr<PackedGemm> packed_;
  int64_t images_per_run(const Plan& p) const;
  // Packs X for `plan` and runs every tile task (Y for the plan's images), over the intra-op
  // pool, or all on this thread when ctx is null.
  void run_plan(Ort::KernelContext* ctx, const Plan& plan, const float* x, float* y, const float* bias);
  // run_plan with more than one thread: a task per thread packs and computes a run of tiles, or
  // of row groups.
  void run_per_thread(Ort::KernelContext& ctx, const Plan& plan, const TaskGrid& grid, const float* x, float* y,
                    const Epilogue& epilogue);
  void compute_packed(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, int64_t rows, const float* bias);
  void compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias);

  std::shared_ptr<IntShiftConv> int_;  // set: every Compute runs in integer mode

  std::mutex plans_mutex_;  // guards plans_ only; a Plan is immutable once published
  std::vector<std::pair<std::vector<int64_t>, std::shared_ptr<const Plan>>> plans_;
};

struct ShiftConvOp : Ort::CustomOpBase<ShiftConvOp, ShiftConvKernel, /*WithStatus=*/true> {
  // kernel_choice: "" (use FQ_ONNX_KERNEL or auto), "auto", "scalar", "avx2", "avx512".
  // dense_choice: "" (use FQ_ONNX_DENSE or auto), "auto", "own", "ort", "nchw", "nchwc".
  // threads: the session's intra-op threads (register.cc: fq_onnx.threads; 0 = unknown).
  ShiftConvOp(std::string kernel_choice, std::string dense_choice, int64_t threads = 0);

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const;
  const char* GetName() const { return "ShiftConv"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  std::string kernel_choice_;
  std::string dense_choice_;
  int64_t threads_ = 0;
};

}  // namespace fq
