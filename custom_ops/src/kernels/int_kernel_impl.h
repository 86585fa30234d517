// The integer shift-accumulate microkernel, written once over a vector-traits type VT and
// instantiated by each ISA translation unit (int_kernel_scalar.cc, int_kernel_avx2.cc,
// int_kernel_avx512.cc). Include only from those files, inside an anonymous namespace.
//
// Why this shape: per output row the taps are grouped by code, so a nonzero weight costs one
// vector add (S += q) and only each distinct code costs a shift and two adds (acc += +-(S << e),
// Z += S), plus one multiplication by the code's odd mantissa integer when the format has m > 0; each mixture component adds its sum Z shifted by its power-of-two centre once. That
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
    if (t.mult != 1) {  // mantissa codes: (S * mult) << shift, exact modulo 2^32 like the rest
      const typename VT::Reg mu = VT::set1(t.mult);
      for (int v = 0; v < V; ++v) {
        const typename VT::Reg p = VT::sllv(VT::mullo(s[v], mu), sh);
        acc[v] = t.negative ? VT::sub(acc[v], p) : VT::add(acc[v], p);
      }
    } else if (t.negative) {
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

// Depthwise plane (IntDepthwiseArgs). NV vectors of one output row (a block starting at column
// o0, cnt <= NV * lanes pixels) are summed at once while the terms stream by; lanes whose input
// column is padding load zero. NV is a template argument so that a short row (7 or 14 pixels)
// does the per-code work on one vector, not on four. SW > 0: the column stride as a constant.
template <class VT, int SW, int NV>
void int_depthwise_block(const IntDepthwiseArgs& a, int64_t oh, int64_t o0, int64_t cnt, int32_t* tmp) {
  constexpr int L = VT::kLanes;
  const int64_t sw = SW > 0 ? SW : a.sw;
  typename VT::Reg acc[NV], z[NV];
  for (int v = 0; v < NV; ++v) acc[v] = z[v] = VT::zero();
  for (size_t g = 0; g < a.n; ++g) {
    const IntTerm& t = a.terms[g];
    typename VT::Reg s[NV];
    for (int v = 0; v < NV; ++v) s[v] = VT::zero();
    for (uint32_t k = t.tap_begin; k < t.tap_end; ++k) {
      const int64_t iy = oh * a.sh + a.dy[k] - a.pad_top;
      if (iy < 0 || iy >= a.H) continue;
      // Output columns [ow_lo, ow_hi) of this tap read inside the row.
      const int64_t c0 = a.dx[k] - a.pad_left;
      const int64_t ow_lo = c0 < 0 ? (-c0 + sw - 1) / sw : 0;
      const int64_t ow_hi = a.W - 1 - c0 < 0 ? 0 : (a.W - 1 - c0) / sw + 1;
      const int32_t* row = a.q + iy * a.W + c0;
      for (int v = 0; v < NV; ++v) {
        const int64_t p0 = o0 + v * L;
        const int32_t* src = row + p0 * sw;
        if (p0 >= ow_lo && p0 + L <= ow_hi) {
          s[v] = VT::add(s[v], VT::load_lanes(src, sw, 0, L));
          continue;
        }
        const int64_t lo = ow_lo - p0 > 0 ? ow_lo - p0 : 0;
        const int64_t c = cnt - v * L < L ? cnt - v * L : L;
        const int64_t hi = ow_hi - p0 < c ? ow_hi - p0 : c;
        if (lo < hi) s[v] = VT::add(s[v], VT::load_lanes(src, sw, int(lo), int(hi)));
      }
    }
    const typename VT::Reg sh = VT::set1(t.shift);
    const typename VT::Reg mu = VT::set1(t.mult);
    for (int v = 0; v < NV; ++v) {
      const typename VT::Reg p = VT::sllv(t.mult != 1 ? VT::mullo(s[v], mu) : s[v], sh);
      acc[v] = t.negative ? VT::sub(acc[v], p) : VT::add(acc[v], p);
    }
    if (t.centre_sign != 0) {
      for (int v = 0; v < NV; ++v) z[v] = VT::add(z[v], s[v]);
      if (t.flush) {
        const typename VT::Reg ch = VT::set1(t.centre_shift);
        for (int v = 0; v < NV; ++v) {
          acc[v] = t.centre_sign < 0 ? VT::sub(acc[v], VT::sllv(z[v], ch)) : VT::add(acc[v], VT::sllv(z[v], ch));
          z[v] = VT::zero();
        }
      }
    }
  }
  for (int v = 0; v < NV; ++v) VT::store(tmp + v * L, acc[v]);
  VT::store_out(tmp, a.y + oh * a.OW + o0, cnt, a.scale, a.b, a.lo, a.hi);
}

template <class VT, int SW>
void int_depthwise_sw(const IntDepthwiseArgs& a) {
  constexpr int L = VT::kLanes;
  constexpr int R = 4;  // vectors per block
  alignas(64) int32_t tmp[R * L];
  for (int64_t oh = 0; oh < a.OH; ++oh) {
    for (int64_t o0 = 0; o0 < a.OW; o0 += R * L) {
      const int64_t cnt = a.OW - o0 < R * L ? a.OW - o0 : R * L;
      switch ((cnt + L - 1) / L) {
        case 1: int_depthwise_block<VT, SW, 1>(a, oh, o0, cnt, tmp); break;
        case 2: int_depthwise_block<VT, SW, 2>(a, oh, o0, cnt, tmp); break;
        case 3: int_depthwise_block<VT, SW, 3>(a, oh, o0, cnt, tmp); break;
        default: int_depthwise_block<VT, SW, R>(a, oh, o0, cnt, tmp); break;
      }
    }
  }
}

template <class VT>
void int_depthwise(const IntDepthwiseArgs& a) {
  if (a.sw == 1) {
    int_depthwise_sw<VT, 1>(a);
  } else if (a.sw == 2) {
    int_depthwise_sw<VT, 2>(a);
  } else {
    int_depthwise_sw<VT, 0>(a);
  }
}

template <class VT, int... I>
constexpr void fill_int_row(IntTileFn* row, std::integer_sequence<int, I...>) {
  ((row[I + 1] = &int_tile<VT, I + 1>), ...);
}

template <class VT, int MaxV>
constexpr IntKernelTable make_int_table(const char* name) {
  IntKernelTable t{name, VT::kLanes, MaxV, {}, &VT::quantize, &VT::store_out, &int_depthwise<VT>};
  fill_int_row<VT>(t.fn, std::make_integer_sequence<int, MaxV>());
  return t;
}
