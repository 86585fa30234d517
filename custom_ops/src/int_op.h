// onnxruntime glue of ShiftConv's integer mode (docs/SHIFTCONV.md, "Integer mode"): created by
// ShiftConvKernel when the node has act_bits, and then runs every Compute of that node.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "conv_geometry.h"
#include "decode.h"
#include "int_mode.h"
#include "kernels.h"
#include "ort_api.h"

namespace fq {

// The integer-mode attributes as found on the node (presence and value, unvalidated).
struct IntModeAttrs {
  bool has_bits = false, has_scale = false, has_signed = false;
  int64_t bits = 0, scale_log2 = 0, is_signed = 0;
};

class IntShiftConv {
 public:
  // Validates the attributes and builds the integer weights (bound included); throws
  // std::invalid_argument with a message for the node's error.
  IntShiftConv(const DecodedWeight& dw, bool dense, const ConvAttrs& attrs, const ConvWeightShape& wshape,
               const IntModeAttrs& act, const KernelTable* float_kernels, std::vector<float> bias, bool bias_at_run,
               float act_lo, float act_hi);
  void compute(OrtKernelContext* context);

 private:
  std::shared_ptr<const Plan> plan_for(const std::vector<int64_t>& x_shape);
  void compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias);

  bool dense_;
  ConvAttrs attrs_;
  ConvWeightShape wshape_;
  ActQuant act_;
  IntWeight w_;
  const KernelTable* float_kernels_;  // for pack_input's row deinterleave
  const IntKernelTable* kernels_;
  std::vector<float> bias_;
  bool bias_at_run_;
  float act_lo_, act_hi_;
  // Depthwise convs (one input channel per output channel) run plane by plane straight from X
  // (FQ_ONNX_DEPTHWISE=0 sends them through the packed path): per tap its row and column offset.
  bool depthwise_ = false;
  std::vector<int32_t> tap_dy_, tap_dx_;
  std::mutex plans_mutex_;  // guards plans_ only; a Plan is immutable once published
  std::vector<std::pair<std::vector<int64_t>, std::shared_ptr<const Plan>>> plans_;
};

}  // namespace fq
