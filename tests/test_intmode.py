"""Integer mode (docs/SHIFTCONV.md, "Integer mode"): the numpy reference against independent
formulas, the accumulator bound, activation-scale calibration, and convert/inspect/CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from fractions import Fraction

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper
from onnx.reference.ops.op_conv import _conv_implementation

from fq_onnx import act_scales, api, fmt, intmode, reference
from fq_onnx.errors import FqOnnxError

from conftest import conv_model, gemm_model, save
from test_custom_ops import CONV_CASES, DENSE_CASES, random_codes, shiftconv_model


# --- independent formulas --------------------------------------------------------------------

def independent_quantize(x: np.ndarray, bits: int, scale_log2: int, signed: bool) -> np.ndarray:
    """Python's round() (half to even) on exact values, one element at a time."""
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    out = []
    for v in np.asarray(x, np.float32).ravel().tolist():
        if v != v:
            out.append(0)
        elif v in (float("inf"), float("-inf")):
            out.append(qmax if v > 0 else qmin)
        else:
            exact = Fraction(v) / Fraction(2) ** scale_log2
            out.append(int(min(max(round(exact), qmin), qmax)))
    return np.array(out, np.int64).reshape(np.shape(x))


def unit_weights(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """u(v) * 2^-m_r as float64 per element (exact), from the float32 unit levels of FORMAT.md,
    and m_r computed directly as the row's smallest term exponent."""
    decoded = fmt.decode(blob)
    p = decoded.params
    units = fmt.unit_levels(p).astype(np.float64)  # exact for these parameters (see callers)
    rows = decoded.shape[0]
    codes = decoded.codes.reshape(rows, -1)
    k = p.exponent_bits
    base = np.zeros(rows, np.int64)
    for r in range(rows):
        exps = []
        for v in set(codes[r][codes[r] >= 0].tolist()):
            if units[v] == 0:
                continue
            exps.append((v & ((1 << k) - 1)) - p.b)
            if p.mode == fmt.MODE_FOCUSED:
                centre = (p.centre0, p.centre1)[v >> (k + 1)]
                if centre != 0:
                    exps.append(int(np.log2(abs(centre))))
        base[r] = min(exps) if exps else 0
    w = np.where(codes >= 0, units[np.maximum(codes, 0)], 0.0) * np.exp2(-base.astype(np.float64))[:, None]
    return w.reshape(decoded.shape), base


def independent_forward(blob, x, act, bias, kind, activation="none", clip=(None, None), **attrs) -> np.ndarray:
    q = independent_quantize(x, act.bits, act.scale_log2, act.signed).astype(np.float64)
    w, base = unit_weights(blob)
    assert np.all(w == np.round(w)), "integer weights must be integers"
    if kind == "dense":
        acc = q.reshape(-1, w.shape[1]) @ w.T
        acc = acc.reshape(q.shape[:-1] + (w.shape[0],))
        axis = acc.ndim - 1
    else:
        acc = _conv_implementation(q, w, None, attrs.get("auto_pad", "NOTSET"), attrs.get("dilations"),
                                   attrs.get("group", 1), attrs.get("kernel_shape"), attrs.get("pads"),
                                   attrs.get("strides"))
        axis = 1
    assert np.all(np.abs(acc) < 2**31) and np.all(acc == np.round(acc))  # float64 sums exact below 2^53
    decoded = fmt.decode(blob)
    alphas = np.broadcast_to(decoded.alphas, (w.shape[0],)).astype(np.float64)
    nonempty = np.array([np.any(w[r] != 0) for r in range(w.shape[0])])
    scales = np.where(nonempty, alphas * np.exp2(act.scale_log2 + base), 0.0).astype(np.float32)
    shape = [1] * acc.ndim
    shape[axis] = -1
    y = acc.astype(np.float32) * scales.reshape(shape)
    y = y + (np.zeros(w.shape[0], np.float32) if bias is None else bias).reshape(shape)
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    elif activation == "clip":
        y = np.minimum(np.maximum(y, np.float32(clip[0])), np.float32(clip[1]))
    return y.astype(np.float32)


SPAN = 16  # exponents used in one test tensor stay within this span: float32 unit levels exact


def pow2_params(rng, mode: int, bits: int) -> fmt.QuantParams:
    """Parameters valid for integer mode (power-of-two centres, including centre = -t codes)."""
    if mode == fmt.MODE_SHIFT:
        return fmt.QuantParams(0, bits, float(rng.uniform(0.01, 0.2)), b=int(rng.integers(0, 6)))
    b = int(rng.integers(0, min(1 << (bits - 2), SPAN) + 2))
    p0, p1 = int(rng.integers(-b - 1, min(3, SPAN - b))), int(rng.integers(-b - 1, min(3, SPAN - b)))
    return fmt.QuantParams(1, bits, float(rng.uniform(0.01, 0.2)), -(2.0**p0), 2.0**p1, b)


def narrow_codes(rng, shape, sparsity, params: fmt.QuantParams) -> np.ndarray:
    """Random codes whose exponents e stay below SPAN (a 7- or 8-bit level set spans 2^31 or
    more, which integer mode rightly refuses: see test_too_wide_a_shift_is_refused)."""
    codes = random_codes(rng, shape, sparsity, params.bits)
    mask = (1 << params.exponent_bits) - 1
    return np.where(codes >= 0, (codes & ~mask) | ((codes & mask) % SPAN), -1)


def extreme_inputs(rng, shape, act: intmode.ActQuant) -> np.ndarray:
    """Random values plus the edges of the quantizer: exact halves, the range ends, values far
    outside it, infinities, NaN, zeros of both signs, denormals."""
    step = 2.0**act.scale_log2
    x = rng.standard_normal(shape) * step * (act.qmax - act.qmin) / 4
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38,
                         (act.qmax + 0.5) * step, (act.qmin - 0.5) * step, act.qmax * step, act.qmin * step,
                         0.5 * step, -0.5 * step, 1.5 * step, 2.5 * step, -2.5 * step, (act.qmax - 0.5) * step])
    flat = x.reshape(-1)
    pick = rng.integers(0, flat.size, size=flat.size // 3)
    flat[pick] = specials[rng.integers(0, specials.size, size=pick.size)]
    return flat.reshape(shape).astype(np.float32)


# --- the quantizer and the integer weights ---------------------------------------------------

@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_matches_exact_rounding(bits, signed):
    rng = np.random.default_rng(bits + 10 * signed)
    for scale_log2 in (-64, -7, 0, 3, 63):
        act = intmode.ActQuant(bits, scale_log2, signed)
        x = extreme_inputs(rng, (2000,), act)
        q = intmode.quantize(x, act)
        assert q.dtype == np.int32
        np.testing.assert_array_equal(q, independent_quantize(x, bits, scale_log2, signed))


@pytest.mark.parametrize("mode, bits", [(0, 2), (0, 5), (0, 7), (1, 3), (1, 5), (1, 7)])
def test_integer_weights_are_the_levels_times_a_power_of_two(mode, bits):
    rng = np.random.default_rng(bits * 3 + mode)
    for trial in range(20):
        params = pow2_params(rng, mode, bits)
        codes = narrow_codes(rng, (6, 40), float(rng.uniform(0, 0.9)), params)
        alphas = (params.alpha * rng.uniform(0.5, 2, 6)).astype(np.float32) if trial % 2 else None
        blob = fmt.encode(codes, params, alphas=alphas)
        iw = intmode.integer_weight(fmt.decode(blob))
        expected, base = unit_weights(blob)
        np.testing.assert_array_equal(iw.base, base)
        np.testing.assert_array_equal(iw.weight.astype(np.float64), expected)
        np.testing.assert_array_equal(iw.nonempty, (iw.weight.reshape(6, -1) != 0).any(axis=1))
        assert np.array_equal(iw.positive, np.where(iw.weight.reshape(6, -1) > 0, iw.weight.reshape(6, -1), 0).sum(1))
        assert np.array_equal(iw.negative, np.where(iw.weight.reshape(6, -1) < 0, -iw.weight.reshape(6, -1), 0).sum(1))


def test_non_power_of_two_centre_is_refused():
    codes = random_codes(np.random.default_rng(0), (4, 9), 0.3, 5)
    blob = fmt.encode(codes, fmt.QuantParams(1, 5, 0.1, -0.75, 1.0, 2))
    with pytest.raises(intmode.IntModeError, match="power-of-two centres, centre0 = -0.75 is not one"):
        intmode.integer_weight(fmt.decode(blob))


# --- the reference forward pass against the independent formula ------------------------------

@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_reference_conv_matches_independent_formula(case):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    x_rest, w_shape, attrs = CONV_CASES[case]
    for trial, (signed, activation) in enumerate(((True, "none"), (False, "relu"), (True, "clip"))):
        mode = trial % 2
        params = pow2_params(rng, mode, 5)
        blob = fmt.encode(narrow_codes(rng, w_shape, 0.5, params), params,
                          alphas=(params.alpha * rng.uniform(0.5, 1, w_shape[0])).astype(np.float32))
        act = intmode.ActQuant(8, int(rng.integers(-6, 0)), signed)
        x = extreme_inputs(rng, (2,) + x_rest, act)
        bias = rng.standard_normal(w_shape[0]).astype(np.float32)
        clip = dict(clip_min=-0.5, clip_max=1.0) if activation == "clip" else {}
        model = shiftconv_model(blob, x.shape, bias=bias, activation=activation, act_bits=8,
                                act_scale_log2=act.scale_log2, act_signed=int(signed), **clip, **attrs)
        y = reference.run(model, {"X": x})[0]
        expected = independent_forward(blob, x, act, bias, "conv", activation, (-0.5, 1.0), **attrs)
        assert y.tobytes() == expected.tobytes()


@pytest.mark.parametrize("case", sorted(DENSE_CASES))
def test_reference_dense_matches_independent_formula(case):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    x_shape, w_shape = DENSE_CASES[case]
    for bits, signed in ((4, True), (8, False), (6, True)):
        params = pow2_params(rng, 1, 5)
        blob = fmt.encode(narrow_codes(rng, w_shape, 0.6, params), params)
        act = intmode.ActQuant(bits, int(rng.integers(-8, 2)), signed)
        x = extreme_inputs(rng, x_shape, act)
        model = shiftconv_model(blob, x_shape, kind="dense", act_bits=bits, act_scale_log2=act.scale_log2,
                                act_signed=int(signed))
        y = reference.run(model, {"X": x})[0]
        assert y.tobytes() == independent_forward(blob, x, act, None, "dense").tobytes()


def test_integer_mode_close_to_float_mode():
    """8-bit activations change the output by about one input step times the weights."""
    rng = np.random.default_rng(3)
    params = pow2_params(rng, 1, 5)
    blob = fmt.encode(random_codes(rng, (16, 8, 3, 3), 0.5, 5), params)
    x = rng.uniform(0, 4, (2, 8, 9, 9)).astype(np.float32)
    y_float = reference.run(shiftconv_model(blob, x.shape, pads=[1, 1, 1, 1]), {"X": x})[0]
    y_int = reference.run(shiftconv_model(blob, x.shape, pads=[1, 1, 1, 1], act_bits=8, act_scale_log2=-6,
                                          act_signed=0), {"X": x})[0]
    weight = fmt.dequantize(blob)
    bound = 0.5 * 2.0**-6 * np.abs(weight).reshape(16, -1).sum(1).max()
    assert 0 < np.abs(y_int - y_float).max() <= bound * 1.0001


# --- the accumulator bound -------------------------------------------------------------------

def limit_blob(extra: int = 0) -> bytes:
    """One dense row of 6-bit shift-mode weights 2^0, 2^0, 2^1, ..., 2^23 (+ extra more 2^0):
    P = 2^24 + extra. With signed 8-bit inputs the smallest sum is -128 * P = -2^31 exactly."""
    exps = [0, 0, *range(1, 24)] + [0] * extra
    codes = np.array([exps], dtype=np.int64)  # sign bit 0: positive; b = 31 so e - b = e - 31
    return fmt.encode(codes, fmt.QuantParams(0, 6, 1.0, b=31))


def test_bound_reaches_int32_exactly():
    blob = limit_blob()
    layer = intmode.prepare(blob, intmode.ActQuant(8, 0, True))
    hi, lo = intmode.accumulator_range(layer.weight, layer.act)
    assert (int(hi[0]), int(lo[0])) == (127 * 2**24, 2**31)
    k = layer.weight.weight.shape[1]
    for x in (np.full((1, k), -128.0), np.full((1, k), 127.0)):
        y = intmode.forward(layer, x.astype(np.float32), kind="dense")
        exact = int(x[0, 0]) * 2**24
        assert y[0, 0] == np.float32(np.float32(exact) * layer.scales[0])
    with pytest.raises(intmode.IntModeError, match="beyond int32"):
        intmode.prepare(limit_blob(extra=1), intmode.ActQuant(8, 0, True))
    # Unsigned inputs reach 255 * P: beyond int32 for the same weights.
    with pytest.raises(intmode.IntModeError, match="8-bit unsigned inputs .* beyond int32"):
        intmode.prepare(blob, intmode.ActQuant(8, 0, False))
    intmode.prepare(blob, intmode.ActQuant(7, 0, False))  # 127 * 2^24 fits


def test_too_wide_a_shift_is_refused():
    codes = np.array([[0, 45, 3]], dtype=np.int64)  # exponents 0 and 45 in one row: shift 45
    blob = fmt.encode(codes, fmt.QuantParams(0, 7, 1.0, b=50))
    with pytest.raises(intmode.IntModeError, match="row 0 needs a shift of 45 bits"):
        intmode.prepare(blob, intmode.ActQuant(8, 0, True))


@pytest.mark.parametrize("attrs, message", [
    (dict(act_bits=9, act_scale_log2=0, act_signed=1), "act_bits 9 outside 2..8"),
    (dict(act_bits=1, act_scale_log2=0, act_signed=1), "act_bits 1 outside"),
    (dict(act_bits=8, act_scale_log2=64, act_signed=1), "act_scale_log2 64 outside -64..63"),
    (dict(act_bits=8, act_scale_log2=-65, act_signed=0), "act_scale_log2 -65 outside"),
    (dict(act_bits=8, act_scale_log2=0, act_signed=2), "act_signed must be 0 or 1"),
    (dict(act_bits=8, act_signed=1), "needs act_scale_log2"),
    (dict(act_bits=8), "needs act_scale_log2, act_signed"),
    (dict(act_bits=8.0, act_scale_log2=0, act_signed=1), "act_bits must be an integer attribute"),
    (dict(act_bits=8, act_scale_log2=0, act_signed=1.0), "act_signed must be an integer attribute"),
])
def test_reference_refuses_bad_attributes_naming_the_node(attrs, message):
    blob = fmt.encode(random_codes(np.random.default_rng(1), (4, 6), 0.3, 5), fmt.QuantParams(0, 5, 0.1, b=4))
    model = shiftconv_model(blob, (2, 6), kind="dense", **attrs)
    with pytest.raises(intmode.IntModeError, match=f"ShiftConv sc: .*{message}"):
        reference.run(model, {"X": np.zeros((2, 6), np.float32)})


# --- calibration of the activation scales -----------------------------------------------------

def test_act_stats_counts_clipping_exactly_and_chooses_by_method():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(50_000) * 3, [40.0, -41.0]]).astype(np.float32)
    for signed in (True, False):
        stats = act_scales.ActStats(8, signed, 1 << 20, np.random.default_rng(0))
        for part in np.array_split(x, 7):
            stats.update(part)
        act = lambda a: intmode.ActQuant(8, a, signed)  # noqa: E731
        for a in range(-10, 3):
            outside = np.count_nonzero((x > act(a).qmax * 2.0**a) | (x < act(a).qmin * 2.0**a))
            assert stats.clipped(a) == outside
        a, rate = stats.choose("minmax")
        assert stats.clipped(a) == stats.always and stats.clipped(a - 1) > stats.always
        assert rate == stats.always / x.size
        p, _ = stats.choose("percentile")
        assert stats.clipped(p) <= 1e-4 * x.size + stats.always < stats.clipped(p - 1)
        m, _ = stats.choose("mse")
        errors = {c: float(((x.astype(np.float64) - intmode.quantize(x, act(c)) * 2.0**c) ** 2).sum())
                  for c in range(a - 7, a + 1)}
        assert m == min(errors, key=lambda c: (errors[c], -c))
        assert m < a  # clipping the two outliers pays off in squared error


