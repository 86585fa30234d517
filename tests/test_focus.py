"""Quantizer choices and level sets; pruning masks."""

from __future__ import annotations

import numpy as np
import pytest

from fq_onnx import fmt, focus, prune


def gaussian(shape=(64, 32, 3, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.05


def test_bimodal_layer_chooses_focused_and_unimodal_chooses_shift():
    w = gaussian()
    pruned = focus.quantize(w, prune.magnitude_mask(w, 0.7), bits=5)
    assert pruned.mode_name == "FQ" and pruned.mixture.w2 >= 2.0
    dense = focus.quantize(w, prune.magnitude_mask(w, 0.0), bits=5)
    assert dense.mode_name == "shift" and dense.mixture.w2 < 2.0


@pytest.mark.parametrize("bits", [3, 5, 7])
@pytest.mark.parametrize("pow2", [True, False])
@pytest.mark.parametrize("assign", focus.ASSIGNMENTS)
def test_nonzeros_on_level_set_and_pruned_exactly_zero(bits, pow2, assign):
    w = gaussian(seed=bits)
    keep = prune.magnitude_mask(w, 0.6)
    layer = focus.quantize(w, keep, bits=bits, pow2_centres=pow2, assign=assign, seed=1)
    dq = layer.dequantized()
    assert np.all(dq[~keep] == 0)
    assert np.all(layer.codes[~keep] == -1) and np.all(layer.codes[keep] >= 0)
    for row in range(w.shape[0]):
        scale = float(layer.alphas[row]) if layer.alphas is not None else layer.params.alpha
        p = layer.params
        table = fmt.levels(fmt.QuantParams(p.mode, p.bits, scale, p.centre0, p.centre1, p.b))
        assert np.all(np.isin(dq[row][keep[row]], table))
    if layer.mode_name == "FQ" and pow2:
        for centre in (layer.params.centre0, layer.params.centre1):
            assert np.log2(abs(centre)) == np.round(np.log2(abs(centre)))
    kept_error = np.linalg.norm((w - dq)[keep]) / np.linalg.norm(w[keep])
    assert kept_error < (0.2 if layer.mode_name == "FQ" else 0.3)


def test_focused_beats_shift_on_a_bimodal_layer():
    w = gaussian(seed=4)
    keep = prune.magnitude_mask(w, 0.8)
    fq = focus.quantize(w, keep, bits=5)
    shift = focus.quantize(w, keep, bits=5, w_sep=1e9)
    assert fq.mode_name == "FQ" and shift.mode_name == "shift"
    assert fq.rel_error < shift.rel_error


def test_nearest_assignment_is_never_worse_than_argmax():
    w = gaussian(seed=9)
    keep = prune.magnitude_mask(w, 0.5)
    assert focus.quantize(w, keep, assign="nearest").rel_error <= focus.quantize(w, keep).rel_error + 1e-12


def test_same_seed_same_codes():
    w = gaussian(seed=2, shape=(300, 300))
    keep = prune.magnitude_mask(w, 0.7)
    a, b = focus.quantize(w, keep, seed=5), focus.quantize(w, keep, seed=5)
    assert a.params == b.params and np.array_equal(a.codes, b.codes)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_mask_hits_requested_sparsity(sparsity):
    w = gaussian()
    keep = prune.magnitude_mask(w, sparsity)
    assert abs((1 - keep.mean()) - sparsity) < 1e-3
    assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max() if 0 < sparsity else keep.all()


def test_block_mask_is_shared_by_groups_of_output_channels():
    w = gaussian(shape=(10, 8, 3, 3))
    keep = prune.magnitude_mask(w, 0.75, block=4)
    for start in (0, 4, 8):
        group = keep[start:start + 4].reshape(min(4, 10 - start), -1)
        assert (group == group[0]).all()
    assert abs((1 - keep.mean()) - 0.75) < 0.05


def test_all_zero_layer():
    w = np.zeros((4, 4), np.float32)
    layer = focus.quantize(w, prune.magnitude_mask(w, 0.5))
    assert np.all(layer.codes == -1) and layer.rel_error == 0.0


def test_per_channel_scales_handle_rows_of_very_different_range():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8, 3, 3)) * np.logspace(-3, 0, 16)[:, None, None, None]
    keep = prune.magnitude_mask(w / np.abs(w).reshape(16, -1).max(1)[:, None, None, None], 0.5)
    per_row = focus.quantize(w, keep, bits=5)
    per_layer = focus.quantize(w, keep, bits=5, per_channel=False)
    def row_error(q):
        return max(np.linalg.norm((w - q.dequantized())[r][keep[r]]) / np.linalg.norm(w[r][keep[r]]) for r in range(16))

    assert row_error(per_row) < 0.3 < row_error(per_layer)
    assert per_row.alphas.shape == (16,) and per_layer.alphas is None


def _direct_codes(residual, unit, e_max):
    """The scale search's coding rule computed per value (the definition _Sorted must match)."""
    magnitude = np.abs(residual)
    mantissa, e = np.frexp(magnitude / unit)
    e = np.clip(e - (mantissa < 0.75), 0, e_max)  # nearest in the linear domain, ties up
    return np.sign(residual), np.ldexp(unit, e)


@pytest.mark.parametrize("e_max", [1, 3, 15])
def test_sorted_error_sums_and_lloyd_steps_equal_the_per_value_definition(e_max):
    rng = np.random.default_rng(e_max)
    values = np.concatenate([rng.standard_normal(3000) * 0.3 + 2.0, [2.0, 2.0, 1.5]])  # some exactly at a centre
    centres = np.array([2.0, 1.9, 0.0, -1.0, 2.2])
    units = np.array([0.01, 0.05, 0.2, 0.003, 0.4])
    ordered = focus._Sorted(values)
    sums = ordered.error_sums(centres, units, e_max)
    moved = ordered.lloyd_step(centres, units, e_max)
    for i, (c, u) in enumerate(zip(centres, units)):
        sign, level = _direct_codes(values - c, u, e_max)
        assert sums[i] == pytest.approx(np.sum((np.abs(values - c) - level) ** 2), rel=1e-9)
        coded = sign * (np.abs(values - c) - np.abs(np.abs(values - c) - level))
        assert moved[i] == pytest.approx(np.mean(values - coded), rel=1e-12, abs=1e-12)
