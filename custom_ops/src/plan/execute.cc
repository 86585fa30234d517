#include "plan/execute.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace fq {

namespace {

// Packed rows [r0, r1) of a plane, counted over the stacked images (row n * Hq + i is row i of
// image n); pack_input packs all of them, pack_span those a few tiles read.
struct RowRange {
  int64_t r0, r1;
  // Image n's part of the range: its rows [a, b).
  int64_t a(int64_t n, int64_t Hq) const { return std::max<int64_t>(0, r0 - n * Hq); }
  int64_t b(int64_t n, int64_t Hq) const { return std::min(Hq, r1 - n * Hq); }
};

// Rows [lo, hi) of row phase ph read input rows inside the image (row i reads input row
// i * sh + y0); the others are zero padding.
struct PhaseRows {
  int64_t y0, lo, hi;
};
PhaseRows phase_rows(const Plan& p, int64_t ph) {
  const int64_t y0 = ph - p.pad_top;
  const int64_t lo = std::min(p.Hq, y0 >= 0 ? int64_t(0) : (-y0 + p.sh - 1) / p.sh);
  const int64_t hi = std::max(lo, std::min(p.Hq, p.H - y0 <= 0 ? int64_t(0) : (p.H - y0 + p.sh - 1) / p.sh));
  return {y0, lo, hi};
}

// Zeroes rows [a, b) of an image's phase plane d (Wq floats each) that lie outside [i_lo, i_hi),
// the rows that read input rows.
void zero_padding_rows(float* d, int64_t a, int64_t b, int64_t i_lo, int64_t i_hi, int64_t Wq) {
  if (std::min(b, i_lo) > a) std::memset(d + a * Wq, 0, size_t((std::min(b, i_lo) - a) * Wq) * sizeof(float));
  if (b > std::max(a, i_hi)) std::memset(d + std::max(a, i_hi) * Wq, 0, size_t((b - std::max(a, i_hi)) * Wq) * sizeof(float));
}

// Column stride 2: one pass over each input row writes both column phases (even and odd
// columns), instead of two strided gathers; the kernel table's deinterleave does all rows of a
// row phase of an image in one call (rows are short: the per-row cost is the time).
void pack_channel_sw2(const Plan& p, const float* x, float* packed, int64_t c, RowRange rr, DeinterleaveFn deinterleave) {
  const int64_t H = p.H, W = p.W, Hq = p.Hq, Wq = p.Wq;
  for (int64_t ph = 0; ph < p.sh; ++ph) {
    const int32_t s0 = p.phase_slot[size_t(ph * 2)], s1 = p.phase_slot[size_t(ph * 2 + 1)];
    if (s0 < 0 && s1 < 0) continue;  // no tap reads this row phase
    const auto [y0, i_lo, i_hi] = phase_rows(p, ph);
    for (int64_t n = rr.r0 / Hq; n < p.N && n * Hq < rr.r1; ++n) {
      const int64_t a = rr.a(n, Hq), b = rr.b(n, Hq);
      const float* src_plane = x + (n * p.C + c) * H * W;
      float* d0 = s0 >= 0 ? packed + c * p.channel_stride + s0 * p.plane + n * Hq * Wq : nullptr;
      float* d1 = s1 >= 0 ? packed + c * p.channel_stride + s1 * p.plane + n * Hq * Wq : nullptr;
      for (float* d : {d0, d1}) {
        if (d) zero_padding_rows(d, a, b, i_lo, i_hi, Wq);
      }
      const int64_t lo = std::max(a, i_lo), hi = std::min(b, i_hi);
      if (hi > lo) {
        deinterleave(src_plane + (lo * p.sh + y0) * W, p.sh * W, hi - lo, W, p.pad_left, d0 ? d0 + lo * Wq : nullptr,
                     d1 ? d1 + lo * Wq : nullptr, Wq);
      }
    }
  }
}

void pack_channel(const Plan& p, const float* x, float* packed, int64_t c, RowRange rr, const KernelTable* kt) {
  if (p.sw == 2 && p.phase_slot.size() == size_t(2 * p.sh)) {
    pack_channel_sw2(p, x, packed, c, rr, kt ? kt->deinterleave : kernels_scalar()->deinterleave);
    return;
  }
  const int64_t H = p.H, W = p.W, Hq = p.Hq, Wq = p.Wq;
  for (int64_t ph = 0; ph < p.sh; ++ph) {
    for (int64_t pw = 0; pw < p.sw; ++pw) {
      const int32_t slot = p.phase_slot[size_t(ph * p.sw + pw)];
      if (slot < 0) continue;
      // Columns j of this phase read input column j*sw + pw - pad_left; [j_lo, j_hi) is inside.
      const int64_t x0 = pw - p.pad_left;
      int64_t j_lo = x0 >= 0 ? 0 : (-x0 + p.sw - 1) / p.sw;
      int64_t j_hi = W - x0 <= 0 ? 0 : (W - x0 + p.sw - 1) / p.sw;
      j_lo = std::min(j_lo, Wq);
      j_hi = std::max(j_lo, std::min(j_hi, Wq));
      const auto [y0, i_lo, i_hi] = phase_rows(p, ph);
      // Whole rows are contiguous when they need neither padding nor a column stride (1x1
      // convs, unpadded stride-1 convs): one copy per image.
      const bool contiguous = p.sw == 1 && p.sh == 1 && x0 == 0 && Wq == W && j_lo == 0 && j_hi == W;
      for (int64_t n = rr.r0 / Hq; n < p.N && n * Hq < rr.r1; ++n) {
        const int64_t a = rr.a(n, Hq), b = rr.b(n, Hq);
        const float* src_plane = x + (n * p.C + c) * H * W;
        float* dst_plane = packed + c * p.channel_stride + slot * p.plane + n * Hq * Wq;
        zero_padding_rows(dst_plane, a, b, i_lo, i_hi, Wq);
        const int64_t lo = std::max(a, i_lo), hi = std::min(b, i_hi);
        if (contiguous) {
          if (hi > lo) std::memcpy(dst_plane + lo * Wq, src_plane + (lo + y0) * W, size_t((hi - lo) * Wq) * sizeof(float));
          continue;
        }
        for (int64_t i = lo; i < hi; ++i) {
          float* dst = dst_plane + i * Wq;
          const float* src = src_plane + (i * p.sh + y0) * W + x0;
          // Plain loops: rows are short (7..112 floats), where library calls cost more
          // than the copy.
          for (int64_t j = 0; j < j_lo; ++j) dst[j] = 0.0f;
          if (p.sw == 1) {
            for (int64_t j = j_lo; j < j_hi; ++j) dst[j] = src[j];
          } else {
            for (int64_t j = j_lo; j < j_hi; ++j) dst[j] = src[j * p.sw];
          }
          for (int64_t j = j_hi; j < Wq; ++j) dst[j] = 0.0f;
        }
      }
    }
  }
}

// Zeroes positions [lo, hi) of every packed plane of channel c (phase slots included).
void zero_planes(const Plan& p, float* packed, int64_t c, int64_t lo, int64_t hi) {
  if (hi <= lo) return;
  for (int64_t s = 0; s < p.phases_used; ++s) {
    std::memset(packed + c * p.channel_stride + s * p.plane + lo, 0, size_t(hi - lo) * sizeof(float));
  }
}

}  // namespace

