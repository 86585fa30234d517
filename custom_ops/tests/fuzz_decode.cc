// Fuzz target for the compressed-weight decoder (docs/FORMAT.md) and the planner behind it.
//
// With clang: build with -fsanitize=fuzzer,address,undefined -DFQ_ONNX_LIBFUZZER and run as any
// libFuzzer target. Without libFuzzer (GCC), the built-in driver mutates seed blobs:
//   fuzz_decode SEEDS_DIR ITERATIONS [RNG_SEED]
// Every mutated input is decoded twice: as is (stops at the CRC check) and with its CRC-32
// recomputed (reaches every later check). Build with FQ_ONNX_SANITIZE=ON to catch memory errors.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#if !defined(FQ_ONNX_LIBFUZZER)
#include <dirent.h>
#endif

#include "crc32.h"
#include "decode.h"
#include "plan.h"

namespace {

void exercise(const uint8_t* data, size_t size) {
  try {
    const fq::DecodedWeight w = fq::decode_weight(data, size);
    // An accepted blob's levels are finite in every row (the decoder checks only the largest scale).
    const uint64_t row_len = w.elements / w.dims[0];
    for (size_t i = 0; i < w.index.size(); ++i) {
      if (!std::isfinite(w.level(w.index[i] / row_len, w.code[i]))) {
        std::fprintf(stderr, "accepted blob has a non-finite level\n");
        std::abort();
      }
    }
    // Accepted blobs also go through grouping and a plan, as a kernel would.
    if (w.dims.size() == 2 && w.elements <= (1u << 20)) {
      const fq::SparseWeight sw = fq::build_sparse_weight(w, w.dims[0], w.dims[1], 1, 1, 1);
      fq::make_dense_plan(sw, {3, int64_t(w.dims[1])}, 16, 16, 32768);
    }
    if (w.dims.size() == 4 && w.elements <= (1u << 20)) {
      fq::ConvAttrs attrs;
      attrs.pads = {1, 1, 1, 1};
      const fq::ConvWeightShape ws = fq::conv_weight_shape(attrs, w.dims);
      const fq::SparseWeight sw = fq::build_sparse_weight(w, ws.M, ws.Cg, ws.kh, ws.kw, 1);
      fq::make_conv_plan(sw, attrs, ws, {2, ws.Cg, 9, 7}, 16, 16, 32768);
    }
  } catch (const std::exception&) {
    // Rejections are the expected outcome for most inputs; only crashes and sanitizer reports count.
  }
}

void exercise_both(const uint8_t* data, size_t size) {
  exercise(data, size);
  if (size >= 4) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = fq::crc32(fixed.data(), size - 4);
    for (int i = 0; i < 4; ++i) fixed[size - 4 + size_t(i)] = uint8_t(crc >> (8 * i));
    exercise(fixed.data(), size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  exercise_both(data, size);
  return 0;
}

#if !defined(FQ_ONNX_LIBFUZZER)
int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SEEDS_DIR ITERATIONS [RNG_SEED]\n", argv[0]);
    return 2;
  }
  std::vector<std::vector<uint8_t>> seeds;
  if (DIR* d = opendir(argv[1])) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(std::string(argv[1]) + "/" + e->d_name, std::ios::binary);
      seeds.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    closedir(d);
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "no seed files in %s\n", argv[1]);
    return 2;
  }
  const long iterations = std::atol(argv[2]);
  std::mt19937_64 rng(argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1);
  for (const auto& s : seeds) exercise_both(s.data(), s.size());
  for (long it = 0; it < iterations; ++it) {
    std::vector<uint8_t> b = seeds[rng() % seeds.size()];
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits && !b.empty(); ++e) {
      switch (rng() % 6) {
        case 0: b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8)); break;        // bit flip
        case 1: b[rng() % b.size()] = uint8_t(rng()); break;                      // byte
        case 2: b.resize(rng() % (b.size() + 1)); break;                          // truncate
        case 3: b.insert(b.begin() + long(rng() % (b.size() + 1)), uint8_t(rng())); break;
        case 4: {  // a header field (dims, A, scales, T, P...) set to an extreme
          const size_t at = 12 + 4 * (rng() % 12);
          const uint32_t v = (rng() & 1) ? 0xFFFFFFFFu : uint32_t(rng() % 1024);
          for (int i = 0; i < 4 && at + size_t(i) < b.size(); ++i) b[at + size_t(i)] = uint8_t(v >> (8 * i));
          break;
        }
        case 5: {  // the scale count A or one scale set to an edge case
          if (b.size() < 8) break;
          const size_t h = 12 + 4 * size_t(b[7] % 9);
          uint32_t dim0 = 0;
          for (int i = 0; i < 4 && 12 + size_t(i) < b.size(); ++i) dim0 |= uint32_t(b[12 + size_t(i)]) << (8 * i);
          uint32_t v;
          size_t at = h;
          if (rng() & 1) {
            const uint32_t counts[] = {0, 1, 2, dim0, dim0 + 1, dim0 - 1, 0xFFFFFFFFu, 1u << 28};
            v = counts[rng() % 8];
          } else {
            const float scales[] = {NAN, INFINITY, -1.0f, 0.0f, -0.0f, 3e38f, 1e-45f, 1e30f};
            std::memcpy(&v, &scales[rng() % 8], 4);
            at = h + 4 + 4 * size_t(rng() % 8);
          }
          for (int i = 0; i < 4 && at + size_t(i) < b.size(); ++i) b[at + size_t(i)] = uint8_t(v >> (8 * i));
          break;
        }
      }
    }
    exercise_both(b.data(), b.size());
  }
  std::printf("fuzz_decode: %ld mutated inputs from %zu seeds, no crash\n", iterations, seeds.size());
  return 0;
}
#endif
