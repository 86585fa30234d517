// Compiled with -ffp-contract=off (see CMakeLists.txt): the output store rounds the product and
// the sum separately, as fq_onnx/intmode.py does.
#include "plan/int_mode.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fq {
namespace {

// value = sigma * 2^p exactly (sigma = 0 for zero); false when value is not a power of two.
bool pow2_parts(float value, int* sigma, int64_t* p) {
  if (value == 0.0f) {
    *sigma = 0;
    *p = 0;
    return true;
  }
  int e = 0;
  const float m = std::frexp(value, &e);  // value = m * 2^e, |m| in [0.5, 1)
  if (m != 0.5f && m != -0.5f) return false;
  *sigma = value > 0 ? 1 : -1;
  *p = int64_t(e) - 1;
  return true;
}

struct CodeTerms {
  uint32_t mult = 1;  // odd: (2^m + k) without its trailing zero bits
  int64_t exp = 0;    // e - b - m + (those trailing zero bits): s * mult * 2^exp is the exponent term
  int negative = 0;   // s = -1
  int csign = 0;      // sigma_c
  int64_t cexp = 0;   // p_c
  bool active = true; // u(v) != 0
};

std::string fmt_float(float f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", double(f));
  return buf;
}

}  // namespace

ActQuant make_act_quant(bool has_bits, int64_t bits, bool has_scale, int64_t scale_log2, bool has_signed,
                        int64_t is_signed) {
  if (!has_bits || !has_scale || !has_signed) {
    std::string missing;
    if (!has_bits) missing += "act_bits";
    if (!has_scale) missing += std::string(missing.empty() ? "" : ", ") + "act_scale_log2";
    if (!has_signed) missing += std::string(missing.empty() ? "" : ", ") + "act_signed";
    throw std::invalid_argument("integer mode needs " + missing);
  }
  if (bits < kMinActBits || bits > kMaxActBits) {
    throw std::invalid_argument("act_bits " + std::to_string(bits) + " outside " + std::to_string(kMinActBits) +
                                ".." + std::to_string(kMaxActBits));
  }
  if (scale_log2 < kMinActScaleLog2 || scale_log2 > kMaxActScaleLog2) {
    throw std::invalid_argument("act_scale_log2 " + std::to_string(scale_log2) + " outside " +
                                std::to_string(kMinActScaleLog2) + ".." + std::to_string(kMaxActScaleLog2));
  }
  if (is_signed != 0 && is_signed != 1) {
    throw std::invalid_argument("act_signed must be 0 or 1, got " + std::to_string(is_signed));
  }
  ActQuant a;
  a.bits = int(bits);
  a.scale_log2 = int(scale_log2);
  a.is_signed = is_signed == 1;
  a.qmin = a.is_signed ? -(int32_t(1) << (a.bits - 1)) : 0;
  a.qmax = a.is_signed ? (int32_t(1) << (a.bits - 1)) - 1 : (int32_t(1) << a.bits) - 1;
  a.inv_scale = std::ldexp(1.0f, -a.scale_log2);  // a normal float32 for the range above
  return a;
}

