#include "shiftconv_op.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <sched.h>   // sched_getaffinity: the CPU count
#include <unistd.h>  // sysconf: the L2 size

#include "cpu_features.h"
#include "decode.h"
#include "dense_path.h"
#include "execute.h"
#include "int_op.h"

namespace fq {
namespace {

// Optional attributes through the C API: a missing attribute is a non-OK status, not an error.
bool attr_string(const OrtKernelInfo* info, const char* name, std::string* out) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* st = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (st) {
    api.ReleaseStatus(st);
    return false;
  }
  std::string s(size, '\0');
  Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, name, &s[0], &size));
  s.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  *out = s;
  return true;
}

bool attr_float(const OrtKernelInfo* info, const char* name, float* out) {
  const OrtApi& api = Ort::GetApi();
  OrtStatus* st = api.KernelInfoGetAttribute_float(info, name, out);
  if (st) {
    api.ReleaseStatus(st);
    return false;
  }
  return true;
}

bool attr_int(const OrtKernelInfo* info, const char* name, int64_t* out) {
  const OrtApi& api = Ort::GetApi();
  OrtStatus* st = api.KernelInfoGetAttribute_int64(info, name, out);
  if (st) {
    api.ReleaseStatus(st);
    return false;
  }
  return true;
}

std::vector<int64_t> attr_ints(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* st = api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (st) {
    api.ReleaseStatus(st);
    return {};
  }
  std::vector<int64_t> v(size);
  if (size) Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, v.data(), &size));
  return v;
}

// A NaN or Inf bias would silently poison every output of its channel.
void check_finite_bias(const float* b, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    if (!std::isfinite(b[i])) {
      throw std::invalid_argument("bias B holds NaN or Inf (element " + std::to_string(i) + " is " +
                                  std::to_string(b[i]) + ")");
    }
  }
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Pack buffer of the calling thread, reused across runs (no page faults per call). The `busy`
// flag makes a nested use on the same thread take a fresh allocation instead of sharing.
struct PackBuffer {
  AlignedFloats data;
  bool busy = false;
};

class PackLease {
 public:
  explicit PackLease(size_t floats) {
    thread_local PackBuffer tls;
    if (!tls.busy) {
      owner_ = &tls;
      tls.busy = true;
      ptr_ = tls.data.reserve(floats);
    } else {
      ptr_ = own_.reserve(floats);
    }
  }
  ~PackLease() {
    if (owner_) owner_->busy = false;
  }
  float* get() { return ptr_; }

 private:
  PackBuffer* owner_ = nullptr;
  AlignedFloats own_;
  float* ptr_ = nullptr;
};

struct PackJob {
  const Plan* plan;
  const float* x;
  float* packed;
  int64_t per_task;
  const KernelTable* kt;
};

struct ComputeJob {
  const Plan* plan;
  const SparseWeight* weight;
  const KernelTable* kernels;
  TaskGrid grid;
  const float* packed;
  Epilogue epilogue;
  float* y;
};

// Enough tasks to balance a few threads; small enough that per-task overhead stays invisible.
constexpr int64_t kTargetTasks = 32;
// Below these sizes a single thread is faster than a round trip through the thread pool.
constexpr int64_t kInlinePackFloats = 64 * 1024;
constexpr double kInlineWork = 16 * 1024;
// run_per_thread splits tiles among threads when the packed input holds at least this many floats
// per output channel: a tile split costs about one shared output cache line per channel (about
// 28 ns, from 1x1 256->1024 @14²), a row-group split packing the whole input again per thread
// (0.12-0.2 ns per float). Measured at batch 1 on 2 threads: 1x1 256->1024 (49 floats per
// channel) is faster by row groups, 128@28² and stride 2 128->256 (870 and 480) by tiles.
constexpr int64_t kPackedFloatsPerRowForTiles = 192;
// Packed input per sub-batch (images_per_run): a quarter of the L2 (512 KiB of the development
// machine's 2 MiB, where it was measured), leaving room for the tap lists, the sums and the
// output; 512 KiB where the size is unknown.
int64_t run_bytes() {
  static const int64_t bytes = [] {
    int64_t l2 = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE)
    l2 = int64_t(sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
    return l2 >= 256 * 1024 && l2 <= 64 * 1024 * 1024 ? l2 / 4 : int64_t(512 * 1024);
  }();
  return bytes;
}

// CPUs this process may run on (sched_getaffinity; 1 if unknown): the intra-op threads assumed
// when the session does not say (fq_onnx.threads), as onnxruntime's default is one per core.
int64_t available_cpus() {
  static const int64_t cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max<int64_t>(1, CPU_COUNT(&set));
    return int64_t(1);
  }();
  return cpus;
}

// Row groups [cut[i], cut[i + 1]) for each of `parts` runs, cut where the FMAs (taps x rows)
// are split evenly (run_per_thread's split by row groups).
std::vector<size_t> cut_groups(const SparseWeight& w, int64_t parts) {
  std::vector<size_t> cut(1, 0);
  const double total = double(w.stored_macs);
  double sum = 0;
  for (size_t r = 0; r < w.groups.size() && int64_t(cut.size()) < parts; ++r) {
    sum += double(w.groups[r].tap_end - w.groups[r].tap_begin) * w.groups[r].g;
    if (sum >= total * double(cut.size()) / double(parts)) cut.push_back(r + 1);
  }
  while (int64_t(cut.size()) <= parts) cut.push_back(w.groups.size());
  return cut;
}

}  // namespace

