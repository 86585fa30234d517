// Parsing and validation of one compressed weight tensor, exactly per docs/FORMAT.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "format/format_error.h"

namespace fq {

constexpr uint64_t kMaxElements = uint64_t(1) << 28;
constexpr int kMaxNdim = 8;

struct QuantParams {
  int mode = 0;  // 0 shift, 1 focused
  int bits = 0;  // bits per nonzero code
  float alpha = 0;  // compute_levels' scale; in DecodedWeight the first scale, alphas[0]
  float centre0 = 0, centre1 = 0;
  int32_t b = 0;  // exponent offset
  int mantissa = 0;  // m: the low m bits of a code refine 2^(e-b) into 2^(e-b) * (1 + k/2^m)
};

// Bits of a code's exponent field: n - 1 - m (shift) or n - 2 - m (focused); compute_units
// has checked that it is >= 1.
inline int exponent_bits(const QuantParams& p) { return p.bits - (p.mode == 0 ? 1 : 2) - p.mantissa; }

// A decoded tensor kept sparse: memory is O(tokens), never O(elements), so a tiny blob that
// declares 2^28 mostly-zero elements costs nothing.
// An allocator whose resize() leaves new elements uninitialized: the decoder sizes its output
// arrays for every token and writes each element it keeps exactly once, so zero-filling them
// first (tens of MB for ResNet-18) only cost time and page faults.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialization: no value for trivial types
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

struct DecodedWeight {
  std::vector<uint32_t> dims;  // outermost first
  uint64_t elements = 0;       // product of dims
  QuantParams params;
  int block = 1;    // declared mask-sharing block (informational, never trusted)
  int run_max = 0;  // R
  uint32_t tokens = 0;
  // The scales: one for the tensor (A = 1) or one per row (A = dims[0]), each finite and > 0.
  std::vector<float> alphas;
  // u(v) of every code (2^bits entries): the float32 level before the scale multiplication.
  std::vector<float> units;
  std::vector<uint32_t, UninitAllocator<uint32_t>> index;  // flat row-major index of every coded element, increasing
  std::vector<uint8_t, UninitAllocator<uint8_t>> code;     // its code

  // Level of `code` in row `row` (row = flat index / (elements / dims[0])): alpha[row] * u(code),
  // one float32 multiplication, bit-exact with fmt.dequantize. decode_weight has checked that it
  // is finite for every row and code.
  float level(uint64_t row, uint32_t code) const {
    return alphas[alphas.size() == 1 ? 0 : size_t(row)] * units[code];  // one binary32 multiplication
  }
};

// u(v) of every code: t = (1 + k/2^m) * 2^(e-b) (exact), u = centre_c + (sign ? -t : t),
// step by step without FMA. Checks mode, bits, mantissa, centres and b (everything but the
// scale). Throws FormatError.
std::vector<float> compute_units(const QuantParams& params);

// Float32 level of every code for the single scale params.alpha, evaluated step by step without
// FMA (bit-exact with fmt.levels). Throws FormatError for parameters a decoder must reject.
std::vector<float> compute_levels(const QuantParams& params);

// Decodes and fully validates a blob (magic, version, fields, length, CRC-32, code table,
// payload). Throws FormatError naming the broken rule.
DecodedWeight decode_weight(const uint8_t* data, size_t size);

}  // namespace fq
