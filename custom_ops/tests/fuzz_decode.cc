// Fuzz target for the compressed-weight decoder (docs/FORMAT.md) and the kernels behind it.
//
// With clang: build with -fsanitize=fuzzer,address,undefined -DFQ_ONNX_LIBFUZZER and run as any
// libFuzzer target. Without libFuzzer (GCC), the built-in driver mutates the files of a folder:
//   fuzz_decode DIR [RUNS [RNG_SEED [SECONDS]]]
// Every file of DIR is exercised first (RUNS = 0 stops there: a regression replay), then RUNS
// mutated inputs (-1: no limit), stopping after SECONDS of wall time if given. custom_ops/fuzz.sh
// builds this with ASan + UBSan and runs it (docs: custom_ops/README.md).
//
// Every input is decoded twice: as is (stops at the CRC check) and with its CRC-32 recomputed
// (reaches every later check). An accepted blob is then regrouped, planned and executed on a
// small input with the scalar and the CPU's best microkernels, against a naive convolution.
// On a crash (sanitizer report, abort, SIGSEGV...) the input being decoded is written to
// $FQ_FUZZ_ARTIFACTS (default: the working directory) as crash-<hash>.fqw.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>
#if !defined(FQ_ONNX_LIBFUZZER)
#include <dirent.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FQ_FUZZ_HAVE_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FQ_FUZZ_HAVE_SANITIZER 1
#endif
#endif
#if defined(FQ_FUZZ_HAVE_SANITIZER)
#include <sanitizer/common_interface_defs.h>
#endif

#include "dense/packed_gemm.h"
#include "format/crc32.h"
#include "format/decode.h"
#include "kernels/cpu_features.h"
#include "plan/conv_geometry.h"
#include "plan/execute.h"
#include "plan/plan.h"