void pack_input(const Plan& p, const float* x, float* packed, int64_t c_begin, int64_t c_end,
                const KernelTable* kt) {
  if (p.dense) {
    // X is [rows][K]; the kernels want [K][rows] so that consecutive rows are one vector.
    const int64_t rows = p.W, K = p.C;
    for (int64_t k = c_begin; k < c_end; ++k) {
      if (!p.channel_used[size_t(k)]) continue;
      float* dst = packed + k * p.channel_stride;
      for (int64_t r = 0; r < rows; ++r) dst[r] = x[r * K + k];
      std::memset(dst + rows, 0, size_t(p.channel_stride - rows) * sizeof(float));
    }
    return;
  }
  const int64_t rows = p.N * p.Hq, images = rows * p.Wq;
  for (int64_t c = c_begin; c < c_end; ++c) {
    // Channels no tap reads (sparse depthwise layers have many) are never loaded.
    if (!p.channel_used[size_t(c)]) continue;
    pack_channel(p, x, packed, c, RowRange{0, rows}, kt);
    // The alignment gap after the last image: only garbage pixels read it, but it must hold
    // ordinary numbers (no NaN or denormal slow paths).
    zero_planes(p, packed, c, images, p.plane);
  }
}

void pack_span(const Plan& p, const float* x, float* packed, int64_t lo, int64_t hi, const KernelTable* kt) {
  const int64_t rows = p.N * p.Hq, images = rows * p.Wq;
  const int64_t end = std::min(hi, p.plane);
  const RowRange rr{std::min(rows, lo / p.Wq), std::min(rows, (end + p.Wq - 1) / p.Wq)};
  // Reads past the end of a plane land at the start of the next one (or in the tail after the
  // last channel, zero_packed_tail); that start is packed here only from `lo` on.
  const int64_t spill = std::max<int64_t>(0, hi - p.plane);
  for (int64_t c = 0; c < p.C; ++c) {
    if (p.channel_used[size_t(c)]) {
      pack_channel(p, x, packed, c, rr, kt);
      zero_planes(p, packed, c, std::max(lo, images), end);
      zero_planes(p, packed, c, 0, std::min(lo, spill));
    } else {
      zero_planes(p, packed, c, 0, spill);
    }
  }
}

