"""The C++ ShiftConv kernel (libfq_onnx_ops.so) against the numpy reference and onnxruntime.

Every model here is one ShiftConv node built with onnx.helper around a blob from fmt.encode.
Checks: outputs equal fq_onnx.reference (and onnxruntime's own Conv/MatMul on the dequantized
weights) within float rounding for every op variant, batch 1 and >1, 1 and 2 threads, each CPU
path; one scale per tensor (A = 1) and one per output row (A = dims[0]); decoded weights
bit-identical to fmt.dequantize; every corruption is a clean error.
"""

from __future__ import annotations

import ctypes
import struct
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_concurrently

from fq_onnx import fmt, reference, runtime

NODE = "sc"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
KERNELS = ["scalar", "auto"]
if {"avx2", "fma"} <= FLAGS:
    KERNELS.append("avx2")
if {"avx512f", "avx2", "fma"} <= FLAGS:
    KERNELS.append("avx512")


# --- building models -------------------------------------------------------------------------

def random_params(rng, mode: int, bits: int) -> fmt.QuantParams:
    if mode == fmt.MODE_SHIFT:
        return fmt.QuantParams(mode=0, bits=bits, alpha=float(rng.uniform(0.01, 0.2)), b=int(rng.integers(0, 4)))
    c = float(rng.uniform(0.5, 2.0))
    return fmt.QuantParams(mode=1, bits=bits, alpha=float(rng.uniform(0.01, 0.2)), centre0=-c, centre1=c,
                           b=int(rng.integers(1, 4)))


def random_codes(rng, shape, sparsity: float, bits: int, block: int = 1) -> np.ndarray:
    """Codes with `sparsity` pruned; rows in blocks of `block` share one mask."""
    shape = tuple(shape)
    codes = rng.integers(0, 1 << bits, size=shape)
    rows = shape[0]
    mask_rows = -(-rows // block)
    mask = rng.random((mask_rows,) + shape[1:]) < sparsity
    mask = np.repeat(mask, block, axis=0)[:rows]
    codes[mask] = -1
    return codes


def row_scales(rng, params: fmt.QuantParams, rows: int) -> np.ndarray:
    """One scale per output row, spread over four orders of magnitude below params.alpha."""
    return (params.alpha * rng.uniform(0.5, 1.0, rows) * 10.0 ** rng.uniform(-4, 0, rows)).astype(np.float32)


def make_blob(rng, shape, sparsity=0.7, mode=1, bits=5, block=1, per_row=False) -> bytes:
    """A blob of random codes; per_row stores one scale per output row (A = dims[0])."""
    params = random_params(rng, mode, bits)
    alphas = row_scales(rng, params, shape[0]) if per_row else None
    return fmt.encode(random_codes(rng, shape, sparsity, bits, block), params, block=block, alphas=alphas)


def scale_count(blob: bytes) -> int:
    """A, the number of scales stored in a blob."""
    return struct.unpack_from("<I", blob, 12 + 4 * blob[7])[0]


def shiftconv_model(blob: bytes, x_shape, bias=None, bias_as_input=False, **attrs) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.frombuffer(blob, dtype=np.uint8).copy(), "Wq")]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))]
    node_inputs = ["X", "Wq"]
    if bias is not None:
        b = numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "B")
        if bias_as_input:
            inputs.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, [None]))
        else:
            inits.append(b)
        node_inputs.append("B")
    node = helper.make_node("ShiftConv", node_inputs, ["Y"], domain="fq_onnx", name=NODE, **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("fq_onnx", 1)])
    model.ir_version = 8
    return model