namespace {

// --- crash artifacts ------------------------------------------------------------------------

const uint8_t* g_current = nullptr;  // the input being exercised, for the crash handlers
size_t g_current_size = 0;
long g_accepted = 0, g_executed = 0;  // blobs the decoder accepted; runs compared with the naive conv
char g_artifact_dir[4096] = ".";

// Async-signal-safe: only open/write/close and stack buffers.
void write_artifact() {
  if (g_current == nullptr) return;
  static bool written = false;
  if (written) return;
  written = true;
  uint32_t h = 2166136261u;  // FNV-1a of the input names the file
  for (size_t i = 0; i < g_current_size; ++i) h = (h ^ g_current[i]) * 16777619u;
  char path[4200];
  const char hex[] = "0123456789abcdef";
  size_t n = 0;
  for (const char* p = g_artifact_dir; *p && n < 4096; ++p) path[n++] = *p;
  const char prefix[] = "/crash-";
  for (const char* p = prefix; *p; ++p) path[n++] = *p;
  for (int i = 7; i >= 0; --i) path[n++] = hex[(h >> (4 * i)) & 15];
  const char suffix[] = ".fqw";
  for (const char* p = suffix; *p; ++p) path[n++] = *p;
  path[n] = '\0';
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  while (done < g_current_size) {
    const ssize_t w = write(fd, g_current + done, g_current_size - done);
    if (w <= 0) break;
    done += size_t(w);
  }
  close(fd);
  const char msg1[] = "\nfuzz_decode: crashing input written to ";
  (void)!write(2, msg1, sizeof msg1 - 1);
  (void)!write(2, path, n);
  (void)!write(2, "\n", 1);
}

void on_signal(int sig) {
  write_artifact();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void install_crash_handlers() {
  if (const char* d = std::getenv("FQ_FUZZ_ARTIFACTS")) {
    std::snprintf(g_artifact_dir, sizeof g_artifact_dir, "%s", d);
  } else if (getcwd(g_artifact_dir, sizeof g_artifact_dir) == nullptr) {
    std::snprintf(g_artifact_dir, sizeof g_artifact_dir, ".");
  }
#if defined(FQ_FUZZ_HAVE_SANITIZER)
  __sanitizer_set_death_callback(write_artifact);  // ASan/UBSan reports end here
#endif
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_signal);
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_decode: %s\n", what);
  std::abort();  // through on_signal: the input is saved
}

// --- executing an accepted blob -------------------------------------------------------------

// Small geometry derived from the blob's own bytes (so a saved crash replays identically).
struct Geometry {
  uint32_t bits;
  explicit Geometry(const uint8_t* data, size_t size) : bits(size >= 4 ? fq::crc32(data, size) : 0) {}
  int take(int n) {  // a value in [0, n)
    const int v = int(bits % uint32_t(n));
    bits = bits / uint32_t(n) + 0x9E3779B9u * (bits % uint32_t(n) + 1);
    return v;
  }
};

std::vector<float> dense_weight(const fq::DecodedWeight& w) {
  std::vector<float> dense(size_t(w.elements), 0.0f);
  const uint64_t row_len = w.elements / w.dims[0];
  for (size_t i = 0; i < w.index.size(); ++i) dense[w.index[i]] = w.level(w.index[i] / row_len, w.code[i]);
  return dense;
}

void check_close(const std::vector<float>& y, const std::vector<double>& ref, const std::vector<double>& mag,
                 const char* what) {
  for (size_t i = 0; i < y.size(); ++i) {
    const double tol = 1e-4 * mag[i] + 1e-30;
    if (!(std::fabs(double(y[i]) - ref[i]) <= tol)) {
      std::fprintf(stderr, "fuzz_decode: %s output %zu is %.9g, naive convolution gives %.9g\n", what, i,
                   double(y[i]), ref[i]);
      fail("kernel result differs from the naive convolution");
    }
  }
}

// Runs a plan as ShiftConvKernel::compute does (pack, every task of a grid) with one kernel table.
std::vector<float> run_plan(const fq::Plan& plan, const fq::SparseWeight& sw, const fq::KernelTable* kt,
                            const std::vector<float>& x, const fq::Epilogue& ep, int64_t tasks) {
  fq::AlignedFloats buf;
  float* packed = buf.reserve(size_t(plan.packed_floats));
  fq::zero_packed_tail(plan, packed);
  fq::pack_input(plan, x.data(), packed, 0, plan.C, kt);
  int64_t out = 1;
  for (int64_t d : plan.out_shape) out *= d;
  std::vector<float> y(size_t(out), std::numeric_limits<float>::quiet_NaN());  // unwritten shows
  const fq::TaskGrid grid = fq::make_task_grid(plan, sw, tasks);
  for (int64_t t = 0; t < grid.count(); ++t) fq::run_task(plan, sw, *kt, grid, t, packed, ep, y.data());
  return y;
}

std::vector<const fq::KernelTable*> kernel_tables() {
  std::vector<const fq::KernelTable*> t = {fq::select_kernels("scalar")};
  const fq::KernelTable* best = fq::select_kernels("auto");
  if (best != t[0]) t.push_back(best);
  return t;
}

void execute_dense(const fq::DecodedWeight& w, Geometry& geo) {
  const int64_t M = w.dims[0], K = w.dims[1];
  const int64_t rows = 1 + geo.take(5);
  const fq::SparseWeight sw = fq::build_sparse_weight(w, M, K, 1, 1, 1, 1 << geo.take(4));
  const std::vector<float> wd = dense_weight(w);
  std::vector<float> x(static_cast<size_t>(rows * K)), bias(static_cast<size_t>(M));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 7919 % 17) - 8) / 8.0f;
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = float(int(i % 5) - 2) / 4.0f;
  const bool relu = geo.take(2);
  std::vector<double> ref(size_t(rows * M)), mag(ref.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t m = 0; m < M; ++m) {
      double s = bias[size_t(m)], a = std::fabs(bias[size_t(m)]);
      for (int64_t k = 0; k < K; ++k) {
        s += double(x[size_t(r * K + k)]) * wd[size_t(m * K + k)];
        a += std::fabs(double(x[size_t(r * K + k)]) * wd[size_t(m * K + k)]);
      }
      ref[size_t(r * M + m)] = relu ? std::max(s, 0.0) : s;
      mag[size_t(r * M + m)] = a;
    }
  }
  if (*std::max_element(mag.begin(), mag.end()) > 1e30) return;  // float sums may overflow
  const fq::Epilogue ep{bias.data(), relu ? 0.0f : -INFINITY, INFINITY};
  for (const fq::KernelTable* kt : kernel_tables()) {
    const fq::Plan plan = fq::make_dense_plan(sw, {rows, K}, kt->lanes, kt->max_vectors, 1 << (8 + geo.take(8)));
    check_close(run_plan(plan, sw, kt, x, ep, 1 + geo.take(40)), ref, mag, kt->name);
    ++g_executed;
    std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
    fq::sparse_matvec(sw, x.data(), rows, 0, sw.groups.size(), ep, y.data());
    check_close(y, ref, mag, "sparse_matvec");
    const fq::PackedGemm pg(w, M, K, *kt);
    std::fill(y.begin(), y.end(), std::numeric_limits<float>::quiet_NaN());
    const int64_t split = geo.take(2) ? pg.panels() / 2 : 0;  // two tasks, as ParallelFor would
    pg.run(x.data(), rows, 0, split, ep, y.data());
    pg.run(x.data(), rows, split, pg.panels(), ep, y.data());
    check_close(y, ref, mag, "packed_gemm");
  }
}

