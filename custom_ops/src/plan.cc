#include "plan.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace fq {
namespace {

int log2_small(int g) { return g >= 8 ? 3 : g >= 4 ? 2 : g >= 2 ? 1 : 0; }

// Taps and weights of one output row (views into the row-major nonzero arrays).
struct RowView {
  const uint32_t* taps;
  const float* w;
  size_t n;
};

std::vector<uint32_t> union_taps(const std::vector<RowView>& rows, size_t m, int g) {
  std::vector<uint32_t> u(rows[m].taps, rows[m].taps + rows[m].n), tmp;
  for (int j = 1; j < g; ++j) {
    const RowView& r = rows[m + size_t(j)];
    tmp.clear();
    std::set_union(u.begin(), u.end(), r.taps, r.taps + r.n, std::back_inserter(tmp));
    u.swap(tmp);
  }
  return u;
}

// Cheapest split of rows [m, m + g) into power-of-two groups; appends (m0, g) choices.
double choose_groups(const std::vector<RowView>& rows, size_t m, int g, const GroupCosts& costs,
                     std::vector<std::pair<size_t, int>>* out) {
  if (g == 1) {
    out->emplace_back(m, 1);
    return double(rows[m].n) * costs.c[0];
  }
  std::vector<std::pair<size_t, int>> split;
  double split_cost = choose_groups(rows, m, g / 2, costs, &split);
  split_cost += choose_groups(rows, m + size_t(g / 2), g / 2, costs, &split);
  const double union_cost = double(union_taps(rows, m, g).size()) * costs.c[log2_small(g)];
  if (union_cost < split_cost) {
    out->emplace_back(m, g);
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

void check_size(int64_t floats) {
  if (floats >= int64_t(std::numeric_limits<int32_t>::max())) {
    throw std::length_error("the packed input would need " + std::to_string(floats) +
                            " floats; ShiftConv supports up to 2^31 per call (split the batch)");
  }
}

}  // namespace

SparseWeight build_sparse_weight(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw,
                                 int64_t group, int max_group, const GroupCosts& costs) {
  SparseWeight sw;
  sw.M = M;
  sw.Cg = Cg;
  sw.kh = kh;
  sw.kw = kw;
  sw.group = group;
  const uint64_t row_len = uint64_t(Cg * kh * kw);
  if (uint64_t(M) * row_len != w.elements) throw std::invalid_argument("weight shape mismatch");
  // Row m of the kernel is row m of the blob (dims[0] = M): it selects the scale alpha[m].
  if (w.dims.empty() || uint64_t(M) != w.dims[0]) throw std::invalid_argument("weight rows mismatch");

  // Nonzeros in row-major order split into rows (the decoder yields increasing indices).
  std::vector<uint32_t> taps;
  std::vector<float> vals;
  std::vector<size_t> row_start(size_t(M) + 1, 0);
  taps.reserve(w.index.size());
  vals.reserve(w.index.size());
  for (size_t i = 0; i < w.index.size(); ++i) {
    const uint64_t m = w.index[i] / row_len;
    const float v = w.level(m, w.code[i]);  // alpha[m] * u(code), bit-exact with fmt.dequantize
    if (v == 0.0f) continue;  // a level that is exactly +-0 contributes nothing
    taps.push_back(uint32_t(w.index[i] - m * row_len));
    vals.push_back(v);
    ++row_start[size_t(m) + 1];
  }
  for (size_t m = 0; m < size_t(M); ++m) row_start[m + 1] += row_start[m];
  sw.nonzeros = taps.size();
  std::vector<RowView> rows(static_cast<size_t>(M));
  for (size_t m = 0; m < size_t(M); ++m) {
    rows[m] = RowView{taps.data() + row_start[m], vals.data() + row_start[m], row_start[m + 1] - row_start[m]};
  }

  // Choose groups inside each Conv group (rows of one group read the same input channels).
  const int64_t Mg = M / group;
  std::vector<std::pair<size_t, int>> choice;
  for (int64_t grp = 0; grp < group; ++grp) {
    size_t m = size_t(grp * Mg);
    const size_t end = size_t((grp + 1) * Mg);
    while (m < end) {
      int g = std::max(1, std::min(max_group, 8));
      while (g > 1 && m + size_t(g) > end) g /= 2;
      choose_groups(rows, m, g, costs, &choice);
      m += size_t(g);
    }
  }

  for (const auto& [m0, g] : choice) {
    RowGroup rg;
    rg.m0 = int32_t(m0);
    rg.g = g;
    rg.conv_group = int32_t(int64_t(m0) / Mg);
    rg.tap_begin = uint32_t(sw.taps.size());
    rg.w_begin = sw.weights.size();
    const std::vector<uint32_t> u = union_taps(rows, m0, g);
    sw.taps.insert(sw.taps.end(), u.begin(), u.end());
    const size_t base = sw.weights.size();
    sw.weights.resize(base + u.size() * size_t(g), 0.0f);
    for (int j = 0; j < g; ++j) {
      const RowView& r = rows[m0 + size_t(j)];
      size_t k = 0;
      for (size_t i = 0; i < r.n; ++i) {
        while (u[k] != r.taps[i]) ++k;  // r.taps is a subset of u, both increasing
        sw.weights[base + k * size_t(g) + size_t(j)] = r.w[i];
      }
    }
    rg.tap_end = uint32_t(sw.taps.size());
    sw.stored_taps += u.size();
    sw.stored_macs += u.size() * size_t(g);
    sw.groups.push_back(rg);
  }
  return sw;
}

Plan make_conv_plan(const SparseWeight& sw, const ConvAttrs& attrs, const ConvWeightShape& ws,
                    const std::vector<int64_t>& x_shape, int lanes, int max_vectors, int64_t chunk_bytes) {
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
  p.phase_slot.assign(size_t(ws.sh * ws.sw), -1);
  for (int64_t ky = 0; ky < ws.kh; ++ky)
    for (int64_t kx = 0; kx < ws.kw; ++kx) {
      int32_t& slot = p.phase_slot[size_t(((ky * ws.dh) % ws.sh) * ws.sw + (kx * ws.dw) % ws.sw)];
      if (slot < 0) slot = int32_t(p.phases_used++);
    }
  check_size(p.N * p.Hq * p.Wq);
  // Planes start on a cache line (kAlign floats) so that taps at the same column phase of a
  // row, and all taps of a 1x1 conv, are aligned loads rather than cache-line splits.
  p.plane = round_up(p.N * p.Hq * p.Wq, kAlign);
  p.channel_stride = p.phases_used * p.plane;
  check_size(p.C * p.channel_stride);
  p.Q = (p.N - 1) * p.Hq * p.Wq + (p.OH - 1) * p.Wq + p.OW;
  p.tile = pick_tile(p.Q, lanes, max_vectors);
  p.tiles = ceil_div(p.Q, p.tile);
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
  const int64_t halo = ((ws.kh - 1) * ws.dh / ws.sh) * p.Wq + (ws.kw - 1) * ws.dw / ws.sw;
  make_chunks(&p, sw, halo, chunk_bytes);

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
