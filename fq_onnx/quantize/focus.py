"""Focused and shift quantization of one pruned weight tensor (DESIGN.md, "The algorithm").

A two-component Gaussian mixture is fitted to the surviving weights. When its components are
well separated (Wasserstein statistic W2 >= w_sep) each weight is coded relative to its
component's centre as ``alpha * (centre_c + s * 2^(e - b))`` (focused quantization); otherwise as
``alpha * s * 2^(e - b)`` (shift quantization). The scale and centres are chosen by a search that
minimises the layer's squared weight error; codes are then the nearest float32 levels.
"""

from __future__ import annotations


import functools
import warnings
from dataclasses import dataclass

import numpy as np

from fq_onnx.format import fmt
from fq_onnx.quantize import memo
from fq_onnx.options import ASSIGNMENTS  # noqa: F401 (focus.ASSIGNMENTS: the choices of assign)

FIT_SAMPLES = 20_000  # weights used to fit the mixture (seeded subsample of larger layers)
SEARCH_SAMPLES = 50_000  # weights used to search the scale
MIN_FIT_WEIGHTS = 16  # below this a mixture fit means nothing: use shift quantization
SCALE_GRID = np.linspace(-4.0, 1.0, 161)  # log2 offsets of the unit step around its first guess
MIN_SPREAD = 2.0**-10  # smallest spread around focused centres searched, relative to the largest value


HISTOGRAM_BINS = 96  # of the values a level set is fitted on (the report draws it)


