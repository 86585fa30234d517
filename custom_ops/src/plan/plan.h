// From decoded weights to what the microkernels consume.
//
// SparseWeight (once per kernel, shape independent): the nonzeros regrouped into row groups of
// g in {1, 2, 4, 8} output channels that share one tap list. A group of g rows stores the union
// of their taps with g weights per tap (zeros where a row lacks the tap); it is chosen when that
// is cheaper than g separate lists under the microkernel cost model, which makes blocked masks
// (--block G) one load per G FMAs and turns dense layers into a register-blocked direct conv.
//
// Plan (once per input shape, cached): the packed-input geometry, every tap's constant offset
// into the packed input, tiles, input-channel chunks and the output segments of each tile.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "format/decode.h"
#include "plan/conv_geometry.h"

namespace fq {

struct RowGroup {
  int32_t m0 = 0;            // first output channel
  int32_t g = 1;             // number of output channels (1, 2, 4 or 8)
  int32_t conv_group = 0;    // which Conv group the rows belong to
  uint32_t tap_begin = 0;    // range in SparseWeight::taps
  uint32_t tap_end = 0;
  uint64_t w_begin = 0;      // (tap_end - tap_begin) * g weights from here, tap-major
};

struct SparseWeight {
  int64_t M = 0;             // output channels / features
  int64_t Cg = 0;            // input channels per group (dense: K)
  int64_t kh = 1, kw = 1;    // kernel extent (dense: 1 x 1)
  int64_t group = 1;
  uint64_t nonzeros = 0;     // coded elements with a nonzero level
  uint64_t stored_taps = 0;  // sum over groups of taps (what the kernels iterate)
  uint64_t stored_macs = 0;  // sum over groups of taps * g (FMAs per output pixel)
  double cost_units = 0;     // sum over groups of taps * GroupCosts (dense_path.h: relative_cost)
  std::vector<RowGroup> groups;
  std::vector<uint32_t> taps;  // c_local * kh * kw + ky * kw + kx, increasing within a group
  std::vector<float> weights;
};

// Cost of one tap per output vector for a group of g rows, relative to g = 1 (measured; see
// docs/PERFORMANCE.md). Index by log2(g).
struct GroupCosts {
  double c[4] = {1.0, 1.35, 2.1, 3.9};
};

// Builds the row groups. `max_group` limits g (1 disables grouping, for tests).
SparseWeight build_sparse_weight(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw,
                                 int64_t group, int max_group = 8, const GroupCosts& costs = GroupCosts());

// build_sparse_weight in steps, so that a layer another kernel runs never builds its tap lists
// and, where an estimate decides, never merges most of its rows either. The constructor finds
// the rows (a binary search each); estimate_cost_units samples the grouping; build() chooses
// the groups and builds the lists. Rows are converted to (tap, level) lists when first used,
// so an estimate over every 8th block converts an eighth of them. Throws
// std::invalid_argument if w does not have the shape. w must outlive the builder.
class SparseWeightBuilder {
 public:
  SparseWeightBuilder(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw, int64_t group,
                      int max_group = 8, const GroupCosts& costs = GroupCosts());
  // The builder reads w's rows lazily: a temporary would dangle.
  SparseWeightBuilder(DecodedWeight&& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw, int64_t group,
                      int max_group = 8, const GroupCosts& costs = GroupCosts()) = delete;
  // Shape and nonzeros only (no groups; cost_units, stored_taps, stored_macs 0).
  const SparseWeight& shape() const { return head_; }
  // cost_units from every `stride`-th block of up to 8 rows, scaled up (exact for stride 1).
  double estimate_cost_units(int64_t stride);
  SparseWeight build();

