// Which path runs a conv layer: our sparse kernel or onnxruntime's own dense kernel
// (ort_delegate.h). Chosen once per kernel from the decoded weight under a rule calibrated with
// bench/kernel.py (docs/PERFORMANCE.md, "Dense layers"); an override forces either for tests
// and comparisons.
#pragma once
#include <string>

#include "plan/conv_geometry.h"
#include "plan/plan.h"

namespace fq {

// auto: the measured rule; own: always our kernel; ort: onnxruntime's kernel in its best layout
// where it can run the layer; nchw / nchwc: that layout (nchwc falls back to nchw where the
// layer or the CPU does not allow it).
enum class DenseMode { kAuto, kOwn, kOrt, kNchw, kNchwc };

// "" means auto. Throws std::invalid_argument for anything else than the names above.
DenseMode parse_dense_mode(const std::string& s);

// Can onnxruntime's NCHWc Conv run this layer with block size `block`? (The conditions of its
// NchwcTransformer: 2-D, block-aligned channels, or fewer input channels than a block.)
bool nchwc_eligible(const ConvWeightShape& ws, int block);

// Our kernel's cost for this weight relative to a dense kernel doing every multiply-add:
// the row-group cost units of plan.h per dense MAC (unstructured 80%: ~0.2; a dense layer on
// the g = 8 path: 3.9 / 8 = 0.49; depthwise layers: their density).
double relative_cost(const SparseWeight& w);

struct DensePath {
  bool delegate = false;  // run by onnxruntime's kernel
  bool packed = false;    // dense kind: our packed dense GEMM (packed_gemm.h)
  int nchwc_block = 0;    // > 0: in the NCHWc layout with this block
  double cost = 0;        // relative_cost of the weight (logged)
  // Our sparse kernel stays too, and one of the two above is picked per input shape
  // (depthwise_prefers_ort, pointwise_prefers_ort, matmul_prefers_ort, matmul_prefers_packed).
  bool keep_own = false;
};

// FQ_ONNX_PACKED_GEMM (Tuning::packed_gemm): "0" never use the packed GEMM (the rule before it:
// onnxruntime's MatMul at few rows), "1" always where the weight may be held dense, "" or
// "auto" the rule. Throws std::invalid_argument for other values.
enum class PackedGemmMode { kAuto, kNever, kAlways };
PackedGemmMode parse_packed_gemm_mode(const std::string& s);

// The choice for a dense-kind layer (Gemm / MatMul). auto and own: the packed dense GEMM where
// the weight is dense enough (keeping the sparse kernel too in a band where it wins at some row
// counts); ort / nchw / nchwc: onnxruntime's MatMul.
DensePath choose_matmul_path(DenseMode mode, const SparseWeight& w, PackedGemmMode packed = PackedGemmMode::kAuto);
bool matmul_prefers_ort(int64_t rows);
bool matmul_prefers_packed(int64_t rows);

// For a depthwise conv of this density (nonzero taps / all taps): is onnxruntime's NCHWc kernel
// faster at `out_pixels` output pixels per plane? `strided`: a stride above 1. `small_plane`:
// our small-plane kernel (kernels.h: DepthwiseSmallArgs) would run it.
bool depthwise_prefers_ort(double density, int64_t out_pixels, bool strided, bool small_plane = false);

// For a 1x1 conv that keeps both kernels (several threads, few input channels): is onnxruntime's
// Conv faster at this batch size?
bool pointwise_prefers_ort(int64_t batch);

// The choice for a conv layer. `pads_static`: the pads do not depend on the input size
// (static_pads), a precondition of delegating. `threads`: the session's intra-op threads.
// `nchwc_block`: the block size to reorder NCHWc filters for (Tuning::nchwc_block(); a wrong one
// exercises ort_delegate's verified fallback, 0 disables the NCHWc layout).
DensePath choose_dense_path(DenseMode mode, const SparseWeight& w, const ConvWeightShape& ws, bool pads_static,
                            int64_t threads, int nchwc_block);

}  // namespace fq
