// Canonical Huffman decoding (DEFLATE order, RFC 1951 3.2.2) of the token stream of one
// compressed tensor, per docs/FORMAT.md "Huffman code". Every input byte is untrusted: tables
// are validated on construction and decoding stops at the first bit pattern that matches no
// code or runs past the payload.
//
// Two decoders share the tables: decode_fast() is the one session creation runs (no per-token
// checks beyond what keeps memory accesses in bounds; it reports failure as `false`), decode()
// checks every token and throws FormatError naming the first broken rule. A caller runs
// decode_fast() and, only when it fails, decode() on the same bytes for the exact message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "format_error.h"

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

  // The same decoding, faster: true when decode() would accept the payload and call sink with
  // the same values. On false, sink may have been called for any prefix of the tokens, with
  // values of symbols (any values, not necessarily a prefix of a valid stream), at most
  // `count` times; the caller discards what it got. Reads no byte outside the payload.
  template <class Sink>
  bool decode_fast(const uint8_t* payload, size_t nbytes, uint64_t count, Sink&& sink) const;

 private:
  // Table entry: value << 8 | code length (0: no code of length <= kLutBits has this prefix).
  static constexpr uint32_t kLengthMask = 0xFF;
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

template <class Sink>
bool HuffmanDecoder::decode_fast(const uint8_t* payload, size_t nbytes, uint64_t count, Sink&& sink) const {
  const uint64_t total_bits = uint64_t(nbytes) * 8;
  if (count == 0) return nbytes == 0;
  if (empty() || count > total_bits) return false;
  // The bit buffer (F. Giesen's branch-free refill, "Reading bits in far too many ways"): `buf`
  // holds the next stream bits MSB first, the top `have` of them valid; a refill ORs in the 8
  // bytes at `p` below them and moves `p` past the whole bytes now held, leaving 56..63 valid
  // bits. Three codes of at most 15 bits then need no check of their own: per token the
  // critical path is one table lookup and one shift, with no loop exit to mispredict every few
  // tokens (the reason this is about twice as fast as decode()).
  uint64_t buf = 0;
  int have = 0;
  uint64_t t = 0;
  const uint32_t* lut = lut_.data();
  auto refill = [&](const uint8_t*& p) {
    uint64_t next;
    std::memcpy(&next, p, 8);
    next = __builtin_bswap64(next);  // MSB-first stream on a little-endian load
    buf |= next >> have;
    p += (63 - have) >> 3;
    have |= 56;
  };
  auto one = [&]() {
    uint32_t e = lut[buf >> (64 - kLutBits)];
    if (__builtin_expect((e & kLengthMask) == 0, 0)) {
      e = slow_entry(buf);
      if (e == 0) return false;
    }
    const int length = int(e & kLengthMask);
    buf <<= length;
    have -= length;
    sink(e >> 8);
    return true;
  };
  static_assert(3 * kMaxLength <= 56, "a refill must hold three codes");
  // Straight from the payload while the 8-byte load at p stays inside it. Bits consumed so far:
  // 8 * (p - payload) - have; a stream that runs past its end stops at the next check.
  const uint8_t* p = payload;
  const uint8_t* const end = payload + nbytes;
  while (count - t >= 3 && end - p >= 8) {
    refill(p);
    if (!one() || !one() || !one()) return false;
    t += 3;
    if (uint64_t(p - payload) * 8 - uint64_t(have) > total_bits) return false;
  }
  // The last bytes from a zero-padded copy, one token per refill and check: at most 2 tokens
  // remain or fewer than 8 bytes, so the reads stay in the copy (a check per token stops a
  // stream running past its end within 15 bits, 2 bytes).
  const uint64_t base = uint64_t(p - payload);
  uint8_t tail[64] = {};
  const size_t copy = std::min<size_t>(size_t(end - p), 32);
  if (copy) std::memcpy(tail, p, copy);
  const uint8_t* q = tail;
  while (t < count) {
    if ((base + uint64_t(q - tail)) * 8 - uint64_t(have) >= total_bits) return false;
    if (q - tail > 48) return false;  // unreachable (see above); keeps the load inside `tail`
    refill(q);
    if (!one()) return false;
    ++t;
  }
  const uint64_t pos = (base + uint64_t(q - tail)) * 8 - uint64_t(have);
  if (pos > total_bits || total_bits - pos >= 8) return false;
  if (pos & 7) {
    // The padding bits: the rest of the byte holding bit pos, all in the buffer or in the
    // next byte of the stream (the payload's last byte).
    const uint8_t last = payload[nbytes - 1];
    if (last & uint8_t(0xFFu >> (pos & 7))) return false;
  }
  return true;
}

}  // namespace fq
