#include "plan/conv_geometry.h"

#include <algorithm>
#include <stdexcept>

namespace fq {
namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// One spatial axis, exactly as onnxruntime's ComputePadAndOutputShape.
void axis(AutoPad mode, int64_t in, int64_t k, int64_t s, int64_t d, int64_t pad_b, int64_t pad_e,
          int64_t* out, int64_t* head) {
  const int64_t dk = d * (k - 1) + 1;
  switch (mode) {
    case AutoPad::kNotSet:
      *head = pad_b;
      *out = (in + pad_b + pad_e - dk) >= 0 ? (in + pad_b + pad_e - dk) / s + 1 : 0;
      break;
    case AutoPad::kValid:
      *head = 0;
      *out = (in - dk) >= 0 ? (in - dk) / s + 1 : 0;
      break;
    case AutoPad::kSameUpper:
    case AutoPad::kSameLower: {
      const int64_t target = (in + s - 1) / s;
      // Padding is never negative (ONNX spec and onnx's reference). onnxruntime's own Conv
      // lets it go negative when the stride exceeds the kernel by 2 or more, shifting the
      // sampling grid; that corner case is the only place where the two differ.
      const int64_t needed = std::max<int64_t>(0, (target - 1) * s + dk - in);
      *head = mode == AutoPad::kSameLower ? (needed + 1) / 2 : needed / 2;
      *out = (in + needed - dk) / s + 1;
      break;
    }
  }
}

}  // namespace

AutoPad parse_auto_pad(const std::string& s) {
  if (s.empty() || s == "NOTSET") return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  throw std::invalid_argument("unknown auto_pad '" + s + "'");
}

ConvWeightShape conv_weight_shape(const ConvAttrs& a, const std::vector<uint32_t>& dims) {
  if (dims.size() != 3 && dims.size() != 4) {
    throw std::invalid_argument("a conv weight must have rank 3 or 4 (1-D or 2-D conv), the blob has rank " +
                                std::to_string(dims.size()));
  }
  ConvWeightShape w;
  w.spatial = int(dims.size()) - 2;
  w.M = dims[0];
  w.Cg = dims[1];
  w.kh = w.spatial == 2 ? dims[2] : 1;
  w.kw = dims.back();
  std::vector<int64_t> kernel(dims.begin() + 2, dims.end());
  const size_t r = size_t(w.spatial);
  if (!a.kernel_shape.empty() && a.kernel_shape != kernel) {
    throw std::invalid_argument("kernel_shape " + join(a.kernel_shape) + " disagrees with the weight's " +
                                join(kernel));
  }
  auto check = [&](const std::vector<int64_t>& v, size_t n, const char* name, int64_t lo) {
    if (v.empty()) return;
    if (v.size() != n) {
      throw std::invalid_argument(std::string(name) + " has " + std::to_string(v.size()) +
                                  " values, expected " + std::to_string(n));
    }
    for (int64_t x : v) {
      if (x < lo) throw std::invalid_argument(std::string(name) + " " + join(v) + " out of range");
    }
  };
  check(a.strides, r, "strides", 1);
  check(a.dilations, r, "dilations", 1);
  check(a.pads, 2 * r, "pads", 0);
  if (a.group < 1) throw std::invalid_argument("group must be >= 1");
  if (w.M % a.group != 0) {
    throw std::invalid_argument("the weight's " + std::to_string(w.M) + " output channels are not divisible by group " +
                                std::to_string(a.group));
  }
  w.group = a.group;
  if (!a.strides.empty()) {
    w.sh = r == 2 ? a.strides[0] : 1;
    w.sw = a.strides.back();
  }
  if (!a.dilations.empty()) {
    w.dh = r == 2 ? a.dilations[0] : 1;
    w.dw = a.dilations.back();
  }
  return w;
}

ConvShape conv_shape(const ConvAttrs& a, const ConvWeightShape& w, const std::vector<int64_t>& x) {
  if (x.size() != size_t(w.spatial) + 2) {
    throw std::invalid_argument("input X has rank " + std::to_string(x.size()) + ", the weight needs rank " +
                                std::to_string(w.spatial + 2));
  }
  ConvShape c;
  c.N = x[0];
  c.C = x[1];
  c.H = w.spatial == 2 ? x[2] : 1;
  c.W = x.back();
  if (c.C != w.Cg * w.group) {
    throw std::invalid_argument("input X has " + std::to_string(c.C) + " channels, the weight expects " +
                                std::to_string(w.Cg * w.group) + " (" + std::to_string(w.Cg) + " x group " +
                                std::to_string(w.group) + ")");
  }
  const size_t r = size_t(w.spatial);
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
  if (!a.pads.empty()) {
    if (r == 2) {
      pt = a.pads[0]; pl = a.pads[1]; pb = a.pads[2]; pr = a.pads[3];
    } else {
      pl = a.pads[0]; pr = a.pads[1];
    }
  }
  axis(a.auto_pad, c.H, w.kh, w.sh, w.dh, pt, pb, &c.OH, &c.pad_top);
  axis(a.auto_pad, c.W, w.kw, w.sw, w.dw, pl, pr, &c.OW, &c.pad_left);
  if (c.N > 0 && (c.OH < 1 || c.OW < 1)) {
    throw std::invalid_argument("input X " + join(x) + " is smaller than the (dilated) kernel");
  }
  if (c.H < 1 || c.W < 1) throw std::invalid_argument("input X " + join(x) + " has an empty spatial axis");
  return c;
}

}  // namespace fq
