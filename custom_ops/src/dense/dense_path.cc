#include "dense/dense_path.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fq {
namespace {

// Relative cost (see relative_cost) above which onnxruntime's kernel is faster, per layer class,
// measured with bench/kernel.py --dense at 1 thread (docs/PERFORMANCE.md, "Dense layers").
// 1x1 stride 1, plain Conv (a direct SGEMM): at cost 0.40 (60% unstructured) ours was 1.04-1.21x
// faster, at 0.47-0.49 (50%, dense) 0.71-0.89x.
constexpr double kPointwiseAbove = 0.43;
// With more than one intra-op thread, onnxruntime's plain 1x1 Conv called alone scales worse
// than our kernel, which splits the tiles (or row groups) per thread: 2 threads, batch 1,
// dense / 50%, against onnxruntime's own graph (ALL), ours vs its delegated Conv: 16->96 @112²
// 1.30-1.52x vs 0.92-0.99x, 32->16 @112² 1.66-1.76x vs 1.16-1.39x, 24->144 @56² 1.66-1.75x vs
// 0.84-0.91x, 32->192 @28² 1.41-1.42x vs 0.77-0.80x, 64->384 @14² 1.28-1.35x vs 0.92-0.95x;
// but 144->24 @56² 1.35-1.41x vs 1.55-1.56x, and at batch 8 its Conv matched or beat ours
// (16->96 @112² 1.44-1.45x vs 1.04-1.22x). With 1 thread its Conv won or tied every one of
// these. So 1x1 layers of at most this many input channels keep both kernels when the session
// has several threads, and run ours at batch 1 (pointwise_prefers_ort). Wider ones run in the
// NCHWc layout there: over the 1x1 layers of ResNet-50 and MobileNet-V2 with 96-2048 input
// channels (2 threads, batch 1 and 8, dense and 50%) its NCHWc Conv measured 0.91-1.10x of its
// graph, the plain Conv 0.75-1.41x (2048->512 @7² 0.76-0.86x, 160->960 @7² 0.75-0.92x).
constexpr int64_t kPointwiseOwnMaxInputs = 64;
// k x k convs in the NCHWc layout: at 0.40 between 0.91x and 1.05x (a tie), at 0.30 ours was
// 1.25-1.29x faster, at 0.49 0.80-0.88x.
constexpr double kNchwcAbove = 0.35;

// Dense-kind layers (1280/512/2048 -> 1000 classifiers): onnxruntime's MatMul on 1 row matched
// its own (prepacked) Gemm and beat ours from cost 0.30 (70% unstructured: ours 0.53-0.78x) up;
// at 0.20 ours was 1.20-1.23x faster on 1280/2048 inputs, 0.91x on 512. Without prepacked
// weights (InvokeOp kernels get none) its MatMul costs 1.3-1.7x more per row from 2 rows on:
// at 8 rows ours was faster at every cost measured but 0.40; at 2-4 rows slower.
constexpr double kMatMulAbove = 0.22;
constexpr int64_t kMatMulMaxRows = 4;

// Our packed dense GEMM (packed_gemm.h) against onnxruntime's session Gemm, 1280 -> 1000, 1
// thread: 0.98-1.03x at 1-4 rows, 1.28x at 8, 1.09x at 16, 1.00-1.08x at 32-64, whatever the
// density (it multiplies the zeros). The sparse kernels against the same Gemm: at relative
// cost 0.30 (70%) 0.45-0.80x at 1-16 rows; at 0.20 (80%) 1.30x at 1 row (matvec), 0.70-0.85x
// at 2-4, 1.03-1.09x at 8-16, 1.48x from 32; at 0.15 (85%) 0.99-1.07x at 2-4 and 1.33x+ above.
// So: packed for every row count above kPackedAbove; between kPackedBand and it both are kept,
// the packed GEMM taking 2..kPackedBandMaxRows rows; below, the sparse kernels alone.
constexpr double kPackedAbove = 0.22;
constexpr double kPackedBand = 0.17;
constexpr int64_t kPackedBandMinRows = 2, kPackedBandMaxRows = 16;

// Depthwise convs: our per-plane kernel against onnxruntime's NCHWc depthwise (16 channels per
// vector) depends on the output plane size more than on the density. Smallest density at which
// onnxruntime is faster, per output plane size (pixels, up to) and stride, measured on the
// MobileNet-V2 shapes (7x7 ... 112x112, 32-960 channels) at densities 0.1 ... 1, as single
// layers and inside the whole model (onnxruntime profiling, where the delegate's two reorders
// cost more than in a one-layer model; ours/theirs below, > 1 = ours faster).
constexpr int64_t kSmallPlaneDenseMaxPixels = 64;
constexpr double kSmallPlaneDenseAbove = 0.85;
struct DepthwiseRule {
  int64_t max_pixels;
  double stride1, stride2;
};
constexpr DepthwiseRule kDepthwise[] = {
    // 7x7: single layer 0.74-0.93x at densities 0.2-0.1; in the model 1.06-1.29x at 0.15 (our
    // 42-51 us against its 54-57) and 0.67-0.76x at 0.5.
    {64, 0.30, 0.30},
    // 14x14: single layer 1.07x at density 0.3, 0.81x at 0.5; in the model 1.01-1.14x at 0.5
    // (stride 1). Stride 2: 1.03x at 0.3 and 0.75x at 0.5 single, 0.86x at 0.5 in the model.
    {256, 0.50, 0.32},
    {1024, 0.45, 0.80}, // 28x28: 1.30x at 30% and 0.91x at 50% (stride 1); stride 2 0.87x dense
    {4096, 0.75, 2.0},  // 56x56: 1.06x at 70%, 0.86x dense; stride 2 (112 -> 56) ours 1.26x dense
};

}  // namespace

