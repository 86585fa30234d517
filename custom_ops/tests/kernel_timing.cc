// Times the phases of one sparse conv (pack, compute) outside onnxruntime, single-threaded, to
// tune the kernels. Usage: kernel_timing C M H K stride sparsity block batch [kernel]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "plan/execute.h"
#include "plan/plan.h"
#include "tuning.h"

using namespace fq;

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: %s C M H K stride sparsity block batch [kernel]\n", argv[0]);
    return 2;
  }
  const int64_t C = std::atoll(argv[1]), M = std::atoll(argv[2]), H = std::atoll(argv[3]), K = std::atoll(argv[4]);
  const int64_t S = std::atoll(argv[5]);
  const double sparsity = std::atof(argv[6]);
  const int block = std::atoi(argv[7]);
  const int64_t N = std::atoll(argv[8]);
  const KernelTable* kt = select_kernels(argc > 9 ? argv[9] : "auto");
  const Tuning tuning = Tuning::from_env();  // FQ_ONNX_CHUNK_BYTES, _MAX_GROUP, _TILE_VECTORS, _PLANE_PAD

  // Random weights with `sparsity` pruned, rows in blocks sharing one mask.
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0, 1);
  DecodedWeight dw;
  dw.dims = {uint32_t(M), uint32_t(C), uint32_t(K), uint32_t(K)};
  dw.elements = uint64_t(M * C * K * K);
  dw.params.bits = 5;
  dw.alphas.assign(1, 1.0f);
  dw.units.assign(32, 0.5f);
  const int64_t row = C * K * K;
  std::vector<char> mask(size_t((M + block - 1) / block * row));
  for (auto& m : mask) m = u(rng) >= sparsity;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < row; ++i)
      if (mask[size_t((m / block) * row + i)]) {
        dw.index.push_back(uint32_t(m * row + i));
        dw.code.push_back(uint8_t(rng() % 32));
      }
  for (size_t i = 0; i < 32; ++i) dw.units[i] = float(i) / 32 - 0.5f + 0.01f;

  ConvAttrs attrs;
  attrs.strides = {S, S};
  attrs.pads = {K / 2, K / 2, K / 2, K / 2};
  const ConvWeightShape ws = conv_weight_shape(attrs, dw.dims);
  const SparseWeight sw = build_sparse_weight(dw, M, C, K, K, 1, tuning.max_group);
  const Plan p = make_conv_plan(sw, attrs, ws, {N, C, H, H}, kt->lanes, tuning.tile_vectors > 0 ? tuning.tile_vectors : 8,
                                tuning.chunk_bytes, tuning.plane_pad);
  std::vector<float> x(size_t(N * C * H * H), 1.0f), y(size_t(N * M * p.OH * p.OW));
  AlignedFloats packed_buf;
  float* packed = packed_buf.reserve(size_t(p.packed_floats));
  const TaskGrid grid = make_task_grid(p, sw, 1);
  auto now = [] { return std::chrono::steady_clock::now(); };
  double t_pack = 1e9, t_comp = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    auto t0 = now();
    zero_packed_tail(p, packed);
    pack_input(p, x.data(), packed, 0, C, kt);
    auto t1 = now();
    for (int64_t t = 0; t < grid.count(); ++t) run_task(p, sw, *kt, grid, t, packed, Epilogue{}, y.data());
    auto t2 = now();
    t_pack = std::min(t_pack, std::chrono::duration<double, std::milli>(t1 - t0).count());
    t_comp = std::min(t_comp, std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  const double fma_vec = double(sw.stored_macs) * double(p.tiles * p.tile / kt->lanes);
  std::printf("%s groups=%zu taps=%llu macs=%llu tile=%lld tiles=%lld chunks=%lld | pack %.3f ms compute %.3f ms "
              "| %.2f ns per FMA-vector\n",
              kt->name, sw.groups.size(), (unsigned long long)sw.stored_taps, (unsigned long long)sw.stored_macs,
              (long long)p.tile, (long long)p.tiles, (long long)p.chunks, t_pack, t_comp, t_comp * 1e6 / fma_vec);
  return 0;
}
