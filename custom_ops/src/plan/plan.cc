#include "plan/plan.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace fq {
namespace {

int log2_small(int g) { return g >= 8 ? 3 : g >= 4 ? 2 : g >= 2 ? 1 : 0; }

// The union of the taps of rows [m0, m0 + g), g <= 8, by a g-way merge of the rows' increasing
// lists: u the taps in increasing order, bits[i] which rows (bit j: row m0 + j) have u[i].
// One pass replaces the pairwise set unions of tap vectors that had cost most of session
// creation for half-dense layers, and needs no scratch proportional to the row length.
void merge_rows(const uint32_t* taps, const size_t* row_start, size_t m0, int g, std::vector<uint32_t>* u,
                std::vector<uint8_t>* bits) {
  size_t pos[8], end[8];
  for (int j = 0; j < g; ++j) {
    pos[j] = row_start[m0 + size_t(j)];
    end[j] = row_start[m0 + size_t(j) + 1];
  }
  u->clear();
  bits->clear();
  for (;;) {
    bool any = false;
    uint32_t t = 0;
    for (int j = 0; j < g; ++j) {
      if (pos[j] < end[j] && (!any || taps[pos[j]] < t)) {
        t = taps[pos[j]];
        any = true;
      }
    }
    if (!any) return;
    unsigned b = 0;
    for (int j = 0; j < g; ++j) {
      if (pos[j] < end[j] && taps[pos[j]] == t) {
        b |= 1u << j;
        ++pos[j];
      }
    }
    u->push_back(t);
    bits->push_back(uint8_t(b));
  }
}

// merge_rows by marking: bit j of mark[tap] for every tap of row m0 + j, then one scan of the
// row length. Faster where the rows are not much sparser than their length; `mark` holds
// row_len zero bytes and is left zeroed.
void mark_rows(const uint32_t* taps, const size_t* row_start, size_t m0, int g, std::vector<uint8_t>* mark,
               std::vector<uint32_t>* u, std::vector<uint8_t>* bits) {
  u->clear();
  bits->clear();
  uint8_t* mk = mark->data();
  for (int j = 0; j < g; ++j) {
    for (size_t i = row_start[m0 + size_t(j)]; i < row_start[m0 + size_t(j) + 1]; ++i) mk[taps[i]] |= uint8_t(1u << j);
  }
  // Branch-free compaction (the marks are unpredictable at these densities).
  const size_t n = mark->size();
  u->resize(n);
  bits->resize(n);
  uint32_t* uo = u->data();
  uint8_t* bo = bits->data();
  size_t k = 0;
  for (size_t t = 0; t < n; ++t) {
    const uint8_t b = mk[t];
    uo[k] = uint32_t(t);
    bo[k] = b;
    mk[t] = 0;
    k += b != 0;
  }
  u->resize(k);
  bits->resize(k);
}

// Union sizes of the aligned sub-blocks of a block of up to 8 rows: sizes[s][o] for rows
// [o * 2^s, (o + 1) * 2^s) of the block (s = 0: the rows themselves).
struct BlockUnions {
  uint32_t sizes[4][8] = {};
};

BlockUnions count_unions(const std::vector<uint8_t>& bits) {
  BlockUnions u;
  auto add = [&u](unsigned b, uint32_t count) {
    for (int s = 0; s < 4; ++s) {
      const int width = 1 << s;
      const unsigned sub = (1u << width) - 1u;
      for (int o = 0; o < 8 / width; ++o) u.sizes[s][o] += ((b >> (o * width)) & sub) ? count : 0;
    }
  };
  // Long unions per distinct row pattern (at most 255) rather than per tap: 15 sub-block tests
  // per tap had cost a fifth of build() for half-dense layers. Short ones (depthwise, small 1x1
  // layers) per tap: scanning the patterns would cost more.
  if (bits.size() < 64) {
    for (const uint8_t b : bits) add(b, 1);
    return u;
  }
  uint32_t hist[256] = {};
  for (const uint8_t b : bits) ++hist[b];
  for (unsigned b = 1; b < 256; ++b) {
    if (hist[b]) add(b, hist[b]);
  }
  return u;
}

// The tap list of rows [o, o + G) of a block (G > 1) from the block's union u / bits: the taps
// some row of the group has, with G weights each (0 where a row lacks the tap). Writes n taps
// and n * G weights at taps / weights, plus one slot of scratch after each (every union entry
// is written, and only kept when the group has it: no branch on the unpredictable patterns).
// vals is read one past a row's last value (the caller pads it).
template <int G>
void group_lists(const std::vector<uint32_t>& u, const std::vector<uint8_t>& bits, int o, const size_t* row_begin,
                 const float* vals, uint32_t* taps, float* weights) {
  size_t next[G];
  for (int j = 0; j < G; ++j) next[j] = row_begin[j];
  size_t k = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const unsigned b = (unsigned(bits[i]) >> o) & ((1u << G) - 1u);
    taps[k] = u[i];
    for (int j = 0; j < G; ++j) {
      const unsigned has = (b >> j) & 1u;
      const float v = vals[next[j]];
      weights[k * G + size_t(j)] = has ? v : 0.0f;
      next[j] += has;
    }
    k += b != 0;
  }
}

