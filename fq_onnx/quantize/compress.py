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
    w64 = weight.astype(np.float64)
    groups = stats.gram.shape[0]
    rows = w64.reshape(groups, weight.shape[0] // groups, -1)  # [G, M/G, K]
    if options.prune_method == "obs":
        updated, keep, _ = reconstruct.reconstruct(rows, stats.second_moment, sparsity=sparsity,
                                                   block_rows=options.block,
                                                   damping=reconstruct.damping_for(rows.shape[-1], stats.count))
        return keep.reshape(weight.shape), updated.reshape(weight.shape)
    keep = prune.magnitude_mask(weight, sparsity, options.block)
    return keep, np.where(keep, w64, 0.0)


def compress_layer(weight: np.ndarray, bias: np.ndarray | None, sparsity: float, options: LayerOptions,
                   stats: LayerStats | None = None,
                   pruned: tuple[np.ndarray, np.ndarray] | None = None) -> CompressedLayer:
    """Compress ``weight`` ([M, ...], one row per output) at ``sparsity``.

    ``stats`` describe the inputs the compressed layer will see (None: no calibration);
    ``pruned`` is ``prune_rows``' result for these arguments when the caller already has it.
    """
    w64 = weight.astype(np.float64)
    if stats is None:
        keep = prune.magnitude_mask(weight, sparsity, options.block)
        layer = focus.quantize(weight, keep, options.bits, options.w_sep, options.pow2_centres, options.assign,
                               options.seed, options.per_channel, options.mantissa)
        return CompressedLayer(layer, bias, None)

    groups = stats.gram.shape[0]
    rows = w64.reshape(groups, weight.shape[0] // groups, -1)  # [G, M/G, K]
    hessians = stats.second_moment
    # 1. the mask (OBS saliency with weight updates, or magnitude)
    keep, updated = pruned if pruned is not None else prune_rows(weight, sparsity, options, stats)
    # 2. the level set, fitted on the weights that survive (each row normalised by its RMS)
    scales = focus.row_scales(updated, keep) if options.per_channel else np.ones(weight.shape[0])
    normalised = updated / scales.reshape((-1,) + (1,) * (weight.ndim - 1))
    levels = focus.fit_levels(normalised[keep], options.bits, options.w_sep, options.pow2_centres, options.seed,
                              options.mantissa)
    # 3. rounding (with error feedback onto the weights not yet rounded, or plain nearest)
    if options.rounding in ("gptq", "gptq-cd"):
        table = levels.table.astype(np.float64)

        def rounder(values: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            s = scales[row]
            codes = levels.codes(values / s, "nearest")
            return codes, table[codes] * s

        codes = reconstruct.reconstruct(rows, hessians, keep=keep.reshape(rows.shape), rounder=rounder,
                                        damping=reconstruct.damping_for(rows.shape[-1], stats.count),
                                        sweeps=REFINE_SWEEPS if options.rounding == "gptq-cd" else 0)[2]
        codes = codes.reshape(weight.shape)[keep]
    else:
        codes = levels.codes(normalised[keep], options.assign, np.random.default_rng(options.seed))
    layer = focus.finish(w64, keep, levels, codes, focus.fitted_alphas(levels, scales) if options.per_channel else None)
    if options.per_channel:  # the scale of each row that fits the layer's output best
        alphas = focus.refine_alphas(w64, layer.codes, layer.params, layer.alphas, metric=hessians)
        layer = focus.finish(w64, keep, levels, codes, alphas)
    # 4. bias correction: restore each output's mean over the calibration inputs
    approx = layer.dequantized().astype(np.float64).reshape(rows.shape)
    if options.bias_correction:
        shift = np.einsum("gmk,gk->gm", rows - approx, stats.mean).reshape(-1)
        bias = ((bias if bias is not None else 0.0) + shift).astype(np.float32)
        # the error that remains is the centred one: measure it with the covariance
        hessians = hessians - np.einsum("gk,gl->gkl", stats.mean, stats.mean)
    error = reconstruct.output_error(rows, approx, hessians)
    return CompressedLayer(layer, bias, error)
