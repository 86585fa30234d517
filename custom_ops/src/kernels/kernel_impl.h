// The register-tiled broadcast-FMA microkernel, written once over a vector-traits type VT and
// instantiated by each ISA translation unit (kernel_scalar.cc, kernel_avx2.cc, kernel_avx512.cc).
// Include only from those files, inside an anonymous namespace, so every instantiation has
// internal linkage and carries its own ISA.
//
// Why this shape: a tile of output pixels of g channels lives in g * V vector registers; each
// nonzero weight is one broadcast and V FMAs against contiguous input vectors at a constant
// offset (the packed input makes every tap a constant offset). Accumulating in memory instead
// was measured 1.6-3x slower (docs/PERFORMANCE.md).

// Every loop over G or V is unrolled explicitly: GCC 12 otherwise unrolls them after scalar
// replacement and keeps the g > 1 sums in a stack array, stored and reloaded around the tap
// loop on every call.
#define FQ_UNROLL _Pragma("GCC unroll 32")

template <class VT, int G, int V>
void tile_kernel(const float* in, const int32_t* off, const float* w, size_t n, float* acc,
                 size_t acc_stride, int accumulate) {
  constexpr int L = VT::kLanes;
  // Start from zero and add earlier chunks' sums at the end: a conditional start makes the
  // compiler spill the accumulators around the loop.
  typename VT::Reg a[G * V];
  FQ_UNROLL for (int j = 0; j < G; ++j)
    FQ_UNROLL for (int v = 0; v < V; ++v) a[j * V + v] = VT::zero();
  for (size_t t = 0; t < n; ++t) {
    const float* p = in + off[t];
    if (G == 1) {
      const typename VT::Reg wb = VT::set1(w[t]);
      FQ_UNROLL for (int v = 0; v < V; ++v) a[v] = VT::fma(wb, VT::load(p + v * L), a[v]);
    } else {
      typename VT::Reg x[V];
      FQ_UNROLL for (int v = 0; v < V; ++v) x[v] = VT::load(p + v * L);
      const float* wt = w + t * G;
      FQ_UNROLL for (int j = 0; j < G; ++j) {
        const typename VT::Reg wb = VT::set1(wt[j]);
        FQ_UNROLL for (int v = 0; v < V; ++v) a[j * V + v] = VT::fma(wb, x[v], a[j * V + v]);
      }
    }
  }
  // One store loop after a conditional add: two store loops (one per branch) made GCC keep the
  // accumulators in a stack array and copy them there after every call.
  if (accumulate) {
    FQ_UNROLL for (int j = 0; j < G; ++j)
      FQ_UNROLL for (int v = 0; v < V; ++v) a[j * V + v] = VT::add(a[j * V + v], VT::load(acc + size_t(j) * acc_stride + v * L));
  }
  FQ_UNROLL for (int j = 0; j < G; ++j)
    FQ_UNROLL for (int v = 0; v < V; ++v) VT::store(acc + size_t(j) * acc_stride + v * L, a[j * V + v]);
}

// Depthwise plane (kernels.h: DepthwiseArgs). Each vector of output pixels keeps its sum in a
// register over the (few) taps; lanes whose input column is padding load zero.
// SW > 0: the column stride as a constant (no divisions in the inner loop); SW = 0: a.sw.
// Up to R vectors of one output row are summed at once (independent FMA chains) while the
// taps stream by; lanes whose input column is padding load zero.
template <class VT, int SW>
void depthwise_plane_sw(const DepthwiseArgs& a) {
  constexpr int L = VT::kLanes;
  constexpr int R = 8;
  const int64_t sw = SW > 0 ? SW : a.sw;
  alignas(64) float tmp[R * L];
  for (int64_t oh = 0; oh < a.OH; ++oh) {
    float* yrow = a.y + oh * a.OW;
    for (int64_t o0 = 0; o0 < a.OW; o0 += R * L) {
      const int64_t cnt = a.OW - o0 < R * L ? a.OW - o0 : R * L;
      const int64_t nv = (cnt + L - 1) / L;
      typename VT::Reg acc[R];
      for (int v = 0; v < R; ++v) acc[v] = VT::zero();
      for (size_t t = 0; t < a.n; ++t) {
        const int64_t iy = oh * a.sh + a.dy[t] - a.pad_top;
        if (iy < 0 || iy >= a.H) continue;
        // Output columns [ow_lo, ow_hi) of this tap read inside the row.
        const int64_t c0 = a.dx[t] - a.pad_left;  // input column of output column 0
        const int64_t ow_lo = c0 < 0 ? (-c0 + sw - 1) / sw : 0;
        const int64_t ow_hi = a.W - 1 - c0 < 0 ? 0 : (a.W - 1 - c0) / sw + 1;
        const typename VT::Reg wb = VT::set1(a.w[t]);
        const float* row = a.x + iy * a.W + c0;
        for (int v = 0; v < R; ++v) {
          if (v >= nv) break;
          const int64_t p0 = o0 + v * L;
          const float* src = row + p0 * sw;
          if (p0 >= ow_lo && p0 + L <= ow_hi) {
            acc[v] = VT::fma(wb, VT::load_lanes(src, sw, 0, L), acc[v]);
            continue;
          }
          const int64_t lo = ow_lo - p0 > 0 ? ow_lo - p0 : 0;
          const int64_t c = cnt - v * L < L ? cnt - v * L : L;
          const int64_t hi = ow_hi - p0 < c ? ow_hi - p0 : c;
          if (lo >= hi) continue;
          acc[v] = VT::fma(wb, VT::load_lanes(src, sw, int(lo), int(hi)), acc[v]);
        }
      }
      for (int v = 0; v < R; ++v) {
        if (v >= nv) break;
        VT::store(tmp + v * L, acc[v]);
      }
      VT::store_run(tmp, yrow + o0, cnt, a.b, a.lo, a.hi);
    }
  }
}

