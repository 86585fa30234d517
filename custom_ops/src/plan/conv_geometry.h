// ONNX Conv shape arithmetic (auto_pad, pads, strides, dilations, group) for 1-D and 2-D convs.
// A 1-D conv is handled as a 2-D conv with height 1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fq {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// Attributes of the node, as given (empty vectors mean "ONNX default").
struct ConvAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel_shape, strides, pads, dilations;
  int64_t group = 1;
};

AutoPad parse_auto_pad(const std::string& s);  // throws std::invalid_argument

// Static shape of the weight, checked against the attributes once per kernel.
struct ConvWeightShape {
  int spatial = 2;          // 1 or 2
  int64_t M = 0, Cg = 0;    // output channels, input channels per group
  int64_t kh = 1, kw = 1;   // kernel extent (kh = 1 for 1-D)
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t group = 1;
};

// Validates the attributes against the weight's dims [M, C/group, k1(, k2)]; throws
// std::invalid_argument with a message naming the mismatch.
ConvWeightShape conv_weight_shape(const ConvAttrs& attrs, const std::vector<uint32_t>& dims);

// Everything about one input shape: output size and the padding actually applied in front.
struct ConvShape {
  int64_t N = 0, C = 0, H = 1, W = 0;  // input (H = 1 for 1-D)
  int64_t OH = 1, OW = 0;              // output
  int64_t pad_top = 0, pad_left = 0;   // padding before the first row / column
};

// Output geometry for input shape [N, C, (H,) W]; throws std::invalid_argument when the input
// does not fit the node (rank, channel count, too small for the kernel).
ConvShape conv_shape(const ConvAttrs& attrs, const ConvWeightShape& ws, const std::vector<int64_t>& x_shape);

}  // namespace fq
