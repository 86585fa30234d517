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

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// A growable buffer aligned to a cache line, one per thread and element type, reused across
// runs. `busy` makes a nested use on the same thread take its own allocation.
template <class T>
class Lease {
 public:
  explicit Lease(size_t n) {
    thread_local Slot tls;
    Slot* s = tls.busy ? &own_ : &tls;
    if (s == &tls) {
      owner_ = &tls;
      tls.busy = true;
    }
    if (n > s->size) {
      s->ptr.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t(64))));
      s->size = n;
    }
    ptr_ = s->ptr.get();
  }
  ~Lease() {
    if (owner_) owner_->busy = false;
  }
  T* get() { return ptr_; }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  struct Slot {
    std::unique_ptr<T, Free> ptr;
    size_t size = 0;
    bool busy = false;
  };
  Slot own_;
  Slot* owner_ = nullptr;
  T* ptr_ = nullptr;
};

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

constexpr int64_t kTargetTasks = 32;
// Below these sizes one thread is faster than a round trip through the pool (as the float path).
constexpr int64_t kInlinePackFloats = 64 * 1024;
constexpr double kInlineWork = 16 * 1024;

}  // namespace

IntShiftConv::IntShiftConv(const DecodedWeight& dw, bool dense, const ConvAttrs& attrs, const ConvWeightShape& wshape,
                           const IntModeAttrs& act, const KernelTable* float_kernels, std::vector<float> bias,
                           bool bias_at_run, float act_lo, float act_hi)
    : dense_(dense),
      attrs_(attrs),
      wshape_(wshape),
      float_kernels_(float_kernels),
      bias_(std::move(bias)),
      bias_at_run_(bias_at_run),
      act_lo_(act_lo),
      act_hi_(act_hi) {
  act_ = make_act_quant(act.has_bits, act.bits, act.has_scale, act.scale_log2, act.has_signed, act.is_signed);
  int64_t M, Cg, kh = 1, kw = 1, group = 1;
  if (dense_) {
    if (dw.dims.size() != 2) throw std::invalid_argument("a dense weight must have rank 2");
    M = dw.dims[0];
    Cg = dw.dims[1];
  } else {
    M = wshape_.M;
    Cg = wshape_.Cg;
    kh = wshape_.kh;
    kw = wshape_.kw;
    group = wshape_.group;
  }
  w_ = build_int_weight(dw, M, Cg, kh, kw, group, act_);
  kernels_ = select_int_kernels(float_kernels_);
  const char* dwenv = std::getenv("FQ_ONNX_DEPTHWISE");
  depthwise_ = !dense_ && Cg == 1 && group == M && !(dwenv && std::string(dwenv) == "0");
  if (depthwise_) {
    tap_dy_.resize(w_.layout.taps.size());
    tap_dx_.resize(w_.layout.taps.size());
    for (size_t t = 0; t < w_.layout.taps.size(); ++t) {  // Cg = 1: a tap is ky * kw + kx
      tap_dy_[t] = int32_t(int64_t(w_.layout.taps[t]) / kw * wshape_.dh);
      tap_dx_[t] = int32_t(int64_t(w_.layout.taps[t]) % kw * wshape_.dw);
    }
  }
}

std::shared_ptr<const Plan> IntShiftConv::plan_for(const std::vector<int64_t>& x_shape) {
  {
    std::lock_guard<std::mutex> lock(plans_mutex_);
    for (auto& entry : plans_) {
      if (entry.first == x_shape) return entry.second;
    }
  }
  // No input-channel chunks (the sums of a tile stay in registers over the whole row).
  const int64_t no_chunks = std::numeric_limits<int64_t>::max() / 4;
  auto plan = std::make_shared<const Plan>(
      dense_ ? make_dense_plan(w_.layout, x_shape, kernels_->lanes, kernels_->max_vectors, no_chunks)
             : make_conv_plan(w_.layout, attrs_, wshape_, x_shape, kernels_->lanes, kernels_->max_vectors, no_chunks));
  if (plan->tile % kernels_->lanes != 0 || plan->tile / kernels_->lanes > kernels_->max_vectors) {
    throw std::logic_error("integer mode: a tile of " + std::to_string(plan->tile) + " does not fit the " +
                           kernels_->name + " kernels");
  }
  std::lock_guard<std::mutex> lock(plans_mutex_);
  if (plans_.size() >= 8) plans_.erase(plans_.begin());
  plans_.emplace_back(x_shape, plan);
  return plan;
}

