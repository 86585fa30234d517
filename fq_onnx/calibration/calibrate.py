"""Input statistics of every layer to compress, collected with onnxruntime on calibration data.

The calibration samples are a seeded uniform sample of the whole data set (reservoir sampling,
so a data set sorted by class still calibrates on all classes), kept in a memory-mapped file.
For each layer we keep, per convolution group, the second-moment matrix ``H = sum x x^T`` of
its input vectors (a conv's input patches, a dense layer's input rows) and their mean. Memory
is bounded by these statistics, not by the number of samples: batches are streamed, and large
feature maps are subsampled to a fixed number of patch positions per image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from fq_onnx.op import geometry
from fq_onnx.graph.rewrite import Target
from fq_onnx.evaluation.feeds import Samples, reservoir_sample

PATCHES_PER_IMAGE = 1024  # positions sampled from each conv input; bounds time, not accuracy
PROBE_BYTES = 64 << 20  # probed tensors per batch; MobileNet-V2 at 224² has 26 MB per image
CACHE_VERSION = 3  # 2: batches sized by PROBE_BYTES (other patch positions on large models); 3: float32 products


@dataclass
class LayerStats:
    """``gram[g]`` is the K x K sum of outer products of group g's input vectors."""

    gram: np.ndarray  # [groups, K, K] float64
    total: np.ndarray  # [groups, K] float64, sum of input vectors
    count: int  # input vectors accumulated (per group)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def second_moment(self) -> np.ndarray:
        return self.gram / max(self.count, 1)


