#include "op/node_frame.h"

#include <cmath>

namespace fq {

namespace {

// A missing attribute is a non-OK status, not an error.
bool found(OrtStatus* st) {
  if (!st) return true;
  Ort::GetApi().ReleaseStatus(st);
  return false;
}

// The one bias check, for a constant bias (once) and a runtime one (every run): shape [M], and
// no NaN or Inf, which would silently poison every output of its channel (the numpy reference
// refuses them too, in float and integer mode).
const float* checked_bias(const Ort::ConstValue& bv, int64_t M) {
  auto bt = bv.GetTensorTypeAndShapeInfo();
  if (bt.GetShape().size() != 1 || int64_t(bt.GetElementCount()) != M) {
    throw std::invalid_argument("bias B has shape " + shape_str(bt.GetShape()) + ", expected [" + std::to_string(M) +
                                "]");
  }
  const float* b = bv.GetTensorData<float>();
  for (int64_t i = 0; i < M; ++i) {
    if (!std::isfinite(b[i])) {
      throw std::invalid_argument("bias B holds NaN or Inf (element " + std::to_string(i) + " is " +
                                  std::to_string(b[i]) + ")");
    }
  }
  return b;
}

}  // namespace

bool attr_string(const OrtKernelInfo* info, const char* name, std::string* out) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  if (!found(api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) return false;
  std::string s(size, '\0');
  Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, name, &s[0], &size));
  s.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  *out = s;
  return true;
}

bool attr_float(const OrtKernelInfo* info, const char* name, float* out) {
  return found(Ort::GetApi().KernelInfoGetAttribute_float(info, name, out));
}

bool attr_int(const OrtKernelInfo* info, const char* name, int64_t* out) {
  return found(Ort::GetApi().KernelInfoGetAttribute_int64(info, name, out));
}

std::vector<int64_t> attr_ints(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  if (!found(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) return {};
  std::vector<int64_t> v(size);
  if (size) Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, v.data(), &size));
  return v;
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

void NodeFrame::parse(const OrtKernelInfo* info) {
  tuning = Tuning::from_env();
  std::string kind = "conv", activation = "none", auto_pad;
  attr_string(info, "kind", &kind);
  attr_string(info, "activation", &activation);
  if (kind != "conv" && kind != "dense") throw std::invalid_argument("unknown kind '" + kind + "' (conv or dense)");
  dense = kind == "dense";
  if (activation == "relu") {
    act_lo = 0.0f;
  } else if (activation == "clip") {
    // A fused Clip (ReLU6 in MobileNets): [clip_min, clip_max], each optional.
    float v = 0;
    if (attr_float(info, "clip_min", &v)) act_lo = v;
    if (attr_float(info, "clip_max", &v)) act_hi = v;
    if (std::isnan(act_lo) || std::isnan(act_hi)) {
      throw std::invalid_argument("clip_min and clip_max must be numbers, got " + std::to_string(act_lo) + " and " +
                                  std::to_string(act_hi));
    }
    if (!(act_lo <= act_hi)) throw std::invalid_argument("clip_min must not exceed clip_max");
  } else if (activation != "none") {
    throw std::invalid_argument("unknown activation '" + activation + "' (none, relu or clip)");
  }
  if (!dense) {
    if (attr_string(info, "auto_pad", &auto_pad)) attrs.auto_pad = parse_auto_pad(auto_pad);
    attrs.kernel_shape = attr_ints(info, "kernel_shape");
    attrs.strides = attr_ints(info, "strides");
    attrs.pads = attr_ints(info, "pads");
    attrs.dilations = attr_ints(info, "dilations");
    attr_int(info, "group", &attrs.group);
    if (attrs.auto_pad != AutoPad::kNotSet && !attrs.pads.empty()) {
      throw std::invalid_argument("pads and auto_pad cannot both be given");
    }
  }
}

DecodedWeight NodeFrame::decode(const OrtKernelInfo* info) {
  Ort::ConstKernelInfo ki(info);
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

  if (dense) {
    if (dw.dims.size() != 2) {
      throw std::invalid_argument("a dense weight must have rank 2 [M, K], the blob has rank " +
                                  std::to_string(dw.dims.size()));
    }
    M = dw.dims[0];
    Cg = dw.dims[1];
  } else {
    wshape = conv_weight_shape(attrs, dw.dims);
    M = wshape.M;
    Cg = wshape.Cg;
    kh = wshape.kh;
    kw = wshape.kw;
    group = wshape.group;
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
      const float* b = checked_bias(bv, M);
      bias.assign(b, b + M);
    } else if (!ki.GetInputName(2).empty()) {
      bias_at_run = true;
    }
  }
  return dw;
}

RunBias NodeFrame::run_bias(Ort::KernelContext& ctx) const {
  RunBias b;
  b.data = bias.empty() ? nullptr : bias.data();
  if (bias_at_run) {
    Ort::ConstValue bv = ctx.GetInput(2);
    b.value = bv;
    if (bv != nullptr) b.data = checked_bias(bv, M);
  }
  return b;
}

int64_t NodeFrame::dense_rows(const std::vector<int64_t>& x_shape) const {
  if (x_shape.empty() || x_shape.back() != Cg) {
    throw std::invalid_argument("input X " + shape_str(x_shape) + " does not end in K = " + std::to_string(Cg));
  }
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x_shape.size(); ++i) rows *= x_shape[i];
  return rows;
}

std::vector<int64_t> NodeFrame::dense_out_shape(const std::vector<int64_t>& x_shape) const {
  std::vector<int64_t> out(x_shape.begin(), x_shape.end() - 1);
  out.push_back(M);
  return out;
}

std::vector<int64_t> NodeFrame::conv_out_shape(const ConvShape& cs) const {
  std::vector<int64_t> out = {cs.N, M};
  if (wshape.spatial == 2) out.push_back(cs.OH);
  out.push_back(cs.OW);
  return out;
}

bool NodeFrame::write_empty_output(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape) const {
  int64_t elements = 1;
  for (int64_t d : x_shape) elements *= d;
  if (elements != 0) return false;
  if (dense) {
    dense_rows(x_shape);  // checks the shape
    ctx.GetOutput(0, dense_out_shape(x_shape));
    return true;
  }
  if (x_shape.size() != size_t(wshape.spatial) + 2 || x_shape[0] != 0) {
    throw std::invalid_argument("input X " + shape_str(x_shape) + " has an empty spatial or channel axis");
  }
  std::vector<int64_t> probe = x_shape;
  probe[0] = 1;
  ConvShape cs = conv_shape(attrs, wshape, probe);
  cs.N = 0;
  ctx.GetOutput(0, conv_out_shape(cs));
  return true;
}

}  // namespace fq
