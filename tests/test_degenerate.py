"""Degenerate layers seen in real models (issue 16, item 7) never end in an internal error.

PP-OCRv4's recognizer has depthwise 5x5 channels whose folded weights are ~1e-17 next to
channels of ~1: calibrated at high sparsity each row keeps one weight, the normalised kept
weights are exactly +-1, the mixture's components have zero spread, and the level set's scale
collapsed to ~1e-31, so the per-row scales underflowed to 0 and encoding raised
``FormatError: alpha must be finite and positive``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_model, tensor
from fq_onnx import api, fmt, focus
from fq_onnx.errors import FqOnnxError
from fq_onnx.options import ConvertOptions
from fq_onnx.calibrate import LayerStats
from fq_onnx.compress import LayerOptions, compress_layer


def _stats(k: int, groups: int, rng: np.random.Generator) -> LayerStats:
    x = rng.standard_normal((groups, 400, k))
    return LayerStats(np.matmul(x.transpose(0, 2, 1), x), x.sum(axis=1), 400)


def _tiny_row_depthwise(rng: np.random.Generator, tiny: float = 1e-30, channels: int = 16) -> np.ndarray:
    weight = rng.standard_normal((channels, 1, 5, 5)).astype(np.float32)
    weight[3] *= np.float32(tiny)
    return weight


@pytest.mark.parametrize("bits", [3, 5, 7])
@pytest.mark.parametrize("tiny", [1e-30, 1e-43])  # 1e-43: float32 denormals, whose row scale underflows
def test_depthwise_row_of_near_zero_weights_encodes(bits, tiny):
    rng = np.random.default_rng(0)
    weight = _tiny_row_depthwise(rng, tiny)
    options = LayerOptions(bits=bits, prune_method="obs", rounding="gptq-cd", bias_correction=True)
    result = compress_layer(weight, None, 0.95, options, _stats(25, 16, rng))
    alphas = result.layer.alphas
    assert np.all(np.isfinite(alphas)) and np.all(alphas > 0)
    decoded = fmt.dequantize(result.layer.encode())
    assert np.all(np.isfinite(decoded))
    normal = np.ones(16, bool)
    normal[3] = False
    # the normal rows keep their one weight each, coded to within a few percent
    kept = result.layer.codes[normal] >= 0
    np.testing.assert_allclose(decoded[normal][kept], result.layer.dequantized()[normal][kept])
    assert np.max(np.abs(decoded[3])) < 1e-20 + 64 * tiny


def test_level_set_of_identical_magnitudes_keeps_a_normal_scale():
    """Kept weights of exactly +-1 (one per row): the focused centres are +-1 and the scale is
    not ~1e-30 (which made the stored centres 1e17 and the row scales underflow)."""
    values = np.where(np.random.default_rng(1).random(64) < 0.5, -1.0, 1.0)
    levels = focus.fit_levels(values, bits=5)
    assert levels.params.alpha > 1e-6
    table = levels.table
    assert np.min(np.abs(table[:, None] - np.array([-1.0, 1.0])[None, :])) < 1e-2
    codes = levels.codes(values)
    np.testing.assert_allclose(table[codes], values, atol=1e-2)


def _depthwise_model(rng: np.random.Generator) -> onnx.ModelProto:
    """X -> Conv 3x3 (32) -> Relu -> depthwise 5x5 with one near-zero channel -> Conv 1x1 -> Y."""
    w1 = rng.standard_normal((32, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = _tiny_row_depthwise(rng, 1e-30, channels=32) * 0.3
    w3 = rng.standard_normal((8, 32, 1, 1)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["X", "W1"], ["a"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "W2"], ["d"], name="depthwise", group=32, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["d", "W3"], ["Y"], name="project"),
    ]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3, 12, 12])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 8, 12, 12])
    return make_model(nodes, [x], [y], [tensor("W1", w1), tensor("W2", w2), tensor("W3", w3)])


def test_calibrated_allocation_of_a_model_with_a_near_zero_channel(tmp_path, monkeypatch):
    """The PP-OCRv4 recognizer crash, end to end: calibrated --target-ratio converts."""
    monkeypatch.setenv("FQ_ONNX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    source = tmp_path / "dw.onnx"
    onnx.save(_depthwise_model(rng), source)
    calib = rng.standard_normal((16, 3, 12, 12)).astype(np.float32)
    report = api.convert(source, tmp_path / "dw.fq.onnx", calib=calib, calib_size=16, target_ratio=6,
                         alloc_bits=(3, 5))
    assert (tmp_path / "dw.fq.onnx").exists()
    assert report.totals.ratio > 1


def _dfl_weight() -> np.ndarray:
    """YOLOv8's DFL conv: one output channel, weights 0..15 (the expected bin of a distribution)."""
    return np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)


