// The single place that includes onnxruntime's C++ API. ORT_API_MANUAL_INIT: the API table is
// handed to RegisterCustomOps by the running onnxruntime (we never link libonnxruntime).
#pragma once
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

namespace fq {

// The oldest onnxruntime C API this library uses (onnxruntime 1.21). Requested from the runtime
// at registration, so it runs on every onnxruntime >= 1.21 whatever headers it was built with.
constexpr uint32_t kOrtApiVersion = 21;
static_assert(ORT_API_VERSION >= kOrtApiVersion, "onnxruntime headers older than 1.21");

}  // namespace fq