void zero_packed_tail(const Plan& p, float* packed) {
  const int64_t used = p.C * p.channel_stride;
  std::memset(packed + used, 0, size_t(p.packed_floats - used) * sizeof(float));
}

TaskGrid make_task_grid(const Plan& p, const SparseWeight& sw, int64_t target_tasks) {
  return make_task_grid(p, int64_t(sw.groups.size()), target_tasks);
}

TaskGrid make_task_grid(const Plan& p, int64_t groups, int64_t target_tasks) {
  TaskGrid g;
  target_tasks = std::max<int64_t>(1, target_tasks);
  // Prefer splitting pixels: every task then streams the same (cached) tap lists. Split the
  // output channels too when there are too few tiles to keep every thread busy.
  g.tile_tasks = std::min<int64_t>(p.tiles, target_tasks);
  g.tiles_per_task = (p.tiles + g.tile_tasks - 1) / std::max<int64_t>(1, g.tile_tasks);
  g.tile_tasks = (p.tiles + g.tiles_per_task - 1) / g.tiles_per_task;
  const int64_t want_group_tasks = std::max<int64_t>(1, target_tasks / std::max<int64_t>(1, g.tile_tasks));
  g.group_tasks = std::max<int64_t>(1, std::min<int64_t>(groups, want_group_tasks));
  g.groups_per_task = (groups + g.group_tasks - 1) / g.group_tasks;
  g.group_tasks = groups ? (groups + g.groups_per_task - 1) / g.groups_per_task : 1;
  return g;
}