// Cheapest split of block rows [o * g, (o + 1) * g) into power-of-two groups; appends
// (first row relative to the block, g) choices and returns their cost.
double choose_groups(const BlockUnions& u, int o, int g, const GroupCosts& costs,
                     std::vector<std::pair<int, int>>* out) {
  const int s = log2_small(g);
  const double union_cost = double(u.sizes[s][o]) * costs.c[s];
  if (g == 1) {
    out->emplace_back(o, 1);
    return union_cost;
  }
  std::vector<std::pair<int, int>> split;
  const double split_cost = choose_groups(u, 2 * o, g / 2, costs, &split) + choose_groups(u, 2 * o + 1, g / 2, costs, &split);
  if (union_cost < split_cost) {
    out->emplace_back(o * g, g);
    return union_cost;
  }
  out->insert(out->end(), split.begin(), split.end());
  return split_cost;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

int64_t pick_tile(int64_t Q, int lanes, int max_vectors) {
  // Cost of a tile width v (in vectors): every tile pass pays v FMA-vectors per tap plus about
  // two for the tap itself (offset load, weight broadcast); rounding Q up to whole tiles wastes
  // the rest. Ties go to the wider tile (fewer passes over the tap lists).
  int64_t best = max_vectors, best_cost = -1;
  for (int64_t v = max_vectors; v >= 1; --v) {
    const int64_t cost = ceil_div(Q, v * lanes) * (v + 2);
    if (best_cost < 0 || cost < best_cost) {
      best = v;
      best_cost = cost;
    }
  }
  return best * lanes;
}

// Splits every row of [q_begin, q_begin + len) (one output row of OW pixels per (n, oh)) into
// per-tile segments.
void add_segment(Plan* p, int64_t q, int64_t len, int64_t out, std::vector<std::vector<Segment>>* per_tile) {
  while (len > 0) {
    const int64_t t = q / p->tile;
    const int64_t q_local = q - t * p->tile;
    const int64_t take = std::min(len, p->tile - q_local);
    (*per_tile)[size_t(t)].push_back(Segment{int32_t(q_local), int32_t(take), out});
    q += take;
    out += take * p->p_stride;
    len -= take;
  }
}

void finish_segments(Plan* p, std::vector<std::vector<Segment>>& per_tile) {
  p->seg_ptr.assign(size_t(p->tiles) + 1, 0);
  for (int64_t t = 0; t < p->tiles; ++t) {
    // Runs that continue each other in the tile and in Y (1x1 and unpadded convs: whole
    // images) become one segment, so the store runs over long vectors.
    const size_t first = p->segments.size();
    for (const Segment& s : per_tile[size_t(t)]) {
      if (p->segments.size() > first) {
        Segment& last = p->segments.back();
        if (last.q_local + last.len == s.q_local && last.out + int64_t(last.len) * p->p_stride == s.out) {
          last.len += s.len;
          continue;
        }
      }
      p->segments.push_back(s);
    }
    p->seg_ptr[size_t(t) + 1] = uint32_t(p->segments.size());
  }
}

void make_chunks(Plan* p, const SparseWeight& sw, int64_t halo, int64_t chunk_bytes) {
  // Input channels of one chunk: their rows under one tile should stay in L1 while every
  // row group of the chunk streams its taps over them.
  const int64_t per_channel = int64_t(sizeof(float)) * p->phases_used * (p->tile + halo);
  int64_t chunks = ceil_div(sw.Cg, std::max<int64_t>(1, chunk_bytes / std::max<int64_t>(1, per_channel)));
  // Each chunk costs every row group a call and a round trip of its partial sums; below about
  // 16 taps per group and chunk that costs more than the L1 misses it saves (1x1 convs).
  // The round trip is g rows of sums, so grouped layers (--block 4) need g times the taps.
  const int64_t taps_per_group = int64_t(sw.stored_taps / std::max<size_t>(1, sw.groups.size()));
  const int64_t rows_per_group = int64_t(sw.stored_macs / std::max<uint64_t>(1, sw.stored_taps));
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, taps_per_group / (16 * std::max<int64_t>(1, rows_per_group))));
  p->chunk_channels = ceil_div(sw.Cg, chunks);
  p->chunks = ceil_div(sw.Cg, p->chunk_channels);
  const int64_t kk = sw.kh * sw.kw;
  p->chunk_ptr.assign(sw.groups.size() * size_t(p->chunks + 1), 0);
  for (size_t r = 0; r < sw.groups.size(); ++r) {
    const RowGroup& g = sw.groups[r];
    uint32_t* ptr = &p->chunk_ptr[r * size_t(p->chunks + 1)];
    uint32_t t = g.tap_begin;
    for (int64_t k = 0; k < p->chunks; ++k) {
      ptr[k] = t;
      const int64_t c_end = (k + 1) * p->chunk_channels;
      while (t < g.tap_end && int64_t(sw.taps[t] / uint64_t(kk)) < c_end) ++t;
    }
    ptr[p->chunks] = g.tap_end;
  }
}

