#include "dense/ort_delegate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>

namespace fq {
namespace {

const OrtApi& api() { return Ort::GetApi(); }

std::string take_message(OrtStatus* st) {
  std::string msg = api().GetErrorMessage(st);
  api().ReleaseStatus(st);
  return msg;
}

void throw_if(OrtStatus* st, const char* what) {
  if (st) throw std::runtime_error(std::string(what) + ": " + take_message(st));
}

// CPU memory description of the tensors wrapped around our buffers; created once, never
// released (onnxruntime may be torn down before static destructors run).
const OrtMemoryInfo* cpu_memory() {
  static const OrtMemoryInfo* info = [] {
    OrtMemoryInfo* p = nullptr;
    throw_if(api().CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &p), "CreateCpuMemoryInfo");
    return p;
  }();
  return info;
}

// An OrtValue viewing floats we own (no copy).
OrtValue* float_tensor(float* data, const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  OrtValue* v = nullptr;
  throw_if(api().CreateTensorWithDataAsOrtValue(cpu_memory(), data, n * sizeof(float), shape.data(), shape.size(),
                                                ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &v),
           "CreateTensorWithDataAsOrtValue");
  return v;
}

struct ValueHolder {
  OrtValue* v = nullptr;
  ~ValueHolder() {
    if (v) api().ReleaseValue(v);
  }
};

// Attributes of one onnxruntime op, released with it.
class OpAttrs {
 public:
  ~OpAttrs() {
    for (OrtOpAttr* a : attrs_) api().ReleaseOpAttr(a);
  }
  OrtStatus* ints(const char* name, const std::vector<int64_t>& v) {
    return add(name, v.data(), int(v.size()), ORT_OP_ATTR_INTS);
  }
  OrtStatus* one_int(const char* name, int64_t v) { return add(name, &v, 1, ORT_OP_ATTR_INT); }
  OrtStatus* floats(const char* name, const std::vector<float>& v) {
    return add(name, v.data(), int(v.size()), ORT_OP_ATTR_FLOATS);
  }
  OrtStatus* str(const char* name, const std::string& v) {
    return add(name, v.c_str(), int(v.size()), ORT_OP_ATTR_STRING);
  }
  const OrtOpAttr* const* data() const { return attrs_.data(); }
  int size() const { return int(attrs_.size()); }