namespace {

// Sums of the current tile for all row groups of a task, [rows][tile]; per thread, so
// concurrent Run() calls and pool threads never share it.
float* scratch(size_t floats) {
  thread_local AlignedFloats buf;
  return buf.reserve(floats);
}

// A tile of a group's rows as near-equal sub-tiles of at most the widest V the ISA table has
// for g rows (a 14-vector tile of 4 rows runs as 5 + 5 + 4 vectors).
struct TileSplit {
  TileFn fn[17];
  int64_t width[17];  // floats per call
  int n = 0;
};

TileSplit split_tile(const KernelTable& kt, int g, int64_t tile) {
  const int gi = g >= 8 ? 3 : g >= 4 ? 2 : g >= 2 ? 1 : 0;
  const int64_t vectors = tile / kt.lanes;
  int64_t vmax = std::min<int64_t>(16, vectors);
  while (vmax > 1 && kt.fn[gi][vmax] == nullptr) --vmax;
  TileSplit sp;
  sp.n = int((vectors + vmax - 1) / vmax);
  const int64_t base = vectors / sp.n, extra = vectors % sp.n;
  for (int i = 0; i < sp.n; ++i) {
    const int64_t v = base + (i < extra ? 1 : 0);
    sp.fn[i] = kt.fn[gi][v];
    sp.width[i] = v * kt.lanes;
  }
  return sp;
}

void accumulate_group(const TileSplit& k, const float* in_tile, const int32_t* off, const float* w, size_t n,
                      float* acc, int64_t tile, int accumulate) {
  int64_t s = 0;
  for (int i = 0; i < k.n; ++i) {
    k.fn[i](in_tile + s, off, w, n, acc + s, size_t(tile), accumulate);
    s += k.width[i];
  }
}

void store_group(const Plan& p, const RowGroup& rg, const float* acc, int64_t tile_index, const Epilogue& ep,
                 StoreFn store, float* y) {
  const Segment* seg = p.segments.data() + p.seg_ptr[size_t(tile_index)];
  const Segment* seg_end = p.segments.data() + p.seg_ptr[size_t(tile_index) + 1];
  for (int j = 0; j < rg.g; ++j) {
    const int64_t m = rg.m0 + j;
    const float b = ep.bias ? ep.bias[m] : 0.0f;
    const float* a = acc + int64_t(j) * p.tile;
    float* ym = y + m * p.m_stride;
    for (const Segment* s = seg; s != seg_end; ++s) {
      const float* src = a + s->q_local;
      float* dst = ym + s->out;
      if (p.p_stride == 1) {
        store(src, dst, s->len, b, ep.lo, ep.hi);
      } else {
        for (int32_t i = 0; i < s->len; ++i) dst[i * p.p_stride] = std::min(std::max(src[i] + b, ep.lo), ep.hi);
      }
    }
  }
}

}  // namespace

void run_task(const Plan& p, const SparseWeight& sw, const KernelTable& kt, const TaskGrid& grid, int64_t task,
              const float* packed, const Epilogue& ep, float* y) {
  const int64_t tt = task % grid.tile_tasks, gt = task / grid.tile_tasks;
  const int64_t t_begin = tt * grid.tiles_per_task, t_end = std::min(p.tiles, t_begin + grid.tiles_per_task);
  const size_t r_begin = size_t(gt * grid.groups_per_task);
  const size_t r_end = std::min(sw.groups.size(), r_begin + size_t(grid.groups_per_task));
  run_tiles(p, sw, kt, t_begin, t_end, r_begin, r_end, packed, ep, y);
}

void run_tiles(const Plan& p, const SparseWeight& sw, const KernelTable& kt, int64_t t_begin, int64_t t_end,
               size_t r_begin, size_t r_end, const float* packed, const Epilogue& ep, float* y) {
  if (r_begin >= r_end || t_begin >= t_end) return;
  const int64_t K = p.chunks;
  const int64_t T = p.tile;

  // Row offsets of each group inside the scratch buffer.
  int64_t rows = 0;
  for (size_t r = r_begin; r < r_end; ++r) rows += sw.groups[r].g;
  float* acc_all = scratch(size_t((K == 1 ? 8 : rows) * T));
  const TileSplit splits[4] = {split_tile(kt, 1, T), split_tile(kt, 2, T), split_tile(kt, 4, T), split_tile(kt, 8, T)};
  auto split_for = [&](int g) -> const TileSplit& { return splits[g >= 8 ? 3 : g >= 4 ? 2 : g >= 2 ? 1 : 0]; };

  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* in_tile = packed + t * T;
    if (K == 1) {
      for (size_t r = r_begin; r < r_end; ++r) {
        const RowGroup& rg = sw.groups[r];
        accumulate_group(split_for(rg.g), in_tile, p.offsets.data() + rg.tap_begin, sw.weights.data() + rg.w_begin,
                         rg.tap_end - rg.tap_begin, acc_all, T, 0);
        store_group(p, rg, acc_all, t, ep, kt.store, y);
      }
      continue;
    }
    // Input-channel chunks outermost so that a chunk's rows of this tile stay in L1 while all
    // row groups use them; partial sums go through the (L1/L2-resident) scratch once per chunk.
    for (int64_t c = 0; c < K; ++c) {
      float* acc = acc_all;
      for (size_t r = r_begin; r < r_end; ++r) {
        const RowGroup& rg = sw.groups[r];
        const uint32_t* ptr = &p.chunk_ptr[r * size_t(K + 1)];
        const uint32_t b = ptr[c], e = ptr[c + 1];
        if (b != e || c == 0) {
          accumulate_group(split_for(rg.g), in_tile, p.offsets.data() + b,
                           sw.weights.data() + rg.w_begin + uint64_t(b - rg.tap_begin) * uint64_t(rg.g), e - b,
                           acc, T, c > 0);
        }
        acc += int64_t(rg.g) * T;
      }
    }
    float* acc = acc_all;
    for (size_t r = r_begin; r < r_end; ++r) {
      store_group(p, sw.groups[r], acc, t, ep, kt.store, y);
      acc += int64_t(sw.groups[r].g) * T;
    }
  }
}