DenseMode parse_dense_mode(const std::string& s) {
  if (s.empty() || s == "auto") return DenseMode::kAuto;
  if (s == "own") return DenseMode::kOwn;
  if (s == "ort") return DenseMode::kOrt;
  if (s == "nchw") return DenseMode::kNchw;
  if (s == "nchwc") return DenseMode::kNchwc;
  throw std::invalid_argument("unknown dense path choice '" + s + "' (expected auto, own, ort, nchw or nchwc)");
}

bool nchwc_eligible(const ConvWeightShape& ws, int B) {
  if (B <= 1 || ws.spatial != 2) return false;
  if (ws.group > 1) {
    if (ws.M % B) return false;
    if (ws.Cg == 1 && ws.M == ws.group) return true;  // depthwise
    return ws.Cg % B == 0 && (ws.M / ws.group) % B == 0;
  }
  return ws.Cg < B || ws.Cg % B == 0;
}

double relative_cost(const SparseWeight& w) {
  const double dense_macs = double(w.M) * double(w.Cg) * double(w.kh) * double(w.kw);
  return dense_macs > 0 ? w.cost_units / dense_macs : 0.0;
}

bool depthwise_prefers_ort(double density, int64_t out_pixels, bool strided, bool small_plane) {
  // The small-plane kernel against onnxruntime alone (bench, 1 thread, batch 1 / 8): 960@7²
  // 0.83x / 1.44x dense, 1.05x / 1.85x at density 0.7, 1.17x / 2.34x at 0.5, 1.7-1.9x / 3.3-3.6x
  // at 0.2-0.1; 576@14² and 384@14² 1.21-1.93x dense and more when sparser. Only a nearly dense
  // 7x7 layer at batch 1 is left to onnxruntime (inside a model its reorders cost more).
  if (small_plane) return out_pixels <= kSmallPlaneDenseMaxPixels && density > kSmallPlaneDenseAbove;
  for (const DepthwiseRule& r : kDepthwise) {
    if (out_pixels <= r.max_pixels) return density > (strided ? r.stride2 : r.stride1);
  }
  return false;  // 112x112: ours 1.2x faster dense
}