ShiftConvKernel::ShiftConvKernel(const OrtKernelInfo* info, const std::string& kernel_choice,
                                 const std::string& dense_choice, int64_t threads) {
  Ort::ConstKernelInfo ki(info);
  name_ = ki.GetNodeName();
  const std::string where = "ShiftConv node '" + name_ + "': ";
  try {
    std::string kind = "conv", activation = "none", auto_pad;
    attr_string(info, "kind", &kind);
    attr_string(info, "activation", &activation);
    if (kind != "conv" && kind != "dense") throw std::invalid_argument("unknown kind '" + kind + "' (conv or dense)");
    dense_ = kind == "dense";
    if (activation == "relu") {
      act_lo_ = 0.0f;
    } else if (activation == "clip") {
      // A fused Clip (ReLU6 in MobileNets): [clip_min, clip_max], each optional.
      float v = 0;
      if (attr_float(info, "clip_min", &v)) act_lo_ = v;
      if (attr_float(info, "clip_max", &v)) act_hi_ = v;
      if (std::isnan(act_lo_) || std::isnan(act_hi_)) {
        throw std::invalid_argument("clip_min and clip_max must be numbers, got " + std::to_string(act_lo_) +
                                    " and " + std::to_string(act_hi_));
      }
      if (!(act_lo_ <= act_hi_)) throw std::invalid_argument("clip_min must not exceed clip_max");
    } else if (activation != "none") {
      throw std::invalid_argument("unknown activation '" + activation + "' (none, relu or clip)");
    }
    if (!dense_) {
      if (attr_string(info, "auto_pad", &auto_pad)) attrs_.auto_pad = parse_auto_pad(auto_pad);
      attrs_.kernel_shape = attr_ints(info, "kernel_shape");
      attrs_.strides = attr_ints(info, "strides");
      attrs_.pads = attr_ints(info, "pads");
      attrs_.dilations = attr_ints(info, "dilations");
      attr_int(info, "group", &attrs_.group);
      if (attrs_.auto_pad != AutoPad::kNotSet && !attrs_.pads.empty()) {
        throw std::invalid_argument("pads and auto_pad cannot both be given");
      }
    }

    // The weight: a uint8 1-D constant initializer, decoded once here.
    int is_constant = 0;
    Ort::ConstValue wv = ki.GetTensorConstantInput(1, &is_constant);
    if (!is_constant || wv == nullptr) {
      throw std::invalid_argument("input 1 (W) must be a constant initializer holding the compressed weight");
    }
    auto wt = wv.GetTensorTypeAndShapeInfo();
    if (wt.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || wt.GetShape().size() != 1) {
      throw std::invalid_argument("input 1 (W) must be a 1-D uint8 tensor");
    }
    const size_t nbytes = wt.GetElementCount();
    DecodedWeight dw;
    try {
      dw = decode_weight(nbytes ? wv.GetTensorData<uint8_t>() : nullptr, nbytes);
    } catch (const FormatError& e) {
      throw std::invalid_argument(std::string("invalid compressed weight (docs/FORMAT.md): ") + e.what());
    }

    int64_t M, Cg, kh = 1, kw = 1, group = 1;
    if (dense_) {
      if (dw.dims.size() != 2) {
        throw std::invalid_argument("a dense weight must have rank 2 [M, K], the blob has rank " +
                                    std::to_string(dw.dims.size()));
      }
      M = dw.dims[0];
      Cg = dw.dims[1];
    } else {
      wshape_ = conv_weight_shape(attrs_, dw.dims);
      M = wshape_.M;
      Cg = wshape_.Cg;
      kh = wshape_.kh;
      kw = wshape_.kw;
      group = wshape_.group;
    }

    int64_t m_attr = 0;  // optional (models written before it existed lack it)
    if (attr_int(info, "M", &m_attr) && m_attr != M) {
      throw std::invalid_argument("attribute M=" + std::to_string(m_attr) + " but the weight stores " +
                                  std::to_string(M) + " outputs");
    }

    // Bias: constant (checked now) or a runtime input (checked per run).
    if (ki.GetInputCount() > 2) {
      int bias_constant = 0;
      Ort::ConstValue bv = ki.GetTensorConstantInput(2, &bias_constant);
      if (bias_constant && bv != nullptr) {
        auto bt = bv.GetTensorTypeAndShapeInfo();
        if (bt.GetShape().size() != 1 || int64_t(bt.GetElementCount()) != M) {
          throw std::invalid_argument("bias B has shape " + shape_str(bt.GetShape()) + ", expected [" +
                                      std::to_string(M) + "]");
        }
        const float* b = bv.GetTensorData<float>();
        check_finite_bias(b, M);
        bias_.assign(b, b + M);
      } else if (!ki.GetInputName(2).empty()) {
        bias_at_run_ = true;
      }
    }

    std::string choice = kernel_choice.empty() ? kernel_choice_from_env() : kernel_choice;
    kernels_ = select_kernels(choice);
    IntModeAttrs int_attrs;  // integer mode (docs/SHIFTCONV.md): the node has act_bits
    auto int_attr = [&](const char* key, int64_t* value) {
      if (attr_int(info, key, value)) return true;
      float f = 0;
      std::string text;
      if (attr_float(info, key, &f) || attr_string(info, key, &text)) {
        throw std::invalid_argument(std::string(key) + " must be an integer attribute");
      }
      return false;
    };
    int_attrs.has_bits = int_attr("act_bits", &int_attrs.bits);
    if (int_attrs.has_bits) {
      int_attrs.has_scale = int_attr("act_scale_log2", &int_attrs.scale_log2);
      int_attrs.has_signed = int_attr("act_signed", &int_attrs.is_signed);
      int_ = std::make_shared<IntShiftConv>(dw, dense_, attrs_, wshape_, int_attrs, kernels_, bias_, bias_at_run_,
                                            act_lo_, act_hi_);
      return;
    }
    int max_group = 8;
    if (const char* g = std::getenv("FQ_ONNX_MAX_GROUP")) max_group = std::max(1, std::atoi(g));
    if (const char* c = std::getenv("FQ_ONNX_CHUNK_BYTES")) chunk_bytes_ = std::max<int64_t>(1, std::atoll(c));
    if (const char* b = std::getenv("FQ_ONNX_SUB_BATCH")) sub_batch_ = std::max<int64_t>(0, std::atoll(b));
    inline_work_ = kInlineWork;
    if (const char* w = std::getenv("FQ_ONNX_INLINE_WORK")) inline_work_ = std::max(0.0, std::atof(w));
    threads_ = threads > 0 ? threads : available_cpus();
    if (const char* c = std::getenv("FQ_ONNX_THREADS")) threads_ = std::max<int64_t>(1, std::atoll(c));
    if (const char* t = std::getenv("FQ_ONNX_THREAD_SPLIT")) thread_split_ = t[0];
    // 8-vector tiles, but 16 (AVX-512 only) for stride-1 kernels wider than 1x1: measured 3-13%
    // faster there (fewer passes over long tap lists at batch 8), slower for 1x1 and stride 2
    // (docs/PERFORMANCE.md).
    max_vectors_ = std::min(kernels_->max_vectors, 8);
    if (!dense_ && wshape_.sh == 1 && wshape_.sw == 1 && wshape_.kh * wshape_.kw > 1) {
      max_vectors_ = std::min(kernels_->max_vectors, 16);
    }
    if (const char* v = std::getenv("FQ_ONNX_TILE_VECTORS")) {
      max_vectors_ = std::max(1, std::min(kernels_->max_vectors, std::atoi(v)));
    }
    // Groups are chosen first (cheap); the tap lists are built only if our kernel may run.
    SparseWeightBuilder builder(dw, M, Cg, kh, kw, group, max_group);
    {
      const DenseMode mode = parse_dense_mode(dense_choice.empty() ? dense_mode_from_env() : dense_choice);
      const PackedGemmMode packed_mode = dense_ ? packed_gemm_mode_from_env() : PackedGemmMode::kAuto;
      OrtDelegate::Layer layer{wshape_, {}, bias_, bias_at_run_, act_lo_, act_hi_};
      layer.ws.M = M;
      layer.ws.Cg = Cg;
      const bool pads_static = dense_ || static_pads(attrs_, wshape_, &layer.pads);
      auto choose = [&](const SparseWeight& w) {
        return dense_ ? choose_matmul_path(mode, w, packed_mode) : choose_dense_path(mode, w, wshape_, pads_static, threads_);
      };
      // Merging every block of rows to get the exact cost took a third of session creation for
      // half-dense models. An estimate from every kSampleStride-th block decides when, made
      // kCostMargin cheaper, it still hands the whole layer to another kernel; otherwise (our
      // kernel may run) the exact cost decides, as the rule was calibrated with.
      constexpr int64_t kSampleStride = 8;
      constexpr double kCostMargin = 1.08;
      SparseWeight estimate = builder.shape();
      estimate.cost_units = builder.estimate_cost_units(kSampleStride) / kCostMargin;
      DensePath path = choose(estimate);
      const bool decided = (path.delegate || path.packed) && !path.keep_own;
      if (decided) {
        weight_ = builder.shape();
        path.cost = relative_cost(estimate) * kCostMargin;
      } else {
        weight_ = builder.build();
        path = choose(weight_);
      }
      if (path.packed) {
        packed_ = std::make_unique<PackedGemm>(dw, M, Cg, *kernels_);
        log_for_kernel(info, ORT_LOGGING_LEVEL_INFO,
                       where + "relative cost " + std::to_string(path.cost) + ", dense path: packed GEMM" +
                           (path.keep_own ? " or the sparse kernel, chosen per input shape" : ""));
      }
      if (path.delegate) {
        delegate_ = dense_ ? OrtDelegate::create_matmul(info, where, std::move(layer), dw, path.cost, path.keep_own)
                           : OrtDelegate::create(info, where, std::move(layer), dw, path.nchwc_block, path.cost,
                                                 path.keep_own);
      }
      // Another kernel runs the layer: no tap lists (memory stays at the dense model's).
      choose_per_shape_ = (delegate_ || packed_) && path.keep_own;
      if ((delegate_ || packed_) && !path.keep_own) {
        weight_ = builder.shape();
      } else if (decided) {
        weight_ = builder.build();  // the other kernel was unavailable
      }
    }
    // Depthwise: every row group is one channel reading one input channel (FQ_ONNX_DEPTHWISE=0
    // sends it through the packed path instead, for comparisons).
    const char* dwenv = std::getenv("FQ_ONNX_DEPTHWISE");
    depthwise_ = !dense_ && Cg == 1 && group == M && int64_t(weight_.groups.size()) == M &&
                 !(dwenv && std::string(dwenv) == "0");
    for (size_t r = 0; depthwise_ && r < weight_.groups.size(); ++r) {
      if (weight_.groups[r].g != 1 || weight_.groups[r].m0 != int32_t(r)) depthwise_ = false;
    }
    // Measured (AVX-512): the flat kernel wins on rows of up to 32 pixels with "same" stride-1
    // padding (28x28 and smaller planes, up to 1.7x) and, gathering, on output rows of up to 16
    // otherwise; the per-row kernel on longer rows.
    flat_depthwise_ = !(dwenv && std::string(dwenv) == "rows");
    if (const char* mv = std::getenv("FQ_ONNX_MATVEC_ROWS")) matvec_rows_ = std::atoi(mv);
    force_flat_depthwise_ = dwenv && std::string(dwenv) == "flat";
    if (dwenv && (std::string(dwenv) == "rows" || std::string(dwenv) == "flat")) small_depthwise_ = 0;
    if (depthwise_) {
      tap_ptr_.resize(weight_.groups.size() + 1);
      for (size_t m = 0; m < weight_.groups.size(); ++m) tap_ptr_[m] = weight_.groups[m].tap_begin;
      tap_ptr_.back() = uint32_t(weight_.taps.size());
      tap_dy_.resize(weight_.taps.size());
      tap_dx_.resize(weight_.taps.size());
      for (size_t t = 0; t < weight_.taps.size(); ++t) {
        tap_dy_[t] = int32_t(int64_t(weight_.taps[t]) / wshape_.kw * wshape_.dh);
        tap_dx_[t] = int32_t(int64_t(weight_.taps[t]) % wshape_.kw * wshape_.dw);
      }
    }
    if (threads_ > 1) group_cut_ = cut_groups(weight_, threads_);
  } catch (const Ort::Exception& e) {
    throw std::runtime_error(where + e.what());
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(where + "out of memory while decoding the weight");
  } catch (const std::exception& e) {
    throw std::runtime_error(where + e.what());
  }
}

