#include "op/float_op.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <sched.h>   // sched_getaffinity: the CPU count
#include <unistd.h>  // sysconf: the L2 size

#include "dense/dense_path.h"
#include "plan/execute.h"

namespace fq {
namespace {

struct PackTag;  // the pack buffer of ScratchLease

// run_per_thread splits tiles among threads when the packed input holds at least this many floats
// per output channel: a tile split costs about one shared output cache line per channel (about
// 28 ns, from 1x1 256->1024 @14²), a row-group split packing the whole input again per thread
// (0.12-0.2 ns per float). Measured at batch 1 on 2 threads: 1x1 256->1024 (49 floats per
// channel) is faster by row groups, 128@28² and stride 2 128->256 (870 and 480) by tiles.
constexpr int64_t kPackedFloatsPerRowForTiles = 192;
// Packed input per sub-batch (images_per_run): a quarter of the L2 (512 KiB of the development
// machine's 2 MiB, where it was measured), leaving room for the tap lists, the sums and the
// output; 512 KiB where the size is unknown.
int64_t run_bytes() {
  static const int64_t bytes = [] {
    int64_t l2 = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE)
    l2 = int64_t(sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
    return l2 >= 256 * 1024 && l2 <= 64 * 1024 * 1024 ? l2 / 4 : int64_t(512 * 1024);
  }();
  return bytes;
}

// CPUs this process may run on (sched_getaffinity; 1 if unknown): the intra-op threads assumed
// when the session does not say (fq_onnx.threads), as onnxruntime's default is one per core.
int64_t available_cpus() {
  static const int64_t cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max<int64_t>(1, CPU_COUNT(&set));
    return int64_t(1);
  }();
  return cpus;
}

// Row groups [cut[i], cut[i + 1]) for each of `parts` runs, cut where the FMAs (taps x rows)
// are split evenly (run_per_thread's split by row groups).
std::vector<size_t> cut_groups(const SparseWeight& w, int64_t parts) {
  std::vector<size_t> cut(1, 0);
  const double total = double(w.stored_macs);
  double sum = 0;
  for (size_t r = 0; r < w.groups.size() && int64_t(cut.size()) < parts; ++r) {
    sum += double(w.groups[r].tap_end - w.groups[r].tap_begin) * w.groups[r].g;
    if (sum >= total * double(cut.size()) / double(parts)) cut.push_back(r + 1);
  }
  while (int64_t(cut.size()) <= parts) cut.push_back(w.groups.size());
  return cut;
}

}  // namespace

