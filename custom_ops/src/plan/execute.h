// Running a Plan: input packing and the tile/row-group tasks handed to onnxruntime's intra-op
// thread pool. Everything here is reentrant; the only scratch is per call or thread_local.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "kernels/kernels.h"
#include "plan/conv_geometry.h"
#include "plan/plan.h"

namespace fq {

// A growable buffer aligned to a cache line (packed planes rely on it).
template <class T>
class AlignedBuffer {
 public:
  T* reserve(size_t n) {
    if (n > size_) {
      ptr_.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t(64))));
      size_ = n;
    }
    return ptr_.get();
  }
  const T* get() const { return ptr_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> ptr_;
  size_t size_ = 0;
};
using AlignedFloats = AlignedBuffer<float>;

// Scratch of the calling thread, reused across runs (no page faults per call): one buffer per
// thread for each Tag (a type naming the use, so two buffers held at once never share). The
// `busy` flag makes a nested use on the same thread take a fresh allocation instead.
template <class T, class Tag>
class ScratchLease {
 public:
  explicit ScratchLease(size_t n) {
    thread_local Slot tls;
    if (!tls.busy) {
      owner_ = &tls;
      tls.busy = true;
      ptr_ = tls.data.reserve(n);
    } else {
      ptr_ = own_.reserve(n);
    }
  }
  ~ScratchLease() {
    if (owner_) owner_->busy = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  T* get() { return ptr_; }

 private:
  struct Slot {
    AlignedBuffer<T> data;
    bool busy = false;
  };
  Slot* owner_ = nullptr;
  AlignedBuffer<T> own_;
  T* ptr_ = nullptr;
};

// Packs input channels [c_begin, c_end) of X into the plan's zero-padded, phase-split layout.
// `kt` (optional) supplies the ISA's row deinterleave for column stride 2 (default: scalar).
void pack_input(const Plan& p, const float* x, float* packed, int64_t c_begin, int64_t c_end,
                const KernelTable* kt = nullptr);
// Packs, of every channel, the plane positions [lo, hi) (within a plane, in whole packed rows):
// all that tiles [t0, t1) read when lo = t0 * tile and hi = t1 * tile + halo (tile_span), and
// the zeros their garbage lanes read past a plane's end. For a task that packs its own tiles.
void pack_span(const Plan& p, const float* x, float* packed, int64_t lo, int64_t hi, const KernelTable* kt);
// Zeroes the tail after the last channel (read by the last tile's garbage lanes).
void zero_packed_tail(const Plan& p, float* packed);

// A grid of tasks: tile blocks x row-group blocks.
struct TaskGrid {
  int64_t tiles_per_task = 1, tile_tasks = 1;
  int64_t groups_per_task = 1, group_tasks = 1;
  int64_t count() const { return tile_tasks * group_tasks; }
};
// About target_tasks tasks over the plan's tiles and `groups` row groups (float mode: the
// weight's groups; integer mode: its output rows).
TaskGrid make_task_grid(const Plan& p, int64_t groups, int64_t target_tasks);
TaskGrid make_task_grid(const Plan& p, const SparseWeight& sw, int64_t target_tasks);

// Applied in the output store: y = min(max(sum + bias, lo), hi). ReLU is lo = 0, a fused Clip
// (ReLU6) is [lo, hi]; no activation leaves both infinite.
struct Epilogue {
  const float* bias = nullptr;  // [M] or null
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

// Computes the output pixels of one task and stores them (bias and ReLU applied) into y.
void run_task(const Plan& p, const SparseWeight& sw, const KernelTable& kt, const TaskGrid& grid,
              int64_t task, const float* packed, const Epilogue& ep, float* y);
// The same for tiles [t_begin, t_end) and row groups [r_begin, r_end).
void run_tiles(const Plan& p, const SparseWeight& sw, const KernelTable& kt, int64_t t_begin, int64_t t_end,
               size_t r_begin, size_t r_end, const float* packed, const Epilogue& ep, float* y);

// Dense kind with few rows (a batch-1 Gemm): X [rows][K] times the sparse rows directly, one
// output per (row, output feature), for the row groups [r_begin, r_end) of sw. A tile of
// vectors would be mostly padding there.
void sparse_matvec(const SparseWeight& sw, const float* x, int64_t rows, size_t r_begin, size_t r_end,
                   const Epilogue& ep, float* y);

// Depthwise convs on small planes (kernels.h: DepthwiseSmallArgs): can the small-plane kernel
// run this geometry (stride 1, equal row lengths in and out, at most kSmallPlaneMax output
// pixels), and its per-window-tap flat offsets and lane masks for vectors of `lanes`.
bool small_plane_eligible(const ConvWeightShape& ws, const ConvShape& cs);
void small_plane_masks(const ConvWeightShape& ws, const ConvShape& cs, int lanes, std::vector<uint32_t>* masks,
                       std::vector<int32_t>* offs);

}  // namespace fq
