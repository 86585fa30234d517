"""Dense layers run by onnxruntime's own kernels from inside ShiftConv (custom_ops/src/dense/ort_delegate.*).

The dense path is forced with the session config entry ``fq_onnx.dense`` (or FQ_ONNX_DENSE):
own = our sparse kernel, ort = onnxruntime's kernel in its best layout, nchw = the plain Conv,
nchwc = the NCHWc Conv, auto = the measured rule. Every choice must give the numpy reference's
output within float rounding; which one ran is read from the INFO log of the session. Only
correctness is checked here, never timings.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from conftest import run_concurrently

from fq_onnx import fmt, reference, runtime
from test_custom_ops import FLAGS, NODE, assert_close, make_blob, shiftconv_model

DENSE_KEY = runtime.DENSE_CONFIG_KEY
MODES = list(runtime.DENSE_CHOICES)
# MLAS's NCHWc block on this CPU (0: no NCHWc kernels), the same rule as cpu_features.cc.
BLOCK = 16 if {"avx512f", "avx2", "fma"} <= FLAGS else 8 if {"avx2", "fma"} <= FLAGS else 0

# (x_shape without batch, weight shape, attributes): layers the delegate can run.
CASES = {
    "1x1": ((32, 7, 6), (48, 32, 1, 1), {}),
    "1x1-stride2": ((32, 9, 9), (16, 32, 1, 1), dict(strides=[2, 2])),
    "3x3": ((32, 9, 11), (32, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
    "3x3-m-unaligned": ((16, 8, 8), (20, 16, 3, 3), dict(pads=[1, 1, 1, 1])),
    "3x3-stride2": ((16, 13, 12), (32, 16, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "asym-pads": ((16, 8, 9), (16, 16, 3, 2), dict(pads=[0, 2, 1, 0])),
    "dilation": ((16, 13, 12), (16, 16, 3, 3), dict(dilations=[2, 3], pads=[2, 1, 2, 3])),
    "group2": ((32, 9, 9), (32, 16, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "group-unaligned": ((12, 7, 7), (6, 4, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),
    "depthwise": ((32, 10, 10), (32, 1, 3, 3), dict(group=32, pads=[1, 1, 1, 1])),
    "depthwise-s2": ((48, 11, 11), (48, 1, 3, 3), dict(group=48, strides=[2, 2], pads=[1, 1, 1, 1])),
    "stem-7x7-3ch": ((3, 20, 22), (16, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    "same-upper-s1": ((16, 10, 9), (16, 16, 3, 3), dict(auto_pad="SAME_UPPER")),
    "same-lower-s1": ((16, 10, 9), (16, 16, 4, 4), dict(auto_pad="SAME_LOWER")),
    "valid": ((16, 10, 9), (16, 16, 3, 3), dict(auto_pad="VALID", strides=[2, 1])),
    "1d": ((16, 20), (24, 16, 3), dict(pads=[1, 1])),
}

ACTIVATIONS = [dict(activation="none"), dict(activation="relu"),
               dict(activation="clip", clip_min=-0.25, clip_max=0.5)]


def session(model, mode, threads=1, **options):
    return runtime.session(model, threads=threads, config={DENSE_KEY: mode}, **options)


def dense_log(capfd, model, mode, **options) -> str:
    """What the kernel constructor logged about its dense path (session at INFO level)."""
    capfd.readouterr()
    session(model, mode, log_severity_level=1, **options)
    err = capfd.readouterr().err
    return "\n".join(line for line in err.splitlines() if "ort_delegate.cc" in line)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", MODES)
def test_delegated_conv_matches_reference(case, mode):
    rng = np.random.default_rng(zlib.crc32(f"{case}-{mode}".encode()))
    x_rest, w_shape, attrs = CASES[case]
    # Dense weights (auto delegates them), one scale per row half of the time.
    blob = make_blob(rng, w_shape, sparsity=0.0, mode=int(rng.integers(0, 2)), per_row=len(case) % 2 == 0)
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    for i, act in enumerate(ACTIVATIONS):
        with_bias = bias if i != 1 else None
        for batch, threads in ((1, 1), (3, 2)):
            x = (rng.standard_normal((batch,) + x_rest) * 2).astype(np.float32)
            model = shiftconv_model(blob, (batch,) + x_rest, bias=with_bias, **act, **attrs)
            y = session(model, mode, threads).run(None, {"X": x})[0]
            assert_close(y, reference.run(model, {"X": x})[0], x, weight)


# Dense kind (Gemm / MatMul layers): (x_shape, weight shape [M, K]).
DENSE_CASES = {
    "vector": ((40,), (24, 40)),
    "rows": ((3, 40), (24, 40)),
    "many-rows": ((9, 64), (33, 64)),
    "rank3": ((2, 3, 33), (17, 33)),
}


@pytest.mark.parametrize("case", sorted(DENSE_CASES))
@pytest.mark.parametrize("mode", MODES)
def test_delegated_dense_matches_reference(case, mode, capfd):
    rng = np.random.default_rng(zlib.crc32(f"dense-{case}-{mode}".encode()))
    x_shape, w_shape = DENSE_CASES[case]
    blob = make_blob(rng, w_shape, sparsity=0.0, per_row=case != "rows")
    weight = fmt.dequantize(blob)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = (rng.standard_normal(x_shape) * 2).astype(np.float32)
    for i, act in enumerate(ACTIVATIONS):
        for b in (bias, None):
            model = shiftconv_model(blob, x_shape, bias=b, kind="dense", **act)
            y = session(model, mode, threads=1 + i % 2).run(None, {"X": x})[0]
            assert_close(y, reference.run(model, {"X": x})[0], x, weight)
    model = shiftconv_model(blob, x_shape, bias=bias, bias_as_input=True, kind="dense", activation="relu")
    y = session(model, mode).run(None, {"X": x, "B": bias})[0]
    assert_close(y, reference.run(model, {"X": x, "B": bias})[0], x, weight)
    log = dense_log(capfd, model, mode)
    # A dense weight: our packed GEMM under auto and own (tests/test_packed_gemm.py), else
    # onnxruntime's MatMul.
    assert ("onnxruntime's MatMul" in log) == (mode not in ("own", "auto")), log
    assert ("packed GEMM" in log) == (mode in ("own", "auto")), log


@pytest.mark.parametrize("case", ["3x3", "1x1", "depthwise", "stem-7x7-3ch", "1d", "group-unaligned"])
def test_forced_paths_are_the_ones_that_run(case, capfd):
    rng = np.random.default_rng(5)
    x_rest, w_shape, attrs = CASES[case]
    model = shiftconv_model(make_blob(rng, w_shape, sparsity=0.0), (1,) + x_rest, **attrs)
    assert dense_log(capfd, model, "own") == ""
    assert "dense path: onnxruntime's Conv" in dense_log(capfd, model, "nchw")
    nchwc = dense_log(capfd, model, "nchwc")
    two_d_aligned = case in ("3x3", "1x1", "depthwise", "stem-7x7-3ch")
    if BLOCK and two_d_aligned:
        assert f"NCHWc Conv, block {BLOCK}" in nchwc
    else:
        assert "dense path: onnxruntime's Conv" in nchwc  # NCHWc not possible here: plain
    ort_log = dense_log(capfd, model, "ort")
    # "ort" picks the plain Conv for 1x1 stride-1 layers (a direct SGEMM), NCHWc elsewhere.
    expect_nchwc = BLOCK and two_d_aligned and case != "1x1"
    assert (f"NCHWc Conv, block {BLOCK}" in ort_log) == bool(expect_nchwc), ort_log


def test_auto_delegates_dense_layers_and_keeps_sparse_ones(capfd, monkeypatch):
    rng = np.random.default_rng(6)
    x_shape, w_shape, attrs = (1, 64, 14, 14), (64, 64, 3, 3), dict(pads=[1, 1, 1, 1])
    dense = shiftconv_model(make_blob(rng, w_shape, sparsity=0.0), x_shape, **attrs)
    sparse = shiftconv_model(make_blob(rng, w_shape, sparsity=0.9), x_shape, **attrs)
    blocked = shiftconv_model(make_blob(rng, w_shape, sparsity=0.5, block=4), x_shape, **attrs)
    assert "dense path: onnxruntime's" in dense_log(capfd, dense, "auto")
    assert dense_log(capfd, sparse, "auto") == ""
    # Blocks of 4 rows cost half as much per multiply-add as dense rows: 50% stays ours.
    assert dense_log(capfd, blocked, "auto") == ""
    # The environment variable is the default; the session config entry wins over it.
    monkeypatch.setenv(runtime.DENSE_ENV, "own")
    capfd.readouterr()
    runtime.session(dense, log_severity_level=1)
    assert "dense path" not in capfd.readouterr().err
    assert "dense path: onnxruntime's" in dense_log(capfd, dense, "auto")


@pytest.mark.parametrize("size,stride", [(7, 1), (14, 2), (40, 1), (80, 2)])
def test_auto_depthwise_chooses_per_input_shape(size, stride):
    """Depthwise layers keep both kernels and pick by plane size; both give the reference."""
    rng = np.random.default_rng(size)
    c = 32
    blob = make_blob(rng, (c, 1, 3, 3), sparsity=0.2)
    model = shiftconv_model(blob, (None, c, None, None), group=c, strides=[stride, stride], pads=[1, 1, 1, 1],
                            activation="clip", clip_min=0.0, clip_max=6.0)
    sess = session(model, "auto", threads=2)
    for n, s in ((1, size), (2, size + 3), (1, 5)):
        x = (rng.standard_normal((n, c, s, s)) * 3).astype(np.float32)
        assert_close(sess.run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))


@pytest.mark.parametrize("c_in, delegated_only", [(16, False), (64, False), (96, True)])
def test_auto_pointwise_with_threads_chooses_per_batch(c_in, delegated_only, capfd):
    """With several threads a dense 1x1 conv of at most 64 input channels keeps our kernel beside
    onnxruntime's (ours at batch 1, its Conv above: dense_path.cc, kPointwiseOwnMaxInputs), a
    wider one runs in onnxruntime's NCHWc layout; with one thread both run its plain Conv.
    Every batch gives the reference."""
    rng = np.random.default_rng(c_in)
    blob = make_blob(rng, (48, c_in, 1, 1), sparsity=0.0)
    model = shiftconv_model(blob, (None, c_in, 9, 9), activation="relu")
    per_shape = "or ours, chosen per input shape"
    two = dense_log(capfd, model, "auto", threads=2)
    assert (per_shape in two) == (not delegated_only)
    assert ("NCHWc Conv" in two) == bool(delegated_only and BLOCK), two
    one = dense_log(capfd, model, "auto", threads=1)
    assert per_shape not in one and "NCHWc Conv" not in one and "onnxruntime's Conv" in one, one
    sess = session(model, "auto", threads=2)
    for n in (1, 3, 1):
        x = rng.standard_normal((n, c_in, 9, 9)).astype(np.float32)
        assert_close(sess.run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))


def test_runtime_bias_input_with_delegate():
    rng = np.random.default_rng(7)
    w_shape = (20, 16, 3, 3)  # 20 output channels: not a multiple of the NCHWc block
    blob = make_blob(rng, w_shape, sparsity=0.0)
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    model = shiftconv_model(blob, x.shape, bias=bias, bias_as_input=True, pads=[1, 1, 1, 1], activation="relu")
    ref = reference.run(model, {"X": x, "B": bias})[0]
    for mode in ("ort", "nchwc", "nchw"):
        sess = session(model, mode, threads=2)
        assert_close(sess.run(None, {"X": x, "B": bias})[0], ref, x, fmt.dequantize(blob))
        with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*bias"):
            sess.run(None, {"X": x, "B": bias[:5]})


def test_wrong_input_is_an_error_naming_the_node():
    rng = np.random.default_rng(8)
    model = shiftconv_model(make_blob(rng, (16, 16, 3, 3), sparsity=0.0), (1, None, 6, 6))
    dense = shiftconv_model(make_blob(rng, (5, 6), sparsity=0.0), (None,), kind="dense")
    for mode in ("ort", "nchw", "auto"):
        sess = session(model, mode)
        with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*channels"):
            sess.run(None, {"X": np.zeros((1, 8, 6, 6), np.float32)})
        with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*K = 6"):
            session(dense, mode).run(None, {"X": np.zeros((7,), np.float32)})


def test_changing_shapes_and_empty_batch_with_delegate():
    rng = np.random.default_rng(9)
    blob = make_blob(rng, (16, 16, 3, 3), sparsity=0.0)
    model = shiftconv_model(blob, (None, 16, None, None), pads=[1, 1, 1, 1])
    sess = session(model, "ort", threads=2)
    for shape in [(1, 16, 5, 5), (3, 16, 9, 4), (2, 16, 1, 1), (1, 16, 5, 5)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert_close(sess.run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))
    assert sess.run(None, {"X": np.zeros((0, 16, 5, 5), np.float32)})[0].shape == (0, 16, 5, 5)
    dense = shiftconv_model(make_blob(rng, (5, 6), sparsity=0.0), (None, 6), kind="dense")
    assert session(dense, "ort").run(None, {"X": np.zeros((0, 6), np.float32)})[0].shape == (0, 5)


@pytest.mark.skipif(not BLOCK, reason="no NCHWc kernels on this CPU")
def test_mispredicted_nchwc_block_falls_back_to_the_plain_conv(monkeypatch, capfd):
    """The predicted block size is verified against onnxruntime before the first run; a wrong
    one (forced here) must give correct results through the plain Conv, with a warning."""
    monkeypatch.setenv("FQ_ONNX_NCHWC_BLOCK", str(24 - BLOCK))  # 8 <-> 16
    rng = np.random.default_rng(10)
    for x_rest, w_shape, attrs in (CASES["3x3"], CASES["depthwise"], CASES["stem-7x7-3ch"], CASES["group2"]):
        blob = make_blob(rng, w_shape, sparsity=0.0)
        bias = rng.standard_normal(w_shape[0]).astype(np.float32)
        model = shiftconv_model(blob, (2,) + x_rest, bias=bias, activation="relu", **attrs)
        x = rng.standard_normal((2,) + x_rest).astype(np.float32)
        capfd.readouterr()
        y = session(model, "nchwc", threads=2).run(None, {"X": x})[0]
        assert "not the predicted" in capfd.readouterr().err
        assert_close(y, reference.run(model, {"X": x})[0], x, fmt.dequantize(blob))


def test_nchwc_disabled_uses_the_plain_conv(monkeypatch, capfd):
    monkeypatch.setenv("FQ_ONNX_NCHWC_BLOCK", "0")
    rng = np.random.default_rng(11)
    x_rest, w_shape, attrs = CASES["3x3"]
    model = shiftconv_model(make_blob(rng, w_shape, sparsity=0.0), (1,) + x_rest, **attrs)
    log = dense_log(capfd, model, "ort")
    assert "dense path: onnxruntime's Conv" in log and "NCHWc" not in log


def test_unknown_dense_choice_is_a_clear_error(monkeypatch):
    rng = np.random.default_rng(12)
    model = shiftconv_model(make_blob(rng, (8, 4, 3, 3)), (1, 4, 6, 6))
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*unknown dense path choice 'fast'"):
        session(model, "fast")
    monkeypatch.setenv(runtime.DENSE_ENV, "bogus")
    with pytest.raises(Exception, match="unknown dense path choice 'bogus'"):
        runtime.session(model)


def test_sparse_blob_declaring_a_huge_tensor_is_never_made_dense(capfd):
    """Forcing onnxruntime's kernel must not turn a tiny blob declaring many zeros into a
    dense float tensor (memory stays proportional to the file)."""
    w_shape = (512, 512, 3, 3)  # 2.4 M elements, 0.1% coded
    codes = np.full(w_shape, -1)
    codes[::37, ::41] = 3
    blob = fmt.encode(codes, fmt.QuantParams(mode=0, bits=4, alpha=0.5, b=2))
    model = shiftconv_model(blob, (1, 512, 4, 4), pads=[1, 1, 1, 1])
    assert dense_log(capfd, model, "ort") == ""
    x = np.random.default_rng(13).standard_normal((1, 512, 4, 4)).astype(np.float32)
    assert_close(session(model, "ort").run(None, {"X": x})[0], reference.run(model, {"X": x})[0], x,
                 fmt.dequantize(blob))


@pytest.mark.parametrize("mode", ["ort", "nchw", "auto"])
def test_concurrent_runs_on_one_session_with_the_delegate(mode):
    rng = np.random.default_rng(14)
    blob = make_blob(rng, (32, 32, 3, 3), sparsity=0.0)
    model = shiftconv_model(blob, (None, 32, 14, 14), pads=[1, 1, 1, 1], activation="relu",
                            bias=rng.standard_normal(32).astype(np.float32))
    sess = session(model, mode, threads=2)
    inputs = [rng.standard_normal((1 + i % 3, 32, 14, 14)).astype(np.float32) for i in range(8)]
    expected = [reference.run(model, {"X": x})[0] for x in inputs]
    weight = fmt.dequantize(blob)
    # A dense-kind layer too, with row counts on both sides of the auto rule.
    dblob = make_blob(rng, (40, 72), sparsity=0.0)
    dmodel = shiftconv_model(dblob, (None, 72), kind="dense", bias=rng.standard_normal(40).astype(np.float32))
    dsess = session(dmodel, mode, threads=2)
    dinputs = [rng.standard_normal((1 + 3 * (i % 4), 72)).astype(np.float32) for i in range(8)]
    dexpected = [reference.run(dmodel, {"X": x})[0] for x in dinputs]
    dweight = fmt.dequantize(dblob)
    def check(thread, run):
        i = (thread + run) % len(inputs)
        assert_close(sess.run(None, {"X": inputs[i]})[0], expected[i], inputs[i], weight)
        assert_close(dsess.run(None, {"X": dinputs[i]})[0], dexpected[i], dinputs[i], dweight)

    run_concurrently(check, runs=15)


@pytest.mark.parametrize("mode", ["ort", "nchw", "nchwc"])
@pytest.mark.parametrize("k", [1, 3])
def test_delegate_weights_are_the_decoded_weights_bit_for_bit(mode, k):
    """An impulse in channel c of image c reads back W[:, c] (flipped) from onnxruntime's Conv:
    the weights it was given are fmt.dequantize's, bit for bit (and I @ W^T for the MatMul)."""
    rng = np.random.default_rng(20 + k)
    c, m = 16, 32
    blob = make_blob(rng, (m, c, k, k), sparsity=0.0, mode=1, bits=6, per_row=True)
    weight = fmt.dequantize(blob)
    x = np.zeros((c, c, k, k), np.float32)
    for i in range(c):
        x[i, i, 0, 0] = 1.0
    model = shiftconv_model(blob, x.shape, pads=[k - 1] * 4)
    y = session(model, mode, threads=2).run(None, {"X": x})[0]
    got = y[:, :, :k, :k][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(got, weight)
    nonzero = weight != 0
    assert got[nonzero].tobytes() == weight[nonzero].tobytes()

    dblob = make_blob(rng, (m, 24), sparsity=0.0, per_row=True)
    dweight = fmt.dequantize(dblob)
    eye = np.eye(24, dtype=np.float32)
    y = session(shiftconv_model(dblob, eye.shape, kind="dense"), mode).run(None, {"X": eye})[0]
    assert y.tobytes() == np.ascontiguousarray(dweight.T).tobytes()