FloatShiftConv::FloatShiftConv(const NodeFrame& frame, const OrtKernelInfo* info, const DecodedWeight& dw,
                               const KernelTable* kernels, const std::string& dense_choice, int64_t threads)
    : frame_(frame), kernels_(kernels) {
  const Tuning& tuning = frame_.tuning;
  const bool dense = frame_.dense;
  const ConvWeightShape& wshape = frame_.wshape;
  threads_ = threads > 0 ? threads : available_cpus();
  if (tuning.threads > 0) threads_ = tuning.threads;
  // 8-vector tiles, but 16 (AVX-512 only) for stride-1 kernels wider than 1x1: measured 3-13%
  // faster there (fewer passes over long tap lists at batch 8), slower for 1x1 and stride 2
  // (docs/PERFORMANCE.md).
  max_vectors_ = std::min(kernels_->max_vectors, 8);
  if (!dense && wshape.sh == 1 && wshape.sw == 1 && wshape.kh * wshape.kw > 1) {
    max_vectors_ = std::min(kernels_->max_vectors, 16);
  }
  if (tuning.tile_vectors > 0) max_vectors_ = std::min(kernels_->max_vectors, tuning.tile_vectors);
  // Groups are chosen first (cheap); the tap lists are built only if our kernel may run.
  SparseWeightBuilder builder(dw, frame_.M, frame_.Cg, frame_.kh, frame_.kw, frame_.group, tuning.max_group);
  {
    const DenseMode mode = parse_dense_mode(dense_choice.empty() ? tuning.dense : dense_choice);
    const PackedGemmMode packed_mode = dense ? parse_packed_gemm_mode(tuning.packed_gemm) : PackedGemmMode::kAuto;
    OrtDelegate::Layer layer{wshape, {}, frame_.bias, frame_.bias_at_run, frame_.act_lo, frame_.act_hi};
    layer.ws.M = frame_.M;
    layer.ws.Cg = frame_.Cg;
    const bool pads_static = dense || static_pads(frame_.attrs, wshape, &layer.pads);
    auto choose = [&](const SparseWeight& w) {
      return dense ? choose_matmul_path(mode, w, packed_mode)
                   : choose_dense_path(mode, w, wshape, pads_static, threads_, tuning.nchwc_block());
    };
    // Merging every block of rows to get the exact cost took a third of session creation for
    // half-dense models. An estimate from every kSampleStride-th block decides when, made
    // kCostMargin cheaper, it still hands the whole layer to another kernel; otherwise (our
    // kernel may run) the exact cost decides, as the rule was calibrated with.
    constexpr int64_t kSampleStride = 8;
    constexpr double kCostMargin = 1.08;
    SparseWeight estimate = builder.shape();
    estimate.cost_units = builder.estimate_cost_units(kSampleStride) / kCostMargin;
    DensePath path = choose(estimate);
    const bool decided = (path.delegate || path.packed) && !path.keep_own;
    if (decided) {
      weight_ = builder.shape();
      path.cost = relative_cost(estimate) * kCostMargin;
    } else {
      weight_ = builder.build();
      path = choose(weight_);
    }
    const std::string where = frame_.where();
    if (path.packed) {
      packed_ = std::make_unique<PackedGemm>(dw, frame_.M, frame_.Cg, *kernels_);
      log_for_kernel(info, ORT_LOGGING_LEVEL_INFO,
                     where + "relative cost " + std::to_string(path.cost) + ", dense path: packed GEMM" +
                         (path.keep_own ? " or the sparse kernel, chosen per input shape" : ""));
    }
    if (path.delegate) {
      delegate_ = dense ? OrtDelegate::create_matmul(info, where, std::move(layer), dw, path.cost, path.keep_own)
                        : OrtDelegate::create(info, where, std::move(layer), dw, path.nchwc_block, path.cost,
                                              path.keep_own);
    }
    // Another kernel runs the layer: no tap lists (memory stays at the dense model's).
    choose_per_shape_ = (delegate_ || packed_) && path.keep_own;
    if ((delegate_ || packed_) && !path.keep_own) {
      weight_ = builder.shape();
    } else if (decided) {
      weight_ = builder.build();  // the other kernel was unavailable
    }
  }
  // Depthwise: every row group is one channel reading one input channel (FQ_ONNX_DEPTHWISE=0
  // sends it through the packed path instead, for comparisons).
  depthwise_ = !dense && frame_.Cg == 1 && frame_.group == frame_.M && int64_t(weight_.groups.size()) == frame_.M &&
               tuning.depthwise != DepthwiseChoice::kOff;
  for (size_t r = 0; depthwise_ && r < weight_.groups.size(); ++r) {
    if (weight_.groups[r].g != 1 || weight_.groups[r].m0 != int32_t(r)) depthwise_ = false;
  }
  if (depthwise_) {
    tap_ptr_.resize(weight_.groups.size() + 1);
    for (size_t m = 0; m < weight_.groups.size(); ++m) tap_ptr_[m] = weight_.groups[m].tap_begin;
    tap_ptr_.back() = uint32_t(weight_.taps.size());
    depthwise_tap_offsets(weight_.taps, wshape, &tap_dy_, &tap_dx_);
  }
  if (threads_ > 1) group_cut_ = cut_groups(weight_, threads_);
}

std::shared_ptr<const Plan> FloatShiftConv::plan_for(const std::vector<int64_t>& x_shape) {
  return plans_.get(x_shape, [&] {
    const int64_t chunk_bytes = frame_.tuning.chunk_bytes;
    return frame_.dense ? make_dense_plan(weight_, x_shape, kernels_->lanes, max_vectors_, chunk_bytes)
                        : make_conv_plan(weight_, frame_.attrs, frame_.wshape, x_shape, kernels_->lanes, max_vectors_,
                                         chunk_bytes, frame_.tuning.plane_pad);
  });
}

