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
        assert np.allclose(focus._nearest_pow2_error(values, 0.1, e_max, m), brute, rtol=1e-12, atol=1e-15)