 private:
  OrtStatus* add(const char* name, const void* data, int len, OrtOpAttrType type) {
    OrtOpAttr* a = nullptr;
    if (OrtStatus* st = api().CreateOpAttr(name, data, len, type, &a)) return st;
    attrs_.push_back(a);
    return nullptr;
  }
  std::vector<OrtOpAttr*> attrs_;
};

// Creates one float kernel of onnxruntime's CPU provider; returns "" or the reason it failed.
std::string create_op(const OrtKernelInfo* info, const char* op, const char* domain, int version,
                      const OpAttrs& attrs, int inputs, int outputs, OrtOp** out) {
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  OrtStatus* st = api().CreateOp(info, op, domain, version, type_names, type_values, 1, attrs.data(), attrs.size(),
                                 inputs, outputs, out);
  if (st) return std::string(*domain ? domain : "ai.onnx") + "." + op + ": " + take_message(st);
  return "";
}

// Conv attributes plus the fused activation (attribute names of FusedConv and the NCHWc Conv).
std::string conv_attrs(const OrtDelegate::Layer& l, bool activation, OpAttrs* a) {
  OrtStatus* st = nullptr;
  const ConvWeightShape& w = l.ws;
  const bool two_d = w.spatial == 2;
  const std::vector<int64_t> kernel = two_d ? std::vector<int64_t>{w.kh, w.kw} : std::vector<int64_t>{w.kw};
  const std::vector<int64_t> strides = two_d ? std::vector<int64_t>{w.sh, w.sw} : std::vector<int64_t>{w.sw};
  const std::vector<int64_t> dilations = two_d ? std::vector<int64_t>{w.dh, w.dw} : std::vector<int64_t>{w.dw};
  if ((st = a->ints("kernel_shape", kernel)) || (st = a->ints("strides", strides)) || (st = a->ints("pads", l.pads)) ||
      (st = a->ints("dilations", dilations)) || (st = a->one_int("group", w.group))) {
    return take_message(st);
  }
  if (activation) {
    const float inf = std::numeric_limits<float>::infinity();
    if (l.lo == 0.0f && l.hi == inf) {
      st = a->str("activation", "Relu");
    } else if ((st = a->str("activation", "Clip")) == nullptr) {
      st = a->floats("activation_params", {l.lo, l.hi});
    }
    if (st) return take_message(st);
  }
  return "";
}

bool has_activation(const OrtDelegate::Layer& l) {
  return !(std::isinf(l.lo) && l.lo < 0 && std::isinf(l.hi) && l.hi > 0);
}

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Index of OIHW element (m, c, k) in MLAS's blocked filter layouts (MlasReorderFilterOIHWBiBo:
// [M/B][Cg/B][kh*kw][B in][B out]; MlasReorderFilterOIHWBo: [M/B][Cg][kh*kw][B out]).
struct BlockedFilter {
  int64_t Cg, KS, B;
  bool bibo;
  // B is a power of two (8 or 16): shifts and masks instead of divisions, once per element.
  size_t operator()(int64_t m, int64_t c, int64_t k) const {
    const int sh = B == 16 ? 4 : B == 8 ? 3 : -1;
    if (sh < 0) return slow(m, c, k);
    const int64_t mask = B - 1;
    if (bibo) return size_t((((m >> sh) * (Cg >> sh) + (c >> sh)) * KS + k) * B * B + (c & mask) * B + (m & mask));
    return size_t((((m >> sh) * Cg + c) * KS + k) * B + (m & mask));
  }
  size_t slow(int64_t m, int64_t c, int64_t k) const {
    if (bibo) return size_t((((m / B) * (Cg / B) + c / B) * KS + k) * B * B + (c % B) * B + m % B);
    return size_t((((m / B) * Cg + c) * KS + k) * B + m % B);
  }
};

// The per-thread scratch of the NCHWc layout (reordered input and output), reused across runs
// so large layers do not page-fault on every call (execute.h: ScratchLease).
struct NchwcInputTag;
struct NchwcOutputTag;

void invoke(OrtKernelContext* ctx, const OrtOp* op, std::initializer_list<const OrtValue*> in, OrtValue* out,
            const char* what) {
  std::vector<const OrtValue*> inputs(in);
  OrtStatus* st = api().InvokeOp(ctx, op, inputs.data(), int(inputs.size()), &out, 1);
  if (st) throw std::runtime_error(std::string("onnxruntime's ") + what + " failed: " + take_message(st));
}

// The NCHWc block size of the running onnxruntime, measured once per process: ReorderInput of
// 4 channels into a NaN-filled buffer writes exactly one block (the 4 values, zero padded).
// -1 when the probe fails or writes anything else.
int probed_block_size(OrtKernelContext* ctx, const OrtOp* reorder_in) {
  static std::once_flag once;
  static int block = -1;
  std::call_once(once, [&] {
    float x[4] = {1, 2, 3, 4};
    constexpr int kMax = 64;
    alignas(64) float y[kMax];
    std::fill(y, y + kMax, std::numeric_limits<float>::quiet_NaN());
    ValueHolder xv, yv;
    try {
      xv.v = float_tensor(x, {1, 4, 1, 1});
      yv.v = float_tensor(y, {1, kMax, 1, 1});
      invoke(ctx, reorder_in, {xv.v}, yv.v, "ReorderInput");
    } catch (const std::exception&) {
      return;
    }
    int n = 0;
    while (n < kMax && !std::isnan(y[n])) ++n;
    if (n < 4 || n == kMax) return;
    for (int i = 0; i < n; ++i) {
      if (y[i] != (i < 4 ? float(i + 1) : 0.0f)) return;
    }
    block = n;
  });
  return block;
}

}  // namespace

