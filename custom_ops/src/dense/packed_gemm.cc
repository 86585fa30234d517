#include "dense/packed_gemm.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace fq {

namespace {
constexpr int64_t kMaxNr = 64;  // bias scratch below; every table's gemm_nr is at most 32
// Bytes of a panel's K block when rows take several passes: L1-sized, so passes after the
// first read it from L1.
constexpr int64_t kPanelBlockBytes = 32 * 1024;
}

PackedGemm::PackedGemm(const DecodedWeight& w, int64_t M, int64_t K, const KernelTable& kt)
    : kt_(&kt), M_(M), K_(K), nr_(kt.gemm_nr), panels_(0) {
  if (nr_ < 1 || nr_ > kMaxNr || !kt.gemm) throw std::invalid_argument("kernel table without a GEMM kernel");
  if (M < 1 || K < 1 || w.dims.size() != 2 || uint64_t(M) != w.dims[0] || uint64_t(M) * uint64_t(K) != w.elements) {
    throw std::invalid_argument("packed GEMM: weight is not M x K");
  }
  panels_ = (M + nr_ - 1) / nr_;
  k_block_ = std::max<int64_t>(1, kPanelBlockBytes / int64_t(sizeof(float)) / nr_);
  const size_t floats = size_t(panels_) * size_t(K) * size_t(nr_);
  float* d = data_.reserve(floats);
  std::memset(d, 0, floats * sizeof(float));
  // Element (m, k) goes to panel m / nr, row k, column m % nr. Indices come from the decoder,
  // which checked each is below elements = M * K.
  uint64_t m = 0, row_begin = 0;
  size_t row_base = 0;  // where element (m, 0) goes: panel m / nr, column m % nr
  for (size_t i = 0; i < w.index.size(); ++i) {
    while (w.index[i] >= row_begin + uint64_t(K)) {  // indices increase: no division per element
      ++m;
      row_begin += uint64_t(K);
      row_base = size_t(m) / size_t(nr_) * size_t(K) * size_t(nr_) + size_t(m) % size_t(nr_);
    }
    const float v = w.level(m, w.code[i]);
    if (v == 0.0f) continue;  // +-0 levels stay +0, as on the sparse path
    d[row_base + size_t(w.index[i] - row_begin) * size_t(nr_)] = v;
  }
}

void PackedGemm::run(const float* x, int64_t rows, int64_t p_begin, int64_t p_end, const Epilogue& ep,
                     float* y) const {
  const int mr = kt_->gemm_mr;
  alignas(64) float bias[kMaxNr];
  const float* panel_data = data_.get();
  // Partial sums of all rows of one panel across K blocks (rows > gemm_mr only).
  thread_local AlignedFloats part_buffer;
  float* part = rows > mr ? part_buffer.reserve(size_t(rows) * size_t(nr_)) : nullptr;
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t m0 = p * nr_;
    const int cols = int(std::min(nr_, M_ - m0));
    // The kernel reads nr bias values: a partial last panel (or no bias) uses zero-padded scratch.
    const float* b = bias;
    if (ep.bias && cols == nr_) {
      b = ep.bias + m0;
    } else {
      std::fill(bias, bias + nr_, 0.0f);
      if (ep.bias) std::copy(ep.bias + m0, ep.bias + m0 + cols, bias);
      b = bias;
    }
    const float* panel = panel_data + size_t(p) * size_t(K_) * size_t(nr_);
    if (rows <= mr) {  // one pass: the panel streams through once
      kt_->gemm(x, size_t(K_), int(rows), panel, size_t(K_), nullptr, kGemmFinal, b, y + m0, size_t(M_), cols, ep.lo,
                ep.hi);
      continue;
    }
    // More rows than one call holds: K blocks of the panel small enough for L1, every row block
    // over each before the next, partial sums in `part`. Without blocking each row block
    // re-read the whole panel from L2.
    for (int64_t k0 = 0; k0 < K_; k0 += k_block_) {
      const int64_t kn = std::min(k_block_, K_ - k0);
      const int flags = (k0 > 0 ? kGemmAccumulate : 0) | (k0 + kn == K_ ? kGemmFinal : 0);
      for (int64_t r0 = 0; r0 < rows; r0 += mr) {
        const int r = int(std::min<int64_t>(mr, rows - r0));
        kt_->gemm(x + r0 * K_ + k0, size_t(K_), r, panel + size_t(k0) * size_t(nr_), size_t(kn),
                  part + size_t(r0) * size_t(nr_), flags, b, y + r0 * M_ + m0, size_t(M_), cols, ep.lo, ep.hi);
      }
    }
  }
}

}  // namespace fq