namespace {

// The delegate holds the weight dense: never for a blob that declares far more elements than it
// codes (memory stays proportional to the file, as on our path), whatever the mode.
bool too_sparse_to_hold_dense(const SparseWeight& w) {
  const double elements = double(w.M) * double(w.Cg) * double(w.kh) * double(w.kw);
  return elements > 16.0 * double(w.nonzeros) + double(1 << 20);
}

}  // namespace

PackedGemmMode parse_packed_gemm_mode(const std::string& s) {
  if (s.empty() || s == "auto") return PackedGemmMode::kAuto;
  if (s == "0") return PackedGemmMode::kNever;
  if (s == "1") return PackedGemmMode::kAlways;
  throw std::invalid_argument("FQ_ONNX_PACKED_GEMM must be auto, 0 or 1, got '" + s + "'");
}

DensePath choose_matmul_path(DenseMode mode, const SparseWeight& w, PackedGemmMode packed) {
  DensePath p;
  p.cost = relative_cost(w);
  if (too_sparse_to_hold_dense(w)) return p;
  if (mode == DenseMode::kAuto || mode == DenseMode::kOwn) {
    if (packed == PackedGemmMode::kAlways || (packed == PackedGemmMode::kAuto && p.cost > kPackedAbove)) {
      p.packed = true;
      return p;
    }
    if (packed == PackedGemmMode::kAuto && p.cost > kPackedBand) {
      p.packed = p.keep_own = true;
      return p;
    }
    if (mode == DenseMode::kOwn || packed == PackedGemmMode::kAuto) return p;
  }
  // Forced onnxruntime, or auto without the packed GEMM: its MatMul (no prepacked weight).
  p.delegate = mode != DenseMode::kAuto || p.cost > kMatMulAbove;
  p.keep_own = p.delegate && mode == DenseMode::kAuto;  // rows are known per run
  return p;
}

bool matmul_prefers_ort(int64_t rows) { return rows <= kMatMulMaxRows; }

bool matmul_prefers_packed(int64_t rows) { return rows >= kPackedBandMinRows && rows <= kPackedBandMaxRows; }

bool pointwise_prefers_ort(int64_t batch) { return batch != 1; }

DensePath choose_dense_path(DenseMode mode, const SparseWeight& w, const ConvWeightShape& ws, bool pads_static,
                            int64_t threads, int block) {
  DensePath p;
  p.cost = relative_cost(w);
  if (mode == DenseMode::kOwn || !pads_static || too_sparse_to_hold_dense(w)) return p;
  const bool pointwise = ws.kh * ws.kw == 1 && ws.sh == 1 && ws.sw == 1 && ws.group == 1;
  const bool nchwc_ok = block > 1 && nchwc_eligible(ws, block);
  switch (mode) {
    case DenseMode::kNchw:
      p.delegate = true;
      break;
    case DenseMode::kNchwc:
      p.delegate = true;
      p.nchwc_block = nchwc_ok ? block : 0;
      break;
    case DenseMode::kOrt:
      p.delegate = true;
      p.nchwc_block = (nchwc_ok && !pointwise) ? block : 0;
      break;
    default: {
      const double r = p.cost;
      const bool depthwise = ws.group > 1 && ws.Cg == 1 && ws.M == ws.group;
      if (pointwise) {
        p.delegate = r > kPointwiseAbove;
        if (threads > 1) {
          p.keep_own = p.delegate && ws.Cg <= kPointwiseOwnMaxInputs;
          if (!p.keep_own && nchwc_ok) p.nchwc_block = block;
        }
      } else if (depthwise && nchwc_ok) {
        // The plane size is known per run: keep both (depthwise weights are small).
        p.delegate = p.keep_own = true;
        p.nchwc_block = block;
      } else if (nchwc_ok) {
        p.delegate = r > kNchwcAbove;
        p.nchwc_block = block;
      }
      // Other layers keep our kernel: onnxruntime's plain Conv (im2col) was slower than our
      // dense path on every k x k layer measured.
      break;
    }
  }
  if (!p.delegate) p.nchwc_block = 0;
  return p;
}

}  // namespace fq