IntWeight build_int_weight(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw, int64_t group,
                           const ActQuant& act) {
  const uint64_t row_len = uint64_t(Cg * kh * kw);
  if (uint64_t(M) * row_len != w.elements || w.dims.empty() || uint64_t(M) != w.dims[0]) {
    throw std::invalid_argument("weight shape mismatch");
  }
  // Every code's two terms. The decoder has checked mode, bits, b and finite centres.
  const QuantParams& qp = w.params;
  const int mbits = qp.mantissa;
  const int k = exponent_bits(qp) + mbits;  // bits below the sign
  const int V = 1 << qp.bits;
  int csig[2] = {0, 0};
  int64_t cexp[2] = {0, 0};
  for (int c = 0; c < 2; ++c) {
    const float centre = c ? qp.centre1 : qp.centre0;
    if (!pow2_parts(centre, &csig[c], &cexp[c])) {
      throw std::invalid_argument("integer mode needs power-of-two centres, centre" + std::to_string(c) + " = " +
                                  fmt_float(centre) + " is not one");
    }
  }
  std::vector<CodeTerms> code(static_cast<size_t>(V));
  for (int v = 0; v < V; ++v) {
    CodeTerms& t = code[size_t(v)];
    // s * 2^(e-b) * (1 + j/2^m) = s * (2^m + j) * 2^(e-b-m); an odd multiplier keeps the shifts
    // small and m = 0 exactly as before (mult 1, exp e - b).
    uint32_t mult = (uint32_t(1) << mbits) + uint32_t(v & ((1 << mbits) - 1));
    int64_t exp = int64_t((v & ((1 << k) - 1)) >> mbits) - int64_t(qp.b) - mbits;
    while ((mult & 1) == 0) {
      mult >>= 1;
      ++exp;
    }
    t.mult = mult;
    t.exp = exp;
    t.negative = (v >> k) & 1;
    if (qp.mode == 1) {
      const int c = v >> (k + 1);
      t.csign = csig[c];
      t.cexp = cexp[c];
    }
    // u = 0 only for sigma = -s, mult = 1 and p = exp (a centre is a power of two)
    t.active = !(t.mult == 1 && t.csign == (t.negative ? 1 : -1) && t.cexp == t.exp);
  }

  IntWeight iw;
  SparseWeight& sw = iw.layout;
  sw.M = M;
  sw.Cg = Cg;
  sw.kh = kh;
  sw.kw = kw;
  sw.group = group;
  iw.row_terms.assign(size_t(M) + 1, 0);
  iw.out_scale.assign(size_t(M), 0.0f);
  iw.base.assign(size_t(M), 0);
  const int64_t Mg = M / group;
  std::vector<uint32_t> count(static_cast<size_t>(V)), slot(static_cast<size_t>(V));
  std::vector<uint32_t> sorted;
  size_t i = 0;  // w.index is increasing, so rows come in order
  for (int64_t m = 0; m < M; ++m) {
    const uint64_t row_start = uint64_t(m) * row_len, row_end = row_start + row_len;
    const size_t i0 = i;
    std::fill(count.begin(), count.end(), 0u);
    int64_t base = 0;
    bool any = false;
    for (; i < w.index.size() && w.index[i] < row_end; ++i) {
      const CodeTerms& t = code[w.code[i]];
      if (!t.active) continue;
      ++count[w.code[i]];
      const int64_t low = t.csign ? std::min(t.exp, t.cexp) : t.exp;
      base = any ? std::min(base, low) : low;
      any = true;
    }
    const size_t i1 = i;
    iw.row_terms[size_t(m) + 1] = iw.row_terms[size_t(m)];
    if (!any) continue;  // acc = 0, out_scale = 0: the output is the bias
    iw.base[size_t(m)] = int32_t(base);
    // The row's taps grouped by code (a counting sort keeps each group increasing).
    uint32_t total = 0;
    for (int v = 0; v < V; ++v) {
      slot[size_t(v)] = total;
      total += count[size_t(v)];
    }
    sorted.resize(total);
    for (size_t j = i0; j < i1; ++j) {
      if (code[w.code[j]].active) sorted[slot[w.code[j]]++] = uint32_t(w.index[j] - row_start);
    }
    uint64_t pos = 0, neg = 0;  // P_r, N_r: <= 2^28 elements * 2^31
    uint32_t at = 0;
    int last_component = -1;
    // Codes increase, so the terms come component by component (v >> (k + 1)).
    for (int v = 0; v < V; ++v) {
      const uint32_t n = count[size_t(v)];
      if (n == 0) continue;
      const CodeTerms& t = code[size_t(v)];
      const int64_t shift = t.exp - base, cshift = t.csign ? t.cexp - base : 0;
      // The exponent term's top bit: shift + (bit length of mult) - 1, the shift itself for mult 1.
      int64_t top = shift;
      for (uint32_t rest = t.mult >> 1; rest; rest >>= 1) ++top;
      if (top > int64_t(kMaxIntShift) || cshift > int64_t(kMaxIntShift)) {
        throw std::invalid_argument("integer mode: row " + std::to_string(m) + " needs a shift of " +
                                    std::to_string(std::max(top, cshift)) + " bits (above " +
                                    std::to_string(kMaxIntShift) + "): its levels span too wide a range for int32");
      }
      // |W| < 2^31 + 2^30: P_r, N_r <= 2^28 * 2^32 fit uint64
      const int64_t W = (t.negative ? -1 : 1) * (int64_t(t.mult) << shift) + t.csign * (int64_t(1) << cshift);
      if (W > 0) pos += uint64_t(n) * uint64_t(W);
      if (W < 0) neg += uint64_t(n) * uint64_t(-W);
      RowGroup rg;
      rg.m0 = int32_t(m);
      rg.g = 1;
      rg.conv_group = int32_t(m / Mg);
      rg.tap_begin = uint32_t(sw.taps.size());
      sw.taps.insert(sw.taps.end(), sorted.begin() + at, sorted.begin() + at + n);
      rg.tap_end = uint32_t(sw.taps.size());
      at += n;
      sw.groups.push_back(rg);
      IntTerm term;
      term.tap_begin = rg.tap_begin;
      term.tap_end = rg.tap_end;
      term.mult = t.mult;
      term.shift = uint32_t(shift);
      term.centre_shift = uint32_t(cshift);
      term.negative = t.negative;
      term.centre_sign = t.csign;
      const int component = qp.mode == 1 ? v >> (k + 1) : 0;
      if (component != last_component && !iw.terms.empty() && iw.terms.size() > iw.row_terms[size_t(m)]) {
        iw.terms.back().flush = iw.terms.back().centre_sign != 0;
      }
      last_component = component;
      iw.terms.push_back(term);
    }
    if (iw.terms.size() > iw.row_terms[size_t(m)]) iw.terms.back().flush = iw.terms.back().centre_sign != 0;
    iw.row_terms[size_t(m) + 1] = uint32_t(iw.terms.size());
    // The bound (SHIFTCONV.md, 4.): acc in [-(|qmin| P + qmax N), qmax P + |qmin| N] for every input.
    const uint64_t qmax = uint64_t(act.qmax), qmin_abs = uint64_t(-int64_t(act.qmin));
    const uint64_t limit = uint64_t(1) << 31;
    bool over = pos > limit || neg > limit;  // then a product alone exceeds int32 (qmax >= 1)
    uint64_t hi = 0, lo = 0;
    if (!over) {
      hi = qmax * pos + qmin_abs * neg;  // < 2^41: no overflow
      lo = qmin_abs * pos + qmax * neg;
      over = hi > limit - 1 || lo > limit;
    }
    if (over) {
      uint64_t max_w = 0;
      for (uint32_t g = iw.row_terms[size_t(m)]; g < iw.row_terms[size_t(m) + 1]; ++g) {
        const IntTerm& t = iw.terms[g];
        const int64_t W = (t.negative ? -1 : 1) * (int64_t(t.mult) << t.shift) +
                          t.centre_sign * (int64_t(1) << t.centre_shift);
        max_w = std::max<uint64_t>(max_w, uint64_t(W < 0 ? -W : W));
      }
      throw std::invalid_argument(
          "integer mode: row " + std::to_string(m) + ": " + std::to_string(act.bits) + "-bit " +
          (act.is_signed ? "signed" : "unsigned") + " inputs can drive the accumulator beyond int32 (fan-in " +
          std::to_string(row_len) + ", max |W| " + std::to_string(max_w) + "; docs/SHIFTCONV.md, integer mode 4.)");
    }
    const float alpha = w.alphas[w.alphas.size() == 1 ? 0 : size_t(m)];
    const int64_t e = int64_t(act.scale_log2) + base;  // |e| < 300: fits int
    const float s = std::ldexp(alpha, int(e));         // exact when the result is normal
    if (!std::isnormal(s)) {
      throw std::invalid_argument("integer mode: row " + std::to_string(m) + ": output scale alpha * 2^(" +
                                  std::to_string(act.scale_log2) + " + " + std::to_string(base) +
                                  ") is not a normal float32");
    }
    iw.out_scale[size_t(m)] = s;
  }
  sw.stored_taps = sw.taps.size();
  sw.stored_macs = sw.taps.size();
  sw.nonzeros = sw.taps.size();
  return iw;
}