 private:
  template <class Visit>
  void for_blocks(int64_t stride, Visit visit);
  // The union of rows [m0, m0 + g) in increasing order, and which rows have each tap.
  void collect(size_t m0, int g, std::vector<uint32_t>* u, std::vector<uint8_t>* bits);
  // Converts rows [m0, m0 + g) that are not yet (lazy_ only).
  void convert_rows(size_t m0, size_t g);
  const DecodedWeight& w_;
  int max_group_;
  SparseWeight head_;
  GroupCosts costs_;
  uint64_t row_len_ = 0;
  bool use_mark_ = false;
  std::vector<uint8_t> mark_;      // row_len zero bytes between calls (use_mark_ only)
  // Nonzeros in row-major order: row m's taps (relative to the row) and levels are
  // [row_start_[m], row_start_[m + 1]), plus one 0 level past the last row. Written once
  // each (not zero-filled first, decode.h). lazy_: at w's positions (no level is 0, nothing
  // is dropped), row m valid once converted_[m]; otherwise all converted at construction.
  std::vector<uint32_t, UninitAllocator<uint32_t>> taps_;
  std::vector<float, UninitAllocator<float>> vals_;
  std::vector<size_t> row_start_;  // M + 1
  bool lazy_ = false;
  std::vector<uint8_t> converted_;  // per row (lazy_ only)
};

// One contiguous run of valid output pixels inside a tile.
struct Segment {
  int32_t q_local;   // first pixel, relative to the tile start
  int32_t len;
  int64_t out;       // offset of that pixel in Y for output channel 0
};

// Alignment of packed planes, in floats (one 64-byte cache line).
constexpr int64_t kAlign = 16;

struct Plan {
  // Packed input: for every input channel c and used stride phase, N planes of Hq x Wq floats,
  // zero padded, so that output pixel q = n*Hq*Wq + oh*Wq + ow reads tap t at q + offsets[t].
  bool dense = false;
  int64_t N = 0, C = 0, H = 0, W = 0;   // input (dense: N = 1, C = K, H = 1, W = rows)
  int64_t OH = 0, OW = 0;
  int64_t Hq = 0, Wq = 0;
  int64_t sh = 1, sw = 1, pad_top = 0, pad_left = 0;
  std::vector<int32_t> phase_slot;      // (ph * sw + pw) -> packed slot, -1 if unused
  int64_t phases_used = 0;
  int64_t plane = 0;                    // N * Hq * Wq
  int64_t channel_stride = 0;           // phases_used * plane
  int64_t packed_floats = 0;            // including the zero tail the last tile may read
  std::vector<uint8_t> channel_used;    // per input channel: does any tap read it? (skip packing)

  // Output: Y[m * m_stride + pixel_offset + i * p_stride].
  int64_t m_stride = 0, p_stride = 1;
  std::vector<int64_t> out_shape;

  // Work decomposition.
  int64_t Q = 0;          // virtual pixels (garbage ones included) that cover all outputs
  int64_t halo = 0;       // largest tap offset within a plane: tile t reads [t * tile, (t + 1) * tile + halo)
  int64_t tile = 0;       // floats per tile (a multiple of the kernel's lanes)
  int64_t tiles = 0;
  int64_t chunks = 1;     // input-channel chunks per tile
  int64_t chunk_channels = 0;
  std::vector<int32_t> offsets;         // per tap of SparseWeight::taps
  std::vector<uint32_t> chunk_ptr;      // per group: chunks + 1 indices into taps
  std::vector<Segment> segments;        // of all tiles, tile-major
  std::vector<uint32_t> seg_ptr;        // tiles + 1
};

// Geometry of a conv for input shape x_shape. Throws std::invalid_argument when the input does
// not fit, std::length_error when the packed input would exceed 2^31 floats. plane_pad: floats
// of padding per packed plane (Tuning::plane_pad), -1 for the rule against L1 set aliasing.
Plan make_conv_plan(const SparseWeight& sw, const ConvAttrs& attrs, const ConvWeightShape& ws,
                    const std::vector<int64_t>& x_shape, int lanes, int max_vectors, int64_t chunk_bytes,
                    int64_t plane_pad = -1);

// Dense kind: X [..., K] -> Y [..., M].
Plan make_dense_plan(const SparseWeight& sw, const std::vector<int64_t>& x_shape, int lanes, int max_vectors, int64_t chunk_bytes);

// A node's plans by input shape, a few at most (a node sees few shapes in practice). A Plan is
// immutable once published; the mutex guards the list only.
class PlanCache {
 public:
  // The plan for x_shape: the cached one, else make() (a Plan; may throw), built outside the
  // lock (two threads may build the same plan once; both are identical) and then cached.
  template <class Make>
  std::shared_ptr<const Plan> get(const std::vector<int64_t>& x_shape, Make&& make) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& entry : plans_) {
        if (entry.first == x_shape) return entry.second;
      }
    }
    auto plan = std::make_shared<const Plan>(make());
    std::lock_guard<std::mutex> lock(mutex_);
    if (plans_.size() >= 8) plans_.erase(plans_.begin());
    plans_.emplace_back(x_shape, plan);
    return plan;
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<std::vector<int64_t>, std::shared_ptr<const Plan>>> plans_;
};

}  // namespace fq
