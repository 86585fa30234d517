"""The byte format: levels follow FORMAT.md exactly; every corruption is a clear FormatError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from fq_onnx import fmt


def blob_for(params=fmt.QuantParams(fmt.MODE_FOCUSED, 5, 0.125, -2.0, 1.0, 7), shape=(4, 3, 3, 3), seed=0):
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random(shape) < 0.5, rng.integers(0, 1 << params.bits, shape), -1)
    return fmt.encode(codes, params), codes


def test_levels_follow_the_documented_formula():
    p = fmt.QuantParams(fmt.MODE_FOCUSED, 5, 0.5, -4.0, 2.0, 7)
    table = fmt.levels(p)
    # code = component << 4 | sign << 3 | e
    assert table[0] == np.float32(0.5 * (-4.0 + 2.0 ** -7))
    assert table[(1 << 4) | (1 << 3) | 7] == np.float32(0.5 * (2.0 - 1.0))
    s = fmt.levels(fmt.QuantParams(fmt.MODE_SHIFT, 3, 3.0, 0.0, 0.0, 1))
    assert list(s) == [1.5, 3.0, 6.0, 12.0, -1.5, -3.0, -6.0, -12.0]


def test_dequantize_puts_exact_zeros_and_levels():
    blob, codes = blob_for()
    w = fmt.dequantize(blob)
    table = fmt.levels(fmt.decode(blob).params)
    assert np.all(w[codes < 0] == 0) and not np.any(np.signbit(w[codes < 0]))
    assert np.array_equal(w[codes >= 0], table[codes[codes >= 0]])


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_corruptions_are_rejected_with_the_rule_named():
    blob, _ = blob_for()
    body = bytearray(blob[:-4])
    cases = {
        "too short": (blob[:10], "too short"),
        "truncated": (blob[:-7], "declares"),
        "longer": (blob + b"\x00", "declares"),
        "crc": (blob[:-1] + bytes([blob[-1] ^ 1]), "CRC"),
        "magic": (with_crc(b"XXXX" + bytes(body[4:])), "magic"),
        "version": (with_crc(bytes(body[:4]) + b"\x02" + bytes(body[5:])), "version"),
        "mode": (with_crc(bytes(body[:5]) + b"\x07" + bytes(body[6:])), "mode"),
        "bits": (with_crc(bytes(body[:6]) + b"\x09" + bytes(body[7:])), "bits"),
        "ndim": (with_crc(bytes(body[:7]) + b"\x00" + bytes(body[8:])), "ndim"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(fmt.FormatError, match=message):
            fmt.decode(data)


def test_flipping_any_byte_never_decodes_silently():
    blob, codes = blob_for(shape=(3, 2, 3, 3), seed=5)
    for i in range(len(blob)):
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(fmt.FormatError):
                fmt.decode(bytes(bad))


def test_absurd_declared_size_is_rejected_before_allocating():
    head = struct.pack("<4sBBBBBBH", b"FQW1", 1, 0, 5, 2, 1, 0, 0) + struct.pack("<2I", 65536, 65536)
    head += struct.pack("<IfffiII", 1, 1.0, 0.0, 0.0, 15, 0, 0)
    with pytest.raises(fmt.FormatError, match="exceeds the limit"):
        fmt.decode(with_crc(head + bytes(17)))


def test_oversubscribed_code_table_is_rejected():
    codes = np.array([0, 1, 2, 3])
    params = fmt.QuantParams(fmt.MODE_SHIFT, 2, 1.0, 0.0, 0.0, 1)
    blob = bytearray(fmt.encode(codes, params, run_max=0))
    header = fmt.read_header(bytes(blob))
    start = header.table_offset
    blob[start:start + header.table_bytes] = bytes([0x11, 0x11, 0x01])  # five codes of length 1
    with pytest.raises(fmt.FormatError, match="over-subscribed"):
        fmt.decode(with_crc(bytes(blob[:-4])))


def test_exponent_offset_range_is_checked():
    with pytest.raises(fmt.FormatError, match="exponent offset"):
        fmt.levels(fmt.QuantParams(fmt.MODE_SHIFT, 8, 1.0, 0.0, 0.0, 127))
    with pytest.raises(fmt.FormatError, match="finite"):
        fmt.levels(fmt.QuantParams(fmt.MODE_FOCUSED, 5, float("nan"), 0.0, 0.0, 7))


def test_per_row_scales_round_trip_and_dequantize_exactly():
    params = fmt.QuantParams(fmt.MODE_FOCUSED, 5, 1.0, -2.0, 1.0, 7)
    rng = np.random.default_rng(4)
    codes = np.where(rng.random((5, 3, 3)) < 0.6, rng.integers(0, 32, (5, 3, 3)), -1)
    alphas = np.array([1e-3, 0.5, 7.0, 2.0**-20, 123.0], dtype=np.float32)
    blob = fmt.encode(codes, params, alphas=alphas)
    decoded = fmt.decode(blob)
    assert np.array_equal(decoded.alphas, alphas) and np.array_equal(decoded.codes, codes)
    w = fmt.dequantize(blob)
    for r in range(5):
        table = fmt.levels(fmt.QuantParams(params.mode, 5, float(alphas[r]), -2.0, 1.0, 7))
        kept = codes[r] >= 0
        assert np.array_equal(w[r][kept], table[codes[r][kept]]) and np.all(w[r][~kept] == 0)


def test_bad_scale_fields_are_rejected():
    params = fmt.QuantParams(fmt.MODE_SHIFT, 4, 1.0, 0.0, 0.0, 7)
    codes = np.array([[0, -1], [3, 4], [-1, 1]])
    with pytest.raises(fmt.FormatError, match="one per row"):
        fmt.encode(codes, params, alphas=np.ones(2, np.float32))
    with pytest.raises(fmt.FormatError, match="finite and positive"):
        fmt.encode(codes, params, alphas=np.array([1.0, -1.0, 1.0], np.float32))
    blob = bytearray(fmt.encode(codes, params, alphas=np.array([1.0, 2.0, 3.0], np.float32)))
    scale_count_at = 12 + 4 * 2
    for count in (0, 2, 10**9):
        bad = bytearray(blob[:-4])
        bad[scale_count_at:scale_count_at + 4] = struct.pack("<I", count)
        with pytest.raises(fmt.FormatError):
            fmt.decode(with_crc(bytes(bad)))
    bad = bytearray(blob[:-4])
    bad[scale_count_at + 8:scale_count_at + 12] = struct.pack("<f", float("nan"))
    with pytest.raises(fmt.FormatError, match="finite"):
        fmt.decode(with_crc(bytes(bad)))


def _exhaustive_run_max(codes, params):
    """The run_max whose blob is smallest, trying every choice (first wins a tie)."""
    from fq_onnx.format import codec

    sizes = []
    for r in fmt.RUN_MAX_CHOICES:
        symbols = codec.tokenize(codes.ravel().astype(np.int64), params.value_count, r)
        size = codec.alphabet_size(params.value_count, r)
        freqs = np.bincount(symbols, minlength=size)
        sizes.append((size + 1) // 2 + (codec.encoded_bits(freqs, codec.huffman_lengths(freqs)) + 7) // 8)
    return fmt.RUN_MAX_CHOICES[int(np.argmin(sizes))]


@pytest.mark.parametrize("seed", range(12))
def test_encoded_size_and_the_pruned_run_max_search_match_encoding_every_choice(seed):
    rng = np.random.default_rng(seed)
    bits, mantissa = int(rng.integers(3, 8)), int(rng.integers(0, 2))
    params = fmt.QuantParams(fmt.MODE_SHIFT, bits, 0.5, b=1, mantissa=mantissa)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 300)))
    sparsity = rng.uniform(0, 0.99)
    codes = np.where(rng.random(shape) < sparsity, -1, np.minimum(rng.geometric(0.3, shape) - 1, params.value_count - 1))
    alphas = rng.uniform(0.5, 2, shape[0]).astype(np.float32) if seed % 2 else None
    blob = fmt.encode(codes, params, block=2, alphas=alphas)
    assert fmt.encoded_size(codes, params, block=2, alphas=alphas) == len(blob)
    assert fmt.read_header(blob).run_max == _exhaustive_run_max(codes, params)
