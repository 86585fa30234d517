// Compiled with -ffp-contract=off (see CMakeLists.txt): compute_levels must round each step.
#include "format/decode.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "format/crc32.h"
#include "format/huffman.h"

namespace fq {
namespace {

uint32_t rd_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
float rd_f32(const uint8_t* p) {
  const uint32_t u = rd_u32(p);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// 2^e for e in [-126, 127]: a normal float32, built from its exponent field (exact).
float pow2(int e) {
  const uint32_t u = uint32_t(e + 127) << 23;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string fmt_float(float f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(f));
  return buf;
}

// A token's meaning as HuffmanDecoder hands it out (decode_weight sets the values): the
// elements it advances over (bits 0-8: r zeros and its element, r + 1; an escape R + 1), its
// code (bits 9-16) and whether it has an element (bit 17).
constexpr unsigned kAdvanceMask = 511, kCodeShift = 9, kCodedShift = 17;

// The token stream decoded for session creation, faster than HuffmanDecoder::decode: up to
// three tokens per table lookup, and no per-token check beyond what keeps memory accesses in
// bounds. ok() false: the payload breaks a rule (which one: HuffmanDecoder::decode tells);
// the arrays then hold junk.
//
// Why it is fast: a token costs decode() a dependent chain of a table lookup and a shift, and
// a loop exit mispredicted every few tokens. Half-sparse weights have short codes (3-4 bits per
// token on average: escapes of one zero take 1 bit at R = 0), so one 11-bit lookup often
// resolves 2-3 tokens; the refill is branch-free (F. Giesen, "Reading bits in far too many
// ways"), and the elements are stored without branches.
class TokenReader {
 public:
  static constexpr int kBits = HuffmanDecoder::kLutBits;

  explicit TokenReader(const HuffmanDecoder& h) : h_(h), table_(size_t(1) << kBits) {
    // Entry per kBits-bit prefix: the tokens whose codes lie wholly inside it (at most 3, of
    // which at most 2 have an element), packed as
    //   bits 0-3 length, 4-5 tokens, 6-7 elements, 8-17 advance,
    //   18-27 / 36-45 element j's index - pos, 28-35 / 46-53 its code.
    // 0: the first code is longer than kBits (or no code): one token through h.lookup().
    for (uint32_t x = 0; x < table_.size(); ++x) {
      int used = 0, tokens = 0, elements = 0;
      uint64_t advance = 0, e = 0;
      while (tokens < 3) {
        const uint32_t se = h.prefix_entry(x << used);  // bits past the prefix read as 0
        const int len = int(se & HuffmanDecoder::kLengthMask);
        if (len == 0 || used + len > kBits) break;  // not wholly inside the prefix
        const uint32_t m = se >> 8;
        const bool coded = (m >> kCodedShift) & 1;
        if (coded && elements == 2) break;
        advance += m & kAdvanceMask;
        if (coded) {
          const unsigned at = 18 + 18 * unsigned(elements);
          e |= (advance - 1) << at | uint64_t((m >> kCodeShift) & 0xFF) << (at + 10);
          ++elements;
        }
        used += len;
        ++tokens;
      }
      if (tokens) e |= uint64_t(used) | uint64_t(tokens) << 4 | uint64_t(elements) << 6 | advance << 8;
      table_[x] = e;
    }
  }

  // Decodes `count` tokens of the payload into index / code (room for count entries each);
  // returns the number of elements and sets *pos to the elements the tokens describe.
  size_t run(const uint8_t* payload, size_t nbytes, uint64_t count, uint32_t* index, uint8_t* code, uint64_t* pos_out);
  bool ok() const { return ok_; }

 private:
  const HuffmanDecoder& h_;
  std::vector<uint64_t> table_;
  bool ok_ = true;
};

size_t TokenReader::run(const uint8_t* payload, size_t nbytes, uint64_t count, uint32_t* index, uint8_t* code,
                        uint64_t* pos_out) {
  const uint64_t total_bits = uint64_t(nbytes) * 8;
  *pos_out = 0;
  auto fail = [this] {
    ok_ = false;
    return size_t(0);
  };
  if (count == 0) return nbytes == 0 ? 0 : fail();
  if (h_.empty() || count > total_bits) return fail();
  uint64_t buf = 0;  // the next stream bits MSB first, the top `have` of them valid
  int have = 0;
  uint64_t t = 0, pos = 0;
  size_t coded = 0;
  // ORs the 8 bytes at p in below the valid bits and moves p past the whole bytes now held:
  // 56..63 valid bits after it, and the bits below them are the stream's next ones.
  auto refill = [&](const uint8_t*& p) {
    uint64_t next;
    std::memcpy(&next, p, 8);
    next = __builtin_bswap64(next);  // the stream is MSB first
    buf |= next >> have;
    p += (63 - have) >> 3;
    have |= 56;
  };
  // One token through the single-symbol table (codes longer than kBits, and the tail).
  auto single = [&]() {
    const uint32_t se = h_.lookup(buf);
    const int len = int(se & HuffmanDecoder::kLengthMask);
    if (len == 0) return false;
    const uint32_t m = se >> 8;
    buf <<= len;
    have -= len;
    pos += m & kAdvanceMask;
    index[coded] = uint32_t(pos - 1);  // an escape's slot is overwritten by the next element
    code[coded] = uint8_t(m >> kCodeShift);
    coded += (m >> kCodedShift) & 1;
    ++t;
    return true;
  };
  // Up to three tokens through the multi-token table. Stores both element slots whether used
  // or not: coded + 1 <= t + 1 < count while count - t >= 9 (the caller's condition).
  auto multi = [&]() {
    const uint64_t e = table_[buf >> (64 - kBits)];
    if (__builtin_expect(e == 0, 0)) return single();
    const int len = int(e & 15);
    buf <<= len;
    have -= len;
    index[coded] = uint32_t(pos + ((e >> 18) & 1023));
    code[coded] = uint8_t(e >> 28);
    index[coded + 1] = uint32_t(pos + ((e >> 36) & 1023));
    code[coded + 1] = uint8_t(e >> 46);
    coded += (e >> 6) & 3;
    pos += (e >> 8) & 1023;
    t += (e >> 4) & 3;
    return true;
  };
  static_assert(3 * HuffmanDecoder::kMaxLength <= 56, "a refill must hold three codes");
  // Straight from the payload while the 8-byte load at p stays inside it: three lookups (at
  // most 15 bits each) per refill. Bits consumed: 8 * (p - payload) - have; a stream running
  // past its end stops at the next check.
  const uint8_t* p = payload;
  const uint8_t* const end = payload + nbytes;
  while (count - t >= 9 && end - p >= 8) {
    refill(p);
    if (!multi() || !multi() || !multi()) return fail();
    if (uint64_t(p - payload) * 8 - uint64_t(have) > total_bits) return fail();
  }
  // The rest one token per refill from a zero-padded copy of the last bytes: fewer than 9
  // tokens remain (at most 135 bits) or fewer than 8 bytes, and a check per token stops a
  // stream running past its end within 15 bits.
  const uint64_t base = uint64_t(p - payload);
  uint8_t tail[96] = {};
  const size_t copy = std::min<size_t>(size_t(end - p), 64);
  if (copy) std::memcpy(tail, p, copy);
  const uint8_t* q = tail;
  while (t < count) {
    if ((base + uint64_t(q - tail)) * 8 - uint64_t(have) >= total_bits) return fail();
    if (q - tail > 80) return fail();  // unreachable (see above); keeps loads in `tail`
    refill(q);
    if (!single()) return fail();
  }
  const uint64_t bits = (base + uint64_t(q - tail)) * 8 - uint64_t(have);
  if (bits > total_bits || total_bits - bits >= 8) return fail();
  // Padding: the rest of the payload's last byte after the last token must be 0.
  if ((bits & 7) && (payload[nbytes - 1] & uint8_t(0xFFu >> (bits & 7)))) return fail();
  *pos_out = pos;
  return coded;
}

}  // namespace

static void check_alpha(float alpha, const std::string& what) {
  if (!std::isfinite(alpha) || !(alpha > 0)) {
    throw FormatError(what + " must be finite and positive, got " + fmt_float(alpha));
  }
}

std::vector<float> compute_units(const QuantParams& p) {
  if (p.mode != 0 && p.mode != 1) throw FormatError("unknown quantizer mode " + std::to_string(p.mode));
  const int low = p.mode == 0 ? 2 : 3;
  if (p.bits < low || p.bits > 8) {
    throw FormatError(std::string(p.mode == 0 ? "shift" : "focused") + " mode needs " +
                      std::to_string(low) + "..8 bits, got " + std::to_string(p.bits));
  }
  const char* mode_name = p.mode == 0 ? "shift" : "FQ";
  if (p.mantissa < 0 || p.mantissa > p.bits - low) {  // at least one exponent bit
    throw FormatError("mantissa " + std::to_string(p.mantissa) + " leaves no exponent bit in " +
                      std::to_string(p.bits) + "-bit " + mode_name + " mode (needs 0.." +
                      std::to_string(p.bits - low) + ")");
  }
  if (!std::isfinite(p.centre0) || !std::isfinite(p.centre1)) {
    throw FormatError("the centres must be finite");
  }
  if (p.mode == 0 && (p.centre0 != 0 || p.centre1 != 0)) {
    throw FormatError("shift mode has no centres: both must be 0");
  }
  const int m = p.mantissa;
  const int x = exponent_bits(p);
  const int k = x + m;  // bits below the sign: exponent, then mantissa
  const int64_t e_max = (int64_t(1) << x) - 1;
  const int64_t b = p.b;
  if (-b < -126 || e_max - b > 127) {
    throw FormatError("exponent offset b=" + std::to_string(p.b) +
                      " puts level exponents outside [-126, 127]");
  }
  const int V = 1 << p.bits;
  const float step = pow2(-m);  // 2^-m, m <= 6: normal
  std::vector<float> out(size_t(V), 0.0f);
  for (int v = 0; v < V; ++v) {
    const int e = (v & ((1 << k) - 1)) >> m;
    const int j = (1 << m) + (v & ((1 << m) - 1));  // 2^m + k < 2^7: exact in float32
    const bool negative = (v >> k) & 1;
    const float mant = float(j) * step;  // 1 + k/2^m, exact
    const float t = mant * pow2(int(e - b));  // exact: a normal float32 by the rule on b
    float u = negative ? -t : t;
    if (p.mode == 1) {
      const float centre = (v >> (k + 1)) ? p.centre1 : p.centre0;
      u = centre + u;  // one binary32 addition (finite: |centre|, t < 2^128 can at most overflow)
    }
    if (!std::isfinite(u)) throw FormatError("a quantization level overflows float32");
    out[size_t(v)] = u;
  }
  return out;
}

namespace {

// Every level alpha * u(v) finite for every scale. Rounding to nearest is monotone in the exact
// product, so |fl(alpha * u)| <= |fl(alpha_max * u)|: checking the largest scale checks them all
// (in O(V), not O(A * V), for up to 2^28 rows).
void check_levels_finite(const std::vector<float>& units, const std::vector<float>& alphas) {
  float amax = 0;
  for (float a : alphas) amax = a > amax ? a : amax;
  for (float u : units) {
    const float level = amax * u;  // one binary32 multiplication
    if (!std::isfinite(level)) throw FormatError("a quantization level overflows float32");
  }
}

}  // namespace

std::vector<float> compute_levels(const QuantParams& p) {
  std::vector<float> out = compute_units(p);
  check_alpha(p.alpha, "alpha");
  check_levels_finite(out, {p.alpha});
  for (float& u : out) u = p.alpha * u;  // one binary32 multiplication
  return out;
}


DecodedWeight decode_weight(const uint8_t* data, size_t size) {
  if (data == nullptr && size != 0) throw FormatError("no data");
  if (size < 12) {
    throw FormatError("blob of " + std::to_string(size) + " bytes is too short for a header");
  }
  if (std::memcmp(data, "FQW1", 4) != 0) throw FormatError("bad magic, expected 'FQW1'");
  // Version 1: byte 10 reserved (0). Version 2, written only when m > 0: byte 10 is m.
  if (data[4] != 1 && data[4] != 2) {
    throw FormatError("format version " + std::to_string(data[4]) +
                      " is not supported (this build reads 1 and 2)");
  }
  DecodedWeight w;
  w.params.mode = data[5];
  w.params.bits = data[6];
  const int ndim = data[7];
  w.block = data[8];
  w.run_max = data[9];
  if (ndim < 1 || ndim > kMaxNdim) throw FormatError("ndim " + std::to_string(ndim) + " outside 1..8");
  if (w.block < 1) throw FormatError("block must be >= 1");
  if (data[11] != 0 || (data[4] == 1 && data[10] != 0)) throw FormatError("reserved field is not 0");
  if (data[4] == 2 && data[10] == 0) {
    throw FormatError("a version 2 blob must have mantissa >= 1 (mantissa 0 is written as version 1)");
  }
  w.params.mantissa = data[10];  // checked against bits by compute_units
  const size_t h = 12 + 4 * size_t(ndim);
  if (size < h + 4) throw FormatError("blob ends inside the header");
  uint64_t n = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint32_t d = rd_u32(data + 12 + 4 * i);
    if (d < 1) throw FormatError("dimension " + std::to_string(i) + " is 0");
    n *= d;
    if (n > kMaxElements) throw FormatError("shape exceeds the limit of 2^28 elements");
    w.dims.push_back(d);
  }
  w.elements = n;
  // The scales: A is checked against dims[0] and the blob's length before anything is read or
  // allocated for them (A <= dims[0] <= 2^28, and 4 * A bytes are really there).
  const uint32_t A = rd_u32(data + h);
  if (A != 1 && A != w.dims[0]) {
    throw FormatError("scale count A=" + std::to_string(A) + " must be 1 or dims[0]=" +
                      std::to_string(w.dims[0]) + " (one per row)");
  }
  const uint64_t a = uint64_t(h) + 4 + 4 * uint64_t(A);
  if (uint64_t(size) < a + 20) throw FormatError("blob ends inside the scales or the header");
  w.alphas.resize(A);
  for (uint32_t r = 0; r < A; ++r) {
    w.alphas[r] = rd_f32(data + h + 4 + 4 * size_t(r));
    check_alpha(w.alphas[r], A == 1 ? std::string("alpha") : "alpha[" + std::to_string(r) + "]");
  }
  w.params.alpha = w.alphas[0];
  w.params.centre0 = rd_f32(data + a);
  w.params.centre1 = rd_f32(data + a + 4);
  w.params.b = int32_t(rd_u32(data + a + 8));
  w.tokens = rd_u32(data + a + 12);
  const uint32_t payload_bytes = rd_u32(data + a + 16);
  w.units = compute_units(w.params);
  check_levels_finite(w.units, w.alphas);
  if (w.tokens > n) {
    throw FormatError(std::to_string(w.tokens) + " tokens for a tensor of " + std::to_string(n) +
                      " elements");
  }
  const uint64_t V = uint64_t(1) << w.params.bits;
  const uint64_t symbols = uint64_t(w.run_max + 1) * V + 1;
  const uint64_t table_bytes = (symbols + 1) / 2;
  const uint64_t expected = a + 20 + table_bytes + payload_bytes + 4;
  if (uint64_t(size) != expected) {
    throw FormatError("blob is " + std::to_string(size) + " bytes but its header declares " +
                      std::to_string(expected));
  }
  if (crc32(data, size - 4) != rd_u32(data + size - 4)) {
    throw FormatError("CRC-32 mismatch: the compressed tensor is corrupted");
  }

