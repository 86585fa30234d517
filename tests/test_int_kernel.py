"""The C++ integer mode (custom_ops/src/: op/int_op.*, plan/int_mode.*, kernels/int_kernel*) is
bit-exact with the numpy reference (fq_onnx/intmode.py): every op variant, batch 1 and > 1, 1
and 2 threads, every CPU path, signed and unsigned inputs of 2..8 bits with extreme values; the
accumulator bound at its exact limit; every bad attribute a clean error naming the node."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fq_onnx import api, fmt, intmode, reference, runtime

from conftest import run_concurrently, save
from test_custom_ops import CONV_CASES, DENSE_CASES, KERNELS, NODE, shiftconv_model
from test_intmode import digits_like_model, extreme_inputs, limit_blob, narrow_codes, pow2_params


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def run(model, x, kernel="auto", threads=1, feeds=None):
    return runtime.session(model, threads=threads, kernel=kernel).run(None, {"X": x, **(feeds or {})})[0]


def int_model(rng, w_shape, x_shape, act, mode=None, bits=5, per_row=True, sparsity=0.5, bias=True, **attrs):
    mode = int(rng.integers(0, 2)) if mode is None else mode
    params = pow2_params(rng, mode, bits)
    alphas = (params.alpha * rng.uniform(0.25, 1, w_shape[0])).astype(np.float32) if per_row else None
    blob = fmt.encode(narrow_codes(rng, w_shape, sparsity, params), params, alphas=alphas)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    return shiftconv_model(blob, x_shape, bias=b, act_bits=act.bits, act_scale_log2=act.scale_log2,
                           act_signed=int(act.signed), **attrs), blob


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_bit_exact_with_reference(case, batch):
    rng = np.random.default_rng(zlib.crc32(f"int-{case}-{batch}".encode()))
    x_rest, w_shape, attrs = CONV_CASES[case]
    x_shape = (batch,) + x_rest
    for signed, activation in ((True, "none"), (False, "relu"), (True, "clip")):
        act = intmode.ActQuant(8, int(rng.integers(-7, 1)), signed)
        clip = dict(clip_min=-1.0, clip_max=2.0) if activation == "clip" else {}
        model, _ = int_model(rng, w_shape, x_shape, act, per_row=batch == 3, activation=activation, **clip, **attrs)
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            for threads in (1, 2):
                assert same_bits(run(model, x, kernel, threads), ref), (kernel, threads, signed, activation)


@pytest.mark.parametrize("case", sorted(DENSE_CASES))
def test_dense_bit_exact_with_reference(case):
    rng = np.random.default_rng(zlib.crc32(f"int-{case}".encode()))
    x_shape, w_shape = DENSE_CASES[case]
    for bits, signed, sparsity in ((8, False, 0.8), (8, True, 0.0), (4, True, 0.5), (2, False, 0.3)):
        act = intmode.ActQuant(bits, int(rng.integers(-6, 2)), signed)
        model, _ = int_model(rng, w_shape, x_shape, act, sparsity=sparsity, kind="dense",
                             activation="relu" if signed else "none")
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            for threads in (1, 2):
                assert same_bits(run(model, x, kernel, threads), ref), (kernel, threads, bits, signed)


def test_large_layers_through_the_thread_pool_bit_exact():
    """Layers big enough to be split over pool threads (packing and compute), conv and dense."""
    rng = np.random.default_rng(77)
    cases = [((2, 64, 28, 28), (64, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
             ((2, 96, 20, 20), (96, 1, 3, 3), dict(pads=[1, 1, 1, 1], group=96, strides=[2, 2])),
             ((40, 1024), (520, 1024), dict(kind="dense"))]
    for x_shape, w_shape, attrs in cases:
        act = intmode.ActQuant(8, -4, False)
        model, _ = int_model(rng, w_shape, x_shape, act, mode=1, sparsity=0.7, **attrs)
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            assert same_bits(run(model, x, kernel, threads=2), ref), (w_shape, kernel)


def test_random_shapes_bit_exact():
    """Random geometry, sparsity, level sets (2..8 bits) and quantizers (2..8 bits)."""
    rng = np.random.default_rng(4096)
    for trial in range(40):
        spatial = int(rng.integers(1, 3))
        group = int(rng.choice([1, 1, 2, 3]))
        cg, mg = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        k = [int(rng.integers(1, 5)) for _ in range(spatial)]
        s = [int(rng.integers(1, 4)) for _ in range(spatial)]
        d = [int(rng.integers(1, 3)) for _ in range(spatial)]
        size = [int(rng.integers(dk * (kk - 1) + 1, dk * (kk - 1) + 14)) for kk, dk in zip(k, d)]
        x_shape = (int(rng.integers(1, 4)), cg * group, *size)
        w_shape = (mg * group, cg, *k)
        mode = int(rng.integers(0, 2))
        bits = int(rng.integers(3 if mode else 2, 9))
        act = intmode.ActQuant(int(rng.integers(2, 9)), int(rng.integers(-10, 4)), bool(rng.integers(0, 2)))
        model, _ = int_model(rng, w_shape, x_shape, act, mode=mode, bits=bits, per_row=trial % 2 == 0,
                             sparsity=float(rng.uniform(0, 0.95)), bias=trial % 3 != 0, strides=s, dilations=d,
                             pads=[int(rng.integers(0, 3)) for _ in range(2 * spatial)], group=group,
                             activation=("none", "relu")[trial % 2])
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        assert same_bits(run(model, x, KERNELS[trial % len(KERNELS)], 1 + trial % 2), ref), trial


@pytest.mark.parametrize("mode", ["direct", "packed"])
def test_depthwise_paths_bit_exact(mode, monkeypatch):
    """Depthwise convs run plane by plane from X (direct) or through the packed path
    (FQ_ONNX_DEPTHWISE=0): strides 1-3, dilation, asymmetric and wide pads, 1-D, rows wider than
    a vector, sparse rows with no tap at all."""
    if mode == "packed":
        monkeypatch.setenv("FQ_ONNX_DEPTHWISE", "0")
    rng = np.random.default_rng(99)
    for trial in range(24):
        spatial = 1 if trial % 5 == 4 else 2
        c = int(rng.integers(1, 9))
        k = [int(rng.integers(1, 6)) for _ in range(spatial)]
        s = [int(rng.integers(1, 4)) for _ in range(spatial)]
        d = [int(rng.integers(1, 3)) for _ in range(spatial)]
        size = [int(rng.integers(dk * (kk - 1) + 1, dk * (kk - 1) + 70)) for kk, dk in zip(k, d)]
        x_shape = (int(rng.integers(1, 4)), c, *size)
        act = intmode.ActQuant(int(rng.integers(4, 9)), int(rng.integers(-8, 1)), bool(trial % 2))
        model, _ = int_model(rng, (c, 1, *k), x_shape, act, per_row=trial % 2 == 0,
                             sparsity=float(rng.uniform(0, 0.95)), bias=trial % 3 != 0, strides=s, dilations=d,
                             pads=[int(rng.integers(0, 5)) for _ in range(2 * spatial)], group=c,
                             activation=("none", "relu")[trial % 2])
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            assert same_bits(run(model, x, kernel, 1 + trial % 2), ref), (trial, kernel)


def test_accumulator_at_the_int32_limit_is_exact():
    """Row weights 2^0, 2^0, 2^1..2^23 with signed 8-bit inputs: sums up to -2^31 exactly, and
    mixed extreme inputs whose sum needs all 31 bits (float32 accumulation would round)."""
    blob = limit_blob()
    k = 25
    model = shiftconv_model(blob, (None, k), kind="dense", act_bits=8, act_scale_log2=0, act_signed=1)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full((1, k), -128.0), np.full((1, k), 127.0),
                        rng.choice([-128.0, 127.0, -127.0, 126.0, 1.0, -1.0], size=(30, k))]).astype(np.float32)
    weights = np.array([1, 1, *[2**e for e in range(1, 24)]], dtype=object)
    exact = [int(np.dot(row.astype(np.int64).astype(object), weights)) for row in x]
    assert exact[0] == -(2**31)
    scale = np.float32(2.0**-31)  # alpha = 1, a = 0, m_r = -31
    expected = np.array([[np.float32(np.float32(v) * scale)] for v in exact], np.float32)
    assert same_bits(reference.run(model, {"X": x})[0], expected)
    for kernel in KERNELS:
        assert same_bits(run(model, x, kernel), expected), kernel
    over = shiftconv_model(limit_blob(extra=1), (None, 26), kind="dense", act_bits=8, act_scale_log2=0, act_signed=1)
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}': integer mode: row 0: 8-bit signed inputs can "
                                        "drive the accumulator beyond int32"):
        runtime.session(over)
    with pytest.raises(Exception, match="beyond int32"):
        reference.run(over, {"X": np.zeros((1, 26), np.float32)})


BLOB = fmt.encode(np.arange(-1, 23).reshape(4, 6) % 32, fmt.QuantParams(1, 5, 0.1, -1.0, 0.5, 3))


@pytest.mark.parametrize("attrs, message", [
    (dict(act_bits=9, act_scale_log2=0, act_signed=1), "act_bits 9 outside 2..8"),
    (dict(act_bits=1, act_scale_log2=0, act_signed=1), "act_bits 1 outside 2..8"),
    (dict(act_bits=-5, act_scale_log2=0, act_signed=1), "act_bits -5 outside"),
    (dict(act_bits=8, act_scale_log2=64, act_signed=1), "act_scale_log2 64 outside -64..63"),
    (dict(act_bits=8, act_scale_log2=-2**40, act_signed=1), "act_scale_log2 -1099511627776 outside"),
    (dict(act_bits=8, act_scale_log2=0, act_signed=-1), "act_signed must be 0 or 1"),
    (dict(act_bits=8, act_signed=0), "integer mode needs act_scale_log2"),
    (dict(act_bits=8), "integer mode needs act_scale_log2, act_signed"),
    (dict(act_bits=8, act_scale_log2=0), "integer mode needs act_signed"),
    (dict(act_bits=8.0, act_scale_log2=0, act_signed=1), "act_bits must be an integer attribute"),
    (dict(act_bits="8", act_scale_log2=0, act_signed=1), "act_bits must be an integer attribute"),
    (dict(act_bits=8, act_scale_log2=-3.0, act_signed=1), "act_scale_log2 must be an integer attribute"),
])
def test_bad_attributes_are_clear_errors_naming_the_node(attrs, message):
    model = shiftconv_model(BLOB, (2, 6), kind="dense", **attrs)
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}': {message}"):
        runtime.session(model)


def test_weights_integer_mode_cannot_represent_are_refused():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 32, size=(4, 6))
    cases = {
        "centre0 = -0.75 is not one": fmt.encode(codes, fmt.QuantParams(1, 5, 0.1, -0.75, 1.0, 3)),
        "row 0 needs a shift of 45 bits": fmt.encode(np.array([[0, 45, 3]]), fmt.QuantParams(0, 7, 1.0, b=50)),
        # alpha * 2^(a + m_r) = 1e-30 * 2^(-64 - 3) is below the normal range
        "output scale alpha": fmt.encode(codes, fmt.QuantParams(1, 5, 1e-30, -1.0, 0.5, 3)),
    }
    for message, blob in cases.items():
        model = shiftconv_model(blob, (2, blob[16]), kind="dense", act_bits=8, act_scale_log2=-64, act_signed=1)
        with pytest.raises(Exception, match=f"ShiftConv node '{NODE}': .*{message}"):
            runtime.session(model)
        with pytest.raises(intmode.IntModeError, match=message):
            reference.run(model, {"X": np.zeros((2, blob[16]), np.float32)})


def test_runtime_bias_empty_batch_and_environment_kernel(monkeypatch):
    rng = np.random.default_rng(8)
    act = intmode.ActQuant(8, -5, True)
    params = pow2_params(rng, 1, 5)
    blob = fmt.encode(narrow_codes(rng, (6, 4, 3, 3), 0.4, params), params)
    bias = rng.standard_normal(6).astype(np.float32)
    model = shiftconv_model(blob, (None, 4, 7, 7), bias=bias, bias_as_input=True, pads=[1, 1, 1, 1], act_bits=8,
                            act_scale_log2=-5, act_signed=1)
    x = extreme_inputs(rng, (2, 4, 7, 7), act)
    ref = reference.run(model, {"X": x, "B": bias})[0]
    assert same_bits(run(model, x, feeds={"B": bias}), ref)
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}': bias B has shape \\[5\\]"):
        run(model, x, feeds={"B": bias[:5]})
    assert run(model, np.zeros((0, 4, 7, 7), np.float32), feeds={"B": bias}).shape == (0, 6, 7, 7)
    monkeypatch.setenv(runtime.KERNEL_ENV, "scalar")
    sess = runtime.session(model, threads=1)
    assert same_bits(sess.run(None, {"X": x, "B": bias})[0], ref)


def test_concurrent_runs_on_one_integer_session():
    rng = np.random.default_rng(9)
    act = intmode.ActQuant(8, -4, False)
    model, _ = int_model(rng, (32, 16, 3, 3), (None, 16, 14, 14), act, mode=1, sparsity=0.8, pads=[1, 1, 1, 1],
                         activation="relu")
    sess = runtime.session(model, threads=2)
    inputs = [extreme_inputs(rng, (1 + i % 3, 16, 14, 14), act) for i in range(6)]
    expected = [reference.run(model, {"X": x})[0] for x in inputs]
    def check(thread, run):
        i = (thread + run) % len(inputs)
        assert same_bits(sess.run(None, {"X": inputs[i]})[0], expected[i]), "result differs"

    run_concurrently(check, threads=5, runs=15)


def test_converted_model_runs_bit_exact_end_to_end(tmp_path):
    """convert --act-bits 8 on a Conv-Relu-Conv-Relu-Flatten-Gemm model: onnxruntime with our
    library and the numpy reference give the same bits for the whole model."""
    rng = np.random.default_rng(12)
    path = save(digits_like_model(rng), tmp_path / "m.onnx")
    np.save(tmp_path / "c.npy", rng.standard_normal((32, 1, 12, 12)).astype(np.float32))
    out = tmp_path / "o.onnx"
    report = api.convert(path, out, sparsity=0.6, calib=str(tmp_path / "c.npy"), calib_size=32, act_bits=8,
                         min_weights=0)  # c1 has 72 weights: compress it too
    assert all(r.act and r.act.get("bits") == 8 for r in report.layers)
    x = (rng.standard_normal((5, 1, 12, 12)) * 1.5).astype(np.float32)
    ref = reference.run(str(out), {"X": x})[0]
    for kernel in KERNELS:
        assert same_bits(runtime.session(str(out), kernel=kernel).run(None, {"X": x})[0], ref), kernel
