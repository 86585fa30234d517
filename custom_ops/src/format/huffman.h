// Canonical Huffman decoding (DEFLATE order, RFC 1951 3.2.2) of the token stream of one
// compressed tensor, per docs/FORMAT.md "Huffman code". Every input byte is untrusted: tables
// are validated on construction and decoding stops at the first bit pattern that matches no
// code or runs past the payload.
//
// decode() checks every token and throws FormatError naming the first broken rule. Session
// creation decodes with a faster reader of its own (decode.cc) built on lookup() and
// prefix_entry(), and runs decode() only when that one rejects a payload, for the message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "format/format_error.h"

namespace fq {

class HuffmanDecoder {
 public:
  static constexpr int kMaxLength = 15;
  // Codes up to this length resolve in one table lookup; longer ones take the canonical walk.
  static constexpr int kLutBits = 11;
  // Largest per-symbol value (values below): it shares a 32-bit table entry with the length.
  static constexpr uint32_t kMaxValue = (uint32_t(1) << 24) - 1;

  // lengths[s]: code length of symbol s in bits, 0 = unused. Throws FormatError for lengths
  // above 15 or an over-subscribed table (Kraft sum above 1). values[s] (at most kMaxValue) is
  // what the sinks receive for symbol s; empty: s itself. Handing out the caller's meaning of
  // a symbol from the lookup table saves a second, dependent lookup per token.
  explicit HuffmanDecoder(const std::vector<uint8_t>& lengths, const std::vector<uint32_t>& values = {});

  bool empty() const { return used_ == 0; }

  // Decodes exactly `count` symbols from `payload` (MSB first) and calls sink(value) for each.
  // The payload must hold them exactly: ceil(bits / 8) bytes with zero padding bits. Throws
  // FormatError at the first violation.
  template <class Sink>
  void decode(const uint8_t* payload, size_t nbytes, uint64_t count, Sink&& sink) const;

  // Table entry value << 8 | length of the code the window (next stream bits, MSB first; at
  // least kMaxLength of them valid) starts with, or 0 if no code matches.
  uint32_t lookup(uint64_t window) const {
    const uint32_t e = lut_[window >> (64 - kLutBits)];
    return (e & kLengthMask) ? e : slow_entry(window);
  }
  // The entry for a kLutBits-bit prefix: a code of length <= kLutBits that the prefix starts
  // with, or length 0 (longer code or none; then only lookup() with more bits decides).
  uint32_t prefix_entry(uint32_t prefix) const { return lut_[prefix & ((1u << kLutBits) - 1)]; }
  // Entries are value << 8 | code length (length 0: no code).
  static constexpr uint32_t kLengthMask = 0xFF;

 private:
  uint32_t slow_symbol(uint32_t window15, int* length) const;
  // The entry of the symbol the 15-bit window starts with, from the canonical walk; 0 if none.
  uint32_t slow_entry(uint64_t window) const {
    int length = 0;
    const uint32_t s = slow_symbol(uint32_t(window >> (64 - kMaxLength)), &length);
    return length ? values_[s] << 8 | uint32_t(length) : 0;
  }

  size_t used_ = 0;
  uint32_t count_[kMaxLength + 1] = {};
  uint32_t first_code_[kMaxLength + 1] = {};
  uint32_t first_index_[kMaxLength + 1] = {};
  std::vector<uint32_t> sorted_;  // used symbols ordered by (length, symbol)
  std::vector<uint32_t> values_;  // per symbol
  std::vector<uint32_t> lut_;
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
  if (nbytes) std::memcpy(buf.data(), payload, nbytes);
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
    // from it (4-10 per refill), checking each.
    int avail = 64 - int(pos & 7);
    do {
      uint32_t e = lut_[w >> (64 - kLutBits)];
      if ((e & kLengthMask) == 0) {
        e = slow_entry(w);
        if (e == 0) throw FormatError("bit pattern at payload bit " + std::to_string(pos) + " matches no code");
      }
      const int length = int(e & kLengthMask);
      pos += uint64_t(length);
      w <<= length;
      avail -= length;
      sink(e >> 8);
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
