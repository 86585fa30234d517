#include "op/int_op.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "plan/execute.h"

namespace fq {
namespace {

// The scratch buffers of ScratchLease: packed floats, and quantized input (packed, or one
// depthwise plane).
struct PackTag;
struct QuantizedTag;

}  // namespace

IntModeAttrs IntModeAttrs::read(const OrtKernelInfo* info) {
  auto int_attr = [&](const char* key, int64_t* value) {
    if (attr_int(info, key, value)) return true;
    float f = 0;
    std::string text;
    if (attr_float(info, key, &f) || attr_string(info, key, &text)) {
      throw std::invalid_argument(std::string(key) + " must be an integer attribute");
    }
    return false;
  };
  IntModeAttrs a;
  a.has_bits = int_attr("act_bits", &a.bits);
  if (a.has_bits) {
    a.has_scale = int_attr("act_scale_log2", &a.scale_log2);
    a.has_signed = int_attr("act_signed", &a.is_signed);
  }
  return a;
}

IntShiftConv::IntShiftConv(const NodeFrame& frame, const DecodedWeight& dw, const IntModeAttrs& act,
                           const KernelTable* float_kernels)
    : frame_(frame), float_kernels_(float_kernels) {
  act_ = make_act_quant(act.has_bits, act.bits, act.has_scale, act.scale_log2, act.has_signed, act.is_signed);
  w_ = build_int_weight(dw, frame_.M, frame_.Cg, frame_.kh, frame_.kw, frame_.group, act_);
  kernels_ = select_int_kernels(float_kernels_);
  depthwise_ = !frame_.dense && frame_.Cg == 1 && frame_.group == frame_.M &&
               frame_.tuning.depthwise != DepthwiseChoice::kOff;
  if (depthwise_) depthwise_tap_offsets(w_.layout.taps, frame_.wshape, &tap_dy_, &tap_dx_);
}

std::shared_ptr<const Plan> IntShiftConv::plan_for(const std::vector<int64_t>& x_shape) {
  return plans_.get(x_shape, [&] {
    // No input-channel chunks (the sums of a tile stay in registers over the whole row).
    const int64_t no_chunks = std::numeric_limits<int64_t>::max() / 4;
    Plan plan = frame_.dense ? make_dense_plan(w_.layout, x_shape, kernels_->lanes, kernels_->max_vectors, no_chunks)
                             : make_conv_plan(w_.layout, frame_.attrs, frame_.wshape, x_shape, kernels_->lanes,
                                              kernels_->max_vectors, no_chunks, frame_.tuning.plane_pad);
    if (plan.tile % kernels_->lanes != 0 || plan.tile / kernels_->lanes > kernels_->max_vectors) {
      throw std::logic_error("integer mode: a tile of " + std::to_string(plan.tile) + " does not fit the " +
                             kernels_->name + " kernels");
    }
    return plan;
  });
}

void IntShiftConv::compute(Ort::KernelContext& ctx, const Ort::ConstValue& xv, const std::vector<int64_t>& x_shape,
                           const float* bias) {
  const int64_t M = w_.layout.M;
  if (depthwise_) {
    compute_depthwise(ctx, x_shape, bias);
    return;
  }
  const std::shared_ptr<const Plan> plan = plan_for(x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, plan->out_shape);
  float* y = yv.GetTensorMutableData<float>();
  ScratchLease<float, PackTag> packed_lease(size_t(plan->packed_floats));
  ScratchLease<int32_t, QuantizedTag> q_lease(size_t(plan->packed_floats));
  const float* x = xv.GetTensorData<float>();
  float* packed = packed_lease.get();
  int32_t* q = q_lease.get();
  zero_packed_tail(*plan, packed);
  zero_int_tail(*plan, q);
  // Packs and quantizes input channels [c0, c1).
  auto prep = [&](int64_t c0, int64_t c1) {
    pack_input(*plan, x, packed, c0, c1, float_kernels_);
    quantize_packed(*plan, *kernels_, act_, packed, q, c0, c1);
  };
  if (plan->C * plan->channel_stride < kInlinePackFloats) {
    prep(0, plan->C);
  } else {
    parallel_blocks(ctx, plan->C, kPackTasks, prep);
  }

  const double work = double(w_.layout.stored_taps) * double(plan->tiles) * double(plan->tile / kernels_->lanes);
  const bool inline_run = work < kInlineWork;
  const TaskGrid grid = make_task_grid(*plan, M, inline_run ? 1 : kTargetTasks);  // tasks over output rows
  const IntEpilogue ep{bias, frame_.act_lo, frame_.act_hi};
  run_tasks(inline_run ? nullptr : &ctx, grid.count(),
            [&](int64_t t) { run_int_task(*plan, w_, *kernels_, grid, t, q, ep, y); });
}

void IntShiftConv::compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias) {
  const ConvShape cs = conv_shape(frame_.attrs, frame_.wshape, x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, frame_.conv_out_shape(cs));
  float* y = yv.GetTensorMutableData<float>();
  const float* x = ctx.GetInput(0).GetTensorData<float>();
  const ConvWeightShape& ws = frame_.wshape;
  const int64_t M = w_.layout.M, plane = cs.H * cs.W;
  // The quantized plane, with margins so that every pointer the kernel forms (a padded
  // column's start, a row's end) stays inside the buffer.
  const int64_t before = cs.pad_left + 1;
  const int64_t after = cs.OW * ws.sw + ws.kw * ws.dw + kernels_->lanes;
  auto run = [&](int64_t b, int64_t e) {  // planes [b, e) of all N * M
    ScratchLease<int32_t, QuantizedTag> buf(size_t(before + plane + after));
    int32_t* q = buf.get() + before;
    for (int64_t i = b; i < e; ++i) {
      const int64_t m = i % M;
      const uint32_t g0 = w_.row_terms[size_t(m)], g1 = w_.row_terms[size_t(m) + 1];
      if (g1 > g0) kernels_->quantize(x + i * plane, q, size_t(plane), act_.inv_scale, float(act_.qmin), float(act_.qmax));
      IntDepthwiseArgs a{q, y + i * cs.OH * cs.OW, cs.H, cs.W, cs.OH, cs.OW, ws.sh, ws.sw, cs.pad_top, cs.pad_left,
                         tap_dy_.data(), tap_dx_.data(), w_.terms.data() + g0, g1 - g0, w_.out_scale[size_t(m)],
                         bias ? bias[m] : 0.0f, frame_.act_lo, frame_.act_hi};
      kernels_->depthwise(a);
    }
  };
  const int64_t planes = cs.N * M;
  const double work = double(planes) * double(cs.OH) * double((cs.OW + kernels_->lanes - 1) / kernels_->lanes);
  if (work < kInlineWork) {
    run(0, planes);
    return;
  }
  parallel_blocks(ctx, planes, kTargetTasks, run);
}

}  // namespace fq