@pytest.mark.parametrize("calibrated", [False, True])
def test_single_output_row_keeps_its_scale(calibrated):
    """A layer of one output row has one per-row scale; dequantizing must use it, not the level
    set's alpha: refine_alphas, the errors and bias correction all read the dequantized weights
    (YOLOv8n's DFL conv was stored at 0.6x its scale, relative error 0.89)."""
    rng = np.random.default_rng(3)
    weight = _dfl_weight()
    stats = _stats(16, 1, rng) if calibrated else None
    options = LayerOptions(bits=5, prune_method="obs", rounding="gptq-cd", bias_correction=True) if calibrated \
        else LayerOptions(bits=5)
    result = compress_layer(weight, np.zeros(1, np.float32), 0.0, options, stats)
    decoded = fmt.dequantize(result.layer.encode())
    np.testing.assert_array_equal(decoded, result.layer.dequantized())
    error = np.linalg.norm(decoded - weight) / np.linalg.norm(weight)
    assert error < 0.2 and abs(result.layer.rel_error - error) < 1e-6


def test_one_scale_given_is_used():
    params = fmt.QuantParams(fmt.MODE_SHIFT, 5, 2.0, 0.0, 0.0, 15)
    codes = np.array([[15, 14, -1]])
    np.testing.assert_array_equal(fmt.dequantize_codes(codes, params, np.array([4.0], np.float32)),
                                  2 * fmt.dequantize_codes(codes, params))


# ---- issue 16 item 7, end to end: every degenerate layer through plain, calibrated and integer mode
def _chain_model(convs: list[np.ndarray], gemm: np.ndarray) -> onnx.ModelProto:
    """X -> Conv(convs[0]) -> Relu -> ... -> GlobalAveragePool -> Flatten -> Gemm(gemm) -> Y; a conv
    whose weight has fewer input channels than its input is grouped (depthwise when it has 1)."""
    channels = convs[0].shape[1]
    nodes, inits, last = [], [], "X"
    for i, weight in enumerate(convs):
        pad = weight.shape[-1] // 2
        nodes.append(helper.make_node("Conv", [last, f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}",
                                      group=channels // weight.shape[1], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        inits += [tensor(f"W{i}", weight), tensor(f"B{i}", np.full(weight.shape[0], 0.1))]
        channels, last = weight.shape[0], f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="pool"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "Wg", "Bg"], ["Y"], name="fc")]
    inits += [tensor("Wg", gemm), tensor("Bg", np.full(gemm.shape[1], 0.1))]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, convs[0].shape[1], 6, 6])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, gemm.shape[1]])
    return make_model(nodes, [x], [y], inits)


def _degenerate(case: str) -> tuple[onnx.ModelProto, str]:
    """A small CNN with one degenerate layer (the node named second)."""
    rng = np.random.default_rng(7)
    stem = rng.standard_normal((16, 4, 3, 3)).astype(np.float32) * 0.3
    middle = rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.1
    gemm = rng.standard_normal((16, 10)).astype(np.float32) * 0.3
    if case == "constant":
        middle = np.full_like(middle, 0.05)
    elif case == "zero":
        middle = np.zeros_like(middle)
    elif case == "near-zero":
        middle *= np.float32(1e-30)
    elif case == "huge":
        middle *= np.float32(1e30)
    elif case == "mixed-rows":  # rows of ~1e-26 and ~1e11 among normal rows
        middle[:4] *= np.float32(1e-25)
        middle[4:6] *= np.float32(1e12)
    elif case == "one-weight":  # a 1x1 conv of one input and one output channel, then the rest
        return _chain_model([np.full((1, 1, 1, 1), 0.7, np.float32), stem[:, :1], middle], gemm), "conv0"
    elif case == "gemm-one-row":  # one output
        return _chain_model([stem, middle], gemm[:, :1]), "fc"
    elif case != "normal":
        raise ValueError(case)
    return _chain_model([stem, middle], gemm), "conv1"


DEGENERATE = ("constant", "zero", "near-zero", "huge", "mixed-rows", "one-weight", "gemm-one-row")
# Plain conversions round only (sparsity 0): magnitude pruning cannot see the inputs, so it removes
# an arbitrary 30% of a constant layer and the Gemm weights that read the 1e12 rows' outputs (an
# output error of 0.5-0.6 here, pruning's, not the degenerate layer's); calibrated pruning can.
MODES = {"plain": {"sparsity": 0.0}, "calibrated": {"calib_size": 16, "sparsity": 0.3},
         "int8": {"calib_size": 16, "sparsity": 0.3, "act_bits": 8}}