void FloatShiftConv::compute(Ort::KernelContext& ctx, const Ort::ConstValue& xv, const std::vector<int64_t>& x_shape,
                             const RunBias& run_bias) {
  const float* bias = run_bias.data;
  const bool dense = frame_.dense;
  const ConvWeightShape& wshape = frame_.wshape;
  if (packed_) {
    const int64_t rows = frame_.dense_rows(x_shape);
    if (!choose_per_shape_ || matmul_prefers_packed(rows)) {
      compute_rows(ctx, x_shape, rows, bias, /*packed=*/true);
      return;
    }
  }
  if (delegate_ && dense) {
    const int64_t rows = frame_.dense_rows(x_shape);
    if (!choose_per_shape_ || matmul_prefers_ort(rows)) {
      delegate_->compute(ctx.GetOrtKernelContext(), xv, x_shape, run_bias.value, frame_.dense_out_shape(x_shape));
      return;
    }
  }
  if (delegate_ && !dense) {
    const ConvShape cs = conv_shape(frame_.attrs, wshape, x_shape);  // validates X against the node
    const double density = double(weight_.nonzeros) / double(weight_.M * weight_.kh * weight_.kw);
    // Conv layers that keep both kernels are 1x1 (group 1) or depthwise (dense_path.cc).
    if (!choose_per_shape_ ||
        (wshape.group == 1
             ? pointwise_prefers_ort(cs.N)
             : depthwise_prefers_ort(density, cs.OH * cs.OW, wshape.sh * wshape.sw > 1, small_depthwise_ok(cs)))) {
      delegate_->compute(ctx.GetOrtKernelContext(), xv, x_shape, run_bias.value, frame_.conv_out_shape(cs));
      return;
    }
  }
  if (depthwise_) {
    compute_depthwise(ctx, x_shape, bias);
    return;
  }
  if (dense && !x_shape.empty() && x_shape.back() == weight_.Cg && frame_.tuning.matvec_rows > 0) {
    const int64_t rows = frame_.dense_rows(x_shape);
    if (rows <= frame_.tuning.matvec_rows) {
      compute_rows(ctx, x_shape, rows, bias, /*packed=*/false);
      return;
    }
  }
  const std::shared_ptr<const Plan> plan = plan_for(x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, plan->out_shape);
  float* y = yv.GetTensorMutableData<float>();
  const float* x = xv.GetTensorData<float>();
  const int64_t nb = dense ? plan->N : images_per_run(*plan);
  if (nb >= plan->N) {
    run_plan(&ctx, *plan, x, y, bias);
    return;
  }
  // A batch too large for L2 runs as sub-batches of at most nb images, each packed and computed
  // before the next (images_per_run). With at least as many sub-batches as threads, each pool
  // thread packs and computes whole sub-batches on its own: one ParallelFor per call instead of
  // two per sub-batch, each thread in its own cache, and no thread waits for a descheduled one
  // at a barrier. The sub-batches are then made equal and, unless FQ_ONNX_SUB_BATCH sets their
  // size, as many as a multiple of the threads where the batch allows, for equal shares.
  int64_t x_image = 1, y_image = 1;
  for (size_t i = 1; i < x_shape.size(); ++i) x_image *= x_shape[i];
  for (size_t i = 1; i < plan->out_shape.size(); ++i) y_image *= plan->out_shape[i];
  const int64_t N = plan->N;
  int64_t runs = (N + nb - 1) / nb;
  const bool by_image = threads_ > 1 && runs >= threads_;
  if (by_image && frame_.tuning.sub_batch < 0) runs = std::min(N, (runs + threads_ - 1) / threads_ * threads_);
  // Sub-batch i holds images [i * N / runs, (i + 1) * N / runs): sizes differ by at most one.
  std::vector<int64_t> sub_shape = x_shape;
  sub_shape[0] = N / runs;
  const std::shared_ptr<const Plan> small = plan_for(sub_shape);
  sub_shape[0] = (N + runs - 1) / runs;
  const std::shared_ptr<const Plan> large = plan_for(sub_shape);
  // Sub-batch i, computed over the pool (ctx) or on this thread (null).
  auto run = [&](Ort::KernelContext* c, int64_t i) {
    const int64_t n0 = i * N / runs, n1 = (i + 1) * N / runs;
    run_plan(c, n1 - n0 == small->N ? *small : *large, x + n0 * x_image, y + n0 * y_image, bias);
  };
  if (!by_image) {
    for (int64_t i = 0; i < runs; ++i) run(&ctx, i);
    return;
  }
  run_tasks(&ctx, runs, [&](int64_t i) { run(nullptr, i); });
}

