#include "tuning.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/cpu_features.h"

namespace fq {

Tuning Tuning::from_env() {
  Tuning t;
  if (const char* v = std::getenv("FQ_ONNX_KERNEL"); v && *v) t.kernel = v;
  if (const char* v = std::getenv("FQ_ONNX_DENSE")) t.dense = v;
  if (const char* v = std::getenv("FQ_ONNX_PACKED_GEMM")) t.packed_gemm = v;
  if (const char* v = std::getenv("FQ_ONNX_NCHWC_BLOCK")) t.nchwc_block_override = std::max(0, std::atoi(v));
  if (const char* v = std::getenv("FQ_ONNX_DEPTHWISE")) {
    const std::string s = v;
    t.depthwise = s == "rows"   ? DepthwiseChoice::kRows
                  : s == "flat" ? DepthwiseChoice::kFlat
                  : s == "0"    ? DepthwiseChoice::kOff
                                : DepthwiseChoice::kAuto;
  }
  if (const char* v = std::getenv("FQ_ONNX_THREADS")) t.threads = std::max<int64_t>(1, std::atoll(v));
  if (const char* v = std::getenv("FQ_ONNX_THREAD_SPLIT")) t.thread_split = v[0];
  if (const char* v = std::getenv("FQ_ONNX_INLINE_WORK")) t.inline_work = std::max(0.0, std::atof(v));
  if (const char* v = std::getenv("FQ_ONNX_SUB_BATCH")) t.sub_batch = std::max<int64_t>(0, std::atoll(v));
  if (const char* v = std::getenv("FQ_ONNX_MATVEC_ROWS")) t.matvec_rows = std::atoi(v);
  if (const char* v = std::getenv("FQ_ONNX_PLANE_PAD")) t.plane_pad = std::max<int64_t>(0, std::atoll(v));
  if (const char* v = std::getenv("FQ_ONNX_MAX_GROUP")) t.max_group = std::max(1, std::atoi(v));
  if (const char* v = std::getenv("FQ_ONNX_CHUNK_BYTES")) t.chunk_bytes = std::max<int64_t>(1, std::atoll(v));
  if (const char* v = std::getenv("FQ_ONNX_TILE_VECTORS")) t.tile_vectors = std::max(1, std::atoi(v));
  return t;
}

int Tuning::nchwc_block() const { return nchwc_block_override >= 0 ? nchwc_block_override : nchwc_block_guess(); }

}  // namespace fq
