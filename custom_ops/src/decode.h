// Parsing and validation of one compressed weight tensor, exactly per docs/FORMAT.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "format_error.h"

namespace fq {

constexpr uint64_t kMaxElements = uint64_t(1) << 28;
constexpr int kMaxNdim = 8;

struct QuantParams {
  int mode = 0;  // 0 shift, 1 focused
  int bits = 0;  // bits per nonzero code
  float alpha = 0, centre0 = 0, centre1 = 0;
  int32_t b = 0;  // exponent offset
};

// A decoded tensor kept sparse: memory is O(tokens), never O(elements), so a tiny blob that
// declares 2^28 mostly-zero elements costs nothing.
struct DecodedWeight {
  std::vector<uint32_t> dims;  // outermost first
  uint64_t elements = 0;       // product of dims
  QuantParams params;
  int block = 1;    // declared mask-sharing block (informational, never trusted)
  int run_max = 0;  // R
  uint32_t tokens = 0;
  std::vector<float> levels;     // float32 value of every code, 2^bits entries
  std::vector<uint32_t> index;   // flat row-major index of every coded element, increasing
  std::vector<uint8_t> code;     // its code
};

// Float32 level of every code, evaluated step by step without FMA (bit-exact with fmt.levels).
// Throws FormatError for parameters a decoder must reject.
std::vector<float> compute_levels(const QuantParams& params);

// Decodes and fully validates a blob (magic, version, fields, length, CRC-32, code table,
// payload). Throws FormatError naming the broken rule.
DecodedWeight decode_weight(const uint8_t* data, size_t size);

}  // namespace fq
