// The integer-mode microkernel interface (docs/SHIFTCONV.md, "Integer mode"), shared by the
// per-ISA translation units int_kernel_{scalar,avx2,avx512}.cc. Plain C types only, for the
// same reason as kernels.h: those files are compiled with their own -m flags.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fq {

// One code of one output row: the row's elements with that code are the taps
// [tap_begin, tap_end) (offsets into the packed input, at least one), and each contributes
//   q * W,   W = (negative ? -1 : 1) * mult * 2^shift + centre_sign * 2^centre_shift
// with mult odd (1 unless the format's mantissa m > 0: the code's 2^m + k without its trailing
// zero bits, < 2^(m+1)), mult * 2^shift < 2^31 and centre_shift <= 30 (checked when the weight
// is built). The terms of one mixture component are consecutive and share centre_sign and
// centre_shift; `flush` marks the last of them when centre_sign != 0.
struct IntTerm {
  uint32_t tap_begin = 0, tap_end = 0;
  uint32_t mult = 1;
  uint32_t shift = 0;
  uint32_t centre_shift = 0;
  int32_t negative = 0;     // 1: s = -1
  int32_t centre_sign = 0;  // sigma_c: -1, 0 (shift mode, or centre 0), +1
  int32_t flush = 0;        // 1: the component's sum Z is complete after this term
};

// Sums one sub-tile of V vectors of output pixels of one row, in 32-bit two's complement:
//   acc[i] = sum over terms g, taps k of g:  q[off[k] + i] * W_g,   0 <= i < V * lanes
// as S_g = sum_k q[off[k] + i] (adds), acc += +-((S_g * mult) << shift) and Z += S_g per code
// (the multiplication only when mult != 1: at most m + 1 shift-adds in hardware), and
// acc += sigma_c (Z << centre_shift) once per component (the paper's shift-add datapath).
using IntTileFn = void (*)(const int32_t* q, const int32_t* off, const IntTerm* terms, size_t n, int32_t* acc);

// q[i] = round_half_even(clamp(nan_to_zero(x[i] * inv_scale), qmin, qmax)), 0 <= i < n.
using QuantizeFn = void (*)(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax);

// dst[i] = min(max(float(acc[i]) * scale + b, lo), hi), 0 <= i < len; multiply and add are two
// roundings (never fused).
using IntStoreFn = void (*)(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi);

// One (image, channel) plane of a depthwise conv, from the quantized plane q (H x W) straight
// to y (OH x OW): y[oh * OW + ow] = store(sum over terms and their taps t of
// q[iy * W + ix] * W_term) with iy = oh * sh + dy[t] - pad_top, ix = ow * sw + dx[t] - pad_left,
// out-of-image taps omitted (q = 0 there), summed in the same shift-add form as IntTileFn.
struct IntDepthwiseArgs {
  const int32_t* q;
  float* y;
  int64_t H, W, OH, OW, sh, sw, pad_top, pad_left;
  const int32_t* dy;  // per tap (index into the layout's taps): ky * dilation_h
  const int32_t* dx;  // per tap: kx * dilation_w
  const IntTerm* terms;
  size_t n;
  float scale, b, lo, hi;
};
using IntDepthwiseFn = void (*)(const IntDepthwiseArgs& a);

struct IntKernelTable {
  const char* name;  // "scalar", "avx2", "avx512"
  int lanes;         // int32 per vector
  int max_vectors;   // fn[1..max_vectors] are all set
  IntTileFn fn[17];
  QuantizeFn quantize;
  IntStoreFn store;
  IntDepthwiseFn depthwise;
};

const IntKernelTable* int_kernels_scalar();
#if defined(FQ_ONNX_HAVE_X86_SIMD)
const IntKernelTable* int_kernels_avx2();
const IntKernelTable* int_kernels_avx512();
#endif

}  // namespace fq
