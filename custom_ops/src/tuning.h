// Every FQ_ONNX_* environment setting the library reads, in one place and read once: each
// kernel takes a Tuning::from_env() snapshot when onnxruntime creates it (tests and benchmarks
// set a variable, then create the session); kernel_timing takes one at start. Nothing else calls
// getenv for an FQ_ONNX_* name. Session config entries (fq_onnx.kernel, fq_onnx.dense,
// fq_onnx.threads; op/register.cc) take precedence where a setting has one, except FQ_ONNX_THREADS.
//
// | variable | meaning | default | set by |
// |---|---|---|---|
// | FQ_ONNX_KERNEL | microkernels: auto, scalar, avx2, avx512 (kernels/cpu_features.h) | auto | users, tests |
// | FQ_ONNX_DENSE | who runs dense layers: auto, own, ort, nchw, nchwc (dense/dense_path.h) | auto | users, tests |
// | FQ_ONNX_PACKED_GEMM | dense kind: auto, 1 (always the packed GEMM), 0 (never) | auto | tests |
// | FQ_ONNX_NCHWC_BLOCK | onnxruntime's NCHWc block size (a wrong one exercises the verified fallback); 0 disables NCHWc | nchwc_block_guess() | tests |
// | FQ_ONNX_DEPTHWISE | depthwise kernels: rows or flat force one plane-by-plane kernel (no small-plane kernel), 0 no direct depthwise kernel | the measured rules | tests, comparisons |
// | FQ_ONNX_THREADS | intra-op threads the splits plan for (overrides fq_onnx.threads) | the session's, else the CPUs | tests |
// | FQ_ONNX_THREAD_SPLIT | several threads: t splits tiles where there are enough, r row groups | the rule | tests |
// | FQ_ONNX_INLINE_WORK | packed convs of fewer FMA-vectors run on the calling thread; 0 sends all to the pool | kInlineWork | tests |
// | FQ_ONNX_SUB_BATCH | images per pack-and-compute run: 0 the whole batch, n n images | a quarter of L2 | tests |
// | FQ_ONNX_PLANE_PAD | floats of padding per packed plane: 0 none, n > 0 n (rounded up to a cache line) | the rule (plan/plan.cc: pick_plane) | tests, kernel_timing |
// | FQ_ONNX_MATVEC_ROWS | dense kind: largest row count on the sparse matrix-vector path | 2 | experiments |
// | FQ_ONNX_MAX_GROUP | largest row group | 8 | experiments, kernel_timing |
// | FQ_ONNX_CHUNK_BYTES | input-channel chunk size in bytes | 32768 | experiments, kernel_timing |
// | FQ_ONNX_TILE_VECTORS | widest tile in vectors (capped by the ISA) | 8; 16 for stride-1 kernels wider than 1x1 | experiments, kernel_timing |
//
// (FQ_ONNX_OPS_LIBRARY and FQ_ONNX_ORT_* are read by Python and CMake, not by the library.)
#pragma once
#include <cstdint>
#include <string>

namespace fq {

// The threading rules' fixed thresholds (FQ_ONNX_INLINE_WORK overrides one of them for the
// packed convs). Enough tasks to balance a few threads; small enough that per-task overhead
// stays invisible:
constexpr int64_t kTargetTasks = 32;
// Packing the input splits its channels into at most this many tasks.
constexpr int64_t kPackTasks = 16;
// Below these sizes a single thread is faster than a round trip through the thread pool.
constexpr int64_t kInlinePackFloats = 64 * 1024;
constexpr double kInlineWork = 16 * 1024;

// FQ_ONNX_DEPTHWISE, parsed: which depthwise kernels may run.
enum class DepthwiseChoice {
  kAuto,  // unset or anything else: the measured rules
  kRows,  // "rows": the per-row kernel only (no flat, no small-plane kernel)
  kFlat,  // "flat": the flat kernel on long rows too (no small-plane kernel)
  kOff,   // "0": no direct depthwise kernel; the packed path runs depthwise convs
};

struct Tuning {
  std::string kernel = "auto";  // FQ_ONNX_KERNEL (empty counts as unset)
  std::string dense;            // FQ_ONNX_DENSE; "" = auto (parse_dense_mode validates)
  std::string packed_gemm;      // FQ_ONNX_PACKED_GEMM; "" = auto (parse_packed_gemm_mode validates)
  int nchwc_block_override = -1;  // FQ_ONNX_NCHWC_BLOCK, >= 0; -1: unset
  DepthwiseChoice depthwise = DepthwiseChoice::kAuto;
  int64_t threads = 0;          // FQ_ONNX_THREADS, >= 1; 0: unset
  char thread_split = 'a';      // FQ_ONNX_THREAD_SPLIT's first character; 'a': the rule
  double inline_work = kInlineWork;  // FQ_ONNX_INLINE_WORK, >= 0
  int64_t sub_batch = -1;       // FQ_ONNX_SUB_BATCH, >= 0; -1: the rule
  int matvec_rows = 2;          // FQ_ONNX_MATVEC_ROWS
  int64_t plane_pad = -1;       // FQ_ONNX_PLANE_PAD, >= 0; -1: the rule
  int max_group = 8;            // FQ_ONNX_MAX_GROUP, >= 1
  int64_t chunk_bytes = 32 * 1024;  // FQ_ONNX_CHUNK_BYTES, >= 1
  int tile_vectors = 0;         // FQ_ONNX_TILE_VECTORS, >= 1; 0: the rule

  // The settings of the environment now (values clamped as documented above; never throws).
  static Tuning from_env();

  // The NCHWc block size to reorder filters for: the override, else nchwc_block_guess().
  int nchwc_block() const;
};

}  // namespace fq