// Packed planes of (whole) multiples of 4 KiB put the rows a tile reads from every channel of a
// chunk into the same L1 sets (64 sets of 64 B: addresses 4 KiB apart share a set), more of them
// than the 12 ways hold, so the chunk no longer stays in L1: 256@14² at batch 8 has planes of
// exactly 8 KiB and ran 1.45x slower per tap than at batch 1 (1 KiB planes). When more regions
// of one tile's chunk (span floats per channel and phase) than the ways share a set, returns
// base plus the padding (a multiple of kAlign floats, below 4 KiB and at most base / 8) that
// minimizes that count (if it gains at least 2); otherwise base.
int64_t pick_plane(const Plan& p, int64_t base, int64_t span, int64_t plane_pad) {
  constexpr int64_t kSets = 64, kLine = kAlign, kWay = kSets * kLine;  // floats
  constexpr int64_t kL1Floats = 48 * 1024 / 4;  // 48 KiB, 12 ways
  constexpr int32_t kWays = 12;
  const int64_t per_channel = p.phases_used * span;
  const int64_t channels = std::min(p.chunk_channels, std::max<int64_t>(1, kL1Floats / std::max<int64_t>(1, per_channel)));
  // FQ_ONNX_PLANE_PAD (Tuning::plane_pad): 0 turns the padding off, n > 0 forces n floats.
  if (plane_pad >= 0) return base + round_up(plane_pad, kAlign);
  if (channels * p.phases_used < 2 || span >= kWay) return base;
  auto worst = [&](int64_t plane) {
    int32_t count[kSets] = {};
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < p.phases_used; ++s) {
        const int64_t start = (c * p.phases_used + s) * plane;
        const int64_t first = start / kLine, last = (start + span - 1) / kLine;
        for (int64_t l = first; l <= last && l < first + kSets; ++l) ++count[l % kSets];
      }
    return *std::max_element(count, count + kSets);
  };
  const int32_t w0 = worst(base);
  if (w0 <= kWays) return base;  // the chunk fits the ways: leave the layout alone
  int64_t best = base;
  int32_t best_w = w0;
  // At most an eighth of the plane: a 1x1 layer at batch 1 (208-float planes) padded to 432
  // measured 4-6% slower (more packing for rows that do not stay in L1 anyway).
  for (int64_t pad = kLine; pad < kWay && pad * 8 <= base; pad += kLine) {
    const int32_t w = worst(base + pad);
    if (w < best_w) {
      best_w = w;
      best = base + pad;
    }
  }
  return best_w + 2 <= w0 ? best : base;
}

