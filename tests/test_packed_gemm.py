"""The packed dense GEMM of dense-kind layers (custom_ops/src/dense/packed_gemm.*).

Gemm / MatMul layers too dense for the sparse kernels run a small-M GEMM over the weight
decoded once into column panels. Checked against fq_onnx.reference on every ISA path, row
counts on both sides of the microkernel's row limit (8 scalar, 6 AVX2, 12 AVX-512) and of the K
blocking, partial last panels, 1 and 2 threads, every bias form and activation, concurrent runs;
and that the rule picks it (or not) as documented. FQ_ONNX_PACKED_GEMM=1 forces it.
"""

from __future__ import annotations


import numpy as np
import pytest

from conftest import run_concurrently

from fq_onnx import fmt, reference, runtime
from test_custom_ops import KERNELS, assert_close, make_blob, run_shiftconv, shiftconv_model
from test_dense_delegate import dense_log

ACTIVATIONS = [dict(activation="none"), dict(activation="relu"),
               dict(activation="clip", clip_min=-0.25, clip_max=0.5)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m,k", [(1, 1), (7, 5), (33, 40), (70, 300), (16, 1100), (100, 513)])
def test_packed_gemm_matches_reference(kernel, m, k, monkeypatch):
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "1")
    rng = np.random.default_rng(m * 1000 + k)
    blob = make_blob(rng, (m, k), sparsity=0.3, mode=int(rng.integers(0, 2)), per_row=m % 2 == 1)
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(m).astype(np.float32)
    for i, rows in enumerate((1, 2, 5, 6, 7, 8, 9, 12, 13, 16, 25, 40)):
        act = ACTIVATIONS[i % 3]
        x = (rng.standard_normal((rows, k)) * 2).astype(np.float32)
        model = shiftconv_model(blob, (rows, k), bias=bias if i % 4 else None, kind="dense", **act)
        y = run_shiftconv(model, x, threads=1 + i % 2, kernel=kernel)
        assert_close(y, reference.run(model, {"X": x})[0], x, weight)


def test_packed_gemm_rank3_runtime_bias_and_nan(monkeypatch):
    """X of rank 3 (rows = product of the leading axes), the bias as a runtime input, and a NaN
    input staying NaN through the clamp like on the other paths."""
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "1")
    rng = np.random.default_rng(3)
    blob = make_blob(rng, (45, 70), sparsity=0.0)
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(45).astype(np.float32)
    x = rng.standard_normal((3, 5, 70)).astype(np.float32)
    model = shiftconv_model(blob, (3, 5, 70), bias=bias, bias_as_input=True, kind="dense", activation="relu")
    for kernel in KERNELS:
        sess = runtime.session(model, threads=2, kernel=kernel)
        y = sess.run(None, {"X": x, "B": bias})[0]
        assert y.shape == (3, 5, 45)
        assert_close(y, reference.run(model, {"X": x, "B": bias})[0], x, weight)
        xn = x.copy()
        xn[1, 2, 7] = np.nan
        yn = sess.run(None, {"X": xn, "B": bias})[0]
        assert np.isnan(yn[1, 2]).all() and not np.isnan(np.delete(yn.reshape(15, 45), 7, axis=0)).any()


@pytest.mark.parametrize("sparsity,expect", [(0.0, "packed"), (0.5, "packed"), (0.8, "both"), (0.95, "sparse")])
def test_rule_picks_packed_gemm_by_density(sparsity, expect, capfd):
    """auto: packed above relative cost 0.22, both kept in the band 0.17-0.22 (the packed GEMM
    for 2-16 rows), the sparse kernels alone below; every choice gives the reference."""
    rng = np.random.default_rng(int(sparsity * 100))
    blob = make_blob(rng, (300, 400), sparsity=sparsity)
    weight = fmt.dequantize(blob)
    model = shiftconv_model(blob, (None, 400), kind="dense", activation="relu")
    log = dense_log(capfd, model, "auto")
    assert ("packed GEMM" in log) == (expect != "sparse"), log
    assert ("chosen per input shape" in log) == (expect == "both"), log
    assert "onnxruntime's MatMul" not in log
    sess = runtime.session(model, threads=2)
    for rows in (1, 2, 8, 16, 17, 40):
        x = rng.standard_normal((rows, 400)).astype(np.float32)
        assert_close(sess.run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x, weight)


def test_packed_gemm_off_restores_the_delegate_rule(capfd, monkeypatch):
    """FQ_ONNX_PACKED_GEMM=0: a dense weight goes to onnxruntime's MatMul (few rows) as before."""
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "0")
    blob = make_blob(np.random.default_rng(1), (40, 64), sparsity=0.0)
    log = dense_log(capfd, shiftconv_model(blob, (None, 64), kind="dense"), "auto")
    assert "onnxruntime's MatMul" in log and "packed GEMM" not in log
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "sometimes")
    with pytest.raises(Exception, match="FQ_ONNX_PACKED_GEMM"):
        runtime.session(shiftconv_model(blob, (None, 64), kind="dense"))


def test_packed_gemm_concurrent_runs(monkeypatch):
    monkeypatch.setenv("FQ_ONNX_PACKED_GEMM", "1")
    rng = np.random.default_rng(9)
    blob = make_blob(rng, (200, 300), sparsity=0.4)
    model = shiftconv_model(blob, (None, 300), kind="dense", activation="relu")
    sess = runtime.session(model, threads=2)
    inputs = [rng.standard_normal((1 + 5 * i, 300)).astype(np.float32) for i in range(6)]
    expected = [sess.run(None, {"X": x})[0] for x in inputs]
    def check(thread, run):
        i = (thread + run) % len(inputs)
        assert np.array_equal(sess.run(None, {"X": inputs[i]})[0], expected[i]), "result differs"

    run_concurrently(check)