def test_nonnegative_follows_relu_clip_and_shape_ops():
    x = gs.Variable("x", np.float32, [1, 4])
    relu, clip, neg_clip, flat, summed, mixed = (gs.Variable(n, np.float32) for n in
                                                 ("relu", "clip", "neg_clip", "flat", "summed", "mixed"))
    nodes = [gs.Node("Relu", inputs=[x], outputs=[relu]),
             gs.Node("Clip", inputs=[x, gs.Constant("lo", np.array(0, np.float32)),
                                     gs.Constant("hi", np.array(6, np.float32))], outputs=[clip]),
             gs.Node("Clip", inputs=[relu, gs.Constant("lo2", np.array(-1, np.float32)),
                                     gs.Constant("hi2", np.array(-0.5, np.float32))], outputs=[neg_clip]),
             gs.Node("Flatten", inputs=[relu], outputs=[flat]),
             gs.Node("Add", inputs=[flat, clip], outputs=[summed]),
             gs.Node("Add", inputs=[flat, x], outputs=[mixed])]
    gs.Graph(nodes=nodes, inputs=[x], outputs=[summed, mixed, neg_clip])
    assert [act_scales.nonnegative(t) for t in (x, relu, clip, neg_clip, flat, summed, mixed)] == \
        [False, True, True, False, True, True, False]


