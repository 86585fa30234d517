"""The mantissa level family (issue 16): levels 2^e * (1 + k/2^m) in the format, the fitting,
integer mode and the converter; m = 0 must stay exactly what it was."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from fq_onnx.format import fmt
from fq_onnx.quantize import focus


def codes_for(params: fmt.QuantParams, shape=(6, 4, 3, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.6, rng.integers(0, 1 << params.bits, shape), -1)


def test_levels_follow_the_documented_formula():
    # shift mode, 5 bits, m = 2: v = sign << 4 | e << 2 | k
    p = fmt.QuantParams(fmt.MODE_SHIFT, 5, 0.5, b=1, mantissa=2)
    table = fmt.levels(p)
    for v in range(32):
        sign, e, k = v >> 4, (v >> 2) & 3, v & 3
        expected = np.float32(0.5 * (-1 if sign else 1) * 2.0 ** (e - 1) * (1 + k / 4))
        assert table[v] == expected, v
    # focused, 6 bits, m = 1: v = c << 5 | sign << 4 | e << 1 | k
    p = fmt.QuantParams(fmt.MODE_FOCUSED, 6, 0.25, -2.0, 1.0, 3, mantissa=1)
    table = fmt.levels(p)
    for v in range(64):
        c, sign, e, k = v >> 5, (v >> 4) & 1, (v >> 1) & 7, v & 1
        t = np.float32(2.0 ** (e - 3) * (1 + k / 2))
        u = np.float32(np.float32((-2.0, 1.0)[c]) + (-t if sign else t))
        assert table[v] == np.float32(np.float32(0.25) * u), v


def test_mantissa_zero_is_the_old_format_byte_for_byte():
    p = fmt.QuantParams(fmt.MODE_FOCUSED, 5, 0.125, -2.0, 1.0, 7)
    blob = fmt.encode(codes_for(p), p)
    assert blob[4] == 1 and blob[10:12] == b"\0\0"
    for m in (1, 2):
        pm = fmt.QuantParams(fmt.MODE_FOCUSED, 5, 0.125, -2.0, 1.0, 3, mantissa=m)
        blob = fmt.encode(codes_for(pm), pm)
        assert blob[4] == 2 and blob[10] == m and blob[11] == 0


@pytest.mark.parametrize("mode,bits,m", [(0, 3, 1), (0, 5, 3), (0, 8, 6), (1, 4, 1), (1, 5, 2), (1, 8, 5)])
def test_round_trip(mode, bits, m):
    b = (1 << (bits - 1 - mode - m)) - 1
    p = fmt.QuantParams(mode, bits, 0.375, *((-0.5, 0.25) if mode else (0.0, 0.0)), b, mantissa=m)
    codes = codes_for(p)
    d = fmt.decode(fmt.encode(codes, p))
    assert d.params == p and np.array_equal(d.codes, codes)
    w = fmt.dequantize(fmt.encode(codes, p))
    assert np.array_equal(w[codes >= 0], fmt.levels(p)[codes[codes >= 0]])


def test_mantissa_rules_are_checked():
    with pytest.raises(fmt.FormatError, match="mantissa 4 leaves no exponent bit in 5-bit shift mode"):
        fmt.check_params(fmt.QuantParams(fmt.MODE_SHIFT, 5, 1.0, mantissa=4))
    with pytest.raises(fmt.FormatError, match="mantissa 3 leaves no exponent bit in 5-bit FQ mode"):
        fmt.check_params(fmt.QuantParams(fmt.MODE_FOCUSED, 5, 1.0, 1.0, -1.0, mantissa=3))
    with pytest.raises(fmt.FormatError, match="mantissa -1"):
        fmt.check_params(fmt.QuantParams(fmt.MODE_SHIFT, 5, 1.0, mantissa=-1))
    # b is checked against the exponent bits that remain: 5-bit shift with m = 2 has e <= 3
    fmt.check_params(fmt.QuantParams(fmt.MODE_SHIFT, 5, 1.0, b=-124, mantissa=2))
    with pytest.raises(fmt.FormatError, match="exponent offset"):
        fmt.check_params(fmt.QuantParams(fmt.MODE_SHIFT, 5, 1.0, b=-125, mantissa=2))


def _patched(blob: bytes, offset: int, value: int) -> bytes:
    body = bytearray(blob[:-4])
    body[offset] = value
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_header_rules_name_the_problem():
    p = fmt.QuantParams(fmt.MODE_SHIFT, 5, 0.5, b=3, mantissa=2)
    blob = fmt.encode(codes_for(p), p)
    cases = [
        (_patched(blob, 10, 4), "mantissa 4 leaves no exponent bit"),  # too large for the bits
        (_patched(blob, 11, 1), "reserved field is not 0"),
        (_patched(_patched(blob, 4, 1), 10, 2), "reserved field is not 0"),  # v1 with byte 10 set
        (_patched(blob, 10, 0), "version 2 blob must have mantissa >= 1"),
        (_patched(blob, 4, 3), "format version 3 is not supported"),
    ]
    for data, message in cases:
        with pytest.raises(fmt.FormatError, match=message):
            fmt.decode(data)


def test_mantissa_zero_fit_is_unchanged_and_more_mantissa_fits_closer():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    keep = np.ones(w.shape, bool)
    base = focus.quantize(w, keep, bits=5)
    again = focus.quantize(w, keep, bits=5, mantissa=0)
    assert again.params == base.params and np.array_equal(again.codes, base.codes)
    # 6 bits: m = 0..2 keep 5..3 exponent bits, a range a Gaussian layer fills
    errors = [focus.quantize(w, keep, bits=6, mantissa=m).rel_error for m in range(3)]
    assert errors[1] < 0.8 * errors[0] and errors[2] < 0.8 * errors[1]


def test_nearest_level_error_matches_a_brute_force_search():
    rng = np.random.default_rng(4)
    values = rng.standard_normal(2000) * 3
    for m in (1, 2, 3):
        e_max = 4
        levels = np.array([2.0**e * (1 + k / 2**m) for e in range(e_max + 1) for k in range(2**m)]) * 0.1
        brute = np.min((np.abs(values)[:, None] - levels[None, :]) ** 2, axis=1)
        total = focus._Sorted(values).error_sums(np.zeros(1), np.array([0.1]), e_max, m)[0]
        assert total == pytest.approx(brute.sum(), rel=1e-9)


# --- the C++ decoder and kernels against the Python reference ------------------------------------

from fq_onnx import reference, runtime  # noqa: E402
from fq_onnx.op import intmode  # noqa: E402

from test_custom_ops import KERNELS, shiftconv_model  # noqa: E402
from test_intmode import extreme_inputs  # noqa: E402


def mantissa_params(rng, mode: int, bits: int, m: int, pow2: bool = False) -> fmt.QuantParams:
    """Valid parameters with m mantissa bits; ``pow2``: centres integer mode accepts."""
    x = bits - 1 - mode - m  # exponent bits
    b = int(rng.integers(0, (1 << x) + 2))
    alpha = float(rng.uniform(0.01, 0.2))
    if mode == fmt.MODE_SHIFT:
        return fmt.QuantParams(0, bits, alpha, b=b, mantissa=m)
    if pow2:
        c0, c1 = -(2.0 ** int(rng.integers(-b - 1, 3))), 2.0 ** int(rng.integers(-b - 1, 3))
    else:
        c0, c1 = float(rng.uniform(-2, 0)), float(rng.uniform(0, 2))
    return fmt.QuantParams(1, bits, alpha, c0, c1, b, mantissa=m)


CASES = [(mode, bits, m) for mode in (0, 1) for bits in (4, 5, 6) for m in range(4) if m <= bits - 2 - mode]
# integer mode refuses level sets spanning 2^31 (5 exponent bits can): at most 4 exponent bits
INT_CASES = [(mode, bits, m) for mode, bits, m in CASES if bits - 1 - mode - m <= 4]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("mode,bits,m", CASES)
def test_cpp_decodes_the_python_levels_bit_exactly(mode, bits, m):
    """A dense layer fed the identity matrix outputs its decoded weight exactly (1*w plus zeros)."""
    rng = np.random.default_rng(100 * mode + 10 * bits + m)
    params = mantissa_params(rng, mode, bits, m)
    codes = codes_for(params, (12, 40), seed=bits + m)
    alphas = (params.alpha * rng.uniform(0.25, 1, 12)).astype(np.float32)
    for scales in (None, alphas):
        blob = fmt.encode(codes, params, alphas=scales)
        weight = fmt.dequantize(blob)
        model = shiftconv_model(blob, (40, 40), kind="dense")
        x = np.eye(40, dtype=np.float32)
        for kernel in KERNELS:
            y = runtime.session(model, threads=1, kernel=kernel).run(None, {"X": x})[0]
            assert np.array_equal(y, weight.T), (kernel, scales is None)


def test_integer_weights_are_the_levels_times_a_power_of_two():
    rng = np.random.default_rng(5)
    for mode, bits, m in INT_CASES:
        params = mantissa_params(rng, mode, bits, m, pow2=True)
        codes = codes_for(params, (6, 30), seed=m)
        decoded = fmt.decode(fmt.encode(codes, params))
        iw = intmode.integer_weight(decoded)
        units = fmt.dequantize_codes(codes, params, np.ones(6, np.float32)).astype(np.float64)
        assert np.array_equal(iw.weight * np.exp2(iw.base.astype(np.float64))[:, None], units), (mode, bits, m)
        if m == 0:  # exactly the shift-only decomposition
            assert np.all(intmode.code_terms(params).mult == 1)


@pytest.mark.parametrize("mode,bits,m", [c for c in INT_CASES if c[2] > 0])
@pytest.mark.parametrize("kind", ["conv", "dense", "depthwise"])
def test_integer_mode_bit_exact_on_every_kernel(mode, bits, m, kind):
    rng = np.random.default_rng(1000 * mode + 100 * bits + 10 * m + len(kind))
    params = mantissa_params(rng, mode, bits, m, pow2=True)
    if kind == "conv":
        w_shape, x_shape, attrs = (16, 8, 3, 3), (2, 8, 9, 11), dict(pads=[1, 1, 1, 1])
    elif kind == "depthwise":
        w_shape, x_shape, attrs = (8, 1, 3, 3), (2, 8, 12, 13), dict(pads=[1, 1, 1, 1], group=8, strides=[2, 1])
    else:
        w_shape, x_shape, attrs = (10, 70), (3, 70), dict(kind="dense")
    codes = codes_for(params, w_shape, seed=m + bits)
    alphas = (params.alpha * rng.uniform(0.25, 1, w_shape[0])).astype(np.float32)
    blob = fmt.encode(codes, params, alphas=alphas)
    for signed in (True, False):
        act = intmode.ActQuant(8, int(rng.integers(-7, 1)), signed)
        model = shiftconv_model(blob, x_shape, bias=rng.standard_normal(w_shape[0]).astype(np.float32),
                                act_bits=act.bits, act_scale_log2=act.scale_log2, act_signed=int(signed), **attrs)
        x = extreme_inputs(rng, x_shape, act)
        ref = reference.run(model, {"X": x})[0]
        for kernel in KERNELS:
            y = runtime.session(model, threads=1, kernel=kernel).run(None, {"X": x})[0]
            assert same_bits(y, ref), (kernel, signed)


def test_integer_mode_refuses_a_mantissa_term_beyond_int32():
    """The limit counts the multiplier's bits: 3 * 2^29 (top bit 30) is accepted, 3 * 2^30 is
    refused by both implementations with the same words (8-bit shift mode, m = 1: e in 0..63)."""
    params = fmt.QuantParams(fmt.MODE_SHIFT, 8, 0.5, b=40, mantissa=1)
    codes = np.full((2, 4), -1)
    codes[0, 0] = 0  # e = 0, k = 0
    codes[0, 1] = (31 << 1) | 1  # e = 31, k = 1: (1 + 1/2) * 2^31 = 3 * 2^30 against 2^0: top bit 31
    blob = fmt.encode(codes, params)
    with pytest.raises(intmode.IntModeError, match="needs a shift of 31 bits"):
        intmode.integer_weight(fmt.decode(blob))
    codes[0, 1] = (30 << 1) | 1  # 3 * 2^29: top bit 30, accepted
    iw = intmode.integer_weight(fmt.decode(fmt.encode(codes, params)))
    assert iw.weight[0, 1] == 3 << 29
    model = shiftconv_model(blob, (1, 4), kind="dense", act_bits=8, act_scale_log2=0, act_signed=1)
    with pytest.raises(Exception, match="needs a shift of 31 bits"):
        runtime.session(model)


# --- the converter: options, plain conversion, allocation ----------------------------------------

from fq_onnx import api, allocate, inspect  # noqa: E402
from fq_onnx.digits import default_model_path, load_digits_split  # noqa: E402
from fq_onnx.errors import FqOnnxError  # noqa: E402
from fq_onnx.options import ConvertOptions  # noqa: E402


def test_mantissa_options_are_checked_and_leave_no_trace_at_default():
    assert "mantissa" not in ConvertOptions().settings() and "alloc_mantissa" not in ConvertOptions().settings()
    with pytest.raises(FqOnnxError, match=r"--mantissa must be in 0..3 for 5 bits"):
        ConvertOptions(mantissa=4)
    with pytest.raises(FqOnnxError, match="--mantissa must be an integer"):
        ConvertOptions(mantissa=1.5)
    with pytest.raises(FqOnnxError, match="--alloc-mantissa must be in 0..6"):
        ConvertOptions(alloc_mantissa=(0, 7))
    with pytest.raises(FqOnnxError, match="fits none of the widths"):
        ConvertOptions(bits=4, alloc_bits=(3, 4), alloc_mantissa=(3,))
    options = ConvertOptions(mantissa=2, alloc_mantissa=(2, 0, 1))
    settings = options.settings()
    assert settings["mantissa"] == 2 and settings["alloc_mantissa"] == [0, 1, 2]
    replay = ConvertOptions.from_dict(options.to_dict())  # a recipe replays it
    assert (replay.mantissa, replay.alloc_mantissa) == (2, (0, 1, 2))


def output_sqnr(path, x, reference_out) -> float:
    y = runtime.session(str(path)).run(None, {"input": x})[0]
    return float(10 * np.log10(np.sum(reference_out**2) / np.sum((y - reference_out) ** 2)))


def test_plain_conversion_with_a_mantissa_has_lower_output_error(tmp_path):
    """Same sparsity, same exponent bits (the mantissa bits added to --bits): the bundled model
    unpruned, so that rounding is the whole error (measured: 13.2 dB at 5 bits, m = 0; 23.2 dB at
    7 bits, m = 2)."""
    x, _ = load_digits_split("val")
    original = runtime.session(str(default_model_path())).run(None, {"input": x})[0]
    sqnr = {}
    for m in (0, 2):
        out = tmp_path / f"m{m}.onnx"
        report = api.convert(default_model_path(), out, sparsity=0.0, bits=5 + m, mantissa=m)
        assert all(row.mantissa == m for row in inspect.inspect_model(out).layers if row.mode != "float")
        assert ("mantissa" in report.settings) == (m > 0)
        sqnr[m] = output_sqnr(out, x, original)
        np.testing.assert_allclose(runtime.session(str(out)).run(None, {"input": x[:8]})[0],
                                   reference.run(str(out), {"input": x[:8]})[0], rtol=1e-4, atol=1e-4)
    assert sqnr[2] > sqnr[0] + 6, sqnr


def test_allocator_picks_a_mantissa_where_it_pays():
    """Synthetic curves: a mantissa costs no bytes at equal bits and cuts one layer's error."""
    def mantissa_curve(name, gain, helps):
        c = allocate.LayerCurve(name, 40_000)
        for s in allocate.SPARSITY_GRID:
            for m in (0, 1):
                c.bytes[s, 5, m] = int(40_000 / 32 * 6 * (1 - s) + 20)
                c.errors[s, 5, m] = (0.05 + s**2) * (0.5 if helps and m else 1.0 if not m else 1.2)
        c.gain = gain
        return c

    curves = [mantissa_curve("smooth", 1.0, True), mantissa_curve("spiky", 1.0, False)]
    plan = allocate.plan_for_budget(curves, 8_000)
    assert plan["smooth"][2] == 1 and plan["spiky"][2] == 0


def test_alloc_mantissa_reaches_the_written_layers(tmp_path):
    out = tmp_path / "a.onnx"
    report = api.convert(default_model_path(), out, calib="digits", calib_size=64, target_ratio=8,
                         alloc_bits=(4, 5), alloc_mantissa=(0, 2))
    plan = report.settings["allocation"]["plan"]
    chosen = {name: c.get("mantissa", 0) for name, c in plan.items() if isinstance(c, dict)}
    assert any(chosen.values()), plan  # some layer took the mantissa
    assert report.settings["per_layer_mantissa"] == chosen
    stored = {row.name: row.mantissa for row in inspect.inspect_model(out).layers if row.mode != "float"}
    assert all(stored[name] == m for name, m in chosen.items())
    replay = ConvertOptions.from_file(out)
    assert replay.alloc_mantissa == (0, 2) and replay.mantissa == 0
