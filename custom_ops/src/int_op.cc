#include "int_op.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "execute.h"

namespace fq {
namespace {

// The scratch buffers of ScratchLease: packed floats, and quantized input (packed, or one
// depthwise plane).
struct PackTag;
struct QuantizedTag;

struct PrepJob {
  const Plan* plan;
  const KernelTable* fk;
  const IntKernelTable* ik;
  const ActQuant* act;
  const float* x;
  float* packed;
  int32_t* q;
  int64_t per_task;
};

struct IntJob {
  const Plan* plan;
  const IntWeight* w;
  const IntKernelTable* kt;
  TaskGrid grid;
  const int32_t* q;
  IntEpilogue ep;
  float* y;
};

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
  PrepJob prep{plan.get(), float_kernels_, kernels_, &act_, xv.GetTensorData<float>(), packed_lease.get(),
               q_lease.get(), plan->C};
  zero_packed_tail(*plan, prep.packed);
  zero_int_tail(*plan, prep.q);
  auto run_prep = [](void* data, size_t i) {
    const PrepJob& j = *static_cast<const PrepJob*>(data);
    const int64_t c0 = int64_t(i) * j.per_task, c1 = std::min(j.plan->C, c0 + j.per_task);
    pack_input(*j.plan, j.x, j.packed, c0, c1, j.fk);
    quantize_packed(*j.plan, *j.ik, *j.act, j.packed, j.q, c0, c1);
  };
  if (plan->C * plan->channel_stride < kInlinePackFloats) {
    run_prep(&prep, 0);
  } else {
    const int64_t tasks = std::min<int64_t>(plan->C, 16);
    prep.per_task = (plan->C + tasks - 1) / tasks;
    ctx.ParallelFor(run_prep, size_t((plan->C + prep.per_task - 1) / prep.per_task), 0, &prep);
  }

  const double work = double(w_.layout.stored_taps) * double(plan->tiles) * double(plan->tile / kernels_->lanes);
  const bool inline_run = work < kInlineWork;
  IntJob job{plan.get(), &w_, kernels_, make_int_task_grid(*plan, M, inline_run ? 1 : kTargetTasks), prep.q,
             IntEpilogue{bias, frame_.act_lo, frame_.act_hi}, y};
  if (inline_run) {
    for (int64_t t = 0; t < job.grid.count(); ++t) run_int_task(*job.plan, *job.w, *job.kt, job.grid, t, job.q, job.ep, job.y);
  } else {
    ctx.ParallelFor(
        [](void* data, size_t i) {
          const IntJob& j = *static_cast<const IntJob*>(data);
          run_int_task(*j.plan, *j.w, *j.kt, j.grid, int64_t(i), j.q, j.ep, j.y);
        },
        size_t(job.grid.count()), 0, &job);
  }
}

namespace {

struct IntDepthwiseJob {
  const IntWeight* w;
  const IntKernelTable* kt;
  const ActQuant* act;
  const int32_t* dy;
  const int32_t* dx;
  const float* x;
  float* y;
  const float* bias;
  ConvShape cs;
  int64_t sh, sw, M, per_task, before, after;
  float lo, hi;
  void run(int64_t task) const {
    const int64_t planes = cs.N * M, plane = cs.H * cs.W;
    // The quantized plane, with margins so that every pointer the kernel forms (a padded
    // column's start, a row's end) stays inside the buffer.
    ScratchLease<int32_t, QuantizedTag> buf(size_t(before + plane + after));
    int32_t* q = buf.get() + before;
    for (int64_t i = task * per_task; i < std::min(planes, (task + 1) * per_task); ++i) {
      const int64_t m = i % M;
      const uint32_t g0 = w->row_terms[size_t(m)], g1 = w->row_terms[size_t(m) + 1];
      if (g1 > g0) kt->quantize(x + i * plane, q, size_t(plane), act->inv_scale, float(act->qmin), float(act->qmax));
      IntDepthwiseArgs a{q, y + i * cs.OH * cs.OW, cs.H, cs.W, cs.OH, cs.OW, sh, sw, cs.pad_top, cs.pad_left, dy, dx,
                         w->terms.data() + g0, g1 - g0, w->out_scale[size_t(m)], bias ? bias[m] : 0.0f, lo, hi};
      kt->depthwise(a);
    }
  }
};

}  // namespace

void IntShiftConv::compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, const float* bias) {
  const ConvShape cs = conv_shape(frame_.attrs, frame_.wshape, x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, frame_.conv_out_shape(cs));
  const int64_t before = cs.pad_left + 1;
  const int64_t after = cs.OW * frame_.wshape.sw + frame_.wshape.kw * frame_.wshape.dw + kernels_->lanes;
  IntDepthwiseJob job{&w_, kernels_, &act_, tap_dy_.data(), tap_dx_.data(), ctx.GetInput(0).GetTensorData<float>(),
                      yv.GetTensorMutableData<float>(), bias, cs, frame_.wshape.sh, frame_.wshape.sw, w_.layout.M, 1, before, after,
                      frame_.act_lo, frame_.act_hi};
  const int64_t planes = cs.N * w_.layout.M;
  const double work = double(planes) * double(cs.OH) * double((cs.OW + kernels_->lanes - 1) / kernels_->lanes);
  if (work < kInlineWork) {
    job.per_task = std::max<int64_t>(1, planes);
    job.run(0);
    return;
  }
  job.per_task = std::max<int64_t>(1, (planes + kTargetTasks - 1) / kTargetTasks);
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const IntDepthwiseJob*>(data)->run(int64_t(i)); },
                  size_t((planes + job.per_task - 1) / job.per_task), 0, &job);
}

}  // namespace fq