bool static_pads(const ConvAttrs& a, const ConvWeightShape& ws, std::vector<int64_t>* pads) {
  const size_t r = size_t(ws.spatial);
  pads->assign(2 * r, 0);
  switch (a.auto_pad) {
    case AutoPad::kNotSet:
      if (!a.pads.empty()) *pads = a.pads;
      return true;
    case AutoPad::kValid:
      return true;
    case AutoPad::kSameUpper:
    case AutoPad::kSameLower: {
      // Total padding (ceil(D/s) - 1) * s + d(k-1) + 1 - D is d(k-1) for every D only at stride 1.
      if (ws.sh != 1 || ws.sw != 1) return false;
      const int64_t k[2] = {ws.kh, ws.kw}, d[2] = {ws.dh, ws.dw};
      for (size_t i = 0; i < r; ++i) {
        const size_t axis = r == 2 ? i : 1;
        const int64_t total = d[axis] * (k[axis] - 1);
        const int64_t head = a.auto_pad == AutoPad::kSameLower ? (total + 1) / 2 : total / 2;
        (*pads)[i] = head;
        (*pads)[i + r] = total - head;
      }
      return true;
    }
  }
  return false;
}

namespace {

// Through the node's / run's logger, so it obeys the session's log_severity_level.
void log_message(const OrtLogger* logger, OrtLoggingLevel level, const std::string& msg) {
  OrtLoggingLevel threshold = ORT_LOGGING_LEVEL_FATAL;
  if (logger == nullptr) return;
  if (OrtStatus* st = api().Logger_GetLoggingSeverityLevel(logger, &threshold)) {
    api().ReleaseStatus(st);
    return;
  }
  if (level < threshold) return;
  if (OrtStatus* st = api().Logger_LogMessage(logger, level, msg.c_str(), __FILE__, __LINE__, "ShiftConv")) {
    api().ReleaseStatus(st);
  }
}

// The kernel's logger, or null (log_message then says nothing) when onnxruntime has none.
const OrtLogger* kernel_logger(const OrtKernelInfo* info) {
  const OrtLogger* logger = nullptr;
  if (OrtStatus* st = api().KernelInfo_GetLogger(info, &logger)) {
    api().ReleaseStatus(st);
    return nullptr;
  }
  return logger;
}

}  // namespace

void log_for_kernel(const OrtKernelInfo* info, OrtLoggingLevel level, const std::string& msg) {
  log_message(kernel_logger(info), level, msg);
}