# --- convert, inspect, CLI --------------------------------------------------------------------

def test_convert_refuses_bad_integer_options(tmp_path, rng):
    path = save(conv_model((1, 3, 8, 8), (4, 3, 3, 3), rng, pads=[1, 1, 1, 1]), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    with pytest.raises(FqOnnxError, match="needs calibration data"):
        api.convert(path, out, act_bits=8)
    with pytest.raises(FqOnnxError, match="power-of-two centres"):
        api.convert(path, out, act_bits=8, calib="digits", pow2_centres=False)
    with pytest.raises(FqOnnxError, match="--act-bits must be an integer in 4..8"):
        api.convert(path, out, act_bits=9, calib="digits")
    with pytest.raises(FqOnnxError, match="--act-calib must be one of"):
        api.convert(path, out, act_bits=8, act_calib="best", calib="digits")
    assert not out.exists()


def digits_like_model(rng):
    """Conv -> Relu -> Conv -> Relu -> Flatten -> Gemm on 1x12x12 inputs, random weights."""
    def t(name, a):
        return onnx.numpy_helper.from_array(np.asarray(a, np.float32), name)
    inits = [t("W1", rng.standard_normal((8, 1, 3, 3)) * 0.5), t("B1", rng.standard_normal(8) * 0.1),
             t("W2", rng.standard_normal((8, 8, 3, 3)) * 0.2), t("W3", rng.standard_normal((10, 8 * 6 * 6)) * 0.05)]
    nodes = [helper.make_node("Conv", ["X", "W1", "B1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], name="c2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="f"),
             helper.make_node("Gemm", ["f", "W3"], ["Y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1, 12, 12])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_convert_with_integer_activations(tmp_path, rng):
    path = save(digits_like_model(rng), tmp_path / "m.onnx")
    calib = rng.standard_normal((40, 1, 12, 12)).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "int.onnx"
    report = api.convert(path, out, sparsity=0.5, calib=str(tmp_path / "calib.npy"), calib_size=40, act_bits=8,
                         act_calib="minmax", min_weights=0)  # c1 has 72 weights: compress it too
    acts = {r.name: r.act for r in report.layers}
    assert acts["c1"]["signed"] and not acts["c2"]["signed"] and not acts["fc"]["signed"]  # after ReLUs
    assert all(a["bits"] == 8 and a["clip_rate"] == 0.0 for a in acts.values())  # minmax: no clipping
    assert report.settings["act_bits"] == 8 and "8-bit integer activations in 3 of 3" in report.summary()
    graph = gs.import_onnx(onnx.load(str(out)))
    for node in graph.nodes:
        if node.op == "ShiftConv":
            assert {"act_bits", "act_scale_log2", "act_signed", "act_clip_rate"} <= set(node.attrs)
    # minmax on the calibration samples (all 40): every input of c1 fits, at half the scale some would not.
    x = calib
    scale = 2.0 ** acts["c1"]["scale_log2"]
    assert -128 * scale <= x.min() and x.max() <= 127 * scale
    assert x.min() < -64 * scale or x.max() > 63.5 * scale
    # The same weights as the float-activation conversion; inspect shows the quantizers.
    plain = api.convert(path, tmp_path / "float.onnx", sparsity=0.5, calib=str(tmp_path / "calib.npy"), calib_size=40,
                        min_weights=0)
    for a, b in zip(graph.nodes, gs.import_onnx(onnx.load(str(tmp_path / "float.onnx"))).nodes):
        if a.op == "ShiftConv":
            assert np.array_equal(a.inputs[1].values, b.inputs[1].values)
    assert all(r.act is None for r in plain.layers)
    assert [r.act for r in api.inspect_model(out).layers] == [{k: v for k, v in a.items() if k != "method"}
                                                             for a in acts.values()]
    # The numpy reference runs the whole converted model in integer mode and differs a little
    # from the float-activation model.
    y_int = reference.run(str(out), {"X": x[:4]})[0]
    y_float = reference.run(str(tmp_path / "float.onnx"), {"X": x[:4]})[0]
    assert 0 < np.abs(y_int - y_float).max() < 0.1 * np.abs(y_float).max()


def test_layer_that_would_overflow_keeps_float_activations(tmp_path, rng):
    """A row mixing weights 2^40 apart cannot be an int32 shift: the converter says so."""
    model = gemm_model(None, 64, 5, rng, trans_b=1)
    weight = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[:, 0] = 1e-12 * np.sign(weight[:, 0])  # survives pruning at sparsity 0, needs ~e-40
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weight, "Bw"))
    path = save(model, tmp_path / "g.onnx")
    calib = tmp_path / "c.npy"
    np.save(calib, rng.standard_normal((16, 64)).astype(np.float32))
    report = api.convert(path, tmp_path / "o.onnx", sparsity=0.0, bits=8, w_sep=1e9, calib=str(calib), calib_size=16,
                         act_bits=8, rounding="nearest", prune_method="magnitude", bias_correction=False)
    act = report.layers[0].act
    assert "fallback" in act and "needs a shift of" in act["fallback"]
    node = [n for n in onnx.load(str(tmp_path / "o.onnx")).graph.node if n.op_type == "ShiftConv"][0]
    names = {a.name for a in node.attribute}
    assert "act_bits" not in names and "act_fallback" in names
    assert "integer activations in 0" not in report.summary()


def test_cli_convert_and_inspect_show_integer_mode(tmp_path, rng):
    path = save(digits_like_model(rng), tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", rng.standard_normal((16, 1, 12, 12)).astype(np.float32))
    out = tmp_path / "o.onnx"
    cmd = [sys.executable, "-m", "fq_onnx", "convert", path, "-o", str(out), "--calib", str(tmp_path / "calib.npy"),
           "--calib-size", "16", "--act-bits", "8", "--min-weights", "0", "--json", str(tmp_path / "r.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "integer activations in 3 of 3" in done.stdout and "u8 2^" in done.stdout
    assert json.loads((tmp_path / "r.json").read_text())["layers"][0]["act"]["bits"] == 8
    shown = subprocess.run([sys.executable, "-m", "fq_onnx", "inspect", str(out)], capture_output=True, text=True,
                           cwd=tmp_path)
    assert shown.returncode == 0 and "s8 2^" in shown.stdout and "clip" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "fq_onnx", "convert", path, "-o", str(out), "--act-bits", "8"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "needs calibration data (--calib)" in bad.stderr
