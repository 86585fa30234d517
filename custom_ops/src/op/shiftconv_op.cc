#include "op/shiftconv_op.h"

#include <new>
#include <stdexcept>

#include "kernels/cpu_features.h"

namespace fq {

ShiftConvKernel::ShiftConvKernel(const OrtKernelInfo* info, const std::string& kernel_choice,
                                 const std::string& dense_choice, int64_t threads) {
  frame_.name = Ort::ConstKernelInfo(info).GetNodeName();
  frame_.construct([&] {
    frame_.parse(info);                                // parse: attributes, activation, settings
    const DecodedWeight dw = frame_.decode(info);      // decode: the weight (once) and the bias
    const KernelTable* kernels = select_kernels(kernel_choice.empty() ? frame_.tuning.kernel : kernel_choice);
    const IntModeAttrs int_attrs = IntModeAttrs::read(info);
    if (int_attrs.has_bits) {                          // choose: integer mode (act_bits) or float
      int_ = std::make_unique<IntShiftConv>(frame_, dw, int_attrs, kernels);  // set up
    } else {
      float_ = std::make_unique<FloatShiftConv>(frame_, info, dw, kernels, dense_choice, threads);
    }
  });
}

void ShiftConvKernel::compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  Ort::ConstValue xv = ctx.GetInput(0);
  const std::vector<int64_t> x_shape = xv.GetTensorTypeAndShapeInfo().GetShape();
  const RunBias bias = frame_.run_bias(ctx);
  if (frame_.write_empty_output(ctx, x_shape)) return;  // empty inputs: empty outputs, no plan
  if (int_) {
    int_->compute(ctx, xv, x_shape, bias.data);
  } else {
    float_->compute(ctx, xv, x_shape, bias);
  }
}

OrtStatusPtr ShiftConvKernel::ComputeV2(OrtKernelContext* context) {
  // No exception may cross into onnxruntime: every failure becomes an error status.
  try {
    compute(context);
    return nullptr;
  } catch (const std::invalid_argument& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, (frame_.where() + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (frame_.where() + "out of memory").c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (frame_.where() + e.what()).c_str());
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