std::shared_ptr<const Plan> ShiftConvKernel::plan_for(const std::vector<int64_t>& x_shape) {
  {
    std::lock_guard<std::mutex> lock(plans_mutex_);
    for (auto& entry : plans_) {
      if (entry.first == x_shape) return entry.second;
    }
  }
  // Built outside the lock: two threads may build the same plan once; both are identical.
  auto plan = std::make_shared<const Plan>(
      dense_ ? make_dense_plan(weight_, x_shape, kernels_->lanes, max_vectors_, chunk_bytes_)
             : make_conv_plan(weight_, attrs_, wshape_, x_shape, kernels_->lanes, max_vectors_, chunk_bytes_));
  std::lock_guard<std::mutex> lock(plans_mutex_);
  if (plans_.size() >= 8) plans_.erase(plans_.begin());  // a few shapes at most in practice
  plans_.emplace_back(x_shape, plan);
  return plan;
}

void ShiftConvKernel::compute(OrtKernelContext* context) {
  if (int_) {
    int_->compute(context);
    return;
  }
  Ort::KernelContext ctx(context);
  Ort::ConstValue xv = ctx.GetInput(0);
  const std::vector<int64_t> x_shape = xv.GetTensorTypeAndShapeInfo().GetShape();

  const float* bias = bias_.empty() ? nullptr : bias_.data();
  const OrtValue* bias_value = nullptr;
  if (bias_at_run_) {
    Ort::ConstValue bv = ctx.GetInput(2);
    bias_value = bv;
    if (bv != nullptr) {
      auto bt = bv.GetTensorTypeAndShapeInfo();
      if (bt.GetShape().size() != 1 || int64_t(bt.GetElementCount()) != weight_.M) {
        throw std::invalid_argument("bias B has shape " + shape_str(bt.GetShape()) + ", expected [" +
                                    std::to_string(weight_.M) + "]");
      }
      bias = bv.GetTensorData<float>();
      check_finite_bias(bias, weight_.M);
    }
  }

  // Empty inputs produce empty outputs without a plan.
  int64_t elements = 1;
  for (int64_t d : x_shape) elements *= d;
  if (elements == 0) {
    std::vector<int64_t> out_shape;
    if (dense_) {
      if (x_shape.empty() || x_shape.back() != weight_.Cg) {
        throw std::invalid_argument("input X " + shape_str(x_shape) + " does not end in K = " + std::to_string(weight_.Cg));
      }
      out_shape.assign(x_shape.begin(), x_shape.end() - 1);
      out_shape.push_back(weight_.M);
    } else {
      if (x_shape.size() != size_t(wshape_.spatial) + 2 || x_shape[0] != 0) {
        throw std::invalid_argument("input X " + shape_str(x_shape) + " has an empty spatial or channel axis");
      }
      std::vector<int64_t> probe = x_shape;
      probe[0] = 1;
      const ConvShape cs = conv_shape(attrs_, wshape_, probe);
      out_shape = {0, weight_.M};
      if (wshape_.spatial == 2) out_shape.push_back(cs.OH);
      out_shape.push_back(cs.OW);
    }
    ctx.GetOutput(0, out_shape);
    return;
  }

  if (packed_) {
    if (x_shape.empty() || x_shape.back() != weight_.Cg) {
      throw std::invalid_argument("input X " + shape_str(x_shape) + " does not end in K = " + std::to_string(weight_.Cg));
    }
    const int64_t rows = elements / weight_.Cg;
    if (!choose_per_shape_ || matmul_prefers_packed(rows)) {
      compute_packed(ctx, x_shape, rows, bias);
      return;
    }
  }
  if (delegate_ && dense_) {
    if (x_shape.empty() || x_shape.back() != weight_.Cg) {
      throw std::invalid_argument("input X " + shape_str(x_shape) + " does not end in K = " + std::to_string(weight_.Cg));
    }
    std::vector<int64_t> out_shape(x_shape.begin(), x_shape.end() - 1);
    if (!choose_per_shape_ || matmul_prefers_ort(elements / weight_.Cg)) {
      out_shape.push_back(weight_.M);
      delegate_->compute(context, xv, x_shape, bias_value, out_shape);
      return;
    }
  }
  if (delegate_ && !dense_) {
    const ConvShape cs = conv_shape(attrs_, wshape_, x_shape);  // validates X against the node
    const double density = double(weight_.nonzeros) / double(weight_.M * weight_.kh * weight_.kw);
    // Conv layers that keep both kernels are 1x1 (group 1) or depthwise (dense_path.cc).
    if (!choose_per_shape_ ||
        (wshape_.group == 1
             ? pointwise_prefers_ort(cs.N)
             : depthwise_prefers_ort(density, cs.OH * cs.OW, wshape_.sh * wshape_.sw > 1, small_depthwise_ok(cs)))) {
      std::vector<int64_t> out_shape = {cs.N, weight_.M};
      if (wshape_.spatial == 2) out_shape.push_back(cs.OH);
      out_shape.push_back(cs.OW);
      delegate_->compute(context, xv, x_shape, bias_value, out_shape);
      return;
    }
  }
  if (depthwise_) {
    compute_depthwise(ctx, x_shape, bias);
    return;
  }
  if (dense_ && !x_shape.empty() && x_shape.back() == weight_.Cg && matvec_rows_ > 0) {
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < x_shape.size(); ++i) rows *= x_shape[i];
    if (rows <= matvec_rows_) {
      std::vector<int64_t> out_shape(x_shape.begin(), x_shape.end() - 1);
      out_shape.push_back(weight_.M);
      Ort::UnownedValue yv = ctx.GetOutput(0, out_shape);
      struct MatvecJob {
        const SparseWeight* w;
        const float* x;
        int64_t rows;
        size_t per_task;
        Epilogue ep;
        float* y;
      } job{&weight_, ctx.GetInput(0).GetTensorData<float>(), rows, weight_.groups.size(),
            Epilogue{bias, act_lo_, act_hi_}, yv.GetTensorMutableData<float>()};
      const size_t groups = weight_.groups.size();
      // Scalar multiply-adds streaming the tap lists (0.7 ns each for MobileNet-V2's 85%-sparse
      // classifier: 134 us inline, a tenth of it above the threshold that had kept it inline).
      if (double(weight_.stored_macs) * double(rows) < kInlineWork || groups < 2) {
        sparse_matvec(weight_, job.x, rows, 0, groups, job.ep, job.y);
        return;
      }
      job.per_task = (groups + size_t(kTargetTasks) - 1) / size_t(kTargetTasks);
      ctx.ParallelFor(
          [](void* data, size_t i) {
            const MatvecJob& j = *static_cast<const MatvecJob*>(data);
            const size_t b = i * j.per_task, e = std::min(j.w->groups.size(), b + j.per_task);
            sparse_matvec(*j.w, j.x, j.rows, b, e, j.ep, j.y);
          },
          (groups + job.per_task - 1) / job.per_task, 0, &job);
      return;
    }
  }
  const std::shared_ptr<const Plan> plan = plan_for(x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, plan->out_shape);
  float* y = yv.GetTensorMutableData<float>();
  const float* x = xv.GetTensorData<float>();
  const int64_t nb = dense_ ? plan->N : images_per_run(*plan);
  if (nb >= plan->N) {
    run_plan(&ctx, *plan, x, y, bias);
    return;
  }
  // A batch too large for L2 runs as sub-batches of at most nb images, each packed and computed
  // before the next (images_per_run). With at least as many sub-batches as threads, each pool
  // thread packs and computes whole sub-batches on its own: one ParallelFor per call instead of
  // two per sub-batch, each thread in its own cache, and no thread waits for a descheduled one
  // at a barrier. The sub-batches are then made equal and, unless FQ_ONNX_SUB_BATCH sets their
  // size, as many as a multiple of the threads where the batch allows, for equal shares.
  int64_t x_image = 1, y_image = 1;
  for (size_t i = 1; i < x_shape.size(); ++i) x_image *= x_shape[i];
  for (size_t i = 1; i < plan->out_shape.size(); ++i) y_image *= plan->out_shape[i];
  const int64_t N = plan->N;
  int64_t runs = (N + nb - 1) / nb;
  const bool by_image = threads_ > 1 && runs >= threads_;
  if (by_image && sub_batch_ < 0) runs = std::min(N, (runs + threads_ - 1) / threads_ * threads_);
  // Sub-batch i holds images [i * N / runs, (i + 1) * N / runs): sizes differ by at most one.
  std::vector<int64_t> sub_shape = x_shape;
  sub_shape[0] = N / runs;
  const std::shared_ptr<const Plan> small = plan_for(sub_shape);
  sub_shape[0] = (N + runs - 1) / runs;
  const std::shared_ptr<const Plan> large = plan_for(sub_shape);
  struct SubBatches {
    ShiftConvKernel* self;
    const Plan *small, *large;
    int64_t N, runs, x_image, y_image;
    const float* x;
    float* y;
    const float* bias;
    void run(Ort::KernelContext* ctx, int64_t i) const {
      const int64_t n0 = i * N / runs, n1 = (i + 1) * N / runs;
      self->run_plan(ctx, n1 - n0 == small->N ? *small : *large, x + n0 * x_image, y + n0 * y_image, bias);
    }
  } job{this, small.get(), large.get(), N, runs, x_image, y_image, x, y, bias};
  if (!by_image) {
    for (int64_t i = 0; i < runs; ++i) job.run(&ctx, i);
    return;
  }
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const SubBatches*>(data)->run(nullptr, int64_t(i)); },
                  size_t(runs), 0, &job);
}

