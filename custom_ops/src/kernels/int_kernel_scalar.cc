// Portable integer path: plain C++ over 8 "lanes" of uint32_t (wrapping arithmetic is defined
// for unsigned types; left shifts of negative signed values would not be). Used on CPUs without
// AVX2 and forced in tests (FQ_ONNX_KERNEL=scalar). Compiled with -ffp-contract=off.
#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/int_kernels.h"

namespace fq {
namespace {

struct IntScalar8 {
  static constexpr int kLanes = 8;
  struct Reg {
    uint32_t u[8];
  };
  static Reg zero() { return Reg{{0, 0, 0, 0, 0, 0, 0, 0}}; }
  static Reg set1(uint32_t x) { return Reg{{x, x, x, x, x, x, x, x}}; }
  static Reg load(const int32_t* p) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.u[i] = static_cast<uint32_t>(p[i]);
    return r;
  }
  static void store(int32_t* p, const Reg& r) {
    // uint32 -> int32 is modular (GCC/Clang document it; C++20 requires it).
    for (int i = 0; i < 8; ++i) p[i] = static_cast<int32_t>(r.u[i]);
  }
  static Reg add(const Reg& a, const Reg& b) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.u[i] = a.u[i] + b.u[i];
    return r;
  }
  static Reg sub(const Reg& a, const Reg& b) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.u[i] = a.u[i] - b.u[i];
    return r;
  }
  static Reg mullo(const Reg& a, const Reg& b) {  // uint32: wraps modulo 2^32, no UB
    Reg r;
    for (int i = 0; i < 8; ++i) r.u[i] = a.u[i] * b.u[i];
    return r;
  }
  static Reg sllv(const Reg& a, const Reg& s) {  // s < 32 (IntTerm shifts are <= 30)
    Reg r;
    for (int i = 0; i < 8; ++i) r.u[i] = a.u[i] << s.u[i];
    return r;
  }
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read.
  static Reg load_lanes(const int32_t* p, int64_t stride, int lo, int hi) {
    Reg r = zero();
    for (int i = lo; i < hi; ++i) r.u[i] = static_cast<uint32_t>(p[i * stride]);
    return r;
  }
  static void quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax);
  static void store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi);
};

#include "kernels/int_kernel_impl.h"

void IntScalar8::quantize(const float* x, int32_t* q, size_t n, float inv_scale, float qmin, float qmax) {
  quantize_scalar(x, q, 0, n, inv_scale, qmin, qmax);
}

void IntScalar8::store_out(const int32_t* acc, float* dst, int64_t len, float scale, float b, float lo, float hi) {
  int_store_scalar(acc, dst, 0, len, scale, b, lo, hi);
}

const IntKernelTable kTable = make_int_table<IntScalar8, 4>("scalar");

}  // namespace

const IntKernelTable* int_kernels_scalar() { return &kTable; }

}  // namespace fq
