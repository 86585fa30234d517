"""Compress one layer's weight: prune, fit the level set, round; with or without calibration.

Without calibration statistics: magnitude pruning and nearest rounding (weight error).
With them: OBS pruning and error-feedback rounding (output error), then bias correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fq_onnx.quantize import focus, prune, reconstruct
from fq_onnx.calibration.calibrate import LayerStats
from fq_onnx.options import DEFAULTS, PRUNE_METHODS, ROUNDINGS  # noqa: F401 (the choices, for callers)

REFINE_SWEEPS = 2  # coordinate-descent passes of "gptq-cd": 4 passes gained 1% more on MobileNet-V2


@dataclass(frozen=True)
class LayerOptions:
    """Per-layer compression settings: the part of ConvertOptions one layer needs, with the
    calibrated defaults resolved (``ConvertOptions.layer_options()``); defaults: uncalibrated."""

    bits: int = DEFAULTS.bits
    w_sep: float = DEFAULTS.w_sep
    block: int = DEFAULTS.block
    pow2_centres: bool = DEFAULTS.pow2_centres
    assign: str = DEFAULTS.assign
    seed: int = DEFAULTS.seed
    prune_method: str = PRUNE_METHODS[0]
    rounding: str = ROUNDINGS[0]
    bias_correction: bool = False
    per_channel: bool = DEFAULTS.per_channel
    mantissa: int = DEFAULTS.mantissa


@dataclass
class CompressedLayer:
    layer: focus.QuantizedLayer
    bias: np.ndarray | None  # the (possibly corrected) bias, float32
    output_error: float | None  # relative output error on the calibration data


def prune_rows(weight: np.ndarray, sparsity: float, options: LayerOptions,
               stats: LayerStats) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated pruning step alone: (mask, kept weights updated to restore the output).

    It does not depend on the bit width, so callers that try several widths compute it once.
    """
    return prune_rows_at(weight, [sparsity], options, stats)[0]


