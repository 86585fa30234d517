"""Token + canonical Huffman coding: round trips, edge cases, entropy bound, corruption."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fq_onnx import codec, fmt

SHIFT5 = fmt.QuantParams(fmt.MODE_SHIFT, 5, 0.015625, 0.0, 0.0, 15)
FOCUSED5 = fmt.QuantParams(fmt.MODE_FOCUSED, 5, 0.375, -1.0, 0.5, 7)


def roundtrip(codes, params=SHIFT5, **kw):
    blob = fmt.encode(codes, params, **kw)
    decoded = fmt.decode(blob)
    np.testing.assert_array_equal(decoded.codes, codes)
    assert decoded.params == params
    return blob


@pytest.mark.parametrize("codes", [
    np.full((7, 3), -1),  # all zeros
    np.array([[-1, -1, 4, -1]]),  # one nonzero
    np.arange(32).reshape(4, 8),  # fully dense
    np.array([5]),  # a single element
    np.array([-1]),  # a single zero
    np.concatenate([np.full(100_000, -1), [3], np.full(77_777, -1), [9, 9]]),  # huge runs
    np.concatenate([[1], np.full(5000, -1)]),  # long trailing run
])
@pytest.mark.parametrize("run_max", [None, 0, 7])
def test_roundtrip_edge_cases(codes, run_max):
    roundtrip(codes, run_max=run_max)


@settings(max_examples=60, deadline=None)
@given(codes=hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
                        elements=st.integers(-1, 31)),
       focused=st.booleans(), run_max=st.sampled_from([None, 0, 1, 3, 63]))
def test_roundtrip_property(codes, focused, run_max):
    roundtrip(codes, FOCUSED5 if focused else SHIFT5, run_max=run_max)


@settings(max_examples=40, deadline=None)
@given(freqs=st.lists(st.integers(0, 10**6), min_size=1, max_size=300))
def test_huffman_lengths_are_a_valid_prefix_code(freqs):
    lengths = codec.huffman_lengths(np.array(freqs))
    assert lengths.max(initial=0) <= codec.MAX_CODE_LENGTH
    assert np.all((lengths > 0) == (np.array(freqs) > 0))
    codec.validate_lengths(lengths)
    used = lengths[lengths > 0]
    if used.size > 1:
        assert np.sum(2.0 ** -used) == pytest.approx(1.0)  # complete: no wasted code space


def test_length_limit_on_fibonacci_frequencies():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = codec.huffman_lengths(np.array(fib))
    assert lengths.max() == codec.MAX_CODE_LENGTH
    codec.validate_lengths(lengths)
    symbols = np.repeat(np.arange(40), 1)
    assert np.array_equal(codec.decode_symbols(codec.encode_symbols(symbols, lengths), lengths, 40), symbols)


@pytest.mark.parametrize("sparsity", [0.3, 0.7, 0.9, 0.97])
def test_size_within_three_percent_of_token_entropy(sparsity):
    rng = np.random.default_rng(7)
    n = 200_000
    keep = rng.random(n) >= sparsity
    # Realistic codes: exponents concentrated on the top few levels, signs balanced.
    exponent = np.clip(15 - rng.geometric(0.45, n), 0, 15)
    codes = np.where(keep, exponent + 16 * rng.integers(0, 2, n), -1)
    blob = fmt.encode(codes, SHIFT5)
    header = fmt.read_header(blob)
    symbols = codec.tokenize(codes, 32, header.run_max)
    entropy_bytes = codec.entropy_bits(symbols) / 8
    assert header.payload_bytes <= 1.03 * entropy_bytes
    # and far below one bit per weight for the zero symbol, which per-weight Huffman would pay
    if sparsity >= 0.9:
        assert len(blob) * 8 / n < 1.0


def test_tokens_reach_below_per_weight_huffman():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random(100_000) < 0.1, rng.integers(0, 32, 100_000), -1)
    per_weight = codec.huffman_lengths(np.bincount(codes + 1))
    per_weight_bits = codec.encoded_bits(np.bincount(codes + 1), per_weight)
    assert len(fmt.encode(codes, SHIFT5)) * 8 < 0.7 * per_weight_bits


def test_deterministic_bytes():
    rng = np.random.default_rng(3)
    codes = np.where(rng.random((16, 8, 3, 3)) < 0.3, rng.integers(0, 32, (16, 8, 3, 3)), -1)
    assert fmt.encode(codes, FOCUSED5) == fmt.encode(codes.copy(), FOCUSED5)


def test_decoding_a_large_payload_needs_little_memory():
    """The decoder's window table is built in chunks: a 2 Mbit payload (one layer of a big
    model) once took ~100 bytes per payload bit (~280 MB here). Peak RSS of a fresh interpreter."""
    import subprocess
    import sys

    script = """
import numpy as np
from fq_onnx import codec
def hwm():
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
rng = np.random.default_rng(3)
symbols = rng.choice(64, size=400_000, p=np.arange(64, 0, -1) / np.arange(64, 0, -1).sum())
lengths = codec.huffman_lengths(np.bincount(symbols, minlength=64))
payload = codec.encode_symbols(symbols, lengths)
assert len(payload) > 250_000
before = hwm()
assert np.array_equal(codec.decode_symbols(payload, lengths, symbols.size), symbols)
print(hwm() - before)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr
    grown = int(run.stdout.split()[-1])
    assert grown < 40 * 2**20, f"decoding grew the peak RSS by {grown / 2**20:.0f} MiB"