void check_size(int64_t floats) {
  if (floats >= int64_t(std::numeric_limits<int32_t>::max())) {
    throw std::length_error("the packed input would need " + std::to_string(floats) +
                            " floats; ShiftConv supports up to 2^31 per call (split the batch)");
  }
}

}  // namespace

SparseWeightBuilder::SparseWeightBuilder(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw,
                                         int64_t group, int max_group, const GroupCosts& costs)
    : w_(w), max_group_(max_group), costs_(costs) {
  SparseWeight& sw = head_;
  sw.M = M;
  sw.Cg = Cg;
  sw.kh = kh;
  sw.kw = kw;
  sw.group = group;
  row_len_ = uint64_t(Cg * kh * kw);
  if (M < 0 || group < 1 || uint64_t(M) * row_len_ != w.elements) throw std::invalid_argument("weight shape mismatch");
  // Row m of the kernel is row m of the blob (dims[0] = M): it selects the scale alpha[m].
  if (w.dims.empty() || uint64_t(M) != w.dims[0]) throw std::invalid_argument("weight rows mismatch");

  // Rows of the nonzeros in row-major order (the decoder yields increasing indices), each
  // found by binary search.
  row_start_.assign(size_t(M) + 1, 0);
  for (size_t m = 0, i = 0; m < size_t(M); ++m) {
    const uint64_t row_end = uint64_t(m + 1) * row_len_;
    i = size_t(std::lower_bound(w.index.begin() + std::ptrdiff_t(i), w.index.end(), row_end,
                                [](uint32_t a, uint64_t b) { return a < b; }) -
               w.index.begin());
    row_start_[m + 1] = i;
  }
  taps_.resize(w.index.size());
  vals_.resize(w.index.size() + 1);
  // Can a level be +-0 (it then contributes nothing and is dropped)? Only if alpha_min * u is:
  // rounding is monotone in the exact product, so |fl(alpha * u)| >= |fl(alpha_min * u)|.
  float alpha_min = w.alphas.empty() ? 0.0f : w.alphas[0];
  for (float a : w.alphas) alpha_min = a < alpha_min ? a : alpha_min;
  bool zero_level = false;
  for (float u : w.units) zero_level = zero_level || alpha_min * u == 0.0f;
  if (!zero_level) {
    // Nothing is dropped: rows keep w's positions and are converted when first used.
    lazy_ = true;
    converted_.assign(size_t(M), 0);
    vals_[w.index.size()] = 0.0f;  // one level past the last row: group_lists reads it
    sw.nonzeros = w.index.size();
  } else {
    // All rows now, dropping the zero levels: alpha[m] * u(code) from a per-row table of the
    // codes (one multiplication per code, not per element), bit-exact with fmt.dequantize.
    std::vector<float> row_levels(w.units.size());
    size_t k = 0;
    for (size_t m = 0; m < size_t(M); ++m) {
      const size_t i0 = row_start_[m], i1 = row_start_[m + 1];
      row_start_[m] = k;
      if (i1 == i0) continue;
      for (size_t c = 0; c < row_levels.size(); ++c) row_levels[c] = w.level(m, uint32_t(c));
      const uint64_t row_begin = uint64_t(m) * row_len_;
      for (size_t i = i0; i < i1; ++i) {
        const float v = row_levels[w.code[i]];
        taps_[k] = uint32_t(w.index[i] - row_begin);
        vals_[k] = v;
        k += v != 0.0f;  // a level that is exactly +-0 contributes nothing
      }
    }
    row_start_[size_t(M)] = k;
    vals_[k] = 0.0f;  // one level past the last row: group_lists reads it
    sw.nonzeros = k;
  }
  // Marking needs row_len bytes: only when a block of 8 rows holds on average at least a
  // quarter of that many nonzeros (so the scratch stays proportional to the blob's content,
  // whatever size it declares); otherwise the merge.
  const uint64_t per_block = 8 * uint64_t(sw.nonzeros) / std::max<uint64_t>(1, uint64_t(M));
  use_mark_ = row_len_ <= 4 * per_block;
}

