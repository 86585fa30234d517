"""Calibration-driven reconstruction beats plain magnitude pruning and rounding."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from conftest import conv_model
from test_convert import CONV_VARIANTS

from fq_onnx import calibrate, fmt, focus, prune, reconstruct, rewrite
from fq_onnx.compress import LayerOptions, compress_layer


def correlated_layer(seed=0, rows=48, cols=96, samples=4000):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((cols, cols)) * 0.4 + np.eye(cols)
    x = rng.standard_normal((samples, cols)) @ mixing * rng.uniform(0.2, 3.0, cols)  # unequal scales, as after BN
    weight = rng.standard_normal((rows, cols)) * 0.1
    return weight, x.T @ x / samples


def rounder_for(levels: focus.LevelSet):
    table = fmt.levels(levels.params).astype(np.float64)

    def rounder(values, rows):
        codes = levels.codes(values, "nearest")
        return codes, table[codes]

    return rounder


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_obs_pruning_beats_magnitude_on_output_error(sparsity):
    weight, hessian = correlated_layer()
    keep = prune.magnitude_mask(weight, sparsity)
    magnitude = reconstruct.output_error(weight, weight * keep, hessian)
    pruned, obs_keep, _ = reconstruct.reconstruct(weight, hessian, sparsity=sparsity)
    assert reconstruct.output_error(weight, pruned, hessian) < magnitude
    assert abs((1 - obs_keep.mean()) - sparsity) < 0.01
    assert np.all(pruned[~obs_keep] == 0)


def test_error_feedback_rounding_beats_nearest_and_stays_on_the_level_set():
    weight, hessian = correlated_layer(seed=1)
    keep = prune.magnitude_mask(weight, 0.6)
    levels = focus.fit_levels(weight[keep], bits=5)
    nearest = np.where(keep, 0.0, 0.0)
    nearest[keep] = fmt.levels(levels.params)[levels.codes(weight[keep])]
    rounded, kept, codes = reconstruct.reconstruct(weight, hessian, keep=keep, rounder=rounder_for(levels))
    assert reconstruct.output_error(weight, rounded, hessian) < reconstruct.output_error(weight, nearest, hessian)
    assert np.array_equal(kept, keep)
    table = fmt.levels(levels.params)
    assert np.array_equal(rounded[keep], table[codes[keep]].astype(np.float64))
    assert np.all(rounded[~keep] == 0) and np.all(codes[~keep] == -1)


@pytest.mark.parametrize("sparsity", [0.0, 0.6])
def test_coordinate_descent_lowers_the_gptq_error_on_the_level_set(sparsity):
    weight, hessian = correlated_layer(seed=3)
    keep = prune.magnitude_mask(weight, sparsity)
    levels = focus.fit_levels(weight[keep], bits=4)
    table = fmt.levels(levels.params).astype(np.float64)
    errors = []
    for sweeps in (0, 1, 3):
        rounded, kept, codes = reconstruct.reconstruct(weight, hessian, keep=keep, rounder=rounder_for(levels),
                                                       sweeps=sweeps)
        assert np.array_equal(kept, keep) and np.all(codes[~keep] == -1) and np.all(rounded[~keep] == 0)
        assert np.array_equal(rounded[keep], table[codes[keep]])
        errors.append(reconstruct.output_error(weight, rounded, hessian))
    assert errors[2] <= errors[1] < 0.97 * errors[0]  # each pass can only lower it


def test_coordinate_descent_on_grouped_layers_equals_one_group_at_a_time():
    rng = np.random.default_rng(4)
    weights, hessians = zip(*(correlated_layer(seed=s, rows=6, cols=12, samples=200) for s in range(3)))
    weight, hessian = np.stack(weights), np.stack(hessians)
    levels = focus.fit_levels(weight.ravel(), bits=4)
    keep = rng.random(weight.shape) > 0.3
    together = reconstruct.reconstruct(weight, hessian, keep=keep, rounder=rounder_for(levels), sweeps=2)
    for g in range(3):
        alone = reconstruct.reconstruct(weight[g], hessian[g], keep=keep[g], rounder=rounder_for(levels), sweeps=2)
        np.testing.assert_array_equal(together[2][g], alone[2])
        np.testing.assert_allclose(together[0][g], alone[0], rtol=1e-12)


def test_compress_layer_with_stats_beats_without():
    weight, hessian = correlated_layer(seed=2)
    stats = calibrate.LayerStats(hessian[None] * 100, np.full((1, weight.shape[1]), 30.0), 100)
    plain = compress_layer(weight.astype(np.float32), None, 0.7, LayerOptions())
    calibrated = compress_layer(weight.astype(np.float32), None, 0.7,
                                LayerOptions(prune_method="obs", rounding="gptq", bias_correction=True), stats)
    refined = compress_layer(weight.astype(np.float32), None, 0.7,
                             LayerOptions(prune_method="obs", rounding="gptq-cd", bias_correction=True), stats)
    plain_error = reconstruct.output_error(weight, plain.layer.dequantized(), hessian)
    assert refined.output_error < calibrated.output_error < plain_error
    assert calibrated.bias is not None and calibrated.bias.shape == (weight.shape[0],)


@pytest.mark.parametrize("variant", sorted(CONV_VARIANTS))
def test_conv_patches_reproduce_the_convolution(variant):
    rng = np.random.default_rng(0)
    x_shape, w_shape, attrs = CONV_VARIANTS[variant]
    model = conv_model(x_shape, w_shape, rng, bias=False, **attrs)
    target = rewrite.find_targets(gs.import_onnx(model))[0][0]
    x = rng.standard_normal(x_shape).astype(np.float32)
    patches = calibrate.conv_patches(x.astype(np.float64), target.weight.shape, target.attrs, rng, per_image=10**9)
    groups, m = patches.shape[0], w_shape[0]
    out = np.einsum("gpk,gmk->gpm", patches, target.weight.reshape(groups, m // groups, -1))
    n = x_shape[0]
    out = out.reshape(groups, n, -1, m // groups).transpose(1, 0, 3, 2).reshape(n, m, -1)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"X": x})[0]
    np.testing.assert_allclose(out, expected.reshape(n, m, -1), atol=1e-5)

    # Sampling positions (large maps) keeps the same sampled positions of every image, in order.
    positions = patches.shape[1] // n
    per_image = max(1, positions // 3)
    sampled = calibrate.conv_patches(x, target.weight.shape, target.attrs, np.random.default_rng(1), per_image)
    take = np.sort(np.random.default_rng(1).choice(positions, per_image, replace=False))
    every = patches.reshape(groups, n, positions, -1)
    np.testing.assert_array_equal(sampled, every[:, :, take].reshape(groups, n * per_image, -1))


def test_factor_is_reused_for_equal_statistics_and_recomputed_for_new_ones():
    from fq_onnx.reconstruct import inverse_hessian_factor

    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 6))
    h = a.T @ a
    first = inverse_hessian_factor(h.copy(), 0.01)
    assert inverse_hessian_factor(h.copy(), 0.01)[0] is first[0]  # same contents: the kept result
    assert not first[0].flags.writeable
    other = inverse_hessian_factor(h * 2.0, 0.01)
    assert other[0] is not first[0] and not np.allclose(other[0], first[0])


def test_grouped_reconstruction_equals_one_group_at_a_time():
    """A depthwise or grouped layer is processed as one batch; each group as if alone."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((12, 2, 9))
    mix = rng.standard_normal((12, 9, 30))
    hessian = mix @ mix.transpose(0, 2, 1)
    hessian[4, 3, :] = hessian[4, :, 3] = 0.0  # a dead input in one group
    together, keep, _ = reconstruct.reconstruct(weight, hessian, sparsity=0.5)
    for g in range(12):
        alone, keep_alone, _ = reconstruct.reconstruct(weight[g], hessian[g], sparsity=0.5)
        assert np.array_equal(keep[g], keep_alone)
        assert np.allclose(together[g], alone, rtol=0, atol=1e-12)
    assert np.all(together[4][:, 3] == 0)