int64_t FloatShiftConv::images_per_run(const Plan& p) const {
  if (frame_.tuning.sub_batch >= 0) return frame_.tuning.sub_batch == 0 ? p.N : frame_.tuning.sub_batch;
  // Packing a whole batch writes more than L2 holds (128@28² stride 2 at batch 8: 3.7 MB), so
  // the tiles then read much of it back from L3, and the next layer's input has left L2 too.
  // Images packed and computed one sub-batch at a time stay in L2: kernel_timing measured
  // batch 1 faster per image than batch 8 on every layer of the bench (stride 2: 0.128 vs
  // 0.154 ms with blocks of 4, 0.204 vs 0.233 unstructured; 1x1 256→1024: 0.160 vs 0.183;
  // 64@56²: 0.23 vs 0.29 blk4), and 2 images about as fast as 1 where they fit.
  const double per_image = double(p.C) * double(p.channel_stride) * sizeof(float) / double(std::max<int64_t>(1, p.N));
  return std::max<int64_t>(1, int64_t(double(run_bytes()) / std::max(1.0, per_image)));
}

void FloatShiftConv::run_plan(Ort::KernelContext* ctx, const Plan& plan, const float* x, float* y,
                               const float* bias) {
  // FMA-vector count: below a few microseconds of work, waking the pool costs more than it saves.
  const double work = double(weight_.stored_macs) * double(plan.tiles) * double(plan.tile / kernels_->lanes);
  const bool small = work < frame_.tuning.inline_work;
  const bool inline_run = !ctx || small;
  // Without a pool (a sub-batch task) the tasks still keep the row blocks of a multi-task grid:
  // one task of all rows would carry every row's partial sums across the input chunks.
  const TaskGrid grid = make_task_grid(plan, weight_, small ? 1 : kTargetTasks);
  const Epilogue epilogue{bias, frame_.act_lo, frame_.act_hi};
  if (!inline_run && !plan.dense && threads_ > 1) {
    run_per_thread(*ctx, plan, grid, x, y, epilogue);
    return;
  }
  ScratchLease<float, PackTag> lease(size_t(plan.packed_floats));
  float* packed = lease.get();
  zero_packed_tail(plan, packed);
  if (inline_run || plan.C * plan.channel_stride < kInlinePackFloats) {
    pack_input(plan, x, packed, 0, plan.C, kernels_);
  } else {
    parallel_blocks(*ctx, plan.C, kPackTasks,
                    [&](int64_t c0, int64_t c1) { pack_input(plan, x, packed, c0, c1, kernels_); });
  }
  // Inline: the same tasks in the same order as the pool would run them, on this thread.
  run_tasks(inline_run ? nullptr : ctx, grid.count(),
            [&](int64_t i) { run_task(plan, weight_, *kernels_, grid, i, packed, epilogue, y); });
}