def _run(path, x: np.ndarray) -> np.ndarray:
    from fq_onnx import runtime

    return runtime.session(str(path)).run(None, {"X": x})[0]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_layer_converts_and_runs(case, mode, tmp_path, monkeypatch):
    """Compressed with --min-weights 0 (every layer, however small): no internal error, finite
    outputs close to the original's."""
    monkeypatch.setenv("FQ_ONNX_CACHE", str(tmp_path / "cache"))
    model, _ = _degenerate(case)
    source = tmp_path / "m.onnx"
    onnx.save(model, source)
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.abs(np.random.default_rng(8).standard_normal((16, channels, 6, 6))).astype(np.float32)
    kwargs = dict(MODES[mode])
    if "calib_size" in kwargs:
        kwargs["calib"] = x
    report = api.convert(source, tmp_path / "m.fq.onnx", min_weights=0, **kwargs)
    assert {r.mode for r in report.layers} <= {"FQ", "shift"}, [(r.name, r.mode) for r in report.layers]
    reference = _run(source, x).astype(np.float64)  # float64: the huge case's squares overflow float32
    output = _run(tmp_path / "m.fq.onnx", x).astype(np.float64)
    assert np.all(np.isfinite(output))
    error = np.linalg.norm(output - reference) / np.linalg.norm(reference)
    # the same model without a degenerate layer: 0.38 plain (nearest 5-bit powers of two, three
    # layers), 0.03 calibrated and int8; mixed-rows calibrated 0.17, most of it the normal stem's
    # error read through the two 1e12 rows that alone carry the output
    assert error < (0.45 if mode == "plain" else 0.25), f"{case} {mode}: relative output error {error:.3f}"
    if mode == "int8":  # each layer integer, or float activations with the reason
        acts = {r.name: r.act for r in report.layers}
        assert all(("bits" in a) != ("fallback" in a) for a in acts.values()), acts
        if case == "huge":  # its inputs are ~1e29: no scale 2^a, a <= 63, holds them
            assert "above 2^63" in acts["fc"]["fallback"]
    if mode == "plain":  # pruned too: still no internal error and finite outputs
        api.convert(source, tmp_path / "p.fq.onnx", min_weights=0, sparsity=0.5)
        assert np.all(np.isfinite(_run(tmp_path / "p.fq.onnx", x)))


def test_plain_conversion_keeps_small_layers_in_float_and_says_why(tmp_path):
    """The default --min-weights: a layer below it stays float (YOLOv8n's DFL conv, PP-OCR's SE
    layers), named with the reason in the report's skipped list; 0 compresses it; the allocator
    decides on its own."""
    model, small = _degenerate("one-weight")  # conv0: 1 weight, conv1: 144, conv2: 2304, fc: 160
    onnx.save(model, tmp_path / "m.onnx")
    report = api.convert(tmp_path / "m.onnx", tmp_path / "a.fq.onnx")
    modes = {r.name: r.mode for r in report.layers}
    assert {n for n, m in modes.items() if m == "float"} == {"conv0", "conv1", "fc"}
    assert modes["conv2"] in ("FQ", "shift")
    reasons = {n: why for n, _, why in report.skipped}
    assert reasons["conv0"] == "1 weights, fewer than --min-weights 256: kept in float"
    assert report.settings["min_weights"] == 256
    everything = api.convert(tmp_path / "m.onnx", tmp_path / "b.fq.onnx", min_weights=0)
    assert all(r.mode != "float" for r in everything.layers) and not everything.skipped
    # --min-weights 1: the one-weight layer is not below it, but its blob is larger than 4 bytes
    reasons = {n: why for n, _, why in api.convert(tmp_path / "m.onnx", tmp_path / "d.fq.onnx", min_weights=1).skipped}
    assert set(reasons) == {"conv0"} and "not smaller than its 4 float32 bytes: kept in float" in reasons["conv0"]
    with pytest.raises(FqOnnxError, match="nothing compressed.*--min-weights 0"):
        api.convert(tmp_path / "m.onnx", tmp_path / "c.fq.onnx", min_weights=10_000)


def test_min_weights_replay(tmp_path):
    """Stored settings replay: new ones carry min_weights; the stored form written before the
    option existed (it has a calibration entry) replays with 0, as every layer was compressed
    then; a hand-written recipe without it takes the default."""
    stored = ConvertOptions(min_weights=64).settings()
    assert ConvertOptions.from_dict(json.loads(json.dumps(stored))).min_weights == 64
    legacy = {k: v for k, v in ConvertOptions().settings().items() if k != "min_weights"}
    assert ConvertOptions.from_dict(legacy).min_weights == 0
    assert ConvertOptions.from_dict({"sparsity": 0.7}).min_weights == 256
    assert ConvertOptions.from_dict({"sparsity": 0.7, "min-weights": 8}).min_weights == 8
    for bad in (-1, 2.5, True):
        with pytest.raises(FqOnnxError, match="--min-weights"):
            ConvertOptions(min_weights=bad)
