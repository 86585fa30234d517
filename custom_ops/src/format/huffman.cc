#include "format/huffman.h"

#include <stdexcept>

namespace fq {

HuffmanDecoder::HuffmanDecoder(const std::vector<uint8_t>& lengths, const std::vector<uint32_t>& values) {
  if (!values.empty() && values.size() != lengths.size()) throw std::invalid_argument("Huffman symbol values do not match the symbols");
  values_.resize(lengths.size());
  for (size_t s = 0; s < lengths.size(); ++s) {
    values_[s] = values.empty() ? uint32_t(s) : values[s];
    if (values_[s] > kMaxValue) throw std::invalid_argument("Huffman symbol value above 2^24 - 1");
  }
  for (uint8_t len : lengths) {
    if (len > kMaxLength) throw FormatError("Huffman code length above 15");
    if (len) {
      ++count_[len];
      ++used_;
    }
  }
  // Kraft inequality in integers: sum over codes of 2^(15 - len) <= 2^15.
  uint64_t kraft = 0;
  for (int l = 1; l <= kMaxLength; ++l) kraft += uint64_t(count_[l]) << (kMaxLength - l);
  if (kraft > (uint64_t(1) << kMaxLength)) {
    throw FormatError("over-subscribed Huffman code table (Kraft sum above 1)");
  }
  // Canonical codes: next[l] = (next[l-1] + count[l-1]) << 1; symbols of one length in order.
  uint32_t code = 0, index = 0;
  for (int l = 1; l <= kMaxLength; ++l) {
    code = (code + count_[l - 1]) << 1;
    first_code_[l] = code;
    first_index_[l] = index;
    index += count_[l];
  }
  sorted_.resize(used_);
  std::vector<uint32_t> fill(first_index_, first_index_ + kMaxLength + 1);
  for (size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s]) sorted_[fill[lengths[s]]++] = uint32_t(s);
  }
  lut_.assign(size_t(1) << kLutBits, 0);
  for (int l = 1; l <= kLutBits; ++l) {
    for (uint32_t i = 0; i < count_[l]; ++i) {
      const uint32_t c = first_code_[l] + i;
      const uint32_t lo = c << (kLutBits - l), hi = (c + 1) << (kLutBits - l);
      const uint32_t entry = values_[sorted_[first_index_[l] + i]] << 8 | uint32_t(l);
      for (uint32_t k = lo; k < hi; ++k) lut_[k] = entry;
    }
  }
}

uint32_t HuffmanDecoder::slow_symbol(uint32_t window15, int* length) const {
  for (int l = kLutBits + 1; l <= kMaxLength; ++l) {
    const uint32_t c = window15 >> (kMaxLength - l);
    if (c >= first_code_[l] && c - first_code_[l] < count_[l]) {
      *length = l;
      return sorted_[first_index_[l] + (c - first_code_[l])];
    }
  }
  *length = 0;
  return 0;
}

}  // namespace fq
