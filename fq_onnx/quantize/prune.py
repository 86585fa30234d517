"""Magnitude pruning masks, optionally shared by blocks of output channels."""

from __future__ import annotations

import numpy as np


def magnitude_mask(weight: np.ndarray, sparsity: float, block: int = 1) -> np.ndarray:
    """Boolean mask of the weights to keep (True) so that about ``sparsity`` of them are zero.

    Weights are ranked by magnitude. With ``block = G`` > 1, every group of G consecutive output
    channels (axis 0) shares one mask, ranked by the group's mean squared weight at each
    position: the kernel can then feed G outputs from one input load. Weights that are already
    zero stay zero; ties are broken by position so the result is deterministic.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    rows = weight.shape[0]
    flat = np.abs(weight.reshape(rows, -1).astype(np.float64))
    groups = -(-rows // block)
    padded = np.zeros((groups * block, flat.shape[1]))
    padded[:rows] = flat**2
    group_sizes = np.minimum(block, rows - np.arange(groups) * block)
    scores = padded.reshape(groups, block, -1).sum(axis=1) / group_sizes[:, None]
    keep_count = int(round((1.0 - sparsity) * scores.size))
    keep_count = min(max(keep_count, 1), scores.size)
    keep = _top_k(scores.ravel(), keep_count)
    keep = keep.reshape(groups, 1, -1).repeat(block, axis=1).reshape(groups * block, -1)[:rows]
    return keep.reshape(weight.shape) & (weight != 0)


def _top_k(scores: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` largest scores; among equal scores the earlier positions win.

    A partition instead of a full sort: large layers are pruned in linear time.
    """
    keep = np.zeros(scores.size, dtype=bool)
    if count >= scores.size:
        keep[:] = True
        return keep
    threshold = np.partition(scores, scores.size - count)[scores.size - count]
    above = scores > threshold
    ties = np.flatnonzero(scores == threshold)[: count - int(above.sum())]
    keep[above] = True
    keep[ties] = True
    return keep
