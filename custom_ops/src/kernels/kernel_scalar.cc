// Portable path: plain C++ over 8-float "vectors" (the compiler maps them to whatever the
// baseline ISA offers). Used on CPUs without AVX2+FMA and forced in tests (FQ_ONNX_KERNEL=scalar).
#include <utility>

#include "kernels/kernels.h"
#include "kernels/scalar_loops.h"

namespace fq {
namespace {

struct Scalar8 {
  static constexpr int kRegs = 1000;
  static constexpr int kLanes = 8;
  struct Reg {
    float f[8];
  };
  static Reg zero() { return Reg{{0, 0, 0, 0, 0, 0, 0, 0}}; }
  static Reg set1(float x) { return Reg{{x, x, x, x, x, x, x, x}}; }
  static Reg load(const float* p) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = p[i];
    return r;
  }
  static void store(float* p, const Reg& r) {
    for (int i = 0; i < 8; ++i) p[i] = r.f[i];
  }
  static Reg add(const Reg& a, const Reg& b) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = a.f[i] + b.f[i];
    return r;
  }
  static Reg fma(const Reg& a, const Reg& b, const Reg& c) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = a.f[i] * b.f[i] + c.f[i];
    return r;
  }
  // Lanes whose bit is set in m hold p[i], the others zero (and are not read).
  static Reg maskz_load(uint32_t m, const float* p) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = (m >> i) & 1u ? p[i] : 0.0f;
    return r;
  }
  // a < b ? a : b and a > b ? a : b: the second operand when either is NaN, as minps/maxps.
  static Reg min(const Reg& a, const Reg& b) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = a.f[i] < b.f[i] ? a.f[i] : b.f[i];
    return r;
  }
  static Reg max(const Reg& a, const Reg& b) {
    Reg r;
    for (int i = 0; i < 8; ++i) r.f[i] = a.f[i] > b.f[i] ? a.f[i] : b.f[i];
    return r;
  }
  // Lanes i in [lo, hi) hold p[i * stride], the others zero; nothing outside is read.
  static Reg load_lanes(const float* p, int64_t stride, int lo, int hi) {
    alignas(64) float t[kLanes] = {};
    for (int i = lo; i < hi; ++i) t[i] = p[i * stride];
    return load(t);
  }
  static constexpr DepthwiseFn depthwise_flat = nullptr;
  static void store_run(const float* src, float* dst, int64_t len, float b, float lo, float hi) {
    store_run_scalar(src, dst, 0, len, b, lo, hi);
  }
  static constexpr DeinterleaveFn deinterleave = &deinterleave_rows_scalar;
};

#include "kernels/kernel_impl.h"

const KernelTable kTable = make_table<Scalar8, 8, 2, 8>("scalar");

}  // namespace

const KernelTable* kernels_scalar() { return &kTable; }

}  // namespace fq