int64_t ShiftConvKernel::images_per_run(const Plan& p) const {
  if (sub_batch_ >= 0) return sub_batch_ == 0 ? p.N : sub_batch_;
  // Packing a whole batch writes more than L2 holds (128@28² stride 2 at batch 8: 3.7 MB), so
  // the tiles then read much of it back from L3, and the next layer's input has left L2 too.
  // Images packed and computed one sub-batch at a time stay in L2: kernel_timing measured
  // batch 1 faster per image than batch 8 on every layer of the bench (stride 2: 0.128 vs
  // 0.154 ms with blocks of 4, 0.204 vs 0.233 unstructured; 1x1 256→1024: 0.160 vs 0.183;
  // 64@56²: 0.23 vs 0.29 blk4), and 2 images about as fast as 1 where they fit.
  const double per_image = double(p.C) * double(p.channel_stride) * sizeof(float) / double(std::max<int64_t>(1, p.N));
  return std::max<int64_t>(1, int64_t(double(run_bytes()) / std::max(1.0, per_image)));
}

void ShiftConvKernel::run_plan(Ort::KernelContext* ctx, const Plan& plan, const float* x, float* y,
                               const float* bias) {
  // FMA-vector count: below a few microseconds of work, waking the pool costs more than it saves.
  const double work = double(weight_.stored_macs) * double(plan.tiles) * double(plan.tile / kernels_->lanes);
  const bool small = work < inline_work_;
  const bool inline_run = !ctx || small;
  // Without a pool (a sub-batch task) the tasks still keep the row blocks of a multi-task grid:
  // one task of all rows would carry every row's partial sums across the input chunks.
  const TaskGrid grid = make_task_grid(plan, weight_, small ? 1 : kTargetTasks);
  const Epilogue epilogue{bias, act_lo_, act_hi_};
  if (!inline_run && !plan.dense && threads_ > 1) {
    run_per_thread(*ctx, plan, grid, x, y, epilogue);
    return;
  }
  PackLease lease(size_t(plan.packed_floats));
  float* packed = lease.get();
  zero_packed_tail(plan, packed);
  if (inline_run || plan.C * plan.channel_stride < kInlinePackFloats) {
    pack_input(plan, x, packed, 0, plan.C, kernels_);
  } else {
    PackJob pack{&plan, x, packed, 0, kernels_};
    const int64_t pack_tasks = std::min<int64_t>(plan.C, 16);
    pack.per_task = (plan.C + pack_tasks - 1) / pack_tasks;
    ctx->ParallelFor(
        [](void* data, size_t i) {
          const PackJob& j = *static_cast<const PackJob*>(data);
          const int64_t c0 = int64_t(i) * j.per_task;
          pack_input(*j.plan, j.x, j.packed, c0, std::min(j.plan->C, c0 + j.per_task), j.kt);
        },
        size_t((plan.C + pack.per_task - 1) / pack.per_task), 0, &pack);
  }
  ComputeJob job{&plan, &weight_, kernels_, grid, packed, epilogue, y};
  if (inline_run) {
    // The same tasks in the same order as the pool would run them on one thread.
    for (int64_t i = 0; i < job.grid.count(); ++i) {
      run_task(*job.plan, *job.weight, *job.kernels, job.grid, i, job.packed, job.epilogue, job.y);
    }
  } else {
    ctx->ParallelFor(
        [](void* data, size_t i) {
          const ComputeJob& j = *static_cast<const ComputeJob*>(data);
          run_task(*j.plan, *j.weight, *j.kernels, j.grid, int64_t(i), j.packed, j.epilogue, j.y);
        },
        size_t(job.grid.count()), 0, &job);
  }
}