void sparse_matvec(const SparseWeight& sw, const float* x, int64_t rows, size_t r_begin, size_t r_end,
                   const Epilogue& ep, float* y) {
  const int64_t K = sw.Cg, M = sw.M;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * K;
    float* yr = y + r * M;
    for (size_t gi = r_begin; gi < r_end; ++gi) {
      const RowGroup& rg = sw.groups[gi];
      const uint32_t* tap = sw.taps.data() + rg.tap_begin;
      const float* w = sw.weights.data() + rg.w_begin;
      const size_t n = rg.tap_end - rg.tap_begin;
      float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (rg.g == 1) {
        // Four independent chains: the taps' gathers of x overlap.
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t t = 0;
        for (; t + 4 <= n; t += 4) {
          s0 += w[t] * xr[tap[t]];
          s1 += w[t + 1] * xr[tap[t + 1]];
          s2 += w[t + 2] * xr[tap[t + 2]];
          s3 += w[t + 3] * xr[tap[t + 3]];
        }
        for (; t < n; ++t) s0 += w[t] * xr[tap[t]];
        sum[0] = (s0 + s1) + (s2 + s3);
      } else {
        for (size_t t = 0; t < n; ++t) {
          const float xv = xr[tap[t]];
          for (int j = 0; j < rg.g; ++j) sum[j] += w[t * size_t(rg.g) + size_t(j)] * xv;
        }
      }
      for (int j = 0; j < rg.g; ++j) {
        const int64_t m = rg.m0 + j;
        const float v = sum[j] + (ep.bias ? ep.bias[m] : 0.0f);
        yr[m] = std::min(std::max(v, ep.lo), ep.hi);
      }
    }
  }
}

bool small_plane_eligible(const ConvWeightShape& ws, const ConvShape& cs) {
  const int64_t P = cs.OH * cs.OW;
  return ws.sh == 1 && ws.sw == 1 && cs.W == cs.OW && P > 0 && P <= kSmallPlaneMax;
}

void small_plane_masks(const ConvWeightShape& ws, const ConvShape& cs, int lanes, std::vector<uint32_t>* masks,
                       std::vector<int32_t>* offs) {
  // Per window tap: its flat offset (rows are W long in and out) and which output lanes read
  // inside the image.
  const int64_t P = cs.OH * cs.OW, L = lanes, nvec = (P + L - 1) / L, taps = ws.kh * ws.kw;
  masks->assign(size_t(taps * nvec), 0u);
  offs->assign(size_t(taps), 0);
  for (int64_t p = 0; p < taps; ++p) {
    const int64_t dy = p / ws.kw * ws.dh - cs.pad_top, dx = p % ws.kw * ws.dw - cs.pad_left;
    (*offs)[size_t(p)] = int32_t(dy * cs.W + dx);
    for (int64_t q = 0; q < P; ++q) {
      const int64_t iy = q / cs.OW + dy, ix = q % cs.OW + dx;
      if (iy >= 0 && iy < cs.H && ix >= 0 && ix < cs.W) (*masks)[size_t(p * nvec + q / L)] |= 1u << unsigned(q % L);
    }
  }
}

}  // namespace fq
