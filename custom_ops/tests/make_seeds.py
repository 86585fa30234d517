"""Writes the fuzz seeds in custom_ops/tests/seeds/ with fq_onnx.fmt.encode (docs/FORMAT.md).

    python custom_ops/tests/make_seeds.py

Small real blobs covering conv and dense shapes, both modes, 2..8 bits, mantissa 0..3, mask
blocks, run lengths 0..63, an all-pruned tensor, and both scale layouts: one scale (A = 1) and one per output row
(A = dims[0], scales of very different magnitudes). Deterministic: rerunning rewrites the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fq_onnx import fmt

SEEDS = Path(__file__).resolve().parent / "seeds"


def _codes(rng, shape, bits, sparsity, block=1):
    codes = rng.integers(0, 1 << bits, size=shape)
    mask_rows = -(-shape[0] // block)
    mask = np.repeat(rng.random((mask_rows,) + tuple(shape[1:])) < sparsity, block, axis=0)[: shape[0]]
    codes[mask] = -1
    return codes


def _row_scales(rows):
    """Per-row scales spanning six orders of magnitude."""
    return (np.float32(0.1) * np.float32(10.0) ** (np.arange(rows) % 7 - 3)).astype(np.float32)


def main() -> None:
    rng = np.random.default_rng(20261124)
    shift = lambda bits, b=2: fmt.QuantParams(mode=0, bits=bits, alpha=0.1, b=b)  # noqa: E731
    focused = lambda bits: fmt.QuantParams(mode=1, bits=bits, alpha=0.1, centre0=-1.0, centre1=1.0, b=2)  # noqa: E731
    # name: (shape, params, sparsity, block, run_max, per-row scales)
    specs = {
        "s0": ((8, 4, 3, 3), focused(5), 0.7, 1, 0, False),
        "s1": ((16, 3, 3, 3), shift(4), 0.9, 4, 0, True),
        "s2": ((6, 2, 1, 1), focused(3), 0.0, 1, 1, True),
        "s3": ((10, 20), shift(8, 10), 0.5, 1, 63, True),
        "s4": ((4, 4, 5, 5), focused(6), 0.95, 2, 15, False),
        "s5": ((1, 1, 1, 1), shift(2), 1.0, 1, 0, False),
        "s6": ((5, 7), focused(4), 0.3, 1, 3, True),
        # mantissa codes (version 2 blobs): levels 2^(e-b) * (1 + k/2^m)
        "s7": ((8, 4, 3, 3), fmt.QuantParams(1, 6, 0.1, -1.0, 1.0, 2, mantissa=2), 0.6, 1, 0, True),
        "s8": ((12, 9), fmt.QuantParams(0, 5, 0.1, b=1, mantissa=3), 0.4, 1, 3, False),
    }
    SEEDS.mkdir(exist_ok=True)
    for name, (shape, params, sparsity, block, run_max, per_row) in specs.items():
        codes = _codes(rng, shape, params.bits, sparsity, block)
        alphas = _row_scales(shape[0]) if per_row else None
        blob = fmt.encode(codes, params, block=block, run_max=run_max, alphas=alphas)
        fmt.dequantize(blob)  # valid by the reference decoder
        (SEEDS / f"{name}.fqw").write_bytes(blob)
        print(f"{name}.fqw: {len(blob)} bytes, shape {shape}, A = {shape[0] if per_row else 1}")


if __name__ == "__main__":
    main()
