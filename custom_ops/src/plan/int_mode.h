// Integer mode of ShiftConv (docs/SHIFTCONV.md, "Integer mode"): the activation quantizer,
// the integer weights of a decoded blob (with the accumulator bound), and running a Plan on
// quantized input. Bit-exact with fq_onnx/intmode.py. No onnxruntime dependency (int_op.h is
// the glue).
#pragma once
#include <cstdint>
#include <vector>

#include "format/decode.h"
#include "kernels/int_kernels.h"
#include "kernels/kernels.h"
#include "plan/execute.h"
#include "plan/plan.h"

namespace fq {

constexpr int kMinActBits = 2, kMaxActBits = 8;
constexpr int kMinActScaleLog2 = -64, kMaxActScaleLog2 = 63;
constexpr uint32_t kMaxIntShift = 30;

struct ActQuant {
  int bits = 8;
  int scale_log2 = 0;
  bool is_signed = true;
  int32_t qmin = -128, qmax = 127;
  float inv_scale = 1.0f;  // 2^-scale_log2, exact
};

// Validates the node's (untrusted) attributes; throws std::invalid_argument naming the rule.
ActQuant make_act_quant(bool has_bits, int64_t bits, bool has_scale, int64_t scale_log2, bool has_signed,
                        int64_t is_signed);

struct IntWeight {
  // One RowGroup (g = 1) per (row, active code): its taps, increasing, in the layout the
  // planner reads (offsets, channels used). layout.weights stays empty.
  SparseWeight layout;
  std::vector<IntTerm> terms;       // parallel to layout.groups
  std::vector<uint32_t> row_terms;  // M + 1: terms of row m are [row_terms[m], row_terms[m + 1])
  std::vector<float> out_scale;     // per row: alpha_r * 2^(a + m_r), 0 for a row without active codes
  std::vector<int32_t> base;        // per row: m_r
};

// The integer weights of w for input quantizer `act`. Throws std::invalid_argument when a
// centre is not a power of two, a shift exceeds 30, an output scale is not a normal float32, or
// some input in range could overflow the int32 accumulator (SHIFTCONV.md, 4.).
IntWeight build_int_weight(const DecodedWeight& w, int64_t M, int64_t Cg, int64_t kh, int64_t kw, int64_t group,
                           const ActQuant& act);

// The integer microkernels of the same ISA as a float table from select_kernels().
const IntKernelTable* select_int_kernels(const KernelTable* float_kernels);

// Quantizes what pack_input wrote for channels [c_begin, c_end) (only channels some tap reads).
void quantize_packed(const Plan& p, const IntKernelTable& kt, const ActQuant& act, const float* packed,
                     int32_t* q, int64_t c_begin, int64_t c_end);
// The zero tail after the last channel (read by the last tile's garbage lanes).
void zero_int_tail(const Plan& p, int32_t* q);

struct IntEpilogue {
  const float* bias = nullptr;  // [M] or null
  float lo, hi;                 // the fused activation as a clamp
};

// Computes and stores the output pixels of one task. The plan must have been made with kt's
// lanes and max_vectors (its tile is then V * lanes with V <= max_vectors).
void run_int_task(const Plan& p, const IntWeight& w, const IntKernelTable& kt, const TaskGrid& grid, int64_t task,
                  const int32_t* q, const IntEpilogue& ep, float* y);

}  // namespace fq