void IntShiftConv::compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  Ort::ConstValue xv = ctx.GetInput(0);
  const std::vector<int64_t> x_shape = xv.GetTensorTypeAndShapeInfo().GetShape();
  const int64_t M = w_.layout.M;

  const float* bias = bias_.empty() ? nullptr : bias_.data();
  if (bias_at_run_) {
    Ort::ConstValue bv = ctx.GetInput(2);
    if (bv != nullptr) {
      auto bt = bv.GetTensorTypeAndShapeInfo();
      if (bt.GetShape().size() != 1 || int64_t(bt.GetElementCount()) != M) {
        throw std::invalid_argument("bias B has shape " + shape_str(bt.GetShape()) + ", expected [" +
                                    std::to_string(M) + "]");
      }
      bias = bv.GetTensorData<float>();
    }
  }

  int64_t elements = 1;
  for (int64_t d : x_shape) elements *= d;
  if (elements == 0) {  // empty in, empty out (shape checked as in float mode)
    std::vector<int64_t> out_shape;
    if (dense_) {
      if (x_shape.empty() || x_shape.back() != w_.layout.Cg) {
        throw std::invalid_argument("input X " + shape_str(x_shape) + " does not end in K = " +
                                    std::to_string(w_.layout.Cg));
      }
      out_shape.assign(x_shape.begin(), x_shape.end() - 1);
      out_shape.push_back(M);
    } else {
      if (x_shape.size() != size_t(wshape_.spatial) + 2 || x_shape[0] != 0) {
        throw std::invalid_argument("input X " + shape_str(x_shape) + " has an empty spatial or channel axis");
      }
      std::vector<int64_t> probe = x_shape;
      probe[0] = 1;
      const ConvShape cs = conv_shape(attrs_, wshape_, probe);
      out_shape = {0, M};
      if (wshape_.spatial == 2) out_shape.push_back(cs.OH);
      out_shape.push_back(cs.OW);
    }
    ctx.GetOutput(0, out_shape);
    return;
  }

  if (depthwise_) {
    compute_depthwise(ctx, x_shape, bias);
    return;
  }
  const std::shared_ptr<const Plan> plan = plan_for(x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, plan->out_shape);
  float* y = yv.GetTensorMutableData<float>();
  Lease<float> packed_lease(size_t(plan->packed_floats));
  Lease<int32_t> q_lease(size_t(plan->packed_floats));
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
             IntEpilogue{bias, act_lo_, act_hi_}, y};
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
    Lease<int32_t> buf(size_t(before + plane + after));
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
  const ConvShape cs = conv_shape(attrs_, wshape_, x_shape);
  std::vector<int64_t> out_shape = {cs.N, w_.layout.M};
  if (wshape_.spatial == 2) out_shape.push_back(cs.OH);
  out_shape.push_back(cs.OW);
  Ort::UnownedValue yv = ctx.GetOutput(0, out_shape);
  const int64_t before = cs.pad_left + 1;
  const int64_t after = cs.OW * wshape_.sw + wshape_.kw * wshape_.dw + kernels_->lanes;
  IntDepthwiseJob job{&w_, kernels_, &act_, tap_dy_.data(), tap_dx_.data(), ctx.GetInput(0).GetTensorData<float>(),
                      yv.GetTensorMutableData<float>(), bias, cs, wshape_.sh, wshape_.sw, w_.layout.M, 1, before, after,
                      act_lo_, act_hi_};
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
