// What every ShiftConv node holds and does, whatever its arithmetic (docs/SHIFTCONV.md): its
// attributes and fused activation, the compressed weight decoded once, the bias (a constant
// initializer or a runtime input, both through one finiteness check), the settings (Tuning),
// and per run the input and output shapes, the output of an empty input and the errors.
// FloatShiftConv (float_op.h) and IntShiftConv (int_op.h) keep only their arithmetic;
// ShiftConvKernel (shiftconv_op.h) composes this frame with one of them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "format/decode.h"
#include "op/ort_api.h"
#include "plan/conv_geometry.h"
#include "tuning.h"

namespace fq {

// Optional attributes through the C API: false when the node lacks the attribute.
bool attr_string(const OrtKernelInfo* info, const char* name, std::string* out);
bool attr_float(const OrtKernelInfo* info, const char* name, float* out);
bool attr_int(const OrtKernelInfo* info, const char* name, int64_t* out);
std::vector<int64_t> attr_ints(const OrtKernelInfo* info, const char* name);

std::string shape_str(const std::vector<int64_t>& v);

// The bias of one run: its floats (null: none), and its tensor when it is a runtime input (for
// onnxruntime's kernels, ort_delegate.h), else null.
struct RunBias {
  const float* data = nullptr;
  const OrtValue* value = nullptr;
};

struct NodeFrame {
  std::string name;
  bool dense = false;  // kind "dense" (X [..., K] -> Y [..., M]), else "conv"
  float act_lo = -std::numeric_limits<float>::infinity();  // the fused activation as a clamp
  float act_hi = std::numeric_limits<float>::infinity();
  ConvAttrs attrs;          // conv kind
  ConvWeightShape wshape;   // conv kind
  // The weight's outputs, inputs per group, kernel size and groups, of either kind.
  int64_t M = 0, Cg = 0, kh = 1, kw = 1, group = 1;
  std::vector<float> bias;   // constant bias (checked once), or empty
  bool bias_at_run = false;  // the bias is an input that is not a constant initializer
  Tuning tuning;             // the FQ_ONNX_* settings when the kernel was created

  // Runs f, rethrowing whatever it throws as std::runtime_error prefixed with where().
  template <class F>
  void construct(F&& f) {
    try {
      f();
    } catch (const Ort::Exception& e) {
      throw std::runtime_error(where() + e.what());
    } catch (const std::bad_alloc&) {
      throw std::runtime_error(where() + "out of memory while decoding the weight");
    } catch (const std::exception& e) {
      throw std::runtime_error(where() + e.what());
    }
  }
  std::string where() const { return "ShiftConv node '" + name + "': "; }

  // Constructor, step 1: kind, activation and conv attributes; the settings.
  void parse(const OrtKernelInfo* info);
  // Step 2: input 1 decoded (FORMAT.md), its shape checked against the attributes (M, dims),
  // then the bias (a constant one checked now). Throws std::invalid_argument.
  DecodedWeight decode(const OrtKernelInfo* info);

  // Per run (throw std::invalid_argument): the bias, checked for shape and finiteness when it
  // is a runtime input.
  RunBias run_bias(Ort::KernelContext& ctx) const;
  // Writes the (empty) output of an empty X and returns true; false for a non-empty X.
  bool write_empty_output(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape) const;
  // Dense kind: X's rows (all axes but the last), after checking that X ends in K.
  int64_t dense_rows(const std::vector<int64_t>& x_shape) const;
  // Y's shape: X's with the last axis M (dense), or [N, M, (OH,) OW] (conv).
  std::vector<int64_t> dense_out_shape(const std::vector<int64_t>& x_shape) const;
  std::vector<int64_t> conv_out_shape(const ConvShape& cs) const;
};

// Runs fn(i) for every i in [0, n): one task each on onnxruntime's intra-op pool, or all on
// this thread, in order, when ctx is null.
template <class Fn>
void run_tasks(Ort::KernelContext* ctx, int64_t n, const Fn& fn) {
  if (!ctx) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  ctx->ParallelFor([](void* data, size_t i) { (*static_cast<const Fn*>(data))(int64_t(i)); }, size_t(n), 0,
                   const_cast<Fn*>(&fn));
}

// Runs fn(begin, end) over blocks of [0, n) as tasks of the intra-op pool: about
// `target_tasks` blocks of equal size (the last one shorter).
template <class Fn>
void parallel_blocks(Ort::KernelContext& ctx, int64_t n, int64_t target_tasks, const Fn& fn) {
  const int64_t per_task = std::max<int64_t>(1, (n + target_tasks - 1) / target_tasks);
  run_tasks(&ctx, (n + per_task - 1) / per_task, [&](int64_t i) { fn(i * per_task, std::min(n, (i + 1) * per_task)); });
}

// Depthwise convs (Cg = 1): per tap (ky * kw + kx) its row and column offset in the input plane,
// (ky * dh, kx * dw).
template <class Tap>
void depthwise_tap_offsets(const std::vector<Tap>& taps, const ConvWeightShape& ws, std::vector<int32_t>* dy,
                           std::vector<int32_t>* dx) {
  dy->resize(taps.size());
  dx->resize(taps.size());
  for (size_t t = 0; t < taps.size(); ++t) {
    (*dy)[t] = int32_t(int64_t(taps[t]) / ws.kw * ws.dh);
    (*dx)[t] = int32_t(int64_t(taps[t]) % ws.kw * ws.dw);
  }
}

}  // namespace fq