void SparseWeightBuilder::convert_rows(size_t m0, size_t g) {
  if (!lazy_) return;
  std::vector<float> row_levels(w_.units.size());
  for (size_t m = m0; m < m0 + g; ++m) {
    if (converted_[m]) continue;
    converted_[m] = 1;
    const size_t i0 = row_start_[m], i1 = row_start_[m + 1];
    if (i1 == i0) continue;
    // alpha[m] * u(code), bit-exact with fmt.dequantize
    for (size_t c = 0; c < row_levels.size(); ++c) row_levels[c] = w_.level(m, uint32_t(c));
    const uint32_t row_begin = uint32_t(uint64_t(m) * row_len_);  // < elements <= 2^28
    for (size_t i = i0; i < i1; ++i) {
      taps_[i] = w_.index[i] - row_begin;
      vals_[i] = row_levels[w_.code[i]];
    }
  }
}

void SparseWeightBuilder::collect(size_t m0, int g, std::vector<uint32_t>* u, std::vector<uint8_t>* bits) {
  convert_rows(m0, size_t(g));
  if (use_mark_) {
    if (mark_.size() != row_len_) mark_.assign(size_t(row_len_), 0);
    mark_rows(taps_.data(), row_start_.data(), m0, g, &mark_, u, bits);
  } else {
    merge_rows(taps_.data(), row_start_.data(), m0, g, u, bits);
  }
}

template <class Visit>
void SparseWeightBuilder::for_blocks(int64_t stride, Visit visit) {
  // Groups inside each Conv group (rows of one group read the same input channels), chosen per
  // block of up to 8 rows from the union sizes of its aligned sub-blocks.
  const SparseWeight& sw = head_;
  const int64_t Mg = sw.M / sw.group;
  const int top = std::max(1, std::min(max_group_, 8));
  int64_t block = 0;
  for (int64_t grp = 0; grp < sw.group; ++grp) {
    size_t m = size_t(grp * Mg);
    const size_t end = size_t((grp + 1) * Mg);
    while (m < end) {
      int g = top;
      while (g > 1 && m + size_t(g) > end) g /= 2;
      if (block++ % stride == 0) visit(m, g);
      m += size_t(g);
    }
  }
}

double SparseWeightBuilder::estimate_cost_units(int64_t stride) {
  stride = std::max<int64_t>(1, stride);
  std::vector<uint32_t> u;
  std::vector<uint8_t> bits;
  std::vector<std::pair<int, int>> local;
  double units = 0;
  for_blocks(stride, [&](size_t m, int g) {
    collect(m, g, &u, &bits);
    local.clear();
    // A sampled block stands for the `stride` blocks it represents.
    units += choose_groups(count_unions(bits), 0, g, costs_, &local) * double(stride);
  });
  return units;
}