const IntKernelTable* select_int_kernels(const KernelTable* float_kernels) {
#if defined(FQ_ONNX_HAVE_X86_SIMD)
  // select_kernels has checked that the CPU runs this ISA.
  const std::string name = float_kernels ? float_kernels->name : "scalar";
  if (name == "avx512") return int_kernels_avx512();
  if (name == "avx2") return int_kernels_avx2();
#else
  (void)float_kernels;
#endif
  return int_kernels_scalar();
}

void quantize_packed(const Plan& p, const IntKernelTable& kt, const ActQuant& act, const float* packed, int32_t* q,
                     int64_t c_begin, int64_t c_end) {
  const size_t n = size_t(p.channel_stride);
  for (int64_t c = c_begin; c < c_end; ++c) {
    if (!p.channel_used[size_t(c)]) continue;  // never packed, never read
    kt.quantize(packed + c * p.channel_stride, q + c * p.channel_stride, n, act.inv_scale, float(act.qmin),
                float(act.qmax));
  }
}

void zero_int_tail(const Plan& p, int32_t* q) {
  const int64_t used = p.C * p.channel_stride;
  std::memset(q + used, 0, size_t(p.packed_floats - used) * sizeof(int32_t));
}

void run_int_task(const Plan& p, const IntWeight& w, const IntKernelTable& kt, const TaskGrid& grid, int64_t task,
                  const int32_t* q, const IntEpilogue& ep, float* y) {
  const int64_t rows = w.layout.M;
  const int64_t tt = task % grid.tile_tasks, rt = task / grid.tile_tasks;
  const int64_t t_begin = tt * grid.tiles_per_task, t_end = std::min(p.tiles, t_begin + grid.tiles_per_task);
  const int64_t r_begin = rt * grid.groups_per_task, r_end = std::min(rows, r_begin + grid.groups_per_task);
  if (t_begin >= t_end || r_begin >= r_end) return;
  const int64_t T = p.tile;
  const IntTileFn fn = kt.fn[T / kt.lanes];  // the plan was made for kt: T = V * lanes, V <= max_vectors
  thread_local std::vector<int32_t> acc_buf;  // per thread: concurrent runs never share it
  if (acc_buf.size() < size_t(T)) acc_buf.resize(size_t(T));
  int32_t* acc = acc_buf.data();
  for (int64_t t = t_begin; t < t_end; ++t) {
    const int32_t* in = q + t * T;
    const Segment* seg = p.segments.data() + p.seg_ptr[size_t(t)];
    const Segment* seg_end = p.segments.data() + p.seg_ptr[size_t(t) + 1];
    for (int64_t m = r_begin; m < r_end; ++m) {
      const uint32_t g0 = w.row_terms[size_t(m)], g1 = w.row_terms[size_t(m) + 1];
      fn(in, p.offsets.data(), w.terms.data() + g0, g1 - g0, acc);
      const float s = w.out_scale[size_t(m)];
      const float b = ep.bias ? ep.bias[m] : 0.0f;
      float* ym = y + m * p.m_stride;
      for (const Segment* sg = seg; sg != seg_end; ++sg) {
        const int32_t* src = acc + sg->q_local;
        float* dst = ym + sg->out;
        if (p.p_stride == 1) {
          kt.store(src, dst, sg->len, s, b, ep.lo, ep.hi);
        } else {
          for (int32_t k = 0; k < sg->len; ++k) {
            const float prod = static_cast<float>(src[k]) * s;  // as IntStoreFn: two roundings
            const float x = prod + b;
            const float v = x < ep.lo ? ep.lo : x;
            dst[k * p.p_stride] = ep.hi < v ? ep.hi : v;
          }
        }
      }
    }
  }
}

}  // namespace fq
