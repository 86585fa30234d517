// Canonical Huffman decoding (DEFLATE order, RFC 1951 3.2.2) of the token stream of one
// compressed tensor, per docs/FORMAT.md "Huffman code". Every input byte is untrusted: tables
// are validated on construction and decoding stops with FormatError at the first bit pattern
// that matches no code or runs past the payload.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format_error.h"

namespace fq {

class HuffmanDecoder {
 public:
  static constexpr int kMaxLength = 15;
  // Codes up to this length resolve in one table lookup; longer ones take the canonical walk.
  static constexpr int kLutBits = 11;

  // lengths[s]: code length of symbol s in bits, 0 = unused. Throws FormatError for lengths
  // above 15 or an over-subscribed table (Kraft sum above 1).
  explicit HuffmanDecoder(const std::vector<uint8_t>& lengths);

  bool empty() const { return used_ == 0; }

  // Decodes exactly `count` symbols from `payload` (MSB first) and calls sink(symbol) for each.
  // The payload must hold them exactly: ceil(bits / 8) bytes with zero padding bits.
  template <class Sink>
  void decode(const uint8_t* payload, size_t nbytes, uint64_t count, Sink&& sink) const;

 private:
  struct LutEntry {
    uint32_t symbol;
    uint8_t length;  // 0: no code of length <= kLutBits has this prefix
  };
  uint32_t slow_symbol(uint32_t window15, int* length) const;

  size_t used_ = 0;
  uint32_t count_[kMaxLength + 1] = {};
  uint32_t first_code_[kMaxLength + 1] = {};
  uint32_t first_index_[kMaxLength + 1] = {};
  std::vector<uint32_t> sorted_;  // used symbols ordered by (length, symbol)
  std::vector<LutEntry> lut_;
};

template <class Sink>
void HuffmanDecoder::decode(const uint8_t* payload, size_t nbytes, uint64_t count, Sink&& sink) const {
  const uint64_t total_bits = uint64_t(nbytes) * 8;
  if (count == 0) {
    if (nbytes != 0) throw FormatError("payload is not empty but the tensor has no tokens");
    return;
  }
  if (empty()) throw FormatError("tokens are declared but the code table is empty");
  if (count > total_bits) {
    throw FormatError(std::to_string(count) + " tokens cannot fit in a " + std::to_string(nbytes) +
                      "-byte payload");
  }
  // A zero-padded copy lets the bit reader fetch 8 bytes at any position without bounds tests.
  std::vector<uint8_t> buf(nbytes + 8, 0);
  for (size_t i = 0; i < nbytes; ++i) buf[i] = payload[i];
  const uint8_t* b = buf.data();
  uint64_t pos = 0;
  uint64_t t = 0;
  while (t < count) {
    if (pos >= total_bits) throw FormatError("payload ends before the last token");
    const uint8_t* p = b + (pos >> 3);
    uint64_t w = uint64_t(p[0]) << 56 | uint64_t(p[1]) << 48 | uint64_t(p[2]) << 40 |
                 uint64_t(p[3]) << 32 | uint64_t(p[4]) << 24 | uint64_t(p[5]) << 16 |
                 uint64_t(p[6]) << 8 | uint64_t(p[7]);
    w <<= (pos & 7);
    // Every symbol whose longest possible code still lies inside the 64-bit window is decoded
    // from it (4-10 per refill): one table lookup and a shift each, instead of a refill each.
    int avail = 64 - int(pos & 7);
    do {
      const LutEntry& e = lut_[w >> (64 - kLutBits)];
      uint32_t symbol;
      int length;
      if (e.length) {
        symbol = e.symbol;
        length = e.length;
      } else {
        symbol = slow_symbol(uint32_t(w >> (64 - kMaxLength)), &length);
        if (length == 0) {
          throw FormatError("bit pattern at payload bit " + std::to_string(pos) + " matches no code");
        }
      }
      pos += uint64_t(length);
      w <<= length;
      avail -= length;
      sink(symbol);
      ++t;
    } while (t < count && avail >= kMaxLength && pos < total_bits);
  }
  if (pos > total_bits) throw FormatError("payload ends inside the last token");
  if (total_bits - pos >= 8) throw FormatError("payload is longer than its tokens");
  if (pos & 7) {
    const uint8_t pad_mask = uint8_t(0xFFu >> (pos & 7));
    if (b[pos >> 3] & pad_mask) throw FormatError("payload padding bits are not zero");
  }
}

}  // namespace fq