SparseWeight SparseWeightBuilder::build() {
  // Every row, in one pass (the lists below also read one level past each group's rows).
  convert_rows(0, size_t(head_.M));
  SparseWeight sw = head_;
  const int64_t Mg = sw.M / sw.group;
  std::vector<uint32_t> u;
  std::vector<uint8_t> bits;
  std::vector<std::pair<int, int>> local;
  // A group's list is no longer than its rows' nonzeros together, so this never reallocates
  // the taps (and, with fewer weights than nonzeros, e.g. blocked masks, the weights): growing
  // them had copied each list about once more.
  sw.taps.reserve(size_t(sw.nonzeros) + 1);
  sw.weights.reserve(size_t(sw.nonzeros) + 8);
  // One union per block of rows serves both the choice and the lists: a chosen group's taps
  // are the block's (increasing) taps that one of its rows has.
  for_blocks(1, [&](size_t m, int g) {
    collect(m, g, &u, &bits);
    const BlockUnions counts = count_unions(bits);
    local.clear();
    sw.cost_units += choose_groups(counts, 0, g, costs_, &local);
    for (const auto& [o, gg] : local) {
      RowGroup rg;
      rg.m0 = int32_t(m + size_t(o));
      rg.g = gg;
      rg.conv_group = int32_t(int64_t(rg.m0) / Mg);
      rg.tap_begin = uint32_t(sw.taps.size());
      rg.w_begin = sw.weights.size();
      const size_t n = counts.sizes[log2_small(gg)][o / gg];
      if (gg == 1) {  // a row alone: its own lists (not a filter over the block's union)
        const size_t r0 = row_start_[m + size_t(o)], r1 = row_start_[m + size_t(o) + 1];
        sw.taps.insert(sw.taps.end(), taps_.begin() + std::ptrdiff_t(r0), taps_.begin() + std::ptrdiff_t(r1));
        sw.weights.insert(sw.weights.end(), vals_.begin() + std::ptrdiff_t(r0), vals_.begin() + std::ptrdiff_t(r1));
        rg.tap_end = uint32_t(sw.taps.size());
        sw.stored_taps += n;
        sw.stored_macs += n;
        sw.groups.push_back(rg);
        continue;
      }
      // Sized for the list plus the scratch slot group_lists writes, then trimmed.
      const size_t tap_base = sw.taps.size(), base = sw.weights.size();
      sw.taps.resize(tap_base + n + 1);
      sw.weights.resize(base + (n + 1) * size_t(gg));
      const size_t* rows = &row_start_[m + size_t(o)];
      uint32_t* taps = sw.taps.data() + tap_base;
      float* weights = sw.weights.data() + base;
      if (gg == 2) group_lists<2>(u, bits, o, rows, vals_.data(), taps, weights);
      else if (gg == 4) group_lists<4>(u, bits, o, rows, vals_.data(), taps, weights);
      else group_lists<8>(u, bits, o, rows, vals_.data(), taps, weights);
      sw.taps.resize(tap_base + n);
      sw.weights.resize(base + n * size_t(gg));
      rg.tap_end = uint32_t(sw.taps.size());
      sw.stored_taps += n;
      sw.stored_macs += uint64_t(n) * uint64_t(gg);
      sw.groups.push_back(rg);
    }
  });
  return sw;
}

SparseWeight build_sparse_weight(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw,
                                 int64_t group, int max_group, const GroupCosts& costs) {
  return SparseWeightBuilder(w, M, Cg, kh, kw, group, max_group, costs).build();
}