void ShiftConvKernel::run_per_thread(Ort::KernelContext& ctx, const Plan& plan, const TaskGrid& grid, const float* x,
                                   float* y, const Epilogue& epilogue) {
  // One task per thread. Each packs into its own buffer what it reads and computes it: a
  // contiguous run of tiles for every row group (packing the rows those tiles read, the halo
  // rows twice), or, where tiles are fewer than threads or the packed input is small next to
  // the output channels, every tile for a run of row groups (packing all of it). Packing by
  // channels and computing by tiles had every thread read most of the packed input from the
  // other core's cache, after a pool round trip: 2 threads ran the stride-2 layer with blocks
  // of 4 at batch 1 no faster than 1. A tile split shares a cache line of output per channel
  // and run boundary between two threads, so layers with many channels of small planes split
  // row groups: 1x1 256->1024 @14², blocks of 4, 0.092 -> 0.073 ms; 64@56² the other way,
  // 0.185 ms by tiles against 0.211 by row groups (2 threads, batch 1, 90%; docs/PERFORMANCE.md).
  const int64_t threads = threads_;
  const bool by_groups = thread_split_ == 'r' || plan.tiles < threads ||
                         (thread_split_ != 't' && plan.C * plan.channel_stride < kPackedFloatsPerRowForTiles * weight_.M);
  struct Parts {
    const Plan* plan;
    const SparseWeight* weight;
    const KernelTable* kernels;
    TaskGrid grid;
    bool by_groups;
    const std::vector<size_t>* group_cut;  // by_groups: part i runs row groups [cut[i], cut[i + 1])
    int64_t parts;
    const float* x;
    Epilogue epilogue;
    float* y;
    void run(int64_t part) const {
      const Plan& p = *plan;
      const int64_t t0 = by_groups ? 0 : part * p.tiles / parts;
      const int64_t t1 = by_groups ? p.tiles : (part + 1) * p.tiles / parts;
      const size_t g0 = by_groups ? (*group_cut)[size_t(part)] : 0;
      const size_t g1 = by_groups ? (*group_cut)[size_t(part) + 1] : weight->groups.size();
      if (g0 >= g1) return;
      PackLease lease(size_t(p.packed_floats));
      float* packed = lease.get();
      zero_packed_tail(p, packed);
      pack_span(p, x, packed, t0 * p.tile, t1 * p.tile + p.halo, kernels);
      const size_t per = size_t(grid.groups_per_task);
      for (size_t r = g0; r < g1; r += per) {
        run_tiles(p, *weight, *kernels, t0, t1, r, std::min(g1, r + per), packed, epilogue, y);
      }
    }
  } job{&plan, &weight_, kernels_, grid, by_groups, &group_cut_, by_groups ? threads : std::min(threads, plan.tiles),
        x, epilogue, y};
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const Parts*>(data)->run(int64_t(i)); },
                  size_t(job.parts), size_t(job.parts), &job);
}