def conv_patches(x: np.ndarray, weight_shape: tuple[int, ...], attrs: dict, rng: np.random.Generator,
                 per_image: int = PATCHES_PER_IMAGE) -> np.ndarray:
    """Input patches of a conv: [groups, P, C/groups * prod(kernel)], rows matching the weight."""
    x, kernel, attrs = geometry.lift_1d(x, tuple(weight_shape[2:]), attrs)
    group = int(attrs.get("group", 1))
    windows = geometry.windows(x, kernel, attrs)  # N C OH OW kh kw
    n, c, oh, ow = windows.shape[:4]
    positions = oh * ow
    take = np.arange(positions) if positions <= per_image else np.sort(rng.choice(positions, per_image, replace=False))
    # Gather the sampled positions from the strided view: reshaping the view first would copy
    # every position (0.9 GB for MobileNet-V2's first depthwise layer at batch 32).
    patches = windows[:, :, take // ow, take % ow].reshape(n, c, take.size, -1)  # N C P k
    patches = patches.reshape(n, group, c // group, take.size, -1).transpose(1, 0, 3, 2, 4)
    return patches.reshape(group, n * take.size, -1)


def layer_inputs(target: Target, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The vectors layer ``target`` multiplies by its weight rows: [groups, P, K]."""
    if target.kind == "conv":
        return conv_patches(x, target.weight.shape, target.attrs, rng)
    if target.transpose_input:
        x = x.T
    return x.reshape(1, -1, x.shape[-1])


def sample_inputs(data, size: int, directory: str | os.PathLike, seed: int = 0, batch_size: int = 32) -> Samples:
    """A seeded uniform sample of ``size`` model inputs of ``data`` (a fq_onnx.evaluation.feeds
    ModelData; reservoir sampling, one pass; fq_onnx.evaluation.feeds.reservoir_sample)."""
    return reservoir_sample(data, size, directory, seed, batch_size)


def _cache_key(model: onnx.ModelProto, targets: list[Target], description: str, size: int, seed: int) -> str:
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    digest.update(f"{CACHE_VERSION}|{description}|{size}|{seed}|{PATCHES_PER_IMAGE}|".encode())
    digest.update("|".join(t.node.name for t in targets).encode())
    return digest.hexdigest()[:24]


def cache_dir() -> Path:
    return Path(os.environ.get("FQ_ONNX_CACHE", Path.home() / ".cache" / "fq-onnx")) / "calibration"


def collect(
    graph: gs.Graph,
    targets: list[Target],
    inputs: Samples | np.ndarray,
    *,
    batch_size: int = 32,
    description: str = "",
    use_cache: bool = True,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, LayerStats]:
    """Run the (float, BN-folded) graph on the calibration ``inputs``; statistics per target.

    With ``use_cache`` the result is kept under ``~/.cache/fq-onnx/calibration`` (or
    ``$FQ_ONNX_CACHE``), keyed by the model bytes, the data description and the sample count,
    so converting the same model again skips inference.
    """
    size = len(inputs)
    wanted = [target.node.inputs[0].name for target in targets]
    model = probe_model(graph, wanted)
    key = _cache_key(model, targets, description, size, seed)
    path = cache_dir() / f"{key}.npz"
    if use_cache and path.exists():
        with np.load(path) as saved:
            return {t.node.name: LayerStats(saved[f"{i}/gram"], saved[f"{i}/total"], int(saved[f"{i}/count"]))
                    for i, t in enumerate(targets)}
    stats: dict[str, LayerStats] = {}
    rng = np.random.default_rng(seed)
    seen = 0
    for count, values in tensor_batches(model, inputs, batch_size, PROBE_BYTES):
        for target, name in zip(targets, wanted):
            vectors = np.ascontiguousarray(layer_inputs(target, values[name], rng), dtype=np.float32)
            gram, total = _batch_products(vectors)
            entry = stats.get(target.node.name)
            if entry is None:
                stats[target.node.name] = LayerStats(gram, total, vectors.shape[1])
            else:
                entry.gram += gram
                entry.total += total
                entry.count += vectors.shape[1]
        seen += count
        if progress:
            progress(seen, size)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, t in enumerate(targets):
            s = stats[t.node.name]
            arrays.update({f"{i}/gram": s.gram, f"{i}/total": s.total, f"{i}/count": np.array(s.count)})
        temp = path.with_suffix(".part.npz")
        np.savez(temp, **arrays)
        os.replace(temp, path)
    return stats


def _batch_products(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One batch's ``sum x x^T`` per group and ``sum x``, float64, from float32 vectors [G, P, K].

    The products run in float32 (sgemm: ~5x faster than casting to float64; relative error ~2e-7
    at 65,536 vectors, far below the 1% damping) on the vectors scaled by a power of two that
    brings their peak near 1, which is exact and keeps activations like 1e30 from overflowing.
    """
    peak = float(np.max(np.abs(vectors))) if vectors.size else 0.0
    shift = -int(np.frexp(peak)[1]) if 0 < peak < np.inf else 0
    scaled = np.ldexp(vectors, np.int32(shift), dtype=np.float32) if shift else vectors
    gram = np.ldexp(np.matmul(scaled.transpose(0, 2, 1), scaled).astype(np.float64), -2 * shift)
    return gram, vectors.sum(axis=1, dtype=np.float64)


def probe_model(graph: gs.Graph, names: list[str]) -> onnx.ModelProto:
    """The graph exported with the tensors ``names`` added to its outputs."""
    probe = graph.copy()
    present = {t.name for t in probe.outputs}
    tensors = probe.tensors()
    for name in dict.fromkeys(names):
        if name in present:
            continue
        tensor = tensors[name]
        probe.outputs.append(tensor.to_variable(dtype=np.float32, shape=tensor.shape) if isinstance(tensor, gs.Variable) else tensor)
        present.add(name)
    return gs.export_onnx(probe)


def tensor_batches(model: onnx.ModelProto, inputs: Samples | np.ndarray, batch_size: int = 32,
                   max_bytes: int | None = None):
    """Run ``model`` over ``inputs`` (Samples, or one array for a one-input model) in batches; yields
    ``(batch size, {tensor name: value})`` with every graph output and the inputs themselves.

    With ``max_bytes`` the first batch is one sample, and later batches hold as many samples
    (up to ``batch_size``) as keep the returned tensors within ``max_bytes``. A batch never
    spans two chunks of Samples (their shapes differ).
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # every probed tensor is an output: the arena only grows
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    samples = Samples.of(inputs, session.get_inputs()[0].name)
    output_names = [o.name for o in session.get_outputs()]
    size = batch_size if max_bytes is None else 1
    for chunk in samples.chunks:
        start, total = 0, len(next(iter(chunk.values())))
        while start < total:
            feeds = {k: np.ascontiguousarray(v[start : start + size]) for k, v in chunk.items()}
            count = len(next(iter(feeds.values())))
            values = dict(zip(output_names, session.run(None, feeds)))
            values.update(feeds)
            yield count, values
            start += count
            if max_bytes is not None:
                per_sample = sum(v.nbytes for v in values.values()) / count
                size = int(np.clip(max_bytes // max(per_sample, 1), 1, batch_size))