std::unique_ptr<OrtDelegate> OrtDelegate::create(const OrtKernelInfo* info, const std::string& where, Layer layer,
                                                 const DecodedWeight& weight, int nchwc_block, double cost,
                                                 bool per_shape) {
  const OrtLogger* logger = kernel_logger(info);
  std::unique_ptr<OrtDelegate> d(new OrtDelegate());
  const ConvWeightShape& ws = layer.ws;
  const int64_t KS = ws.kh * ws.kw;
  const bool act = has_activation(layer);
  const bool has_bias = layer.bias_at_run || !layer.bias.empty();
  const int inputs = has_bias ? 3 : 2;
  if (nchwc_block > 0 && (!nchwc_eligible(ws, nchwc_block) || (layer.bias_at_run && ws.M % nchwc_block))) {
    nchwc_block = 0;  // a run-time bias cannot be padded to the block once here
  }

  // The plain kernel always: it is the layout itself or the fallback of the NCHWc one.
  {
    OpAttrs a;
    std::string err = conv_attrs(layer, act, &a);
    if (err.empty()) {
      err = act ? create_op(info, "FusedConv", "com.microsoft", 1, a, inputs, 1, &d->conv_op_)
                : create_op(info, "Conv", "", 11, a, inputs, 1, &d->conv_op_);
    }
    if (!err.empty()) {
      log_message(logger, ORT_LOGGING_LEVEL_WARNING,
                  where + "onnxruntime's dense Conv is unavailable, keeping the sparse kernel: " + err);
      return nullptr;
    }
  }
  if (nchwc_block > 0) {
    OpAttrs conv, in, out;
    std::string err = conv_attrs(layer, act, &conv);
    if (err.empty()) err = create_op(info, "Conv", "com.microsoft.nchwc", 1, conv, inputs, 1, &d->nchwc_conv_op_);
    // CreateOp applies no schema defaults: every attribute the kernels read is given.
    OrtStatus* st = nullptr;
    if (err.empty() && (st = in.one_int("channels_last", 0))) err = take_message(st);
    if (err.empty()) err = create_op(info, "ReorderInput", "com.microsoft.nchwc", 1, in, 1, 1, &d->reorder_in_op_);
    if (err.empty() && ((st = out.one_int("channels", ws.M)) || (st = out.one_int("channels_last", 0)))) {
      err = take_message(st);
    }
    if (err.empty()) err = create_op(info, "ReorderOutput", "com.microsoft.nchwc", 1, out, 1, 1, &d->reorder_out_op_);
    if (!err.empty()) {
      // NCHWc kernels are registered only where MLAS has them: keep the plain layout.
      log_message(logger, ORT_LOGGING_LEVEL_WARNING, where + "NCHWc Conv unavailable, using the plain one: " + err);
      nchwc_block = 0;
    }
  }

  d->nchwc_block_ = nchwc_block;
  const int64_t M = ws.M;
  if (nchwc_block > 0) {
    const int64_t B = nchwc_block;
    d->m_padded_ = round_up(M, B);
    const bool bibo = !(ws.Cg == 1 && ws.group == M && ws.group > 1) && !(ws.group == 1 && ws.Cg < B);
    d->reorder_input_ = !(ws.group == 1 && ws.Cg < B);
    const BlockedFilter at{ws.Cg, KS, B, bibo};
    d->weight_floats_ = size_t(d->m_padded_ * ws.Cg * KS);
    // The blocked index is a sum of a row part and a column part (at(m, c, k) = at(m, 0, 0) +
    // at(0, c, k) in both layouts): the column parts are tabulated once per layer.
    const int64_t row = ws.Cg * KS;
    std::vector<size_t> col(static_cast<size_t>(row));
    for (int64_t r = 0; r < row; ++r) col[size_t(r)] = at(0, r / KS, r % KS);
    scatter_weight(weight, d->weight_.reserve(d->weight_floats_), d->weight_floats_,
                   [&](uint64_t m, uint64_t r) { return at(int64_t(m), 0, 0) + col[size_t(r)]; });
    d->set_weight_value({d->m_padded_, ws.Cg, ws.kh, ws.kw});
  } else {
    d->m_padded_ = M;
    d->weight_floats_ = size_t(weight.elements);
    const uint64_t row = uint64_t(weight.elements / std::max<uint64_t>(1, uint64_t(M)));
    scatter_weight(weight, d->weight_.reserve(d->weight_floats_), d->weight_floats_,
                   [row](uint64_t m, uint64_t r) { return size_t(m * row + r); });
    std::vector<int64_t> shape = {M, ws.Cg};
    if (ws.spatial == 2) shape.push_back(ws.kh);
    shape.push_back(ws.kw);
    d->set_weight_value(shape);
  }
  if (!layer.bias.empty()) {
    float* b = d->bias_.reserve(size_t(d->m_padded_));
    std::fill(b, b + d->m_padded_, 0.0f);
    std::copy(layer.bias.begin(), layer.bias.end(), b);
    d->b_value_ = float_tensor(b, {d->m_padded_});
  }
  d->layer_ = std::move(layer);
  log_message(logger, ORT_LOGGING_LEVEL_INFO,
              where + "relative cost " + std::to_string(cost) + ", dense path: onnxruntime's " +
                  (nchwc_block > 0 ? "NCHWc Conv, block " + std::to_string(nchwc_block) : std::string("Conv")) +
                  (per_shape ? " or ours, chosen per input shape" : ""));
  return d;
}

