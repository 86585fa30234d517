// The integer arithmetic of ShiftConv (docs/SHIFTCONV.md, "Integer mode"), run by
// ShiftConvKernel for a node with act_bits: plans, threading and the integer kernels
// (int_mode.h). The node frame (node_frame.h) has already checked the attributes, decoded the
// weight and checked the bias and the empty input.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "format/decode.h"
#include "kernels/kernels.h"
#include "op/node_frame.h"
#include "op/ort_api.h"
#include "plan/conv_geometry.h"
#include "plan/int_mode.h"

namespace fq {

// The integer-mode attributes as found on the node (presence and value, unvalidated).
struct IntModeAttrs {
  bool has_bits = false, has_scale = false, has_signed = false;
  int64_t bits = 0, scale_log2 = 0, is_signed = 0;

  // Reads them from the node; throws std::invalid_argument for one that is not an integer.
  static IntModeAttrs read(const OrtKernelInfo* info);
};

class IntShiftConv {
 public:
  // Validates the attributes and builds the integer weights (bound included); throws
  // std::invalid_argument with a message for the node's error.
  IntShiftConv(const NodeFrame& frame, const DecodedWeight& dw, const IntModeAttrs& act,
               const KernelTable* float_kernels);
  IntShiftConv(const IntShiftConv&) = delete;
  IntShiftConv& operator=(const IntShiftConv&) = delete;
  // X non-empty.
  void compute(Ort::KernelContext& ctx, const Ort::ConstValue& xv, const std::vector<int64_t>& x_shape,
               const float* bias);

 private:
  std::shared_ptr<const Plan> plan_for(const std::vector<int64_t>& x_shape);
  void compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias);

  const NodeFrame& frame_;
  ActQuant act_;
  IntWeight w_;
  const KernelTable* float_kernels_;  // for pack_input's row deinterleave
  const IntKernelTable* kernels_;
  // Depthwise convs (one input channel per output channel) run plane by plane straight from X
  // (FQ_ONNX_DEPTHWISE=0 sends them through the packed path): per tap its row and column offset.
  bool depthwise_ = false;
  std::vector<int32_t> tap_dy_, tap_dx_;
  PlanCache plans_;
};

}  // namespace fq