void execute_conv(const fq::DecodedWeight& w, Geometry& geo) {
  const int spatial = int(w.dims.size()) - 2;
  fq::ConvAttrs attrs;
  int64_t group = 1;
  const int64_t M = w.dims[0], Cg = w.dims[1];
  if (M % 2 == 0 && geo.take(2)) group = 2;
  if (Cg == 1 && geo.take(2)) group = M;  // depthwise
  attrs.group = group;
  attrs.strides.resize(size_t(spatial));
  attrs.dilations.resize(size_t(spatial));
  attrs.pads.resize(size_t(2 * spatial));
  for (int i = 0; i < spatial; ++i) {
    attrs.strides[size_t(i)] = 1 + geo.take(3);
    attrs.dilations[size_t(i)] = 1 + geo.take(2);
  }
  for (auto& p : attrs.pads) p = geo.take(3);
  const fq::ConvWeightShape ws = fq::conv_weight_shape(attrs, w.dims);
  const int64_t N = 1 + geo.take(2), C = Cg * group;
  std::vector<int64_t> x_shape = {N, C};
  for (int i = 0; i < spatial; ++i) {
    const int64_t k = w.dims[size_t(2 + i)], d = attrs.dilations[size_t(i)];
    x_shape.push_back(std::max<int64_t>(1, d * (k - 1) + 1 - 2 + geo.take(6)));
  }
  fq::ConvShape cs;
  try {
    cs = fq::conv_shape(attrs, ws, x_shape);
  } catch (const std::invalid_argument&) {
    return;  // the input is too small for this kernel: a clean rejection
  }
  const fq::SparseWeight sw = fq::build_sparse_weight(w, ws.M, ws.Cg, ws.kh, ws.kw, ws.group, 1 << geo.take(4));
  const std::vector<float> wd = dense_weight(w);
  int64_t xn = 1;
  for (int64_t d : x_shape) xn *= d;
  std::vector<float> x(static_cast<size_t>(xn));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 7919 % 17) - 8) / 8.0f;
  const int64_t Mg = M / group, H = cs.H, W = cs.W, OH = cs.OH, OW = cs.OW;
  std::vector<double> ref(size_t(N * M * OH * OW)), mag(ref.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = 0, a = 0;
          const int64_t g = m / Mg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t ky = 0; ky < ws.kh; ++ky)
              for (int64_t kx = 0; kx < ws.kw; ++kx) {
                const int64_t iy = oh * ws.sh - cs.pad_top + ky * ws.dh;
                const int64_t ix = ow * ws.sw - cs.pad_left + kx * ws.dw;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const double p = double(x[size_t(((n * C + g * Cg + c) * H + iy) * W + ix)]) *
                                 wd[size_t(((m * Cg + c) * ws.kh + ky) * ws.kw + kx)];
                s += p;
                a += std::fabs(p);
              }
          const size_t o = size_t(((n * M + m) * OH + oh) * OW + ow);
          ref[o] = s;
          mag[o] = a;
        }
  if (!mag.empty() && *std::max_element(mag.begin(), mag.end()) > 1e30) return;
  const fq::Epilogue ep;
  for (const fq::KernelTable* kt : kernel_tables()) {
    const fq::Plan plan = fq::make_conv_plan(sw, attrs, ws, x_shape, kt->lanes, kt->max_vectors,
                                             1 << (8 + geo.take(8)));
    check_close(run_plan(plan, sw, kt, x, ep, 1 + geo.take(40)), ref, mag, kt->name);
    ++g_executed;
    // Depthwise on a small plane: the small-plane kernel, plane by plane from X.
    bool per_channel = group == M && Cg == 1 && int64_t(sw.groups.size()) == M;
    for (size_t r = 0; per_channel && r < sw.groups.size(); ++r) per_channel = sw.groups[r].g == 1;
    if (per_channel && fq::small_plane_eligible(ws, cs)) {
      std::vector<uint32_t> masks, tap_ptr(sw.groups.size() + 1);
      std::vector<int32_t> offs;
      fq::small_plane_masks(ws, cs, kt->lanes, &masks, &offs);
      for (size_t r = 0; r < sw.groups.size(); ++r) tap_ptr[r] = sw.groups[r].tap_begin;
      tap_ptr.back() = uint32_t(sw.taps.size());
      std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());
      const int64_t P = OH * OW;
      for (int64_t n = 0; n < N; ++n) {
        const fq::DepthwiseSmallArgs a{x.data() + n * M * H * W, y.data() + n * M * P, M, P, (P + kt->lanes - 1) / kt->lanes,
                                       H * W, masks.data(), offs.data(), tap_ptr.data(), sw.taps.data(),
                                       sw.weights.data(), nullptr, -INFINITY, INFINITY};
        kt->depthwise_small(a);
      }
      check_close(y, ref, mag, "depthwise_small");
    }
  }
}