void ShiftConvKernel::compute_packed(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, int64_t rows,
                                     const float* bias) {
  std::vector<int64_t> out_shape(x_shape.begin(), x_shape.end() - 1);
  out_shape.push_back(weight_.M);
  Ort::UnownedValue yv = ctx.GetOutput(0, out_shape);
  struct Job {
    const PackedGemm* g;
    const float* x;
    int64_t rows, per_task;
    Epilogue ep;
    float* y;
  } job{packed_.get(), ctx.GetInput(0).GetTensorData<float>(), rows, packed_->panels(), Epilogue{bias, act_lo_, act_hi_},
        yv.GetTensorMutableData<float>()};
  const int64_t panels = packed_->panels();
  if (packed_->work(rows) < kInlineWork || panels < 2) {
    packed_->run(job.x, rows, 0, panels, job.ep, job.y);
    return;
  }
  job.per_task = (panels + kTargetTasks - 1) / kTargetTasks;
  ctx.ParallelFor(
      [](void* data, size_t i) {
        const Job& j = *static_cast<const Job*>(data);
        const int64_t b = int64_t(i) * j.per_task;
        j.g->run(j.x, j.rows, b, std::min(j.g->panels(), b + j.per_task), j.ep, j.y);
      },
      size_t((panels + job.per_task - 1) / job.per_task), 0, &job);
}