def test_more_damping_when_a_layer_has_fewer_samples_than_inputs():
    """With fewer calibration vectors than inputs (a classifier fed one vector per image) the
    compensation fits the samples; the extra damping lowers the error on unseen inputs."""
    assert reconstruct.damping_for(64, 256) == reconstruct.DAMPING  # enough samples: unchanged
    assert reconstruct.damping_for(1280, 256) == pytest.approx(0.25)
    assert reconstruct.damping_for(100_000, 1) == 1.0
    rng = np.random.default_rng(6)
    cols, seen = 128, 48
    mixing = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    weight = rng.standard_normal((32, cols)) * 0.1
    calib = rng.standard_normal((seen, cols)) @ mixing
    unseen = rng.standard_normal((20_000, cols)) @ mixing
    h_calib, h_unseen = calib.T @ calib / seen, unseen.T @ unseen / len(unseen)
    errors = {}
    for damping in (reconstruct.DAMPING, reconstruct.damping_for(cols, seen)):
        pruned, _, _ = reconstruct.reconstruct(weight, h_calib, sparsity=0.6, damping=damping)
        errors[damping] = reconstruct.output_error(weight, pruned, h_unseen)
    assert errors[reconstruct.damping_for(cols, seen)] < errors[reconstruct.DAMPING]


