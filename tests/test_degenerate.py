"""Degenerate layers seen in real models (issue 16, item 7) never end in an internal error.

PP-OCRv4's recognizer has depthwise 5x5 channels whose folded weights are ~1e-17 next to
channels of ~1: calibrated at high sparsity each row keeps one weight, the normalised kept
weights are exactly +-1, the mixture's components have zero spread, and the level set's scale
collapsed to ~1e-31, so the per-row scales underflowed to 0 and encoding raised
``FormatError: alpha must be finite and positive``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_model, tensor
from fq_onnx import api, fmt, focus
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