template <class VT>
void depthwise_plane(const DepthwiseArgs& a) {
  if (a.sw == 1) {
    depthwise_plane_sw<VT, 1>(a);
  } else if (a.sw == 2) {
    depthwise_plane_sw<VT, 2>(a);
  } else {
    depthwise_plane_sw<VT, 0>(a);
  }
}

// Small-M dense GEMM (kernels.h: GemmFn): R rows x NV vectors of one panel stay in registers
// while the panel streams by once; each k is NV loads, R broadcasts and R * NV FMAs (MLAS's
// SGEMM kernel shape). The panel is read once per call whatever R is, so for the few rows of a
// classifier the weight stream, not the FMAs, sets the time.
template <class VT, int R, int NV>
void gemm_rows(const float* x, size_t ldx, const float* panel, size_t K, float* part, int flags, const float* b,
               float* y, size_t ldy, int cols, float lo, float hi) {
  constexpr int L = VT::kLanes;
  constexpr size_t NR = size_t(NV) * L;
  typename VT::Reg a[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = VT::zero();
  // The panel streams from memory: ask for it kAhead steps early (measured: the hardware
  // prefetcher alone left the load and FMA phases poorly overlapped at 8-12 rows).
  constexpr size_t kAhead = 16;
  for (size_t k = 0; k < K; ++k) {
    if (k + kAhead < K) {
      for (size_t c = 0; c < NR; c += 16) __builtin_prefetch(panel + (k + kAhead) * NR + c);
    }
    typename VT::Reg w[NV];
    for (int v = 0; v < NV; ++v) w[v] = VT::load(panel + k * NR + v * L);
    for (int r = 0; r < R; ++r) {
      const typename VT::Reg xb = VT::set1(x[r * ldx + k]);
      for (int v = 0; v < NV; ++v) a[r][v] = VT::fma(xb, w[v], a[r][v]);
    }
  }
  // Earlier K blocks are added after the loop (a conditional start spills the accumulators).
  if (flags & kGemmAccumulate) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) a[r][v] = VT::add(a[r][v], VT::load(part + r * NR + v * L));
  }
  if (!(flags & kGemmFinal)) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) VT::store(part + r * NR + v * L, a[r][v]);
    return;
  }
  const typename VT::Reg vlo = VT::set1(lo), vhi = VT::set1(hi);
  alignas(64) float tmp[NR];
  for (int r = 0; r < R; ++r) {
    float* yr = y + r * ldy;
    for (int v = 0; v < NV; ++v) {
      // min(hi, max(lo, s)) keeps a NaN sum NaN, like the scalar clamp of the other paths.
      const typename VT::Reg s = VT::add(a[r][v], VT::load(b + v * L));
      const typename VT::Reg o = VT::min(vhi, VT::max(vlo, s));
      if (size_t(cols) == NR) {
        VT::store(yr + v * L, o);
      } else {
        VT::store(tmp + v * L, o);
      }
    }
    if (size_t(cols) != NR) {
      for (int c = 0; c < cols; ++c) yr[c] = tmp[c];
    }
  }
}

