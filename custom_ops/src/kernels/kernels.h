// The microkernel interface shared by the per-ISA translation units. Kept to plain C types on
// purpose: kernel_avx2.cc / kernel_avx512.cc are compiled with AVX flags, and any inline function
// or template they shared with the rest of the library could be emitted there with AVX
// instructions and then picked by the linker for callers on CPUs without AVX.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fq {

// Accumulates one sub-tile of V vectors of output pixels for a group of g output channels that
// share the same input taps:
//   acc[j * acc_stride + i] (+)= sum_t w[t * g + j] * in[off[t] + i],  0 <= i < V * lanes
// The sums stay in registers for the whole tap list; `accumulate` = 0 starts from zero,
// otherwise from the values already in acc (input-channel chunks after the first).
using TileFn = void (*)(const float* in, const int32_t* off, const float* w, size_t n, float* acc,
                        size_t acc_stride, int accumulate);

// Stores one contiguous run of outputs: dst[i] = min(max(src[i] + b, lo), hi), 0 <= i < len
// (the bias and the fused ReLU/Clip of the output store; NaN propagates as in the scalar form).
using StoreFn = void (*)(const float* src, float* dst, int64_t len, float b, float lo, float hi);

// Splits `rows` input rows into their even and odd columns with zero padding (column stride 2
// packing of one row phase of one image): for i < rows and j < Wq,
//   r0[i * Wq + j] = s_i[2j - pad_left],  r1[i * Wq + j] = s_i[2j + 1 - pad_left],
// where s_i = src + i * src_stride holds W floats and columns outside [0, W) give zero. r0 or r1
// may be null (phase not used). Reads only s_i[0 .. W).
using DeinterleaveFn = void (*)(const float* src, int64_t src_stride, int64_t rows, int64_t W, int64_t pad_left,
                                float* r0, float* r1, int64_t Wq);

// One (image, channel) plane of a depthwise conv (one input channel per output channel), read
// straight from X without packing: y[oh * OW + ow] = clamp(b + sum_t w[t] * x[iy * W + ix]) with
// iy = oh * sh + dy[t] - pad_top, ix = ow * sw + dx[t] - pad_left, out-of-image terms omitted.
struct DepthwiseArgs {
  const float* x;
  float* y;
  int64_t H, W, OH, OW, sh, sw, pad_top, pad_left;
  const int32_t* dy;  // per tap: ky * dilation_h
  const int32_t* dx;  // per tap: kx * dilation_w
  const float* w;
  size_t n;
  float b, lo, hi;
};
using DepthwiseFn = void (*)(const DepthwiseArgs& a);

// Consecutive planes of a depthwise conv with stride 1 and W == OW (any pads and dilation),
// planes of at most kSmallPlaneMax pixels: with equal row lengths in and out, tap p reads the
// flat plane at a constant offset offs[p] from the output pixel, and which output pixels have
// it inside the image is a per-vector lane mask (bit i of masks[p * nvec + v]: pixel v*lanes+i),
// computed once per input shape. A tap is then one masked load and one FMA per vector, with
// no per-plane setup (the plane-by-plane kernels above pay row bounds or lane bookkeeping):
//   y_j[q] = clamp(bias[j] + sum_{t in [tap_ptr[j], tap_ptr[j+1])} w[t] * x_j[q + offs[taps[t]]])
// for plane j < planes, q < P; x_j = x + j * x_plane, y_j = y + j * P. bias may be null.
constexpr int64_t kSmallPlaneMax = 256;
struct DepthwiseSmallArgs {
  const float* x;
  float* y;
  int64_t planes, P, nvec, x_plane;  // x_plane: H * W (P = OH * OW)
  const uint32_t* masks;    // [window tap][nvec]
  const int32_t* offs;      // [window tap]
  const uint32_t* tap_ptr;  // [planes + 1] into taps / w
  const uint32_t* taps;     // window tap (ky * kw + kx) of every nonzero
  const float* w;
  const float* bias;
  float lo, hi;
};
using DepthwiseSmallFn = void (*)(const DepthwiseSmallArgs& a);

// Dense rows times one packed weight panel (packed_gemm.h), 1 <= rows <= gemm_mr:
//   s[r][c] = sum_k x[r * ldx + k] * panel[k * gemm_nr + c]      (k < K, c < gemm_nr)
// plus part[r * gemm_nr + c] if flags & kGemmAccumulate (partial sums of earlier K blocks).
// Without kGemmFinal s goes to part; with it y[r * ldy + c] = min(max(s + b[c], lo), hi) for
// c < cols. panel holds K rows of gemm_nr floats and b gemm_nr floats (zero past the matrix
// edge); only the first `cols` outputs of a row of y are written.
constexpr int kGemmAccumulate = 1, kGemmFinal = 2;
using GemmFn = void (*)(const float* x, size_t ldx, int rows, const float* panel, size_t K, float* part, int flags,
                        const float* b, float* y, size_t ldy, int cols, float lo, float hi);

struct KernelTable {
  const char* name;   // "scalar", "avx2", "avx512"
  int lanes;          // floats per vector register
  int max_vectors;    // vectors in the widest tile (the tile size is max_vectors * lanes)
  // fn[log2 g][V] for g in {1, 2, 4, 8} and V in 1..16 (fn[.][0] is null); null where the
  // g * V accumulators (and, for g > 1, the V input vectors) would not fit the register file.
  // Available widths are contiguous from V = 1: the driver splits a tile into near-equal
  // sub-tiles of at most the widest V.
  TileFn fn[4][17];
  StoreFn store;
  DeinterleaveFn deinterleave;
  DepthwiseFn depthwise;
  // The same for stride 1 with W == OW (ONNX "same" padding): the plane as one flat run of
  // pixels, masks per lane instead of per row (short rows). Null where the ISA has no masks.
  DepthwiseFn depthwise_flat;
  DepthwiseSmallFn depthwise_small;
  // Small-M dense GEMM: panel width (floats) and the most rows one call keeps in registers.
  int gemm_nr;
  int gemm_mr;
  GemmFn gemm;
};

const KernelTable* kernels_scalar();
#if defined(FQ_ONNX_HAVE_X86_SIMD)
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
#endif

}  // namespace fq