Plan make_conv_plan(const SparseWeight& sw, const ConvAttrs& attrs, const ConvWeightShape& ws,
                    const std::vector<int64_t>& x_shape, int lanes, int max_vectors, int64_t chunk_bytes,
                    int64_t plane_pad) {
  const ConvShape cs = conv_shape(attrs, ws, x_shape);
  Plan p;
  p.N = cs.N;
  p.C = cs.C;
  p.H = cs.H;
  p.W = cs.W;
  p.OH = cs.OH;
  p.OW = cs.OW;
  p.sh = ws.sh;
  p.sw = ws.sw;
  p.pad_top = cs.pad_top;
  p.pad_left = cs.pad_left;
  // Stride phases: output pixel (oh, ow) reads input row sh*oh + a, which is row oh + a/sh of
  // phase a % sh. Only phases some tap uses are packed (a 1x1 stride-2 conv packs a quarter).
  const int64_t Hneed = (cs.OH - 1) * ws.sh + (ws.kh - 1) * ws.dh + 1;
  const int64_t Wneed = (cs.OW - 1) * ws.sw + (ws.kw - 1) * ws.dw + 1;
  p.Hq = ceil_div(Hneed, ws.sh);
  p.Wq = ceil_div(Wneed, ws.sw);
  if (ws.sw == 2) {
    // Column stride 2: phase rows of a whole number of cache lines where that costs at most an
    // eighth more pixels. 28 -> 14 (rows of 15 -> 16) then packs each row with aligned stores,
    // and the taps of kernel row 2 (one phase row down) read aligned vectors: kernel_timing at
    // batch 1, pack 0.028 -> 0.013 ms and compute 0.168 -> 0.159 ms (blocks of 4: 0.089 ->
    // 0.085 ms), same tiles.
    const int64_t aligned = round_up(p.Wq, kAlign);
    if ((aligned - p.Wq) * 8 <= p.Wq) p.Wq = aligned;
  }
  if (ws.sh == 1 && ws.sw == 1) {
    // Stride 1: neighbouring rows share their zero padding. A packed row holds pad_left zero
    // columns and then the W input columns; a read past the row's end (right padding) lands in
    // the next row's leading zeros, and one past the image's last row in the next image's top
    // zero rows (or the zeroed tail of the plane). So a row needs only max(pad_left, pad_right)
    // zero columns instead of both (512@7²: 8x8 = 64 instead of 9x9 = 81 pixels per image
    // computed for 49 outputs, 21% fewer FMAs). Reads at column c < Wneed with c >= Wq must stay
    // below the next row's pad_left, hence Wq >= Wneed - pad_left; rows also hold an output row.
    p.Wq = std::max({cs.pad_left + cs.W, Wneed - cs.pad_left, cs.OW});
    p.Hq = std::max({cs.pad_top + cs.H, Hneed - cs.pad_top, cs.OH});
  }
  p.phase_slot.assign(size_t(ws.sh * ws.sw), -1);
  for (int64_t ky = 0; ky < ws.kh; ++ky)
    for (int64_t kx = 0; kx < ws.kw; ++kx) {
      int32_t& slot = p.phase_slot[size_t(((ky * ws.dh) % ws.sh) * ws.sw + (kx * ws.dw) % ws.sw)];
      if (slot < 0) slot = int32_t(p.phases_used++);
    }
  check_size(p.N * p.Hq * p.Wq);
  p.Q = (p.N - 1) * p.Hq * p.Wq + (p.OH - 1) * p.Wq + p.OW;
  p.tile = pick_tile(p.Q, lanes, max_vectors);
  p.tiles = ceil_div(p.Q, p.tile);
  const int64_t halo = ((ws.kh - 1) * ws.dh / ws.sh) * p.Wq + (ws.kw - 1) * ws.dw / ws.sw;
  p.halo = halo;
  // Chunks depend on the tile, not on the plane; the plane's padding depends on the chunks.
  make_chunks(&p, sw, halo, chunk_bytes);
  // Planes start on a cache line (kAlign floats) so that taps at the same column phase of a
  // row, and all taps of a 1x1 conv, are aligned loads rather than cache-line splits,
  // padded where whole 4 KiB multiples would alias in L1 (pick_plane).
  // The plane also holds the zeros the last image's outputs read past its last row (Q + halo).
  p.plane = pick_plane(p, round_up(std::max(p.N * p.Hq * p.Wq, p.Q + halo), kAlign), p.tile + halo, plane_pad);
  p.channel_stride = p.phases_used * p.plane;
  check_size(p.C * p.channel_stride);
  p.packed_floats = p.C * p.channel_stride + p.tile + lanes;
  check_size(p.packed_floats + p.Q);

  const int64_t kk = ws.kh * ws.kw;
  p.offsets.resize(sw.taps.size());
  for (const RowGroup& g : sw.groups) {
    const int64_t cbase = int64_t(g.conv_group) * sw.Cg;
    for (uint32_t t = g.tap_begin; t < g.tap_end; ++t) {
      const int64_t tap = sw.taps[t];
      const int64_t c = cbase + tap / kk, k = tap % kk;
      const int64_t a = (k / ws.kw) * ws.dh, b = (k % ws.kw) * ws.dw;
      const int64_t slot = p.phase_slot[size_t((a % ws.sh) * ws.sw + b % ws.sw)];
      p.offsets[t] = int32_t(c * p.channel_stride + slot * p.plane + (a / ws.sh) * p.Wq + b / ws.sw);
    }
  }
  p.channel_used.assign(size_t(p.C), 0);
  for (const RowGroup& g : sw.groups)
    for (uint32_t t = g.tap_begin; t < g.tap_end; ++t)
      p.channel_used[size_t(int64_t(g.conv_group) * sw.Cg + sw.taps[t] / kk)] = 1;

  p.m_stride = p.OH * p.OW;
  p.p_stride = 1;
  std::vector<std::vector<Segment>> per_tile(size_t(p.tiles));
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t oh = 0; oh < p.OH; ++oh)
      add_segment(&p, n * p.Hq * p.Wq + oh * p.Wq, p.OW, n * sw.M * p.OH * p.OW + oh * p.OW, &per_tile);
  finish_segments(&p, per_tile);
  p.out_shape = {p.N, sw.M};
  if (ws.spatial == 2) p.out_shape.push_back(p.OH);
  p.out_shape.push_back(p.OW);
  return p;
}

