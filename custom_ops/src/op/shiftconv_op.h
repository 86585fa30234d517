// The fq_onnx.ShiftConv custom op (docs/SHIFTCONV.md): the onnxruntime kernel, a node frame
// (node_frame.h) composed with the arithmetic of float mode (float_op.h) or integer mode
// (int_op.h), and the op description onnxruntime registers (register.cc).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "op/float_op.h"
#include "op/int_op.h"
#include "op/node_frame.h"
#include "op/ort_api.h"

namespace fq {

class ShiftConvKernel {
 public:
  // Parses the node, decodes and validates the weight once, chooses float or integer mode and
  // sets it up. Throws std::exception with a message naming the node.
  // kernel_choice: kernels/cpu_features.h's name ("" = FQ_ONNX_KERNEL or auto).
  // dense_choice: dense/dense_path.h's mode name ("" = FQ_ONNX_DENSE or auto).
  // threads: the session's intra-op threads (0: unknown).
  ShiftConvKernel(const OrtKernelInfo* info, const std::string& kernel_choice, const std::string& dense_choice,
                  int64_t threads = 0);
  ShiftConvKernel(const ShiftConvKernel&) = delete;
  ShiftConvKernel& operator=(const ShiftConvKernel&) = delete;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);

  NodeFrame frame_;  // the ops below refer to it
  std::unique_ptr<FloatShiftConv> float_;  // exactly one of the two is set
  std::unique_ptr<IntShiftConv> int_;
};

struct ShiftConvOp : Ort::CustomOpBase<ShiftConvOp, ShiftConvKernel, /*WithStatus=*/true> {
  // kernel_choice: "" (use FQ_ONNX_KERNEL or auto), "auto", "scalar", "avx2", "avx512".
  // dense_choice: "" (use FQ_ONNX_DENSE or auto), "auto", "own", "ort", "nchw", "nchwc".
  // threads: the session's intra-op threads (register.cc: fq_onnx.threads; 0 = unknown).
  ShiftConvOp(std::string kernel_choice, std::string dense_choice, int64_t threads = 0);

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const;
  const char* GetName() const { return "ShiftConv"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  std::string kernel_choice_;
  std::string dense_choice_;
  int64_t threads_ = 0;
};

}  // namespace fq