namespace {

struct DepthwiseJob {
  const SparseWeight* weight;
  const KernelTable* kernels;
  const int32_t* dy;
  const int32_t* dx;
  const float* x;
  float* y;
  const float* bias;
  ConvShape cs;
  int64_t sh, sw, M, per_task;
  float lo, hi;
  bool flat;
  void run(int64_t task) const {
    const int64_t planes = cs.N * M;
    for (int64_t i = task * per_task; i < std::min(planes, (task + 1) * per_task); ++i) {
      const int64_t m = i % M;
      const RowGroup& rg = weight->groups[size_t(m)];
      DepthwiseArgs a{x + i * cs.H * cs.W, y + i * cs.OH * cs.OW, cs.H, cs.W, cs.OH, cs.OW, sh, sw,
                      cs.pad_top, cs.pad_left, dy + rg.tap_begin, dx + rg.tap_begin,
                      weight->weights.data() + rg.w_begin, size_t(rg.tap_end - rg.tap_begin),
                      bias ? bias[m] : 0.0f, lo, hi};
      (flat ? kernels->depthwise_flat : kernels->depthwise)(a);
    }
  }
};

struct SmallDepthwiseJob {
  const KernelTable* kernels;
  DepthwiseSmallArgs proto;  // x, y, planes, tap_ptr, bias for channel 0 of image 0
  int64_t M, per_task, planes;
  void run(int64_t task) const {
    // Planes [b, e) of all N * M, cut at image boundaries (channel m selects taps and bias).
    int64_t i = task * per_task;
    const int64_t e = std::min(planes, i + per_task);
    while (i < e) {
      const int64_t m = i % M, n = std::min(e - i, M - m);
      DepthwiseSmallArgs a = proto;
      a.x += i * a.x_plane;
      a.y += i * a.P;
      a.planes = n;
      a.tap_ptr += m;
      if (a.bias) a.bias += m;
      kernels->depthwise_small(a);
      i += n;
    }
  }
};

}  // namespace