def test_nearest_levels_of_several_tables_equal_nearest_codes_of_each():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(4000) * 3
    tables = [focus.fit_levels(rng.standard_normal(500) + shift, bits, w_sep=w).table
              for bits, shift, w in ((2, 0, 9), (3, 2.0, 0.5), (5, 0.1, 9), (6, 3.0, 0.0), (8, 0, 9))]
    tables.append(np.array([1.0, -1.0, 1.0, 0.0, -0.0, 0.0], np.float32))  # ties: the first code wins
    nearest = focus.NearestLevels(tables)
    which = rng.integers(0, len(tables), values.size)
    codes = nearest.codes(values, which)
    for i, table in enumerate(tables):
        sel = which == i
        assert np.array_equal(codes[sel], focus._nearest_codes(values[sel], table, np.ones(table.size, bool)))
        assert np.array_equal(nearest.value(codes[sel], which[sel]), table[codes[sel]].astype(np.float64))


@pytest.mark.parametrize("groups", [1, 4])
def test_settings_rounded_together_equal_each_rounded_alone(groups):
    """compress_choices stacks the allocator's settings of a layer into one rounding problem:
    every setting must come out as if compressed alone."""
    from fq_onnx.compress import compress_choices, prune_rows

    rng = np.random.default_rng(groups)
    weight = (rng.standard_normal((16, 24 // groups, 3, 3)) * 0.1).astype(np.float32)
    x = np.maximum(rng.standard_normal((groups, 3000, weight[0].size)) + 0.2, 0)
    stats = calibrate.LayerStats(np.matmul(x.transpose(0, 2, 1), x), x.sum(axis=1), 3000)
    base = LayerOptions(prune_method="obs", rounding="gptq-cd", bias_correction=True)
    settings = [(prune_rows(weight, s, base, stats), LayerOptions(**{**base.__dict__, "bits": b, "rounding": r}))
                for s in (0.0, 0.6) for b in (2, 4, 6) for r in ("gptq-cd", "gptq", "nearest")]
    together = compress_choices(weight, None, settings, stats)
    for setting, result in zip(settings, together):
        alone = compress_choices(weight, None, [setting], stats)[0]
        assert np.array_equal(result.layer.codes, alone.layer.codes)
        assert np.array_equal(result.layer.alphas, alone.layer.alphas)
        assert result.output_error == pytest.approx(alone.output_error, rel=1e-9)


@pytest.mark.parametrize("groups, block", [(1, 1), (4, 1), (1, 4)])
def test_sparsities_pruned_together_equal_each_pruned_alone(groups, block):
    from fq_onnx.compress import prune_rows_at

    rng = np.random.default_rng(groups + block)
    weight = (rng.standard_normal((16, 24 // groups, 3, 3)) * 0.1).astype(np.float32)
    x = np.maximum(rng.standard_normal((groups, 2000, weight[0].size)) + 0.2, 0)
    stats = calibrate.LayerStats(np.matmul(x.transpose(0, 2, 1), x), x.sum(axis=1), 2000)
    options = LayerOptions(prune_method="obs", block=block)
    sparsities = [0.0, 0.3, 0.5, 0.8, 0.95]
    together = prune_rows_at(weight, sparsities, options, stats)
    for s, (keep, updated) in zip(sparsities, together):
        alone_keep, alone_updated = prune_rows_at(weight, [s], options, stats)[0]
        assert np.array_equal(keep, alone_keep) and np.allclose(updated, alone_updated, rtol=1e-12, atol=1e-15)
        assert abs(1 - keep.mean() - s) < 0.05