  const uint8_t* table = data + a + 20;
  std::vector<uint8_t> lengths(symbols);
  for (uint64_t s = 0; s < symbols; ++s) {
    const uint8_t byte = table[s / 2];
    lengths[s] = (s & 1) ? byte >> 4 : byte & 0x0F;
  }
  if ((symbols & 1) && (table[table_bytes - 1] >> 4) != 0) {
    throw FormatError("unused high nibble of the code length table is not 0");
  }
  // Each symbol's meaning (kAdvanceMask, kCodeShift, kCodedShift), handed out by the decoder's
  // table: one lookup per token instead of a symbol and then its meaning.
  const uint64_t escape = symbols - 1;
  std::vector<uint32_t> meaning(symbols);
  for (uint64_t s = 0; s < escape; ++s) {
    meaning[s] = uint32_t(1) << kCodedShift | uint32_t(s & (V - 1)) << kCodeShift | uint32_t((s >> w.params.bits) + 1);
  }
  meaning[escape] = uint32_t(w.run_max) + 1;
  HuffmanDecoder huffman(lengths, meaning);

  // Tokens -> coded elements, into arrays sized for every token (fewer elements than tokens
  // come out: escapes), then trimmed. T <= 8 * P is checked by both decoders before any token
  // is produced, so the allocation is bounded by the blob's size; more tokens than that leave
  // capacity 0 and no token is decoded.
  const uint8_t* payload = table + table_bytes;
  const size_t capacity = w.tokens <= 8 * uint64_t(payload_bytes) ? size_t(w.tokens) : 0;
  w.index.resize(capacity);
  w.code.resize(capacity);
  TokenReader reader(huffman);
  uint64_t pos = 0;  // elements the tokens describe
  const size_t coded = reader.run(payload, payload_bytes, w.tokens, w.index.data(), w.code.data(), &pos);
  // Positions only grow, so "no token describes an element past N - 1" is "pos <= N" at the end.
  if (!reader.ok() || pos > n) {
    // Rejected: decode again, checking every token, for the message of the first broken rule
    // (the same as the Python codec's).
    pos = 0;
    huffman.decode(payload, payload_bytes, w.tokens, [&](uint32_t m) {
      pos += m & kAdvanceMask;
      if (pos > n) {
        throw FormatError("tokens describe " + std::to_string(pos) + " elements but the tensor has " +
                          std::to_string(n));
      }
    });
    throw FormatError("the payload was rejected but decodes without error");  // unreachable
  }
  w.index.resize(coded);
  w.code.resize(coded);
  return w;
}

}  // namespace fq