def prune_rows_at(weight: np.ndarray, sparsities: list[float], options: LayerOptions,
                  stats: LayerStats) -> list[tuple[np.ndarray, np.ndarray]]:
    """``prune_rows`` at several sparsities; OBS prunes them as one stacked problem (rows are
    independent given the Hessian), in batches of at most BATCH_ELEMENTS weights."""
    w64 = weight.astype(np.float64)
    if options.prune_method != "obs":
        masks = [prune.magnitude_mask(weight, s, options.block) for s in sparsities]
        return [(keep, np.where(keep, w64, 0.0)) for keep in masks]
    groups = stats.gram.shape[0]
    rows = w64.reshape(groups, weight.shape[0] // groups, -1)  # [G, M/G, K]
    per_batch = max(1, BATCH_ELEMENTS // max(w64.size, 1))
    out = []
    for start in range(0, len(sparsities), per_batch):
        part = list(sparsities[start : start + per_batch])
        stacked = np.concatenate([rows] * len(part), axis=1)
        updated, keep, _ = reconstruct.reconstruct(stacked, stats.second_moment, sparsity=part,
                                                   block_rows=options.block,
                                                   damping=reconstruct.damping_for(rows.shape[-1], stats.count))
        split = lambda a: a.reshape(groups, len(part), *rows.shape[1:]).transpose(1, 0, 2, 3)  # noqa: E731
        out += [(k.reshape(weight.shape), u.reshape(weight.shape)) for k, u in zip(split(keep), split(updated))]
    return out


def compress_layer(weight: np.ndarray, bias: np.ndarray | None, sparsity: float, options: LayerOptions,
                   stats: LayerStats | None = None) -> CompressedLayer:
    """Compress ``weight`` ([M, ...], one row per output) at ``sparsity``.

    ``stats`` describe the inputs the compressed layer will see (None: no calibration); several
    settings of one layer go faster through ``compress_choices``.
    """
    if stats is None:
        keep = prune.magnitude_mask(weight, sparsity, options.block)
        layer = focus.quantize(weight, keep, options.bits, options.w_sep, options.pow2_centres, options.assign,
                               options.seed, options.per_channel, options.mantissa)
        return CompressedLayer(layer, bias, None)
    return compress_choices(weight, bias, [(prune_rows(weight, sparsity, options, stats), options)], stats)[0]


# Rows x inputs of the weights rounded together by compress_choices (float64: 64 MB per array).
BATCH_ELEMENTS = 1 << 23


def compress_choices(weight: np.ndarray, bias: np.ndarray | None,
                     choices: list[tuple[tuple[np.ndarray, np.ndarray], LayerOptions]],
                     stats: LayerStats) -> list[CompressedLayer]:
    """``compress_layer`` with calibration at several settings of one layer: each choice is
    ``(prune_rows' (mask, updated weights), options)``; one result per choice, in order.

    The error-feedback rounding runs once for a batch of choices, their rows stacked (rows are
    independent given the layer's Hessian), so the per-column loop in numpy is paid once per
    batch instead of once per setting: the allocator tries ~45 settings of every layer.
    """
    w64 = weight.astype(np.float64)
    groups = stats.gram.shape[0]
    rows = w64.reshape(groups, weight.shape[0] // groups, -1)  # [G, M/G, K]
    fitted = []
    for (keep, updated), options in choices:
        # the level set, fitted on the weights that survive (each row normalised by its RMS)
        scales = focus.row_scales(updated, keep) if options.per_channel else np.ones(weight.shape[0])
        kept = (updated / scales.reshape((-1,) + (1,) * (weight.ndim - 1)))[keep]
        levels = focus.fit_levels(kept, options.bits, options.w_sep, options.pow2_centres, options.seed,
                                  options.mantissa)
        codes = None  # after error-feedback rounding, or now: nearest (or by component)
        if options.rounding not in ("gptq", "gptq-cd"):
            codes = levels.codes(kept, options.assign, np.random.default_rng(options.seed))
        fitted.append(_Fitted(keep, updated, scales, levels, options, codes))
    sweeps_of = {i: REFINE_SWEEPS if f.options.rounding == "gptq-cd" else 0
                 for i, f in enumerate(fitted) if f.codes is None}
    per_batch = max(1, BATCH_ELEMENTS // max(w64.size, 1))
    for sweeps in sorted(set(sweeps_of.values())):
        same = [i for i, n in sweeps_of.items() if n == sweeps]
        for start in range(0, len(same), per_batch):
            part = same[start : start + per_batch]
            for i, c in zip(part, _round_together([fitted[i] for i in part], rows, stats, sweeps)):
                fitted[i].codes = c.reshape(weight.shape)[fitted[i].keep]
    metrics: dict = {}
    return [_finish(w64, rows, bias, stats, f, metrics) for f in fitted]


@dataclass
class _Fitted:
    """One setting of a layer on its way: mask, pruned weights, row scales, level set, codes."""

    keep: np.ndarray
    updated: np.ndarray
    scales: np.ndarray
    levels: focus.LevelSet
    options: LayerOptions
    codes: np.ndarray | None  # of the kept weights; None until rounded


def _round_together(fitted: list[_Fitted], rows: np.ndarray, stats: LayerStats, sweeps: int) -> list[np.ndarray]:
    """GPTQ (and ``sweeps`` passes of coordinate descent) of several choices at once: their
    updated weights stacked as rows of one [G, choices * M/G, K] problem. Returns each choice's
    codes, shaped [G, M/G, K] (-1 where pruned)."""
    groups, per_group, cols = rows.shape
    count = len(fitted)
    stacked = np.concatenate([f.updated.reshape(rows.shape) for f in fitted], axis=1)
    keep = np.concatenate([f.keep.reshape(rows.shape) for f in fitted], axis=1)
    # stacked row index g * (count * M/G) + c * M/G + m: its choice c and original row g * M/G + m
    index = np.arange(groups * count * per_group)
    choice = (index // per_group) % count
    original = (index // (count * per_group)) * per_group + index % per_group
    scale = np.stack([f.scales for f in fitted])[choice, original]
    nearest = focus.NearestLevels([f.levels.table for f in fitted])

    def rounder(values: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = nearest.codes(values / scale[row], choice[row])
        return codes, nearest.value(codes, choice[row]) * scale[row]

    codes = reconstruct.reconstruct(stacked, stats.second_moment, keep=keep, rounder=rounder,
                                    damping=reconstruct.damping_for(cols, stats.count), sweeps=sweeps)[2]
    return list(codes.reshape(groups, count, per_group, cols).transpose(1, 0, 2, 3))


def _finish(w64: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, stats: LayerStats,
            fit: _Fitted, metrics: dict) -> CompressedLayer:
    """The stored layer from its codes: per-row scales fitted to the output, bias correction,
    and the relative output error on the calibration statistics. ``metrics`` caches, per
    layer, the error metric of each bias-correction setting with the original's output energy."""
    keep, levels, codes, scales, options = fit.keep, fit.levels, fit.codes, fit.scales, fit.options
    alphas = focus.fitted_alphas(levels, scales) if options.per_channel else None
    if options.per_channel:  # the scale of each row that fits the layer's output best
        full = np.full(w64.shape, -1, dtype=np.int16)
        full[keep] = codes
        alphas = focus.refine_alphas(w64, full, levels.params, alphas, metric=stats.second_moment)
    layer = focus.finish(w64, keep, levels, codes, alphas)
    # bias correction: restore each output's mean over the calibration inputs
    approx = layer.dequantized().astype(np.float64).reshape(rows.shape)
    if options.bias_correction:
        shift = np.einsum("gmk,gk->gm", rows - approx, stats.mean).reshape(-1)
        bias = ((bias if bias is not None else 0.0) + shift).astype(np.float32)
    if options.bias_correction not in metrics:
        # after bias correction the error that remains is the centred one: the covariance measures it
        hessians = stats.second_moment - (np.einsum("gk,gl->gkl", stats.mean, stats.mean)
                                          if options.bias_correction else 0.0)
        metrics[options.bias_correction] = hessians, reconstruct.output_energy(rows, hessians)
    hessians, energy = metrics[options.bias_correction]
    error = reconstruct.output_error(rows, approx, hessians, energy)
    return CompressedLayer(layer, bias, error)