std::unique_ptr<OrtDelegate> OrtDelegate::create_matmul(const OrtKernelInfo* info, const std::string& where,
                                                        Layer layer, const DecodedWeight& weight, double cost,
                                                        bool per_shape) {
  const OrtLogger* logger = kernel_logger(info);
  std::unique_ptr<OrtDelegate> d(new OrtDelegate());
  const std::string err = create_op(info, "MatMul", "", 13, OpAttrs(), 2, 1, &d->conv_op_);
  if (!err.empty()) {
    log_message(logger, ORT_LOGGING_LEVEL_WARNING,
                where + "onnxruntime's MatMul is unavailable, keeping the sparse kernel: " + err);
    return nullptr;
  }
  const int64_t M = layer.ws.M, K = layer.ws.Cg;
  d->matmul_ = true;
  d->m_padded_ = M;
  d->weight_floats_ = size_t(M * K);
  scatter_weight(weight, d->weight_.reserve(d->weight_floats_), d->weight_floats_, [&](uint64_t m, uint64_t k) {
    return size_t(int64_t(k) * M + int64_t(m));  // [M, K] -> [K, M]
  });
  d->set_weight_value({K, M});
  if (!layer.bias.empty()) std::copy(layer.bias.begin(), layer.bias.end(), d->bias_.reserve(size_t(M)));
  d->layer_ = std::move(layer);
  log_message(logger, ORT_LOGGING_LEVEL_INFO,
              where + "relative cost " + std::to_string(cost) + ", dense path: onnxruntime's MatMul" +
                  (per_shape ? " or ours, chosen per input shape" : ""));
  return d;
}

void OrtDelegate::set_weight_value(const std::vector<int64_t>& shape) {
  if (w_value_) api().ReleaseValue(w_value_);
  w_value_ = nullptr;
  w_value_ = float_tensor(weight_.reserve(weight_floats_), shape);
}

OrtDelegate::~OrtDelegate() {
  for (OrtOp* op : {conv_op_, nchwc_conv_op_, reorder_in_op_, reorder_out_op_}) {
    if (op) api().ReleaseOp(op);
  }
  if (w_value_) api().ReleaseValue(w_value_);
  if (b_value_) api().ReleaseValue(b_value_);
}

void OrtDelegate::resolve(OrtKernelContext* ctx) {
  if (nchwc_block_ == 0) return;
  const int probed = probed_block_size(ctx, reorder_in_op_);
  if (probed == nchwc_block_) return;
  const OrtLogger* logger = nullptr;
  if (OrtStatus* st = api().KernelContext_GetLogger(ctx, &logger)) {
    api().ReleaseStatus(st);
    logger = nullptr;
  }
  log_message(logger, ORT_LOGGING_LEVEL_WARNING,
              "ShiftConv: onnxruntime's NCHWc block size is " + std::to_string(probed) + ", not the predicted " +
                  std::to_string(nchwc_block_) + "; this layer uses the plain Conv");
  // The running onnxruntime blocks differently than predicted: undo the filter reorder and
  // use the plain kernel (correct, if slower).
  const ConvWeightShape& ws = layer_.ws;
  const int64_t KS = ws.kh * ws.kw, B = nchwc_block_;
  const bool bibo = !(ws.Cg == 1 && ws.group == ws.M && ws.group > 1) && !(ws.group == 1 && ws.Cg < B);
  const BlockedFilter at{ws.Cg, KS, B, bibo};
  AlignedFloats oihw;
  const size_t n = size_t(ws.M * ws.Cg * KS);
  float* dst = oihw.reserve(n);
  const float* src = weight_.reserve(weight_floats_);
  for (int64_t m = 0; m < ws.M; ++m)
    for (int64_t c = 0; c < ws.Cg; ++c)
      for (int64_t k = 0; k < KS; ++k) dst[(m * ws.Cg + c) * KS + k] = src[at(m, c, k)];
  weight_ = std::move(oihw);
  weight_floats_ = n;
  set_weight_value({ws.M, ws.Cg, ws.kh, ws.kw});
  if (b_value_) {
    api().ReleaseValue(b_value_);
    b_value_ = nullptr;
    b_value_ = float_tensor(bias_.reserve(size_t(m_padded_)), {ws.M});
  }
  m_padded_ = ws.M;
  nchwc_block_ = 0;
}