@dataclass(frozen=True)
class Mixture:
    """Two Gaussian components sorted by mean; ``w2`` is the separation statistic."""

    means: tuple[float, float]
    stds: tuple[float, float]
    w2: float
    weights: tuple[float, float] = (0.5, 0.5)  # mixing proportions (sum to 1)

    def density(self, x: np.ndarray) -> np.ndarray:
        """Probability density of each component at ``x``: shape ``[2, len(x)]``, weights applied."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros((2, x.size))
        for c in (0, 1):
            s = max(self.stds[c], 1e-300)
            out[c] = self.weights[c] * np.exp(-0.5 * ((x - self.means[c]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        return out


@dataclass(frozen=True)
class Histogram:
    """Counts of the values a level set was fitted on, in equal bins over [low, high]."""

    low: float
    high: float
    counts: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> "Histogram | None":
        if values.size == 0:
            return None
        low, high = float(values.min()), float(values.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        return cls(low, high, np.histogram(values, bins=bins, range=(low, high))[0])


@dataclass(frozen=True)
class QuantizedLayer:
    """The result of quantizing one tensor: codes (-1 = pruned), parameters and diagnostics."""

    codes: np.ndarray
    params: fmt.QuantParams
    mixture: Mixture | None
    rel_error: float  # ||W - W_hat|| / ||W|| over the whole tensor, pruned weights included
    alphas: np.ndarray | None = None  # float32 scale per output row, or None: params.alpha
    histogram: Histogram | None = None  # of the (row-normalised) kept weights the levels were fitted on

    @property
    def mode_name(self) -> str:
        return fmt.MODE_NAMES[self.params.mode]

    def dequantized(self) -> np.ndarray:
        return fmt.dequantize_codes(self.codes, self.params, self.alphas)

    def encode(self, block: int = 1) -> bytes:
        """The blob of docs/FORMAT.md for this layer."""
        return fmt.encode(self.codes, self.params, block=block, alphas=self.alphas)

    def encoded_size(self, block: int = 1) -> int:
        """``len(self.encode(block))``, without writing the payload."""
        return fmt.encoded_size(self.codes, self.params, block=block, alphas=self.alphas)


@memo.by_contents()
def fit_mixture(values: np.ndarray, seed: int) -> tuple[Mixture, object]:
    """Fit a seeded two-component GaussianMixture to 1-D values (subsampled when large).

    Kept for the last two arrays: the allocator fits the same pruned layer once per bit width.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    sample = values if values.size <= FIT_SAMPLES else rng.choice(values, FIT_SAMPLES, replace=False)
    gmm = GaussianMixture(n_components=2, random_state=seed, reg_covar=1e-12 + 1e-6 * float(np.var(sample)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(sample.reshape(-1, 1))
    order = np.argsort(gmm.means_.ravel())
    means = gmm.means_.ravel()[order]
    stds = np.sqrt(gmm.covariances_.reshape(-1)[order])
    variance = float(np.var(values))
    w2 = float(((means[1] - means[0]) ** 2 + (stds[1] - stds[0]) ** 2) / variance) if variance > 0 else 0.0
    weights = gmm.weights_[order]
    return Mixture((float(means[0]), float(means[1])), (float(stds[0]), float(stds[1])), w2,
                   (float(weights[0]), float(weights[1]))), (gmm, order)


def magnitudes(e_max: int, m: int = 0) -> np.ndarray:
    """The level magnitudes of a unit step, ascending: ``2^e * (1 + k/2^m)``, e in [0, e_max]."""
    k = np.arange(1 << m)
    return (np.ldexp(1.0, np.arange(e_max + 1))[:, None] * (1.0 + k / (1 << m))[None, :]).ravel()


class _Sorted:
    """Values sorted once with prefix sums, so the squared error of coding them at any
    (centre, unit) costs O(levels * log n) instead of O(n): the scale search tries 161 units
    (and up to 3 centres each) on up to SEARCH_SAMPLES values, at every setting the allocator
    tries. Sums are taken relative to the values' mean (no cancellation around far centres).

    Coding a residual ``r = v - centre`` means ``sign(r) * unit * 2^e * (1 + k/2^m)``, ``e`` in
    [0, e_max], ``k`` in [0, 2^m), the nearest such level in the linear domain (a magnitude
    halfway between two levels rounds up; below ``unit``: ``unit``; above the largest level: the
    largest). With m = 0 the boundaries are ``1.5 * unit * 2^e``.
    """

    def __init__(self, values: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        self.pivot = float(np.mean(values)) if values.size else 0.0
        self.v = np.sort(values) - self.pivot
        self.count = self.v.size
        self.s1 = np.concatenate([[0.0], np.cumsum(self.v)])
        self.s2 = np.concatenate([[0.0], np.cumsum(self.v * self.v)])

    def _intervals(self, centres: np.ndarray, units: np.ndarray, e_max: int, m: int):
        """Per candidate and level: the index range of the values coded to it and the level's
        signed offset from the centre. Returns (lo, hi, offset), each [candidates, 2 * levels]."""
        c = np.asarray(centres, np.float64)[:, None] - self.pivot
        levels = np.asarray(units, np.float64)[:, None] * magnitudes(e_max, m)
        bounds = (levels[:, :-1] + levels[:, 1:]) / 2
        centre = np.searchsorted(self.v, c, "left")  # values below the centre are coded negative
        above = np.searchsorted(self.v, c + bounds, "left")
        below = np.searchsorted(self.v, c - bounds, "right")
        end = np.full_like(centre, self.count)
        lo = np.concatenate([centre, above, below, np.zeros_like(centre)], axis=1)
        hi = np.concatenate([above, end, centre, below], axis=1)
        offset = np.concatenate([levels, -levels], axis=1)
        # lo/hi columns: positive levels 0..e_max, then negative levels 0..e_max
        return lo, hi, offset

    def error_sums(self, centres: np.ndarray, units: np.ndarray, e_max: int, m: int = 0) -> np.ndarray:
        """For each (centre, unit) pair: the summed squared error of coding ``values - centre``."""
        lo, hi, offset = self._intervals(centres, units, e_max, m)
        target = np.asarray(centres, np.float64)[:, None] - self.pivot + offset
        n, s1, s2 = hi - lo, self.s1[hi] - self.s1[lo], self.s2[hi] - self.s2[lo]
        with np.errstate(over="ignore", invalid="ignore"):
            return np.maximum(s2 - 2 * target * s1 + n * target * target, 0.0).sum(axis=1)

    def lloyd_step(self, centres: np.ndarray, units: np.ndarray, e_max: int, m: int = 0) -> np.ndarray:
        """Each centre moved to the mean of the values minus their residual codes, where a
        residual ``r`` below its level ``L`` counts ``sign(r) * (2|r| - L)``, one at or above it
        ``sign(r) * L``, and ``r = 0`` counts 0 (the rule this search has always used)."""
        c = np.asarray(centres, np.float64) - self.pivot
        lo, hi, offset = self._intervals(centres, units, e_max, m)
        levels = np.abs(offset)
        sign = np.sign(offset)
        # within each level's range, values nearer the centre than the level: split at c + offset
        split = np.where(sign > 0, np.searchsorted(self.v, c[:, None] + offset, "left"),
                         np.searchsorted(self.v, c[:, None] + offset, "right"))
        split = np.clip(split, lo, hi)
        near_lo, near_hi = np.where(sign > 0, lo, split), np.where(sign > 0, split, hi)
        near_n = near_hi - near_lo
        near_s1 = self.s1[near_hi] - self.s1[near_lo]
        # near the centre: sign * (2 |v - c| - L) = 2 (v - c) - sign * L
        coded = 2 * (near_s1 - near_n * c[:, None]) - sign * levels * near_n
        coded += sign * levels * ((hi - lo) - near_n)
        zeros = np.searchsorted(self.v, c, "right") - np.searchsorted(self.v, c, "left")
        coded_sum = coded.sum(axis=1) + zeros * levels[:, 0]  # r = 0 was counted as 2*0 - L
        return self.pivot + (self.s1[-1] - coded_sum) / max(self.count, 1)


def _best_centres(values: np.ndarray, guess: float, units: np.ndarray, e_max: int,
                  pow2: bool, m: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per unit step: the centre (absolute) for one component and its squared error on ``values``."""
    if values.size == 0:
        return (units if guess >= 0 else -units), np.zeros(len(units))
    ordered = _Sorted(values)
    if pow2:
        sign = 1.0 if guess >= 0 else -1.0
        q0 = np.round(np.log2(max(abs(guess), 1e-30) / units))
        candidates = np.stack([sign * units * np.exp2(q0 + d) for d in (-1, 0, 1)], axis=1)
    else:
        steps = [np.full(len(units), float(guess))]
        for _ in range(2):  # Lloyd steps: move the centre to the mean of its residual-coded weights
            steps.append(ordered.lloyd_step(steps[-1], units, e_max, m))
        candidates = np.stack(steps, axis=1)
    errors = ordered.error_sums(candidates.ravel(), np.repeat(units, 3), e_max, m).reshape(-1, 3)
    pick = np.argmin(errors, axis=1)
    rows = np.arange(len(units))
    return candidates[rows, pick], errors[rows, pick]


def _search_shift(values: np.ndarray, e_max: int, m: int = 0) -> float:
    unit0 = np.max(np.abs(values)) / 2.0**e_max
    units = unit0 * 2.0**SCALE_GRID
    errors = _Sorted(values).error_sums(np.zeros(len(units)), units, e_max, m)
    return float(units[int(np.argmin(errors))])


def _search_focused(values, components, means, e_max, pow2, m=0) -> tuple[float, tuple[float, float]]:
    spread = max(np.max(np.abs(values[components == c] - means[c])) if np.any(components == c) else 0.0 for c in (0, 1))
    # Components of (nearly) identical values (one kept weight per row: all +-1 once normalised)
    # have no spread: a scale from it alone collapsed to ~1e-31, storing centres of ~1e17 and
    # per-row scales that underflow float32 (PP-OCRv4's recognizer).
    unit0 = max(spread, MIN_SPREAD * float(np.max(np.abs(values))), 1e-30) / 2.0**e_max
    units = unit0 * 2.0**SCALE_GRID
    c0, err0 = _best_centres(values[components == 0], means[0], units, e_max, pow2, m)
    c1, err1 = _best_centres(values[components == 1], means[1], units, e_max, pow2, m)
    total = err0 + err1
    best = int(np.argmin(total))
    if not np.isfinite(total[best]):
        return unit0, (means[0], means[1])
    return float(units[best]), (float(c0[best]), float(c1[best]))


def _nearest_codes(values: np.ndarray, table: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Index into ``table`` of the nearest allowed level for each value."""
    candidates = np.flatnonzero(allowed)
    levels = table[candidates].astype(np.float64)
    order = np.argsort(levels, kind="stable")
    sorted_levels = levels[order]
    hi = np.clip(np.searchsorted(sorted_levels, values), 1, len(sorted_levels) - 1) if len(sorted_levels) > 1 else np.zeros(values.shape, int)
    lo = np.maximum(hi - 1, 0)
    pick = np.where(np.abs(values - sorted_levels[lo]) <= np.abs(values - sorted_levels[hi]), lo, hi)
    return candidates[order[pick]]


class NearestLevels:
    """``_nearest_codes`` over every level of one of several tables, chosen per value: the
    batched rounding of the allocator's settings (compress.compress_choices) in one pass.

    Each table is sorted (stably, as ``_nearest_codes`` sorts it) and padded with copies of its
    largest level; the search index is clipped to the table's own size, so pads are never
    chosen and every tie goes to the code ``_nearest_codes`` picks.
    """

    def __init__(self, tables: list[np.ndarray]):
        width = max(t.size for t in tables)
        self.sorted = np.empty((len(tables), width))
        self.order = np.empty((len(tables), width), dtype=np.int64)
        self.values = np.zeros((len(tables), width))
        self.sizes = np.array([t.size for t in tables])
        for i, table in enumerate(tables):
            levels = table.astype(np.float64)
            order = np.argsort(levels, kind="stable")
            self.sorted[i, : table.size], self.sorted[i, table.size :] = levels[order], levels[order[-1]]
            self.order[i, : table.size], self.order[i, table.size :] = order, order[-1]
            self.values[i, : table.size] = levels

    def codes(self, values: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Code of the nearest level of table ``which[i]`` for each ``values[i]``."""
        levels = self.sorted[which]  # [n, width]
        hi = np.clip((levels < values[:, None]).sum(axis=1), 1, self.sizes[which] - 1)  # searchsorted, left
        lo = hi - 1
        rows = np.arange(values.size)
        pick = np.where(np.abs(values - levels[rows, lo]) <= np.abs(values - levels[rows, hi]), lo, hi)
        return self.order[which, pick]

    def value(self, codes: np.ndarray, which: np.ndarray) -> np.ndarray:
        """The (float64) level of each code in its table."""
        return self.values[which, codes]


@dataclass(frozen=True)
class LevelSet:
    """A fitted quantizer: the format parameters plus what assigns weights to components."""

    params: fmt.QuantParams
    mixture: Mixture | None
    gmm: object | None = None  # (GaussianMixture, component order) in focused mode
    histogram: Histogram | None = None  # of the values it was fitted on

    @functools.cached_property
    def table(self) -> np.ndarray:
        """The float32 level of every code (computed once: GPTQ rounds one column at a time)."""
        return fmt.levels(self.params)

    @property
    def focused(self) -> bool:
        return self.params.mode == fmt.MODE_FOCUSED

    def codes(self, values: np.ndarray, assign: str = "nearest", rng: np.random.Generator | None = None) -> np.ndarray:
        """Code of the nearest level for each value, within its component unless ``nearest``."""
        table = self.table
        if not self.focused or assign == "nearest" or values.size == 0:
            return _nearest_codes(values, table, np.ones(table.size, bool))
        gmm, order = self.gmm
        posterior = gmm.predict_proba(values.reshape(-1, 1))[:, order]
        if assign == "sample":
            components = (rng.random(values.size) < posterior[:, 1]).astype(np.int64)
        else:
            components = np.argmax(posterior, axis=1)
        half = 1 << (self.params.bits - 1)
        codes = np.empty(values.size, dtype=np.int64)
        for c in (0, 1):
            sel = components == c
            codes[sel] = _nearest_codes(values[sel], table, (np.arange(table.size) // half) == c)
        return codes


@memo.by_contents()
def _search_sample(values: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The values the scale search runs on (a seeded subsample of large layers) and, when a
    mixture is fitted to ``values``, each one's most likely component. Kept for the last two
    arrays: every width the allocator tries on a pruned layer searches the same sample."""
    rng = np.random.default_rng(seed)
    search = values if values.size <= SEARCH_SAMPLES else rng.choice(values, SEARCH_SAMPLES, replace=False)
    components = None
    if values.size >= MIN_FIT_WEIGHTS and np.var(values) > 0:
        gmm, order = fit_mixture(values, seed)[1]
        components = np.argmax(gmm.predict_proba(search.reshape(-1, 1))[:, order], axis=1)
        components.flags.writeable = False
    return search, components


def fit_levels(values: np.ndarray, bits: int = 5, w_sep: float = 2.0, pow2_centres: bool = True,
               seed: int = 0, mantissa: int = 0) -> LevelSet:
    """Fit the mixture, run the separation test and search scale and centres on ``values``.

    ``values`` are the nonzero weights of one layer. Scale and centres minimise their squared
    error (on a seeded subsample of large layers). ``mantissa`` (m) bits of each code refine
    every power of two into 2^m steps; the rest is sign (and component) and exponent. Focused
    mode needs an exponent bit beside sign and component (bits >= 3 + m), else shift mode is used.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    if not 0 <= mantissa <= bits - 2:
        raise ValueError(f"mantissa must be in 0..{bits - 2} for {bits} bits (one sign and one exponent bit), "
                         f"got {mantissa}")
    values = np.asarray(values, dtype=np.float64)
    mixture, fitted = (None, None)
    if values.size >= MIN_FIT_WEIGHTS and np.var(values) > 0:
        mixture, fitted = fit_mixture(values, seed)
    if values.size == 0:
        e_max = (1 << (bits - 1 - mantissa)) - 1
        return LevelSet(fmt.QuantParams(fmt.MODE_SHIFT, bits, 1.0, 0.0, 0.0, min(e_max, 126), mantissa), mixture)
    histogram = Histogram.of(values)
    focused = mixture is not None and bits >= 3 + mantissa and mixture.w2 >= w_sep
    search, search_components = _search_sample(values, seed)
    if focused:
        e_max = (1 << (bits - 2 - mantissa)) - 1
        unit, centres = _search_focused(search, search_components, mixture.means, e_max, pow2_centres, mantissa)
    else:
        e_max = (1 << (bits - 1 - mantissa)) - 1
        unit = _search_shift(search, e_max, mantissa)
        centres = (0.0, 0.0)
    b = min(e_max, 126)
    alpha = float(np.float32(unit * 2.0**b))
    relative = tuple(float(np.float32(c / alpha)) for c in centres) if focused else (0.0, 0.0)
    if focused and pow2_centres:  # exact powers of two, whatever rounding alpha took
        relative = tuple(float(np.copysign(np.exp2(np.round(np.log2(abs(c)))), c)) for c in relative)
    params = fmt.QuantParams(fmt.MODE_FOCUSED if focused else fmt.MODE_SHIFT, bits, alpha, *relative, b, mantissa)
    return LevelSet(params, mixture, fitted if focused else None, histogram)


def row_scales(weight: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per output row (axis 0): RMS of its kept weights (1 for a row with none).

    Dividing each row by it puts channels of very different ranges (typical after folding
    BatchNorm) on one level set; the row's stored scale is then ``alpha * rms``.
    """
    rows = weight.shape[0]
    w = np.where(keep, weight, 0.0).reshape(rows, -1)
    count = keep.reshape(rows, -1).sum(axis=1)
    rms = np.sqrt((w**2).sum(axis=1) / np.maximum(count, 1))
    return np.where(rms > 0, rms, 1.0)


def quantize(
    weight: np.ndarray,
    keep: np.ndarray,
    bits: int = 5,
    w_sep: float = 2.0,
    pow2_centres: bool = True,
    assign: str = "argmax",
    seed: int = 0,
    per_channel: bool = True,
    mantissa: int = 0,
) -> QuantizedLayer:
    """Quantize the kept weights of ``weight`` (``keep`` is the pruning mask) to ``bits`` bits.

    ``assign`` picks each weight's mixture component in focused mode: ``argmax`` of the
    posterior (default), ``sample`` from it (as the paper does while training), or ``nearest``
    (the component whose level is closest; lowest error). ``per_channel`` gives every output
    row its own scale (the level set is shared, fitted on the rows normalised by their RMS).
    """
    if assign not in ASSIGNMENTS:
        raise ValueError(f"assign must be one of {ASSIGNMENTS}, got {assign!r}")
    weight64 = weight.astype(np.float64)
    scales = row_scales(weight64, keep) if per_channel else None
    normalised = weight64 / _broadcast(scales, weight64.ndim) if per_channel else weight64
    levels = fit_levels(normalised[keep], bits, w_sep, pow2_centres, seed, mantissa)
    codes = levels.codes(normalised[keep], assign, np.random.default_rng(seed))
    if not per_channel:
        return finish(weight64, keep, levels, codes)
    coded = finish(weight64, keep, levels, codes, fitted_alphas(levels, scales))
    return finish(weight64, keep, levels, codes, refine_alphas(weight64, coded.codes, levels.params, coded.alphas))


def _broadcast(scales: np.ndarray, ndim: int) -> np.ndarray:
    return scales.reshape((-1,) + (1,) * (ndim - 1))


def finish(weight: np.ndarray, keep: np.ndarray, levels: LevelSet, kept_codes: np.ndarray,
           alphas: np.ndarray | None = None) -> QuantizedLayer:
    """Assemble the code tensor (-1 where pruned) and measure its error against ``weight``.

    ``alphas`` are the per-row scales to store (None: the single ``levels.params.alpha``).
    """
    codes = np.full(weight.shape, -1, dtype=np.int16)
    codes[keep] = kept_codes
    layer = QuantizedLayer(codes, levels.params, levels.mixture, 0.0, alphas)
    return QuantizedLayer(codes, levels.params, levels.mixture, _rel_error(weight, layer.dequantized()), alphas,
                          levels.histogram)


def fitted_alphas(levels: LevelSet, scales: np.ndarray) -> np.ndarray:
    """Per-row scales of a level set fitted on rows divided by ``scales``.

    A row of weights so small (below ~1e-38 / alpha) that its scale would underflow float32 to
    0, which no decoder accepts, gets the smallest normal float32 instead: its weights decode
    to within ~1e-38 of themselves.
    """
    alphas = (levels.params.alpha * np.asarray(scales, np.float64)).astype(np.float32)
    return np.maximum(alphas, np.finfo(np.float32).tiny)


def refine_alphas(weight: np.ndarray, codes: np.ndarray, params: fmt.QuantParams, alphas: np.ndarray,
                  metric: np.ndarray | None = None) -> np.ndarray:
    """Least-squares scale per row for fixed codes: ``argmin_a |w - a u|`` (or in ``metric`` H).

    ``metric`` (``[groups, K, K]``, rows split evenly over the groups, or None) measures the
    error as ``d H d^T``: on the layer's output over calibration inputs instead of the weights.
    """
    rows = weight.shape[0]
    u = fmt.dequantize_codes(codes, params, np.ones(rows, np.float32)).reshape(rows, -1).astype(np.float64)
    w = weight.reshape(rows, -1)
    if metric is None:
        num, den = (w * u).sum(axis=1), (u * u).sum(axis=1)
    else:
        groups = metric.shape[0]
        hu = np.matmul(u.reshape(groups, rows // groups, -1), metric).reshape(rows, -1)
        num, den = (w * hu).sum(axis=1), (u * hu).sum(axis=1)
    best = np.where((den > 0) & (num > 0), num / np.where(den > 0, den, 1.0), alphas)
    best = best.astype(np.float32)
    ok = np.isfinite(best) & (best > 0)
    try:
        fmt.row_alphas(np.where(ok, best, alphas), params, rows)
        return np.where(ok, best, alphas).astype(np.float32)
    except fmt.FormatError:  # a refined scale would make a level overflow: keep the fitted ones
        return alphas


def _rel_error(weight: np.ndarray, approx: np.ndarray) -> float:
    norm = float(np.linalg.norm(weight))
    return float(np.linalg.norm(weight - approx) / norm) if norm > 0 else 0.0
