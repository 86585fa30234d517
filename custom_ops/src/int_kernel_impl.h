// The integer shift-accumulate microkernel, written once over a vector-traits type VT and
// instantiated by each ISA translation unit (int_kernel_scalar.cc, int_kernel_avx2.cc,
// int_kernel_avx512.cc). Include only from those files, inside an anonymous namespace.
//
// Why this shape: per output row the taps are grouped by code, so a nonzero weight costs one
// vector add (S += q) and only each distinct code costs a shift and two adds (acc += +-(S << e),
// Z += S); each mixture component adds its sum Z shifted by its power-of-two centre once. That
// is the paper's shift-add datapath, with at most 2^bits codes per row. Only one component's Z
// is live at a time (terms come component by component), so a tile holds 3 V registers.
// Everything is 32-bit two's complement; the accumulator bound (SHIFTCONV.md, 4.) makes the final
// sum exact even if a partial sum wraps.

template <class VT, int V>
void int_tile(const int32_t* q, const int32_t* off, const IntTerm* terms, size_t n, int32_t* out) {
  constexpr int L = VT::kLanes;
  typename VT::Reg acc[V], z[V];
  for (int v = 0; v < V; ++v) acc[v] = z[v] = VT::zero();
  for (size_t g = 0; g < n; ++g) {
    const IntTerm& t = terms[g];
    typename VT::Reg s[V];
    const int32_t* p0 = q + off[t.tap_begin];  // every term has at least one tap
    for (int v = 0; v < V; ++v) s[v] = VT::load(p0 + v * L);
    for (uint32_t k = t.tap_begin + 1; k < t.tap_end; ++k) {
      const int32_t* p = q + off[k];
      for (int v = 0; v < V; ++v) s[v] = VT::add(s[v], VT::load(p + v * L));
    }
    const typename VT::Reg sh = VT::set1(t.shift);
    if (t.negative) {
      for (int v = 0; v < V; ++v) acc[v] = VT::sub(acc[v], VT::sllv(s[v], sh));
    } else {
      for (int v = 0; v < V; ++v) acc[v] = VT::add(acc[v], VT::sllv(s[v], sh));
    }
    if (t.centre_sign != 0) {
      for (int v = 0; v < V; ++v) z[v] = VT::add(z[v], s[v]);
      if (t.flush) {
        const typename VT::Reg ch = VT::set1(t.centre_shift);
        if (t.centre_sign < 0) {
          for (int v = 0; v < V; ++v) acc[v] = VT::sub(acc[v], VT::sllv(z[v], ch));
        } else {
          for (int v = 0; v < V; ++v) acc[v] = VT::add(acc[v], VT::sllv(z[v], ch));
        }
        for (int v = 0; v < V; ++v) z[v] = VT::zero();
      }
    }
  }
  for (int v = 0; v < V; ++v) VT::store(out + v * L, acc[v]);
}

// Scalar reference forms of the quantizer and the store, used by the portable path and by the
// tails of the vector paths (so that every element goes through the same operations).
inline int32_t quantize_one(float x, float inv_scale, float qmin, float qmax) {
  float v = x * inv_scale;
  if (!(v == v)) v = 0.0f;  // NaN
  v = v < qmin ? qmin : v;
  v = v > qmax ? qmax : v;
  // Round half to even without the FPU rounding mode: |v| <= 255, so floor and v - f are exact.
  const float f = std::floor(v);
  const float d = v - f;
  int32_t i = static_cast<int32_t>(f);
  if (d > 0.5f || (d == 0.5f && (i % 2 != 0))) ++i;
  return i;
}

inline void quantize_scalar(const float* x, int32_t* q, size_t begin, size_t n, float inv_scale, float qmin,
                            float qmax) {
  for (size_t i = begin; i < n; ++i) q[i] = quantize_one(x[i], inv_scale, qmin, qmax);
}

inline void int_store_scalar(const int32_t* acc, float* dst, int64_t begin, int64_t len, float scale, float b,
                             float lo, float hi) {
  for (int64_t i = begin; i < len; ++i) {
    const float p = static_cast<float>(acc[i]) * scale;  // -ffp-contract=off: not fused with + b
    const float x = p + b;
    const float y = x < lo ? lo : x;
    dst[i] = hi < y ? hi : y;
  }
}

template <class VT, int... I>
constexpr void fill_int_row(IntTileFn* row, std::integer_sequence<int, I...>) {
  ((row[I + 1] = &int_tile<VT, I + 1>), ...);
}

template <class VT, int MaxV>
constexpr IntKernelTable make_int_table(const char* name) {
  IntKernelTable t{name, VT::kLanes, MaxV, {}, &VT::quantize, &VT::store_out};
  fill_int_row<VT>(t.fn, std::make_integer_sequence<int, MaxV>());
  return t;
}