def ort_equivalent(weight: np.ndarray, x_shape, bias, kind, activation="none", attrs_clip=(0.0, 6.0),
                   **attrs) -> onnx.ModelProto:
    """The same layer as standard ONNX ops on the dequantized weight (Conv or MatMul [+Add])."""
    inits = []
    nodes = []
    if kind == "dense":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), "Wt"))
        nodes.append(helper.make_node("MatMul", ["X", "Wt"], ["mm"]))
        last = "mm"
        if bias is not None:
            inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
            nodes.append(helper.make_node("Add", ["mm", "B"], ["ad"]))
            last = "ad"
    else:
        inits.append(numpy_helper.from_array(weight, "W"))
        conv_inputs = ["X", "W"]
        if bias is not None:
            inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
            conv_inputs.append("B")
        nodes.append(helper.make_node("Conv", conv_inputs, ["cv"], **attrs))
        last = "cv"
    if activation == "relu":
        nodes.append(helper.make_node("Relu", [last], ["rl"]))
        last = "rl"
    elif activation == "clip":
        inits += [numpy_helper.from_array(np.array(attrs_clip[0], np.float32), "lo"),
                  numpy_helper.from_array(np.array(attrs_clip[1], np.float32), "hi")]
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["cl"]))
        last = "cl"
    nodes.append(helper.make_node("Identity", [last], ["Y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run_shiftconv(model, x, threads=1, kernel="auto"):
    sess = runtime.session(model, threads=threads, kernel=kernel)
    return sess.run(None, {"X": x})[0]


def assert_close(y, ref, x, weight):
    """Equal within float32 rounding of a sum of |x||w| products."""
    assert y.shape == ref.shape
    scale = float(np.abs(x).max()) * float(np.abs(weight).sum(axis=tuple(range(1, weight.ndim))).max() + 1e-30)
    tol = 1e-5 * max(scale, 1.0)
    err = float(np.abs(y.astype(np.float64) - ref).max()) if y.size else 0.0
    assert err <= tol, f"max error {err} > {tol}"


# --- the op variants -------------------------------------------------------------------------

# (x_shape without batch, weight shape, attributes)
CONV_CASES = {
    "3x3": ((8, 9, 11), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
    "3x3-nopad": ((5, 7, 6), (6, 5, 3, 3), {}),
    "3x3-stride2": ((8, 12, 13), (12, 8, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "1x1": ((16, 6, 7), (8, 16, 1, 1), {}),
    "1x1-stride2": ((16, 10, 9), (8, 16, 1, 1), dict(strides=[2, 2])),
    "7x7-stem": ((3, 20, 22), (8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    "asym-pads": ((4, 8, 9), (5, 4, 3, 2), dict(pads=[0, 2, 1, 0])),
    "dilation": ((4, 13, 12), (6, 4, 3, 3), dict(dilations=[2, 3], pads=[2, 1, 2, 3])),
    "stride3-dil2": ((3, 17, 16), (4, 3, 3, 3), dict(strides=[3, 2], dilations=[2, 2])),
    "group2": ((8, 9, 9), (6, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise": ((12, 10, 10), (12, 1, 3, 3), dict(group=12, pads=[1, 1, 1, 1])),
    "depthwise-s2": ((8, 11, 11), (8, 1, 3, 3), dict(group=8, strides=[2, 2], pads=[1, 1, 1, 1])),
    "same-upper": ((5, 10, 9), (7, 5, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same-lower": ((5, 10, 9), (7, 5, 4, 4), dict(auto_pad="SAME_LOWER")),
    "valid": ((5, 10, 9), (7, 5, 3, 3), dict(auto_pad="VALID", strides=[2, 1])),
    "kernel-shape-attr": ((4, 8, 8), (4, 4, 3, 3), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "1d": ((6, 20), (8, 6, 3), dict(pads=[1, 1])),
    "1d-stride2-same": ((6, 21), (8, 6, 5), dict(strides=[2], auto_pad="SAME_LOWER")),
    "1d-dilation-group": ((6, 19), (9, 2, 3), dict(dilations=[2], group=3)),
    "wide-image": ((3, 5, 150), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    "many-channels": ((96, 6, 6), (40, 96, 3, 3), dict(pads=[1, 1, 1, 1])),
}

DENSE_CASES = {
    "vector": ((24,), (10, 24)),
    "matrix": ((5, 24), (10, 24)),
    "rank3": ((2, 3, 33), (17, 33)),
    "wide": ((70, 40), (20, 40)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_matches_reference(case, batch):
    rng = np.random.default_rng(zlib.crc32(f"{case}-{batch}".encode()))
    x_rest, w_shape, attrs = CONV_CASES[case]
    x_shape = (batch,) + x_rest
    blob = make_blob(rng, w_shape, sparsity=0.6, mode=int(rng.integers(0, 2)), per_row=batch == 3)
    assert scale_count(blob) == (w_shape[0] if batch == 3 else 1)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = fmt.dequantize(blob)
    for activation in ("none", "relu"):
        model = shiftconv_model(blob, x_shape, bias=bias, activation=activation, **attrs)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            for threads in (1, 2):
                y = run_shiftconv(model, x, threads=threads, kernel=kernel)
                assert_close(y, ref, x, weight)


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_onnxruntime_conv(case):
    rng = np.random.default_rng(7)
    x_rest, w_shape, attrs = CONV_CASES[case]
    x_shape = (2,) + x_rest
    blob = make_blob(rng, w_shape, sparsity=0.5, block=2, per_row=len(case) % 2 == 0)
    weight = fmt.dequantize(blob)
    x = rng.standard_normal(x_shape).astype(np.float32)
    if attrs.get("auto_pad", "NOTSET").startswith("SAME") and any(d != 1 for d in attrs.get("dilations", [1])):
        pytest.skip("onnxruntime's Conv rejects dilation with SAME auto_pad")
    expected = ort.InferenceSession(ort_equivalent(weight, x_shape, None, "conv", **attrs).SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    y = run_shiftconv(shiftconv_model(blob, x_shape, **attrs), x, threads=2)
    assert_close(y, expected, x, weight)


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_fused_clip_matches_onnxruntime_clip(kind):
    """activation="clip" with clip_min/clip_max (a fused ReLU6) equals Conv/MatMul + Clip."""
    rng = np.random.default_rng(21)
    if kind == "conv":
        x_shape, w_shape, attrs = (2, 8, 9, 9), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])
    else:
        x_shape, w_shape, attrs = (5, 24), (10, 24), {}
    blob = make_blob(rng, w_shape, sparsity=0.5, per_row=kind == "dense")
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = (rng.standard_normal(x_shape) * 4).astype(np.float32)
    for lo, hi in ((0.0, 6.0), (-1.0, 0.5)):
        expected = ort.InferenceSession(
            ort_equivalent(weight, x_shape, bias, kind, "clip", attrs_clip=(lo, hi), **attrs).SerializeToString(),
            providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
        model = shiftconv_model(blob, x_shape, bias=bias, kind=kind, activation="clip", clip_min=lo, clip_max=hi,
                                **attrs)
        for kernel in KERNELS:
            assert_close(run_shiftconv(model, x, threads=2, kernel=kernel), expected, x, weight)
    with pytest.raises(Exception, match="clip_min must not exceed clip_max"):
        runtime.session(shiftconv_model(blob, x_shape, kind=kind, activation="clip", clip_min=1.0, clip_max=0.0,
                                        **attrs))


@pytest.mark.parametrize("packed", ["auto", "0", "1"])
@pytest.mark.parametrize("case", sorted(DENSE_CASES))
def test_dense_matches_reference_and_matmul(case, packed, monkeypatch):
    """Under auto the denser weights take the packed GEMM; 0 keeps the sparse kernels, 1 forces it."""
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", packed)
    rng = np.random.default_rng(11)
    x_shape, w_shape = DENSE_CASES[case]
    for sparsity, block, per_row in ((0.8, 1, False), (0.5, 4, True), (0.0, 1, False), (0.0, 1, True)):
        blob = make_blob(rng, w_shape, sparsity=sparsity, block=block, mode=0, bits=4, per_row=per_row)
        weight = fmt.dequantize(blob)
        bias = rng.standard_normal(w_shape[0]).astype(np.float32)
        x = rng.standard_normal(x_shape).astype(np.float32)
        for activation in ("none", "relu"):
            model = shiftconv_model(blob, x_shape, bias=bias, kind="dense", activation=activation)
            ref = reference.run(model, {"X": x})[0]
            mm = ort.InferenceSession(
                ort_equivalent(weight, x_shape, bias, "dense", activation).SerializeToString(),
                providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
            for kernel in KERNELS:
                for threads in (1, 2):
                    y = run_shiftconv(model, x, threads=threads, kernel=kernel)
                    assert_close(y, ref, x, weight)
                    assert_close(y, mm, x, weight)


def random_conv_case(rng, trial, max_size=14):
    """A random conv geometry, sparsity, mask block and quantizer setting: (model, x, weight)."""
    spatial = int(rng.integers(1, 3))
    group = int(rng.choice([1, 1, 2, 3]))
    cg = int(rng.integers(1, 7))
    mg = int(rng.integers(1, 9))
    k = [int(rng.integers(1, 5)) for _ in range(spatial)]
    s = [int(rng.integers(1, 4)) for _ in range(spatial)]
    d = [int(rng.integers(1, 3)) for _ in range(spatial)]
    size = [int(rng.integers(dk * (kk - 1) + 1, dk * (kk - 1) + max_size)) for kk, dk in zip(k, d)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * spatial)]
    batch = int(rng.integers(1, 4))
    x_shape = (batch, cg * group, *size)
    w_shape = (mg * group, cg, *k)
    bits = int(rng.integers(3, 9))
    blob = make_blob(rng, w_shape, sparsity=float(rng.uniform(0, 0.95)), mode=int(rng.integers(0, 2)),
                     bits=bits, block=int(rng.choice([1, 2, 4, 8])), per_row=trial % 3 == 0)
    weight = fmt.dequantize(blob)
    attrs = dict(strides=s, dilations=d, pads=pads, group=group)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32) if rng.random() < 0.7 else None
    model = shiftconv_model(blob, x_shape, bias=bias, **attrs)
    return model, rng.standard_normal(x_shape).astype(np.float32), weight


def test_random_shapes_match_reference():
    """Random conv geometry, sparsity, masks blocks and quantizer settings."""
    rng = np.random.default_rng(2024)
    for trial in range(40):
        model, x, weight = random_conv_case(rng, trial)
        ref = reference.run(model, {"X": x})[0]
        kernel = KERNELS[trial % len(KERNELS)]
        y = run_shiftconv(model, x, threads=1 + trial % 2, kernel=kernel)
        assert_close(y, ref, x, weight)


@pytest.mark.parametrize("split", ["auto", "tiles", "rows"])
@pytest.mark.parametrize("threads", ["2", "3", "7"])
def test_runs_per_thread_match_reference(threads, split, monkeypatch):
    """With several threads each pool task packs and computes its own run of tiles or of row
    groups (op/float_op.cc: run_per_thread; pack_span packs the rows the tiles read, the halo
    twice, and the zeros their garbage lanes read past a plane). FQ_ONNX_INLINE_WORK=0 sends
    even these small convs through the pool, FQ_ONNX_THREADS sets the number of runs and
    FQ_ONNX_THREAD_SPLIT the split: random geometry on every kernel."""
    monkeypatch.setenv("FQ_ONNX_INLINE_WORK", "0")
    monkeypatch.setenv("FQ_ONNX_THREADS", threads)
    monkeypatch.setenv("FQ_ONNX_THREAD_SPLIT", split)
    monkeypatch.setenv("FQ_ONNX_SUB_BATCH", "0")
    rng = np.random.default_rng(31 + int(threads))
    for trial in range(30):
        model, x, weight = random_conv_case(rng, trial, max_size=30)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            assert_close(run_shiftconv(model, x, threads=2, kernel=kernel), ref, x, weight)


@pytest.mark.parametrize("pad", [None, "0", "48", "1000"])
def test_padded_packed_planes_match_onnxruntime(pad, monkeypatch):
    """Batch 8 of 14x14 images packs 16x16 planes of exactly 8 KiB, whose chunk rows share L1
    sets: the plan then pads the planes (plan.cc: pick_plane). The default rule, padding off and
    forced paddings (FQ_ONNX_PLANE_PAD) must all give onnxruntime's result, stride 1 and 2."""
    if pad is not None:
        monkeypatch.setenv("FQ_ONNX_PLANE_PAD", pad)
    rng = np.random.default_rng(4096)
    for attrs in (dict(pads=[1, 1, 1, 1]), dict(pads=[1, 1, 1, 1], strides=[2, 2])):
        for block in (1, 4):
            check_relu_conv_on_every_path(rng, (8, 40, 14, 14), (24, 40, 3, 3), attrs, block)


def check_relu_conv_on_every_path(rng, x_shape, w_shape, attrs, block):
    """A random 85%-sparse Conv+ReLU gives onnxruntime's result on every kernel, 1 and 2 threads."""
    blob = make_blob(rng, w_shape, sparsity=0.85, block=block)
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    expected = ort.InferenceSession(
        ort_equivalent(weight, x_shape, bias, "conv", activation="relu", **attrs).SerializeToString(),
        providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    model = shiftconv_model(blob, x_shape, bias=bias, activation="relu", **attrs)
    for kernel in KERNELS:
        for threads in (1, 2):
            assert_close(run_shiftconv(model, x, threads=threads, kernel=kernel), expected, x, weight)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("sub_batch", [None, "0", "1", "3"])
def test_sub_batches_match_onnxruntime(sub_batch, threads, monkeypatch):
    """A batch whose packed input exceeds the L2 budget runs as sub-batches of images, each with
    its own plan (op/float_op.cc: images_per_run); FQ_ONNX_SUB_BATCH forces the split (0: the
    whole batch at once, 3: 2 + 3 images of a batch of 5). With at least as many sub-batches as
    threads (FQ_ONNX_THREADS stands in for the session's), each pool task packs and computes
    whole sub-batches, made equal in size and, by the rule, as many as a multiple of the threads
    (a batch of 5 one image at a time for 3 threads: 5 runs; of 3 images: 3). Every split must give
    onnxruntime's result: stride 1 and 2, asymmetric pads with dilation, 1-D, and 64x40x40
    images, which the default rule runs one at a time."""
    if sub_batch is not None:
        monkeypatch.setenv("FQ_ONNX_SUB_BATCH", sub_batch)
    monkeypatch.setenv("FQ_ONNX_THREADS", threads)
    rng = np.random.default_rng(777)
    cases = [
        ((5, 24, 13, 11), (16, 24, 3, 3), dict(pads=[1, 1, 1, 1]), 1),
        ((5, 24, 13, 11), (16, 24, 3, 3), dict(pads=[1, 1, 1, 1], strides=[2, 2]), 4),
        ((5, 12, 12, 13), (8, 12, 3, 2), dict(pads=[0, 2, 1, 0], dilations=[2, 1]), 1),
        ((5, 12, 30), (8, 12, 3), dict(pads=[1, 1]), 1),
        ((3, 64, 40, 40), (16, 64, 3, 3), dict(pads=[1, 1, 1, 1]), 4),
    ]
    for x_shape, w_shape, attrs, block in cases:
        check_relu_conv_on_every_path(rng, x_shape, w_shape, attrs, block)


@pytest.mark.parametrize("mode", ["auto", "rows", "flat", "0"])
def test_depthwise_direct_path_matches_reference(mode, monkeypatch):
    """Depthwise convs run unpacked (kernel DepthwiseArgs): strides 1-3, dilation, asymmetric
    pads, 1-D, rows wider than a vector and rows with all-padding taps, every CPU path, with the
    per-row and the flat (AVX-512) kernels forced by FQ_ONNX_DEPTHWISE and the packed path."""
    if mode != "auto":
        monkeypatch.setenv("FQ_ONNX_DEPTHWISE", mode)
    rng = np.random.default_rng(99)
    for trial in range(24):
        spatial = 1 if trial % 5 == 4 else 2
        c = int(rng.integers(1, 9))
        k = [int(rng.integers(1, 6)) for _ in range(spatial)]
        s = [int(rng.integers(1, 4)) for _ in range(spatial)]
        d = [int(rng.integers(1, 3)) for _ in range(spatial)]
        size = [int(rng.integers(dk * (kk - 1) + 1, dk * (kk - 1) + 40)) for kk, dk in zip(k, d)]
        pads = [int(rng.integers(0, 4)) for _ in range(2 * spatial)]
        batch = int(rng.integers(1, 4))
        x_shape = (batch, c, *size)
        blob = make_blob(rng, (c, 1, *k), sparsity=float(rng.uniform(0, 0.9)), mode=int(rng.integers(0, 2)),
                         per_row=trial % 2 == 0)
        weight = fmt.dequantize(blob)
        bias = rng.standard_normal(c).astype(np.float32) if trial % 3 else None
        activation = ("none", "relu")[trial % 2]
        model = shiftconv_model(blob, x_shape, bias=bias, activation=activation, strides=s, dilations=d,
                                pads=pads, group=c)
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            y = run_shiftconv(model, x, threads=1 + trial % 2, kernel=kernel)
            assert_close(y, ref, x, weight)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_few_row_dense_matvec_matches_reference(rows, monkeypatch):
    """Dense inputs of at most 2 rows use sparse_matvec (inline, and split over threads when
    large); 3 rows take the tiled path. Grouped (block) and unstructured masks. The packed GEMM
    (which these densities would get) is disabled."""
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "0")
    rng = np.random.default_rng(40 + rows)
    for w_shape, sparsity, block in (((40, 24), 0.6, 1), ((520, 1024), 0.5, 1), ((512, 600), 0.7, 4)):
        blob = make_blob(rng, w_shape, sparsity=sparsity, block=block, per_row=block == 4)
        weight = fmt.dequantize(blob)
        x_shape = (rows, w_shape[1])
        bias = rng.standard_normal(w_shape[0]).astype(np.float32)
        model = shiftconv_model(blob, x_shape, bias=bias, kind="dense", activation="relu")
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            for threads in (1, 2):
                assert_close(run_shiftconv(model, x, threads=threads, kernel=kernel), ref, x, weight)


def test_sparsity_extremes_and_blocks():
    """All-zero, fully dense and block-structured weights (the grouped and dense paths)."""
    rng = np.random.default_rng(5)
    x_shape = (2, 24, 10, 10)
    x = rng.standard_normal(x_shape).astype(np.float32)
    for i, (sparsity, block) in enumerate(((1.0, 1), (0.0, 1), (0.9, 4), (0.9, 8), (0.5, 3), (0.95, 16))):
        blob = make_blob(rng, (32, 24, 3, 3), sparsity=sparsity, block=block, per_row=i % 2 == 1)
        model = shiftconv_model(blob, x_shape, bias=np.ones(32, np.float32), pads=[1, 1, 1, 1])
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            assert_close(run_shiftconv(model, x, threads=2, kernel=kernel), ref, x, fmt.dequantize(blob))


# --- decoded weights are bit-identical to fmt.dequantize ---------------------------------------

LEVEL_SETTINGS = [
    fmt.QuantParams(mode=0, bits=2, alpha=0.5, b=0),
    fmt.QuantParams(mode=0, bits=5, alpha=0.0123, b=7),
    fmt.QuantParams(mode=0, bits=8, alpha=1e-3, b=126),
    fmt.QuantParams(mode=0, bits=8, alpha=1e-30, b=0),
    fmt.QuantParams(mode=0, bits=3, alpha=1e-38, b=3),  # subnormal levels
    fmt.QuantParams(mode=1, bits=3, alpha=0.3, centre0=-1.0, centre1=1.0, b=0),
    fmt.QuantParams(mode=1, bits=5, alpha=0.037, centre0=-0.71, centre1=0.53, b=2),
    # centre_c = -t for some codes: levels of exactly +-0.
    fmt.QuantParams(mode=1, bits=4, alpha=0.25, centre0=-0.5, centre1=0.5, b=1),
    fmt.QuantParams(mode=1, bits=8, alpha=3.3e-5, centre0=-17.25, centre1=123.0, b=40),
]


def exact_row_scales(params: fmt.QuantParams, rows: int) -> np.ndarray:
    """Per-row scales from 1e-3 to 1e3 times params.alpha (not powers of two: real roundings)."""
    factors = np.array([1.0, 1e-3, 7.3, 1e3, 0.37, 1e-2, 123.4], np.float32)[np.arange(rows) % 7]
    return (np.float32(params.alpha) * factors).astype(np.float32)


@pytest.mark.parametrize("per_row", [False, True], ids=["A1", "Arows"])
@pytest.mark.parametrize("params", LEVEL_SETTINGS, ids=lambda p: f"m{p.mode}b{p.bits}b{p.b}")
def test_dense_identity_returns_exact_weights(params, per_row):
    rng = np.random.default_rng(params.bits)
    m, k = 37, 2 * params.value_count + 3
    codes = rng.integers(0, params.value_count, size=(m, k))
    codes[:, : params.value_count] = np.arange(params.value_count)  # every level appears in every row
    codes[rng.random((m, k)) < 0.3] = -1
    alphas = exact_row_scales(params, m) if per_row else None
    blob = fmt.encode(codes, params, alphas=alphas)
    assert scale_count(blob) == (m if per_row else 1)
    weight = fmt.dequantize(blob)
    if per_row:
        # The Python decoder's per-row levels: alpha[r] * u(v), one float32 multiplication.
        decoded = fmt.decode(blob)
        np.testing.assert_array_equal(decoded.alphas, alphas)
        u = fmt.unit_levels(params)
        expected = np.where(codes < 0, np.float32(0), alphas[:, None] * u[np.maximum(codes, 0)])
        assert weight.tobytes() == expected.astype(np.float32).tobytes()
    model = shiftconv_model(blob, (k, k), kind="dense")
    eye = np.eye(k, dtype=np.float32)
    for kernel in KERNELS:
        y = run_shiftconv(model, eye, threads=2, kernel=kernel)
        # y = I @ W^T bit for bit; +-0 levels come back as +0 (compared as values), every other
        # weight with its exact bits.
        np.testing.assert_array_equal(y, weight.T)
        nonzero = weight.T != 0
        assert y[nonzero].tobytes() == weight.T[nonzero].tobytes()


def test_per_row_scales_equal_to_one_scale_give_identical_outputs():
    """A = dims[0] with every row's scale equal to alpha decodes exactly like A = 1."""
    rng = np.random.default_rng(13)
    params = fmt.QuantParams(mode=1, bits=5, alpha=0.0371, centre0=-0.8, centre1=1.3, b=2)
    codes = random_codes(rng, (12, 20), 0.4, 5)
    one = fmt.encode(codes, params)
    rows = fmt.encode(codes, params, alphas=np.full(12, params.alpha, np.float32))
    assert scale_count(one) == 1 and scale_count(rows) == 12 and len(rows) == len(one) + 4 * 11
    x = rng.standard_normal((6, 20)).astype(np.float32)
    for kernel in KERNELS:
        a = run_shiftconv(shiftconv_model(one, x.shape, kind="dense"), x, kernel=kernel)
        b = run_shiftconv(shiftconv_model(rows, x.shape, kind="dense"), x, kernel=kernel)
        assert a.tobytes() == b.tobytes()


def test_per_row_scales_of_very_different_magnitudes():
    """Rows scaled from 1e-6 to 1e4: each output channel keeps its own relative precision."""
    rng = np.random.default_rng(14)
    params = fmt.QuantParams(mode=0, bits=6, alpha=1.0, b=20)
    m, c = 11, 5
    alphas = (10.0 ** np.linspace(-6, 4, m)).astype(np.float32)
    blob = fmt.encode(random_codes(rng, (m, c, 3, 3), 0.3, 6), params, alphas=alphas)
    weight = fmt.dequantize(blob)
    x = rng.standard_normal((2, c, 7, 7)).astype(np.float32)
    model = shiftconv_model(blob, x.shape, pads=[1, 1, 1, 1])
    expected = ort.InferenceSession(ort_equivalent(weight, x.shape, None, "conv", pads=[1, 1, 1, 1])
                                    .SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    for kernel in KERNELS:
        y = run_shiftconv(model, x, threads=2, kernel=kernel)
        for r in range(m):  # per channel, no absolute floor: a global tolerance would hide small rows
            scale = float(np.abs(x).max()) * float(np.abs(weight[r]).sum())
            err = float(np.abs(y[:, r].astype(np.float64) - expected[:, r]).max())
            assert 0 < scale and err <= 1e-5 * scale, (r, err, scale)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_delta_returns_exact_kernels(k):
    """An impulse in channel c of image c reads back W[:, c] (flipped) from the output."""
    rng = np.random.default_rng(k)
    c, m = 6, 9
    blob = make_blob(rng, (m, c, k, k), sparsity=0.4, mode=1, bits=6, per_row=k != 1)
    weight = fmt.dequantize(blob)
    x = np.zeros((c, c, k, k), np.float32)
    for i in range(c):
        x[i, i, 0, 0] = 1.0
    model = shiftconv_model(blob, x.shape, pads=[k - 1] * 4)
    for kernel in KERNELS:
        y = run_shiftconv(model, x, threads=2, kernel=kernel)
        got = y[:, :, :k, :k][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        np.testing.assert_array_equal(got, weight)


# --- inputs the kernel must handle -----------------------------------------------------------

def test_bias_as_runtime_input_and_no_bias():
    rng = np.random.default_rng(3)
    blob = make_blob(rng, (8, 4, 3, 3))
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    model = shiftconv_model(blob, x.shape, bias=bias, bias_as_input=True)
    ref = reference.run(model, {"X": x, "B": bias})[0]
    y = runtime.session(model).run(None, {"X": x, "B": bias})[0]
    assert_close(y, ref, x, fmt.dequantize(blob))
    with pytest.raises(Exception, match=f"{NODE}.*bias"):
        runtime.session(model).run(None, {"X": x, "B": bias[:5]})
    plain = shiftconv_model(blob, x.shape)
    assert_close(run_shiftconv(plain, x), reference.run(plain, {"X": x})[0], x, fmt.dequantize(blob))


def test_empty_batch():
    rng = np.random.default_rng(4)
    blob = make_blob(rng, (8, 4, 3, 3))
    model = shiftconv_model(blob, (None, 4, 7, 7), strides=[2, 2])
    y = run_shiftconv(model, np.zeros((0, 4, 7, 7), np.float32))
    assert y.shape == (0, 8, 3, 3)
    dense = shiftconv_model(make_blob(rng, (5, 6)), (None, 6), kind="dense")
    assert run_shiftconv(dense, np.zeros((0, 6), np.float32)).shape == (0, 5)


def test_changing_input_shapes_in_one_session():
    rng = np.random.default_rng(6)
    blob = make_blob(rng, (8, 4, 3, 3))
    model = shiftconv_model(blob, (None, 4, None, None), pads=[1, 1, 1, 1])
    sess = runtime.session(model, threads=2)
    for shape in [(1, 4, 5, 5), (3, 4, 9, 4), (1, 4, 5, 5), (2, 4, 1, 1)] * 3:
        x = rng.standard_normal(shape).astype(np.float32)
        assert_close(sess.run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))


def test_wrong_input_channels_is_an_error_naming_the_node():
    rng = np.random.default_rng(8)
    model = shiftconv_model(make_blob(rng, (8, 4, 3, 3)), (1, None, 6, 6))
    sess = runtime.session(model)
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*channels"):
        sess.run(None, {"X": np.zeros((1, 5, 6, 6), np.float32)})
    dense = runtime.session(shiftconv_model(make_blob(rng, (5, 6)), (None,), kind="dense"))
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*K = 6"):
        dense.run(None, {"X": np.zeros((7,), np.float32)})
    small = runtime.session(shiftconv_model(make_blob(rng, (8, 4, 3, 3)), (1, 4, None, None)))
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*smaller than"):
        small.run(None, {"X": np.zeros((1, 4, 2, 2), np.float32)})


def test_concurrent_runs_on_one_session():
    rng = np.random.default_rng(9)
    blob = make_blob(rng, (32, 16, 3, 3), sparsity=0.8)
    model = shiftconv_model(blob, (None, 16, 14, 14), pads=[1, 1, 1, 1], activation="relu")
    sess = runtime.session(model, threads=2)
    inputs = [rng.standard_normal((1 + i % 3, 16, 14, 14)).astype(np.float32) for i in range(8)]
    expected = [sess.run(None, {"X": x})[0] for x in inputs]
    def check(thread, run):
        i = (thread + run) % len(inputs)
        assert np.array_equal(sess.run(None, {"X": inputs[i]})[0], expected[i]), "result differs"

    run_concurrently(check)


# --- untrusted blobs: every violation is a clean error at session creation ---------------------

def _fix_crc(blob: bytes) -> bytes:
    body = blob[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _base_blob():
    rng = np.random.default_rng(10)
    codes = random_codes(rng, (8, 4, 3, 3), 0.7, 5)
    params = fmt.QuantParams(mode=1, bits=5, alpha=0.1, centre0=-1.0, centre1=1.0, b=2)
    return fmt.encode(codes, params, run_max=3)


def _per_row_blob():
    """dims[0] = 5 rows, A = 5 scales from 1e-3 to 10."""
    rng = np.random.default_rng(15)
    codes = random_codes(rng, (5, 4, 3, 3), 0.5, 5)
    params = fmt.QuantParams(mode=1, bits=5, alpha=0.1, centre0=-1.0, centre1=1.0, b=2)
    return fmt.encode(codes, params, run_max=1, alphas=np.array([0.1, 1e-3, 10.0, 0.37, 2.5], np.float32))


def _layout(blob: bytes):
    """Offsets per FORMAT.md: h (A), a (centre0; the scales are h+4 .. a), table, payload."""
    ndim = blob[7]
    h = 12 + 4 * ndim
    (count,) = struct.unpack_from("<I", blob, h)
    a = h + 4 + 4 * count
    bits, run_max = blob[6], blob[9]
    symbols = (run_max + 1) * (1 << bits) + 1
    table = a + 20
    payload = table + (symbols + 1) // 2
    return h, a, table, payload, symbols


def _set(blob: bytes, offset: int, fmt_char: str, value) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<" + fmt_char, b, offset, value)
    return bytes(b)


def corruptions():
    """One case per decoder rule on a single-node model. The user-facing corpus (a real
    converted model, every tool, the common corruptions: magic, version, CRC, lengths, giant
    sizes, Huffman tables, scales, bias, clip bounds, non-constant weights) is tests/malformed.py."""
    blob = _base_blob()
    h, a, table, payload, symbols = _layout(blob)
    assert a == h + 8
    n_table = payload - table
    cases = {
        "truncated-header": (blob[:10], "too short"),
        "mode": (_fix_crc(_set(blob, 5, "B", 7)), "mode"),
        "bits": (_fix_crc(_set(blob, 6, "B", 9)), "bits"),
        "ndim-0": (_fix_crc(_set(blob, 7, "B", 0)), "ndim"),
        "ndim-9": (_fix_crc(_set(blob, 7, "B", 9)), "ndim"),
        "block-0": (_fix_crc(_set(blob, 8, "B", 0)), "block"),
        "reserved": (_fix_crc(_set(blob, 10, "H", 1)), "reserved"),
        "dim-zero": (_fix_crc(_set(blob, 12, "I", 0)), "dimension"),
        "alpha-nan": (_fix_crc(_set(blob, h + 4, "f", float("nan"))), "alpha"),
        "alpha-inf": (_fix_crc(_set(blob, h + 4, "f", float("inf"))), "alpha"),
        "alpha-negative": (_fix_crc(_set(blob, h + 4, "f", -0.1)), "alpha"),
        "alpha-zero": (_fix_crc(_set(blob, h + 4, "f", 0.0)), "alpha"),
        "A-zero": (_fix_crc(_set(blob, h, "I", 0)), "scale count A=0 must be 1 or dims"),
        "A-2-of-8": (_fix_crc(_set(blob, h, "I", 2)), "scale count A=2 must be 1 or dims"),
        # A = dims[0] = 8 but the blob holds one scale: the rest of the header is misread.
        "A-8-one-scale": (_fix_crc(_set(blob, h, "I", 8)), "."),
        "centre-inf": (_fix_crc(_set(blob, a, "f", float("-inf"))), "centres"),
        "b-range": (_fix_crc(_set(blob, a + 8, "i", 200)), "exponent offset"),
        "b-int-min": (_fix_crc(_set(blob, a + 8, "i", -(2**31))), "exponent offset"),
        "level-overflow": (_fix_crc(_set(_set(blob, h + 4, "f", 3e38), a + 8, "i", -100)), "overflows"),
        "tokens-beyond-payload": (_fix_crc(_set(blob, a + 12, "I", 288)), "ends|cannot fit|matches no code|tensor has"),
        # Nibbles cannot exceed 15; all-15 lengths form a valid but incomplete table.
        "all-lengths-15": (_fix_crc(blob[:table] + bytes([0xFF]) * (n_table - 1) + bytes([0x0F]) + blob[payload:]),
                           "matches no code"),
        "too-few-tokens": (_fix_crc(_set(blob, a + 12, "I", struct.unpack_from("<I", blob, a + 12)[0] // 2)),
                           "longer than its tokens|padding|tensor has"),
    }
    # Escapes running past the end: a single used symbol, the escape, with one-bit codes.
    esc = _fix_crc(blob[:table] + bytes(n_table - 1) + bytes([0x01 if symbols % 2 else 0x10]) + b"\0" * 200
                   + blob[-4:])
    esc = _fix_crc(_set(_set(esc, a + 12, "I", 288), a + 16, "I", 200)[: payload + 200] + b"\0\0\0\0")
    cases["escape-past-end"] = (esc, "elements but the tensor has")
    # Unused high nibble of the last table byte.
    if symbols % 2:
        b = bytearray(blob)
        b[payload - 1] |= 0x10
        cases["high-nibble"] = (_fix_crc(bytes(b)), "nibble|over-subscribed")

    # One scale per row (A = dims[0] = 5).
    rows = _per_row_blob()
    h, a, table, payload, symbols = _layout(rows)
    assert struct.unpack_from("<I", rows, h)[0] == 5 and a == h + 4 + 20
    cases.update({
        "rows-A-zero": (_fix_crc(_set(rows, h, "I", 0)), "scale count A=0 must be 1 or dims"),
        "rows-A-2-of-5": (_fix_crc(_set(rows, h, "I", 2)), r"scale count A=2 must be 1 or dims\[0\]=5"),
        "rows-A-6-of-5": (_fix_crc(_set(rows, h, "I", 6)), "scale count A=6 must be 1 or dims"),
        # A huge and equal to dims[0] (2^24 rows of 4 elements): refused by the blob's length
        # before 64 MB of scales are read or allocated.
        "rows-A-huge-matching-dims": (
            _fix_crc(_set(_set(_set(_set(_set(rows, 12, "I", 1 << 24), 16, "I", 4), 20, "I", 1), 24, "I", 1),
                          h, "I", 1 << 24)), "ends inside the scales"),
        # A = 1 on a blob holding five scales: the other scales are read as the later fields.
        "rows-A-1": (_fix_crc(_set(rows, h, "I", 1)), "."),
        "rows-alpha-zero": (_fix_crc(_set(rows, h + 4 + 4 * 4, "f", 0.0)), r"alpha\[4\]"),
        "rows-alpha-minus-zero": (_fix_crc(_set(rows, h + 4, "f", -0.0)), r"alpha\[0\]"),
        # Row 2's scale alone makes its levels overflow (the first row's are fine).
        "rows-level-overflow": (_fix_crc(_set(rows, h + 4 + 4 * 2, "f", 3e37)), "overflows"),
        "rows-truncated-scales": (rows[: h + 4 + 4 * 2], "ends inside the scales"),
        "rows-truncated-scales-crc": (_fix_crc(rows[: h + 4 + 4 * 3 + 4]), "ends inside the scales"),
        "rows-one-scale-removed": (_fix_crc(rows[: h + 4 + 4 * 4] + rows[a:]), "."),
        "rows-truncated": (rows[:-5], "bytes but its header declares"),
        "rows-crc": (rows[:-1] + bytes([rows[-1] ^ 1]), "CRC-32"),
    })
    return cases


CORRUPTIONS = corruptions()


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_blob_fails_cleanly(name):
    blob, message = CORRUPTIONS[name]
    model = shiftconv_model(blob, (1, 4, 6, 6), pads=[1, 1, 1, 1])
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'") as info:
        runtime.session(model)
    assert __import__("re").search(message, str(info.value)), str(info.value)
    # The reference decoder rejects the same blob.
    if blob:
        with pytest.raises(fmt.FormatError):
            fmt.dequantize(blob)


@pytest.mark.parametrize("attrs, message", [
    (dict(kernel_shape=[5, 5]), "kernel_shape"),
    (dict(group=3), "divisible by group"),
    (dict(kind="dense"), "rank 2"),
    (dict(kind="pool"), "unknown kind"),
    (dict(activation="gelu"), "unknown activation"),
    (dict(strides=[1]), "strides"),
    (dict(pads=[1, 1]), "pads"),
    (dict(auto_pad="SAME"), "auto_pad"),
])
def test_blob_disagreeing_with_node_fails_cleanly(attrs, message):
    blob = _base_blob()
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*{message}"):
        runtime.session(shiftconv_model(blob, (1, 4, 6, 6), **attrs))


def test_bias_length_and_conv_rank_fail_cleanly():
    blob = _base_blob()
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*bias"):
        runtime.session(shiftconv_model(blob, (1, 4, 6, 6), bias=np.zeros(5, np.float32)))
    conv3d = fmt.encode(np.zeros((2, 2, 2, 2, 2), np.int64), fmt.QuantParams(mode=0, bits=3, alpha=1.0))
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*rank 3 or 4"):
        runtime.session(shiftconv_model(conv3d, (1, 2, 4, 4, 4)))


@pytest.mark.parametrize("per_row", [False, True], ids=["A1", "Arows"])
def test_random_corruption_never_crashes(per_row):
    """Byte flips anywhere, with the checksum recomputed so the deeper checks are reached."""
    base = _per_row_blob() if per_row else _base_blob()
    rng = np.random.default_rng(12)
    failures = 0
    for _ in range(300):
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b) - 4))] ^= int(rng.integers(1, 256))
        blob = _fix_crc(bytes(b))
        model = shiftconv_model(blob, (1, 4, 6, 6), pads=[1, 1, 1, 1])
        try:
            sess = runtime.session(model)
        except Exception as exc:
            assert f"ShiftConv node '{NODE}'" in str(exc)
            failures += 1
            continue
        # Accepted blobs must decode to what the Python decoder says.
        x = np.ones((1, 4, 6, 6), np.float32)
        try:
            y = sess.run(None, {"X": x})[0]
        except Exception as exc:  # e.g. a flipped dimension that no longer fits X
            assert f"ShiftConv node '{NODE}'" in str(exc)
            continue
        assert_close(y, reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))
    assert failures > 100


def test_huge_declared_zero_tensor_is_cheap():
    """2^28 declared elements and no tokens: valid, and decoded without allocating 1 GB."""
    import resource

    blob = fmt.encode(np.full((1, 1), -1), fmt.QuantParams(mode=0, bits=2, alpha=1.0))
    blob = _fix_crc(_set(_set(blob, 12, "I", 1 << 14), 16, "I", 1 << 14))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = shiftconv_model(blob, (1, 1 << 14), kind="dense")
    sess = runtime.session(model)
    y = sess.run(None, {"X": np.ones((1, 1 << 14), np.float32)})[0]
    assert y.shape == (1, 1 << 14) and not y.any()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


# --- library hygiene ---------------------------------------------------------------------------

def test_library_exports_only_its_c_entry_points():
    lib = ctypes.CDLL(runtime.library_path())
    for name in ("RegisterCustomOps", "fq_onnx_weight_info", "fq_onnx_decode_dense"):  # op/exports.map
        assert hasattr(lib, name)
    for hidden in ("_ZN2fq12decode_weightEPKhm", "_ZN2fq5crc32EPKhm", "OrtGetApiBase"):
        assert not hasattr(lib, hidden)


def test_library_does_not_link_onnxruntime():
    with open(runtime.library_path(), "rb") as f:
        data = f.read()
    # DT_NEEDED names live in .dynstr; onnxruntime must not be among them.
    assert b"libonnxruntime.so" not in data


@pytest.mark.parametrize("kernel", ["scalar", "avx2", "avx512"])
def test_forcing_a_kernel_the_cpu_lacks_is_a_clear_error(kernel):
    blob = _base_blob()
    model = shiftconv_model(blob, (1, 4, 6, 6))
    if kernel in KERNELS:
        runtime.session(model, kernel=kernel)
    else:
        with pytest.raises(Exception, match="lacks|no x86 SIMD"):
            runtime.session(model, kernel=kernel)


def test_kernel_choice_from_environment(monkeypatch):
    blob = _base_blob()
    model = shiftconv_model(blob, (1, 4, 6, 6))
    monkeypatch.setenv(runtime.KERNEL_ENV, "bogus")
    with pytest.raises(Exception, match="unknown kernel choice 'bogus'"):
        runtime.session(model)
    # The session config entry wins over the environment.
    runtime.session(model, kernel="scalar")
    monkeypatch.setenv(runtime.KERNEL_ENV, "scalar")
    runtime.session(model)


@pytest.mark.parametrize("mode", ["auto", "flat"])
def test_small_plane_depthwise_matches_reference(mode, monkeypatch):
    """Depthwise planes of at most 256 output pixels at stride 1 with equal row lengths in and
    out run depthwise_small (per-tap flat offsets and lane masks): 1x1 to 16x16 planes (256
    pixels exactly, a partial last vector), kernels 1-5, dilation, pads that change the height
    (OH != H) or are asymmetric, pruned taps, batch 1-3, 1 and 2 threads, every CPU path.
    FQ_ONNX_DEPTHWISE=flat runs the previous kernels on the same cases."""
    if mode != "auto":
        monkeypatch.setenv("FQ_ONNX_DEPTHWISE", mode)
    rng = np.random.default_rng(123)
    cases = [  # (H, W, kh, kw, dh, dw, pads [t, l, b, r])
        (7, 7, 3, 3, 1, 1, [1, 1, 1, 1]), (14, 14, 3, 3, 1, 1, [1, 1, 1, 1]), (16, 16, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 1, 3, 3, 1, 1, [1, 1, 1, 1]), (5, 9, 5, 5, 1, 1, [2, 2, 2, 2]), (9, 6, 3, 3, 2, 2, [2, 2, 2, 2]),
        (8, 7, 3, 3, 1, 1, [0, 1, 0, 1]), (6, 10, 3, 3, 1, 1, [3, 0, 1, 2]), (4, 4, 1, 1, 1, 1, [0, 0, 0, 0]),
        (13, 11, 2, 4, 1, 1, [1, 2, 0, 1]), (3, 20, 3, 3, 1, 1, [1, 1, 1, 1]),
    ]
    for trial, (h, w, kh, kw, dh, dw, pads) in enumerate(cases):
        c = int(rng.integers(1, 20))
        batch = 1 + trial % 3
        blob = make_blob(rng, (c, 1, kh, kw), sparsity=float(rng.choice([0.0, 0.5, 0.85, 1.0])),
                         mode=int(rng.integers(0, 2)), per_row=trial % 2 == 0)
        weight = fmt.dequantize(blob)
        bias = rng.standard_normal(c).astype(np.float32) if trial % 3 else None
        act = dict(activation="clip", clip_min=-0.5, clip_max=0.75) if trial % 2 else dict(activation="relu")
        x_shape = (batch, c, h, w)
        model = shiftconv_model(blob, x_shape, bias=bias, dilations=[dh, dw], pads=pads, group=c, **act)
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = reference.run(model, {"X": x})[0]
        assert ref.shape[3] == w  # equal row lengths: the small-plane layout
        for kernel in KERNELS:
            for threads in (1, 2):
                y = runtime.session(model, threads=threads, kernel=kernel, config={runtime.DENSE_CONFIG_KEY: "own"}).run(
                    None, {"X": x})[0]
                assert_close(y, ref, x, weight)


@pytest.mark.parametrize("block", [1, 4])
def test_very_sparse_long_rows_match_reference(block, monkeypatch):
    """Rows much longer than their nonzeros choose row groups by merging the rows' tap lists
    (plan.cc merge_rows) instead of marking a row-length scratch: the same groups and results."""
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "0")
    rng = np.random.default_rng(77 + block)
    cases = [(((2, 60000), (16, 60000)), dict(kind="dense")),
             (((1, 512, 5, 5), (16, 512, 3, 3)), dict(pads=[1, 1, 1, 1]))]
    for (x_shape, w_shape), attrs in cases:
        blob = make_blob(rng, w_shape, sparsity=0.995, block=block, per_row=True)
        weight = fmt.dequantize(blob)
        model = shiftconv_model(blob, x_shape, bias=rng.standard_normal(w_shape[0]).astype(np.float32), **attrs)
        x = rng.standard_normal(x_shape).astype(np.float32)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            assert_close(run_shiftconv(model, x, threads=2, kernel=kernel), ref, x, weight)


@pytest.mark.parametrize("run_max", fmt.RUN_MAX_CHOICES)
def test_token_decoder_every_run_length_size_and_skew(run_max):
    """The C++ token reader (decode.cc: up to three tokens per table lookup, the last tokens one
    at a time from a padded copy) decodes exactly what fmt.dequantize does, for every run
    length, for tensors from 1 element to a few thousand (tokens around its 9-token and
    8-byte boundaries) and for code distributions from flat to one dominant level (1-bit
    codes, three tokens in one lookup) with 8-bit codes (codes longer than the 11-bit table)."""
    rng = np.random.default_rng(1000 + run_max)
    shapes = [(1, 1), (1, 5), (1, 9), (1, 10), (2, 9), (3, 17), (4, 31), (20, 15), (60, 50)]
    for bits, skew in ((2, 0.0), (5, 0.0), (5, 0.97), (8, 0.0), (8, 0.9)):
        params = fmt.QuantParams(mode=0, bits=bits, alpha=0.05, b=2)
        for sparsity in (0.0, 0.5, 0.97):
            for m, k in shapes:
                codes = rng.integers(0, params.value_count, size=(m, k))
                codes[rng.random((m, k)) < skew] = 1  # one dominant level
                codes[rng.random((m, k)) < sparsity] = -1
                blob = fmt.encode(codes, params, run_max=run_max)
                weight = fmt.dequantize(blob)
                y = run_shiftconv(shiftconv_model(blob, (k, k), kind="dense"), np.eye(k, dtype=np.float32))
                assert y.tobytes() == np.ascontiguousarray(weight.T).tobytes(), (bits, skew, sparsity, m, k)