void FloatShiftConv::run_per_thread(Ort::KernelContext& ctx, const Plan& plan, const TaskGrid& grid, const float* x,
                                   float* y, const Epilogue& epilogue) {
  // One task per thread. Each packs into its own buffer what it reads and computes it: a
  // contiguous run of tiles for every row group (packing the rows those tiles read, the halo
  // rows twice), or, where tiles are fewer than threads or the packed input is small next to
  // the output channels, every tile for a run of row groups (packing all of it). Packing by
  // channels and computing by tiles had every thread read most of the packed input from the
  // other core's cache, after a pool round trip: 2 threads ran the stride-2 layer with blocks
  // of 4 at batch 1 no faster than 1. A tile split shares a cache line of output per channel
  // and run boundary between two threads, so layers with many channels of small planes split
  // row groups: 1x1 256->1024 @14², blocks of 4, 0.092 -> 0.073 ms; 64@56² the other way,
  // 0.185 ms by tiles against 0.211 by row groups (2 threads, batch 1, 90%; docs/PERFORMANCE.md).
  const int64_t threads = threads_;
  const bool by_groups = frame_.tuning.thread_split == 'r' || plan.tiles < threads ||
                         (frame_.tuning.thread_split != 't' && plan.C * plan.channel_stride < kPackedFloatsPerRowForTiles * weight_.M);
  struct Parts {
    const Plan* plan;
    const SparseWeight* weight;
    const KernelTable* kernels;
    TaskGrid grid;
    bool by_groups;
    const std::vector<size_t>* group_cut;  // by_groups: part i runs row groups [cut[i], cut[i + 1])
    int64_t parts;
    const float* x;
    Epilogue epilogue;
    float* y;
    void run(int64_t part) const {
      const Plan& p = *plan;
      const int64_t t0 = by_groups ? 0 : part * p.tiles / parts;
      const int64_t t1 = by_groups ? p.tiles : (part + 1) * p.tiles / parts;
      const size_t g0 = by_groups ? (*group_cut)[size_t(part)] : 0;
      const size_t g1 = by_groups ? (*group_cut)[size_t(part) + 1] : weight->groups.size();
      if (g0 >= g1) return;
      ScratchLease<float, PackTag> lease(size_t(p.packed_floats));
      float* packed = lease.get();
      zero_packed_tail(p, packed);
      pack_span(p, x, packed, t0 * p.tile, t1 * p.tile + p.halo, kernels);
      const size_t per = size_t(grid.groups_per_task);
      for (size_t r = g0; r < g1; r += per) {
        run_tiles(p, *weight, *kernels, t0, t1, r, std::min(g1, r + per), packed, epilogue, y);
      }
    }
  } job{&plan, &weight_, kernels_, grid, by_groups, &group_cut_, by_groups ? threads : std::min(threads, plan.tiles),
        x, epilogue, y};
  ctx.ParallelFor([](void* data, size_t i) { static_cast<const Parts*>(data)->run(int64_t(i)); },
                  size_t(job.parts), size_t(job.parts), &job);
}

void FloatShiftConv::compute_rows(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape, int64_t rows,
                                  const float* bias, bool packed) {
  Ort::UnownedValue yv = ctx.GetOutput(0, frame_.dense_out_shape(x_shape));
  const float* x = ctx.GetInput(0).GetTensorData<float>();
  float* y = yv.GetTensorMutableData<float>();
  const Epilogue ep{bias, frame_.act_lo, frame_.act_hi};
  // Tasks take blocks of the GEMM's column panels, or of the row groups for sparse_matvec:
  // scalar multiply-adds streaming the tap lists (0.7 ns each for MobileNet-V2's 85%-sparse
  // classifier: 134 us inline, a tenth of it above the threshold that had kept it inline).
  const int64_t blocks = packed ? packed_->panels() : int64_t(weight_.groups.size());
  const double work = packed ? packed_->work(rows) : double(weight_.stored_macs) * double(rows);
  auto run = [&](int64_t b, int64_t e) {
    if (packed) {
      packed_->run(x, rows, b, e, ep, y);
    } else {
      sparse_matvec(weight_, x, rows, size_t(b), size_t(e), ep, y);
    }
  };
  if (work < kInlineWork || blocks < 2) {
    run(0, blocks);
    return;
  }
  parallel_blocks(ctx, blocks, kTargetTasks, run);
}

namespace {

struct SmallDepthwiseJob {
  const KernelTable* kernels;
  DepthwiseSmallArgs proto;  // x, y, planes, tap_ptr, bias for channel 0 of image 0
  int64_t M;
  void run(int64_t b, int64_t e) const {
    // Planes [b, e) of all N * M, cut at image boundaries (channel m selects taps and bias).
    int64_t i = b;
    while (i < e) {
      const int64_t m = i % M, n = std::min(e - i, M - m);
      DepthwiseSmallArgs a = proto;
      a.x += i * a.x_plane;
      a.y += i * a.P;
      a.planes = n;
      a.tap_ptr += m;
      if (a.bias) a.bias += m;
      kernels->depthwise_small(a);
      i += n;
    }
  }
};

}  // namespace

