// A small C ABI for Python (ctypes, fq_onnx_runtime/dense_graph.py): decode one compressed weight
// with the same bounds-checked decoder ShiftConv uses, so that layers too dense for the sparse
// kernel can become plain onnxruntime nodes in memory (docs/PERFORMANCE.md, "Dense layers in
// onnxruntime's graph"). Exported next to RegisterCustomOps (exports.map); nothing here touches
// onnxruntime. Every function returns 0 on success, or -1 with a message in err (NUL-terminated,
// truncated to err_len) and never throws across the boundary.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "format/decode.h"
#include "plan/plan.h"

namespace {

int fail(const std::string& msg, char* err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    const size_t n = std::min(msg.size(), err_len - 1);
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
  }
  return -1;
}

// Runs f, turning whatever it throws into the return code and err.
template <class F>
int guarded(F f, char* err, size_t err_len) {
  try {
    f();
    return 0;
  } catch (const fq::FormatError& e) {
    return fail(std::string("invalid compressed weight (docs/FORMAT.md): ") + e.what(), err, err_len);
  } catch (const std::bad_alloc&) {
    return fail("out of memory while decoding the weight", err, err_len);
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_len);
  }
}

}  // namespace

extern "C" {

// The blob's dims (at most 8, outermost first; *ndim set), its coded elements with a nonzero
// level, and relative_cost (dense_path.h) of the layer as our kernel would run it with `group`
// groups: the number the library's own dense rule compares, estimated as ShiftConv does (every
// 8th block of rows). A conv blob is [M, C/group, k1(, k2)], a dense one [M, K] (group 1).
__attribute__((visibility("default"))) int fq_onnx_weight_info(const uint8_t* blob, size_t size, int64_t group,
                                                               uint32_t* dims, int* ndim, uint64_t* nonzeros,
                                                               double* cost, char* err, size_t err_len) {
  return guarded(
      [&] {
        const fq::DecodedWeight w = fq::decode_weight(blob, size);
        if (w.dims.size() < 2 || w.dims.size() > 4) {
          throw std::invalid_argument("a weight of rank " + std::to_string(w.dims.size()) + " (expected 2 to 4)");
        }
        if (group < 1 || w.dims[0] % group != 0) {
          throw std::invalid_argument("group " + std::to_string(group) + " does not divide M = " +
                                      std::to_string(w.dims[0]));
        }
        *ndim = int(w.dims.size());
        for (size_t i = 0; i < w.dims.size(); ++i) dims[i] = w.dims[i];
        const int64_t kh = w.dims.size() == 4 ? w.dims[2] : 1;
        const int64_t kw = w.dims.size() >= 3 ? w.dims.back() : 1;
        fq::SparseWeightBuilder builder(w, w.dims[0], w.dims[1], kh, kw, group);
        fq::SparseWeight s = builder.shape();
        s.cost_units = builder.estimate_cost_units(8);
        *nonzeros = s.nonzeros;
        const double macs = double(s.M) * double(s.Cg) * double(kh) * double(kw);
        *cost = macs > 0 ? s.cost_units / macs : 0.0;
      },
      err, err_len);
}

// Writes the decoded weight densely (row-major, `count` floats = the product of its dims) into
// out: the same float32 values as fmt.dequantize and as ShiftConv computes with.
__attribute__((visibility("default"))) int fq_onnx_decode_dense(const uint8_t* blob, size_t size, float* out,
                                                                uint64_t count, char* err, size_t err_len) {
  return guarded(
      [&] {
        const fq::DecodedWeight w = fq::decode_weight(blob, size);
        if (w.elements != count) {
          throw std::invalid_argument("the blob holds " + std::to_string(w.elements) + " elements, not " +
                                      std::to_string(count));
        }
        std::fill(out, out + count, 0.0f);
        const uint64_t row_len = w.dims.empty() || w.dims[0] == 0 ? 1 : w.elements / w.dims[0];
        for (size_t i = 0; i < w.index.size(); ++i) {
          const float v = w.level(w.index[i] / row_len, w.code[i]);
          if (v != 0.0f) out[w.index[i]] = v;  // +-0 levels stay +0, as in the sparse path
        }
      },
      err, err_len);
}

}  // extern "C"