void exercise(const uint8_t* data, size_t size) {
  g_current = data;
  g_current_size = size;
  try {
    const fq::DecodedWeight w = fq::decode_weight(data, size);
    // An accepted blob's levels are finite in every row (the decoder checks only the largest scale).
    const uint64_t row_len = w.elements / w.dims[0];
    for (size_t i = 0; i < w.index.size(); ++i) {
      if (!std::isfinite(w.level(w.index[i] / row_len, w.code[i]))) fail("accepted blob has a non-finite level");
    }
    ++g_accepted;
    Geometry geo(data, size);
    if (w.dims.size() == 2 && w.elements <= (1u << 14)) execute_dense(w, geo);
    if ((w.dims.size() == 3 || w.dims.size() == 4) && w.elements <= (1u << 12)) execute_conv(w, geo);
  } catch (const std::exception&) {
    // Rejections are the expected outcome for most inputs; only crashes and sanitizer reports count.
  }
  g_current = nullptr;
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
namespace {

void mutate(std::vector<uint8_t>& b, const std::vector<std::vector<uint8_t>>& files, std::mt19937_64& rng) {
  const int edits = 1 + int(rng() % 4);
  for (int e = 0; e < edits && !b.empty(); ++e) {
    switch (rng() % 7) {
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
      case 6: {  // splice: the tail of another file from a random offset
        const std::vector<uint8_t>& o = files[rng() % files.size()];
        if (o.empty()) break;
        const size_t cut = rng() % (b.size() + 1), from = rng() % o.size();
        b.resize(cut);
        b.insert(b.end(), o.begin() + long(from), o.end());
        break;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [RUNS [RNG_SEED [SECONDS]]]\n", argv[0]);
    return 2;
  }
  install_crash_handlers();
  std::vector<std::vector<uint8_t>> files;
  if (DIR* d = opendir(argv[1])) {
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::ifstream f(std::string(argv[1]) + "/" + name, std::ios::binary);
      files.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "no input files in %s\n", argv[1]);
    return 2;
  }
  const long runs = argc > 2 ? std::atol(argv[2]) : 0;
  std::mt19937_64 rng(argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1);
  const double seconds = argc > 4 ? std::atof(argv[4]) : 0.0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& f : files) exercise_both(f.data(), f.size());
  long done = 0;
  for (; runs < 0 || done < runs; ++done) {
    if (seconds > 0 && (done & 255) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds) {
      break;
    }
    std::vector<uint8_t> b = files[rng() % files.size()];
    mutate(b, files, rng);
    exercise_both(b.data(), b.size());
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz_decode: %zu files and %ld mutated inputs (each as is and with its CRC fixed) in %.1f s: "
              "%ld blobs accepted, %ld kernel runs checked, no crash\n", files.size(), done, took, g_accepted,
              g_executed);
  return 0;
}
#endif
