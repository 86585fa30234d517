// The register-tiled broadcast-FMA microkernel, written once over a vector-traits type VT and
// instantiated by each ISA translation unit (kernel_scalar.cc, kernel_avx2.cc, kernel_avx512.cc).
// Include only from those files, inside an anonymous namespace, so every instantiation has
// internal linkage and carries its own ISA.
//
// Why this shape: a tile of output pixels of g channels lives in g * V vector registers; each
// nonzero weight is one broadcast and V FMAs against contiguous input vectors at a constant
// offset (the packed input makes every tap a constant offset). Accumulating in memory instead
// was measured 1.6-3x slower (docs/PERFORMANCE.md).

template <class VT, int G, int V>
void tile_kernel(const float* in, const int32_t* off, const float* w, size_t n, float* acc,
                 size_t acc_stride, int accumulate) {
  constexpr int L = VT::kLanes;
  // Start from zero and add earlier chunks' sums at the end: a conditional start makes the
  // compiler spill the accumulators around the loop.
  typename VT::Reg a[G][V];
  for (int j = 0; j < G; ++j)
    for (int v = 0; v < V; ++v) a[j][v] = VT::zero();
  for (size_t t = 0; t < n; ++t) {
    const float* p = in + off[t];
    if (G == 1) {
      const typename VT::Reg wb = VT::set1(w[t]);
      for (int v = 0; v < V; ++v) a[0][v] = VT::fma(wb, VT::load(p + v * L), a[0][v]);
    } else {
      typename VT::Reg x[V];
      for (int v = 0; v < V; ++v) x[v] = VT::load(p + v * L);
      const float* wt = w + t * G;
      for (int j = 0; j < G; ++j) {
        const typename VT::Reg wb = VT::set1(wt[j]);
        for (int v = 0; v < V; ++v) a[j][v] = VT::fma(wb, x[v], a[j][v]);
      }
    }
  }
  if (accumulate) {
    for (int j = 0; j < G; ++j)
      for (int v = 0; v < V; ++v) {
        float* dst = acc + size_t(j) * acc_stride + v * L;
        VT::store(dst, VT::add(VT::load(dst), a[j][v]));
      }
  } else {
    for (int j = 0; j < G; ++j)
      for (int v = 0; v < V; ++v) VT::store(acc + size_t(j) * acc_stride + v * L, a[j][v]);
  }
}

// Fills table->fn for the (g, V) pairs with g * V <= max_acc accumulators.
template <class VT, int MaxAcc>
constexpr KernelTable make_table(const char* name) {
  KernelTable t{name, VT::kLanes, MaxAcc >= 16 ? 16 : 8, {}};
#define FQ_SET(gi, vi, G, V) t.fn[gi][vi] = (G * V <= MaxAcc) ? &tile_kernel<VT, G, V> : nullptr;
  FQ_SET(0, 0, 1, 1) FQ_SET(0, 1, 1, 2) FQ_SET(0, 2, 1, 4) FQ_SET(0, 3, 1, 8)
  FQ_SET(1, 0, 2, 1) FQ_SET(1, 1, 2, 2) FQ_SET(1, 2, 2, 4) FQ_SET(1, 3, 2, 8)
  FQ_SET(2, 0, 4, 1) FQ_SET(2, 1, 4, 2) FQ_SET(2, 2, 4, 4) FQ_SET(2, 3, 4, 8)
  FQ_SET(3, 0, 8, 1) FQ_SET(3, 1, 8, 2) FQ_SET(3, 2, 8, 4) FQ_SET(3, 3, 8, 8)
  // 16-vector tiles only for single rows: more FMAs per tap and half the tap-list passes.
  FQ_SET(0, 4, 1, 16) t.fn[1][4] = t.fn[2][4] = t.fn[3][4] = nullptr;
#undef FQ_SET
  return t;
}
