// Compiled with -ffp-contract=off (see CMakeLists.txt): compute_levels must round each step.
#include "decode.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "crc32.h"
#include "huffman.h"

namespace fq {
namespace {

uint16_t rd_u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
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
  if (!std::isfinite(p.centre0) || !std::isfinite(p.centre1)) {
    throw FormatError("the centres must be finite");
  }
  if (p.mode == 0 && (p.centre0 != 0 || p.centre1 != 0)) {
    throw FormatError("shift mode has no centres: both must be 0");
  }
  const int k = p.mode == 0 ? p.bits - 1 : p.bits - 2;  // exponent bits
  const int64_t e_max = (int64_t(1) << k) - 1;
  const int64_t b = p.b;
  if (-b < -126 || e_max - b > 127) {
    throw FormatError("exponent offset b=" + std::to_string(p.b) +
                      " puts level exponents outside [-126, 127]");
  }
  const int V = 1 << p.bits;
  std::vector<float> out(size_t(V), 0.0f);
  for (int v = 0; v < V; ++v) {
    const int e = v & int(e_max);
    const bool negative = (v >> k) & 1;
    const float t = pow2(int(e - b));
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
  if (data[4] != 1) {
    throw FormatError("format version " + std::to_string(data[4]) +
                      " is not supported (this build reads 1)");
  }
  DecodedWeight w;
  w.params.mode = data[5];
  w.params.bits = data[6];
  const int ndim = data[7];
  w.block = data[8];
  w.run_max = data[9];
  if (ndim < 1 || ndim > kMaxNdim) throw FormatError("ndim " + std::to_string(ndim) + " outside 1..8");
  if (w.block < 1) throw FormatError("block must be >= 1");
  if (rd_u16(data + 10) != 0) throw FormatError("reserved field is not 0");
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
  // Each symbol's meaning, handed out by the decoder's table: the elements it advances over
  // (r zeros and its element: r + 1; escape: R + 1, bits 0-8), its code (bits 9-16) and whether
  // it has an element (bit 17).
  const uint64_t escape = symbols - 1;
  const uint64_t run_unit = uint64_t(w.run_max) + 1;
  constexpr unsigned kCodeShift = 9, kCodedShift = 17;
  std::vector<uint32_t> meaning(symbols);
  for (uint64_t s = 0; s < escape; ++s) {
    meaning[s] = uint32_t(1) << kCodedShift | uint32_t(s & (V - 1)) << kCodeShift | uint32_t((s >> w.params.bits) + 1);
  }
  meaning[escape] = uint32_t(run_unit);
  HuffmanDecoder huffman(lengths, meaning);

  // Tokens -> coded elements, written through raw pointers into arrays sized for every token
  // (fewer elements than tokens come out: escapes), then trimmed. T <= 8 * P is checked by
  // both decoders before any token is produced, so the allocation is bounded by the blob's
  // size; more tokens than that leave capacity 0 and no token is decoded.
  const uint8_t* payload = table + table_bytes;
  const size_t capacity = w.tokens <= 8 * uint64_t(payload_bytes) ? size_t(w.tokens) : 0;
  w.index.resize(capacity);
  w.code.resize(capacity);
  uint32_t* out_index = w.index.data();
  uint8_t* out_code = w.code.data();
  size_t coded = 0;
  uint64_t pos = 0;  // elements described so far
  // Fast pass: branch-free per token. Every token's element lands at out_index[coded] (escapes
  // too, overwritten by the next one), coded <= tokens decoded so far < capacity. Positions
  // only grow, so "no token writes past element N - 1" is "pos <= N" at the end.
  const bool ok = huffman.decode_fast(payload, payload_bytes, w.tokens, [&](uint32_t m) {
    pos += m & 511;
    out_index[coded] = uint32_t(pos - 1);
    out_code[coded] = uint8_t(m >> kCodeShift);
    coded += m >> kCodedShift;
  });
  if (!ok || pos > n) {
    // Rejected: decode again, checking every token, for the message of the first broken rule
    // (the same as the Python codec's).
    pos = 0;
    huffman.decode(payload, payload_bytes, w.tokens, [&](uint32_t m) {
      pos += m & 511;
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