bool FloatShiftConv::small_depthwise_ok(const ConvShape& cs) const {
  // Stride 1 and equal row lengths in and out: every tap is one flat offset. Planes up to
  // kSmallPlaneMax pixels (the masks and the kernel's scratch); measured (AVX-512, 1 thread,
  // MobileNet-V2 shapes) 1.4-2.3x faster than the flat kernel at 7x7 and 14x14.
  return frame_.tuning.depthwise == DepthwiseChoice::kAuto && depthwise_ && kernels_->depthwise_small && small_plane_eligible(frame_.wshape, cs);
}

bool FloatShiftConv::run_small_depthwise(Ort::KernelContext& ctx, const ConvShape& cs, const float* bias, float* y) {
  if (!small_depthwise_ok(cs)) return false;
  const int64_t P = cs.OH * cs.OW, L = kernels_->lanes;
  const int64_t nvec = (P + L - 1) / L;
  std::vector<uint32_t> masks;  // per call, not per plane: kh * kw * nvec masks
  std::vector<int32_t> offs;
  small_plane_masks(frame_.wshape, cs, kernels_->lanes, &masks, &offs);
  const int64_t planes = cs.N * weight_.M;
  SmallDepthwiseJob job{kernels_,
                        DepthwiseSmallArgs{ctx.GetInput(0).GetTensorData<float>(), y, 0, P, nvec, cs.H * cs.W,
                                           masks.data(), offs.data(), tap_ptr_.data(), weight_.taps.data(),
                                           weight_.weights.data(), bias, frame_.act_lo, frame_.act_hi},
                        weight_.M};
  const double work = double(weight_.nonzeros) * double(cs.N) * double(nvec);  // FMA-vectors
  if (work < kInlineWork && planes * cs.H * cs.W < kInlinePackFloats) {
    job.run(0, planes);
    return true;
  }
  parallel_blocks(ctx, planes, kTargetTasks, [&](int64_t b, int64_t e) { job.run(b, e); });
  return true;
}

void FloatShiftConv::compute_depthwise(Ort::KernelContext& ctx, const std::vector<int64_t>& x_shape,
                                       const float* bias) {
  const ConvShape cs = conv_shape(frame_.attrs, frame_.wshape, x_shape);
  Ort::UnownedValue yv = ctx.GetOutput(0, frame_.conv_out_shape(cs));
  float* y = yv.GetTensorMutableData<float>();
  if (run_small_depthwise(ctx, cs, bias, y)) return;
  const float* x = ctx.GetInput(0).GetTensorData<float>();
  const ConvWeightShape& ws = frame_.wshape;
  const int64_t M = weight_.M;
  const bool flat = kernels_->depthwise_flat != nullptr && frame_.tuning.depthwise != DepthwiseChoice::kRows &&
                    (frame_.tuning.depthwise == DepthwiseChoice::kFlat ||
                     (ws.sh == 1 && ws.sw == 1 && cs.OW == cs.W ? cs.OW <= 32 : cs.OW <= 16));
  auto run = [&](int64_t b, int64_t e) {  // planes [b, e) of all N * M
    for (int64_t i = b; i < e; ++i) {
      const int64_t m = i % M;
      const RowGroup& rg = weight_.groups[size_t(m)];
      DepthwiseArgs a{x + i * cs.H * cs.W, y + i * cs.OH * cs.OW, cs.H, cs.W, cs.OH, cs.OW, ws.sh, ws.sw,
                      cs.pad_top, cs.pad_left, tap_dy_.data() + rg.tap_begin, tap_dx_.data() + rg.tap_begin,
                      weight_.weights.data() + rg.w_begin, size_t(rg.tap_end - rg.tap_begin),
                      bias ? bias[m] : 0.0f, frame_.act_lo, frame_.act_hi};
      (flat ? kernels_->depthwise_flat : kernels_->depthwise)(a);
    }
  };
  const int64_t planes = cs.N * M;
  // Output vectors written: below the inline threshold the pool costs more than it saves,
  // unless the input is large (a strided layer reads 4 floats per output: MobileNet-V2's 144
  // channels at 56² to 28² took 82 us inline, 100 us on one thread of two).
  const double work = double(planes) * double(cs.OH) * double((cs.OW + kernels_->lanes - 1) / kernels_->lanes);
  if (work < kInlineWork && planes * cs.H * cs.W < kInlinePackFloats) {
    run(0, planes);
    return;
  }
  parallel_blocks(ctx, planes, kTargetTasks, run);
}


}  // namespace fq