bool ShiftConvKernel::small_depthwise_ok(const ConvShape& cs) const {
  // Stride 1 and equal row lengths in and out: every tap is one flat offset. Planes up to
  // kSmallPlaneMax pixels (the masks and the kernel's scratch); measured (AVX-512, 1 thread,
  // MobileNet-V2 shapes) 1.4-2.3x faster than the flat kernel at 7x7 and 14x14.
  return small_depthwise_ != 0 && depthwise_ && kernels_->depthwise_small && small_plane_eligible(wshape_, cs);
}

bool ShiftConvKernel::run_small_depthwise(Ort::KernelContext& ctx, const ConvShape& cs, const float* bias, float* y) {
  if (!small_depthwise_ok(cs)) return false;
  const int64_t P = cs.OH * cs.OW, L = kernels_->lanes;
  const int64_t nvec = (P + L - 1) / L;
  std::vector<uint32_t> masks;  // per call, not per plane: kh * kw * nvec masks
  std::vector<int32_t> offs;
  small_plane_masks(wshape_, cs, kernels_->lanes, &masks, &offs);
  const int64_t planes = cs.N * weight_.M;
  SmallDepthwiseJob job{kernels_,
                        DepthwiseSmallArgs{ctx.GetInput(0).GetTensorData<float>(), y, 0, P, nvec, cs.H * cs.W,
                                           masks.data(), offs.data(), tap_ptr_.data(), weight_.taps.data(),
                                           weight_.weights.data(), bias, act_lo_, act_hi_},
                        weight_.M, planes, planes};
  const double work = double(weight_.nonzeros) * double(cs.N) * double(nvec);  // FMA-vectors
  if (work < kInlineWork && planes * cs.H * cs.W < kInlinePackFloats) {
    job.run(0);
    return true;
  }
  job.per_task = std::max<int64_t>(1, (planes + kTargetTasks - 1) / kTargetTasks);
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const SmallDepthwiseJob*>(data)->run(int64_t(i)); },
                  size_t((planes + job.per_task - 1) / job.per_task), 0, &job);
  return true;
}

void ShiftConvKernel::compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape,
                                        const float* bias) {
  const ConvShape cs = conv_shape(attrs_, wshape_, x_shape);
  std::vector<int64_t> out_shape = {cs.N, weight_.M};
  if (wshape_.spatial == 2) out_shape.push_back(cs.OH);
  out_shape.push_back(cs.OW);
  Ort::UnownedValue yv = ctx.GetOutput(0, out_shape);
  if (run_small_depthwise(ctx, cs, bias, yv.GetTensorMutableData<float>())) return;
  DepthwiseJob job{&weight_, kernels_, tap_dy_.data(), tap_dx_.data(), ctx.GetInput(0).GetTensorData<float>(), yv.GetTensorMutableData<float>(),
                   bias, cs, wshape_.sh, wshape_.sw, weight_.M, 1, act_lo_, act_hi_,
                   kernels_->depthwise_flat != nullptr && flat_depthwise_ &&
                       (force_flat_depthwise_ ||
                        (wshape_.sh == 1 && wshape_.sw == 1 && cs.OW == cs.W ? cs.OW <= 32 : cs.OW <= 16))};
  const int64_t planes = cs.N * weight_.M;
  // Output vectors written: below the inline threshold the pool costs more than it saves,
  // unless the input is large (a strided layer reads 4 floats per output: MobileNet-V2's 144
  // channels at 56² to 28² took 82 us inline, 100 us on one thread of two).
  const double work = double(planes) * double(cs.OH) * double((cs.OW + kernels_->lanes - 1) / kernels_->lanes);
  if (work < kInlineWork && planes * cs.H * cs.W < kInlinePackFloats) {
    job.per_task = std::max<int64_t>(1, planes);
    job.run(0);
    return;
  }
  job.per_task = std::max<int64_t>(1, (planes + kTargetTasks - 1) / kTargetTasks);
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const DepthwiseJob*>(data)->run(int64_t(i)); },
                  size_t((planes + job.per_task - 1) / job.per_task), 0, &job);
}

OrtStatusPtr ShiftConvKernel::ComputeV2(OrtKernelContext* context) {
  // No exception may cross into onnxruntime: every failure becomes an error status.
  try {
    compute(context);
    return nullptr;
  } catch (const std::invalid_argument& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, ("ShiftConv node '" + name_ + "': " + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, ("ShiftConv node '" + name_ + "': out of memory").c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, ("ShiftConv node '" + name_ + "': " + e.what()).c_str());
  }
}

ShiftConvOp::ShiftConvOp(std::string kernel_choice, std::string dense_choice, int64_t threads)
    : kernel_choice_(std::move(kernel_choice)), dense_choice_(std::move(dense_choice)), threads_(threads) {
  // Declare the API version whose OrtCustomOp layout we fill in, not the headers' (which may be
  // newer than the runtime).
  OrtCustomOp::version = kOrtApiVersion;
}

OrtStatusPtr ShiftConvOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const {
  try {
    *op_kernel = new ShiftConvKernel(info, kernel_choice_, dense_choice_, threads_);
    return nullptr;
  } catch (const std::exception& e) {
    *op_kernel = nullptr;
    return api.CreateStatus(ORT_INVALID_GRAPH, e.what());
  }
}

}  // namespace fq