Plan make_dense_plan(const SparseWeight& sw, const std::vector<int64_t>& x_shape, int lanes, int max_vectors, int64_t chunk_bytes) {
  if (x_shape.empty()) throw std::invalid_argument("input X of a dense ShiftConv must have rank >= 1");
  if (x_shape.back() != sw.Cg) {
    throw std::invalid_argument("input X has last dimension " + std::to_string(x_shape.back()) +
                                ", the weight expects K = " + std::to_string(sw.Cg));
  }
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x_shape.size(); ++i) rows *= x_shape[i];
  Plan p;
  p.dense = true;
  // The transposed input [K][rows] is a 1x1 conv over one image of 1 x rows pixels.
  p.N = 1;
  p.C = sw.Cg;
  p.H = 1;
  p.W = rows;
  p.OH = 1;
  p.OW = rows;
  p.Hq = 1;
  p.Wq = rows;
  p.phase_slot = {0};
  p.phases_used = 1;
  p.plane = round_up(rows, kAlign);
  p.channel_stride = p.plane;
  check_size(p.C * p.channel_stride);
  p.Q = rows;
  p.tile = pick_tile(p.Q, lanes, max_vectors);
  p.tiles = ceil_div(p.Q, p.tile);
  p.packed_floats = p.C * p.channel_stride + p.tile + lanes;
  check_size(p.packed_floats + p.Q);
  p.offsets.resize(sw.taps.size());
  for (size_t t = 0; t < sw.taps.size(); ++t) p.offsets[t] = int32_t(int64_t(sw.taps[t]) * p.channel_stride);
  p.channel_used.assign(size_t(p.C), 0);
  for (uint32_t tap : sw.taps) p.channel_used[tap] = 1;
  make_chunks(&p, sw, 0, chunk_bytes);
  p.m_stride = 1;
  p.p_stride = sw.M;
  std::vector<std::vector<Segment>> per_tile(size_t(p.tiles));
  if (rows > 0) add_segment(&p, 0, rows, 0, &per_tile);
  finish_segments(&p, per_tile);
  p.out_shape.assign(x_shape.begin(), x_shape.end() - 1);
  p.out_shape.push_back(sw.M);
  return p;
}

}  // namespace fq
