// Dense layers run by onnxruntime's own CPU kernels, invoked from inside ShiftConv through
// OrtApi::CreateOp / InvokeOp (onnxruntime/core/session/standalone_op_invoker.cc: the kernel
// comes from the CPU execution provider's registry, contrib ops included). Where a layer is too
// dense for the sparse kernel to win (dense_path.h decides), this makes the layer as fast as
// onnxruntime's own Conv by construction, with the weights decoded from the blob once.
//
// Convs in two layouts, dense-kind layers as a MatMul:
//   plain  Conv (ONNX, opset 11) or com.microsoft FusedConv when an activation is fused:
//          im2col + MLAS SGEMM, a direct SGEMM for 1x1 convs.
//   NCHWc  com.microsoft.nchwc ReorderInput -> Conv -> ReorderOutput, what onnxruntime's
//          NchwcTransformer builds at ORT_ENABLE_ALL, with the filter reordered here the way
//          MLAS's MlasReorderFilterOIHWBiBo / OIHWBo do it. Its block size (16 with AVX-512,
//          8 with AVX2) is predicted from the CPU and verified once per process against the
//          running onnxruntime; on a mismatch the layer falls back to the plain layout.
//   MatMul (opset 13) on the transposed weight, bias and activation applied after it.
//
// Every kernel is created in the constructor; when onnxruntime cannot provide one (older
// runtime, a minimal build, NCHWc unavailable) create() returns null with the reason and the
// caller keeps its own path. Compute is reentrant: the weights are immutable after the first
// call, scratch is per call.
#pragma once
#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dense/dense_path.h"
#include "format/decode.h"
#include "op/ort_api.h"
#include "plan/conv_geometry.h"
#include "plan/execute.h"

namespace fq {

// Writes the decoded weight densely into dst[0, size): level(row, code) of every coded element
// at dst[at(flat index)], 0 elsewhere; the same floats as fmt.dequantize. Straight from the
// coded elements into the layout onnxruntime wants: no dense intermediate copy.
// at(row, i) is the destination of element i of row `row`. A template (not std::function), and
// rows advance instead of a division per element: this was a fifth of session creation.
template <class At>
void scatter_weight(const DecodedWeight& w, float* dst, size_t size, At at) {
  std::fill(dst, dst + size, 0.0f);
  const uint64_t row_len = w.dims.empty() || w.dims[0] == 0 ? 1 : w.elements / w.dims[0];
  uint64_t row = 0, row_begin = 0;
  for (size_t i = 0; i < w.index.size(); ++i) {
    while (w.index[i] >= row_begin + row_len) {  // indices increase (the decoder checked)
      ++row;
      row_begin += row_len;
    }
    const float v = w.level(row, w.code[i]);
    if (v != 0.0f) dst[at(row, w.index[i] - row_begin)] = v;  // +-0 levels stay +0, as in the sparse path
  }
}

// Explicit [begin..., end...] pads for onnxruntime's kernels, or false when they depend on the
// input size (auto_pad SAME_* with a stride above 1).
bool static_pads(const ConvAttrs& attrs, const ConvWeightShape& ws, std::vector<int64_t>* pads);

// Logs `msg` through the node's logger at `level` (nothing when the logger is unavailable or
// filters that level).
void log_for_kernel(const OrtKernelInfo* info, OrtLoggingLevel level, const std::string& msg);

class OrtDelegate {
 public:
  struct Layer {
    ConvWeightShape ws;
    std::vector<int64_t> pads;  // explicit (static_pads)
    std::vector<float> bias;    // constant bias [M], or empty
    bool bias_at_run = false;   // the bias is a non-constant input, passed through each run
    float lo, hi;               // the fused activation as a clamp (-inf/+inf: none)
  };

  // `weight` is the decoded OIHW weight. `nchwc_block` > 0 asks for the NCHWc layout with that
  // block size (plain where the layer is not nchwc_eligible), 0 for the plain one. Returns null
  // when onnxruntime does not provide the plain kernel; the NCHWc layout missing falls back to
  // the plain one. Both are logged through the node's logger (`where` names the node);
  // `per_shape`: the caller keeps its own kernel and picks per input shape (logged as such).
  static std::unique_ptr<OrtDelegate> create(const OrtKernelInfo* info, const std::string& where, Layer layer,
                                             const DecodedWeight& weight, int nchwc_block, double cost,
                                             bool per_shape = false);
  // Dense kind (Gemm/MatMul layers): Y[..., M] = X[..., K] W^T + B, then the activation.
  // onnxruntime's MatMul on W^T [K, M] kept here (faster than its Gemm when B cannot be
  // prepacked, as here: InvokeOp kernels get no PrePack); bias and activation follow in one pass
  // (MatMul has neither). `weight` is [M, K] (layer.ws.M = M, layer.ws.Cg = K).
  static std::unique_ptr<OrtDelegate> create_matmul(const OrtKernelInfo* info, const std::string& where,
                                                    Layer layer, const DecodedWeight& weight, double cost,
                                                    bool per_shape = false);
  ~OrtDelegate();
  OrtDelegate(const OrtDelegate&) = delete;
  OrtDelegate& operator=(const OrtDelegate&) = delete;

  // Y (of shape out_shape, allocated here as output 0) = the layer applied to x. x_shape has
  // been validated by the caller (conv_shape, or ending in K); b is the run-time bias when
  // bias_at_run (its shape checked by the caller).
  // Throws std::runtime_error with onnxruntime's message on failure.
  void compute(OrtKernelContext* ctx, const OrtValue* x, const std::vector<int64_t>& x_shape, const OrtValue* b,
               const std::vector<int64_t>& out_shape);


 private:
  OrtDelegate() = default;
  void resolve(OrtKernelContext* ctx);  // first compute: verify the NCHWc block size
  void set_weight_value(const std::vector<int64_t>& shape);

  Layer layer_;
  bool matmul_ = false;     // dense kind: conv_op_ is a MatMul, bias and activation applied here
  int nchwc_block_ = 0;     // 0: plain layout
  int64_t m_padded_ = 0;    // output channels rounded up to the block (NCHWc)
  bool reorder_input_ = false;
  AlignedFloats weight_;    // OIHW (plain) or OIHWBiBo / OIHWBo (NCHWc)
  size_t weight_floats_ = 0;
  AlignedFloats bias_;      // padded to m_padded_ for NCHWc
  OrtValue* w_value_ = nullptr;
  OrtValue* b_value_ = nullptr;
  OrtOp* conv_op_ = nullptr;        // Conv / FusedConv (also the NCHWc fallback), or MatMul
  OrtOp* nchwc_conv_op_ = nullptr;  // com.microsoft.nchwc Conv
  OrtOp* reorder_in_op_ = nullptr;  // also the block-size probe
  OrtOp* reorder_out_op_ = nullptr;
  std::once_flag resolved_;
};

}  // namespace fq