template <class VT, int NV, int MR>
void gemm_panel(const float* x, size_t ldx, int rows, const float* panel, size_t K, float* part, int flags,
                const float* b, float* y, size_t ldy, int cols, float lo, float hi) {
  static_assert(MR >= 1 && MR <= 12, "gemm_panel dispatches up to 12 rows");
  switch (rows < 1 ? 1 : rows > MR ? MR : rows) {
#define FQ_GEMM_CASE(R)                                                        \
  case R:                                                                      \
    if constexpr (R <= MR) gemm_rows<VT, R, NV>(x, ldx, panel, K, part, flags, b, y, ldy, cols, lo, hi); \
    break;
    FQ_GEMM_CASE(1)
    FQ_GEMM_CASE(2)
    FQ_GEMM_CASE(3)
    FQ_GEMM_CASE(4)
    FQ_GEMM_CASE(5)
    FQ_GEMM_CASE(6)
    FQ_GEMM_CASE(7)
    FQ_GEMM_CASE(8)
    FQ_GEMM_CASE(9)
    FQ_GEMM_CASE(10)
    FQ_GEMM_CASE(11)
    FQ_GEMM_CASE(12)
#undef FQ_GEMM_CASE
  }
}

// Small depthwise planes (kernels.h: DepthwiseSmallArgs). Up to R vectors of a plane are summed
// at once (independent FMA chains) while the channel's taps stream by; a masked load gives
// zero for lanes whose input is padding (and reads nothing there).
template <class VT>
void depthwise_small(const DepthwiseSmallArgs& a) {
  constexpr int L = VT::kLanes;
  constexpr int R = 8;
  static_assert(kSmallPlaneMax % L == 0, "tmp holds whole vectors");
  alignas(64) float tmp[kSmallPlaneMax];
  for (int64_t j = 0; j < a.planes; ++j) {
    const float* x = a.x + j * a.x_plane;
    for (int64_t v0 = 0; v0 < a.nvec; v0 += R) {
      const int64_t nv = a.nvec - v0 < R ? a.nvec - v0 : R;
      typename VT::Reg acc[R];
      for (int v = 0; v < R; ++v) acc[v] = VT::zero();
      for (uint32_t t = a.tap_ptr[j]; t < a.tap_ptr[j + 1]; ++t) {
        const uint32_t p = a.taps[t];
        const typename VT::Reg wb = VT::set1(a.w[t]);
        const uint32_t* m = a.masks + int64_t(p) * a.nvec + v0;
        const float* src = x + a.offs[p] + v0 * L;
        for (int v = 0; v < R; ++v) {
          if (v >= nv) break;
          acc[v] = VT::fma(wb, VT::maskz_load(m[v], src + v * L), acc[v]);
        }
      }
      for (int v = 0; v < R; ++v) {
        if (v >= nv) break;
        VT::store(tmp + (v0 + v) * L, acc[v]);
      }
    }
    VT::store_run(tmp, a.y + j * a.P, a.P, a.bias ? a.bias[j] : 0.0f, a.lo, a.hi);
  }
}

template <class VT, int G, int V, int MaxAcc>
constexpr TileFn pick_kernel() {
  if constexpr (G * V <= MaxAcc && (G == 1 ? V + 1 : (G + 1) * V + 1) <= VT::kRegs) {
    return &tile_kernel<VT, G, V>;
  } else {
    return nullptr;
  }
}

template <class VT, int G, int MaxAcc, int... I>
constexpr void fill_row_impl(TileFn* row, std::integer_sequence<int, I...>) {
  ((row[I + 1] = pick_kernel<VT, G, I + 1, MaxAcc>()), ...);
}

template <class VT, int G, int MaxAcc>
constexpr void fill_row(TileFn* row) {
  fill_row_impl<VT, G, MaxAcc>(row, std::make_integer_sequence<int, 16>());
}

// Fills the table for every (g, V) that fits MaxAcc accumulators and VT::kRegs registers.
// GemmNV / GemmMR: the GEMM tile (panel of GemmNV vectors, up to GemmMR rows; GemmMR * GemmNV
// accumulators plus GemmNV panel vectors and a broadcast must fit the register file).
template <class VT, int MaxAcc, int GemmNV, int GemmMR>
constexpr KernelTable make_table(const char* name) {
  static_assert(GemmMR * GemmNV + GemmNV + 1 <= VT::kRegs, "GEMM tile does not fit the registers");
  KernelTable t{name, VT::kLanes, MaxAcc >= 16 ? 16 : 8, {}, &VT::store_run, VT::deinterleave, &depthwise_plane<VT>,
                 VT::depthwise_flat, &depthwise_small<VT>, GemmNV * VT::kLanes, GemmMR, &gemm_panel<VT, GemmNV, GemmMR>};
  fill_row<VT, 1, MaxAcc>(t.fn[0]);
  fill_row<VT, 2, MaxAcc>(t.fn[1]);
  fill_row<VT, 4, MaxAcc>(t.fn[2]);
  fill_row<VT, 8, MaxAcc>(t.fn[3]);
  return t;
}