void OrtDelegate::compute(OrtKernelContext* ctx, const OrtValue* x, const std::vector<int64_t>& x_shape,
                          const OrtValue* b, const std::vector<int64_t>& out_shape) {
  std::call_once(resolved_, [&] { resolve(ctx); });
  OrtValue* y = nullptr;
  throw_if(api().KernelContext_GetOutput(ctx, 0, out_shape.data(), out_shape.size(), &y), "KernelContext_GetOutput");
  const OrtValue* bias = b_value_;
  if (layer_.bias_at_run) {
    if (b == nullptr) throw std::invalid_argument("bias input B is missing");
    bias = b;
  }
  const bool has_bias = bias != nullptr;
  if (matmul_) {
    invoke(ctx, conv_op_, {x, w_value_}, y, "MatMul");
    const float* bv = nullptr;
    if (layer_.bias_at_run) {
      bv = Ort::ConstValue(b).GetTensorData<float>();
    } else if (!layer_.bias.empty()) {
      bv = bias_.reserve(size_t(m_padded_));
    }
    float* out = Ort::UnownedValue(y).GetTensorMutableData<float>();
    const int64_t M = layer_.ws.M;
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < out_shape.size(); ++i) rows *= out_shape[i];
    const float lo = layer_.lo, hi = layer_.hi;
    if (bv == nullptr && !has_activation(layer_)) return;
    // The store of our own kernels (scalar_loops.h): y = min(max(y + b, lo), hi), NaN kept.
    for (int64_t r = 0; r < rows; ++r) {
      float* row = out + r * M;
      for (int64_t m = 0; m < M; ++m) {
        const float v = row[m] + (bv ? bv[m] : 0.0f);
        const float c = v < lo ? lo : v;
        row[m] = hi < c ? hi : c;
      }
    }
    return;
  }
  if (nchwc_block_ == 0) {
    if (has_bias) {
      invoke(ctx, conv_op_, {x, w_value_, bias}, y, "Conv");
    } else {
      invoke(ctx, conv_op_, {x, w_value_}, y, "Conv");
    }
    return;
  }
  const int64_t N = x_shape[0];
  const OrtValue* xin = x;
  ValueHolder xr, yr;
  ScratchLease<float, NchwcInputTag> in_buf(reorder_input_ ? size_t(N * x_shape[1] * x_shape[2] * x_shape[3]) : 0);
  if (reorder_input_) {
    xr.v = float_tensor(in_buf.get(), x_shape);  // channels are a multiple of the block
    invoke(ctx, reorder_in_op_, {x}, xr.v, "NCHWc ReorderInput");
    xin = xr.v;
  }
  const std::vector<int64_t> blocked = {N, m_padded_, out_shape[2], out_shape[3]};
  ScratchLease<float, NchwcOutputTag> out_buf(size_t(N * m_padded_ * out_shape[2] * out_shape[3]));
  yr.v = float_tensor(out_buf.get(), blocked);
  if (has_bias) {
    invoke(ctx, nchwc_conv_op_, {xin, w_value_, bias}, yr.v, "NCHWc Conv");
  } else {
    invoke(ctx, nchwc_conv_op_, {xin, w_value_}, yr.v, "NCHWc Conv");
  }
  invoke(ctx, reorder_out_op_, {yr.v}, y, "NCHWc ReorderOutput");
}

}  // namespace fq
