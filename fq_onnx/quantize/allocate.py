"""Per-layer sparsity and bit width from measured sensitivity: the least output damage for a size.

Each layer is compressed alone at every (sparsity, bits, mantissa) choice of a grid, giving its exact
stored bytes and its relative output error ``e`` on the calibration statistics (no inference). One inference per
layer measures its gain ``g``: the network's output noise per unit of that layer's squared
error. Assuming the layers' noises add up, the output noise of a plan is ``sum g * e^2``; a
Lagrangian search picks, for a byte budget, the plan that minimises it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from fq_onnx.errors import FqOnnxError
from fq_onnx.quantize import reconstruct
from fq_onnx.graph import rewrite
from fq_onnx.calibration.calibrate import LayerStats, collect
from fq_onnx.evaluation.feeds import Samples
from fq_onnx.evaluation.objective import Objective
from fq_onnx.quantize.compress import CompressedLayer, LayerOptions, compress_choices, compress_layer, prune_rows_at

SPARSITY_GRID = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
GAIN_PROBE_SPARSITY = 0.7  # where a layer's gain is measured: errors large enough to see
GAIN_SAMPLES = 128  # calibration inputs used to measure the gains, at most
# One inference per layer measures the gains: on large inputs and deep models fewer samples,
# never below GAIN_MIN_SAMPLES, keep layers x samples x input elements within GAIN_ELEMENTS. It
# took 26% of a YOLOv8n conversion (64 layers, 64 inputs of 3x320x320); the models RESULTS.md
# measures at 32x32 and the bundled digits model keep all 128.
GAIN_ELEMENTS = 1 << 25
GAIN_MIN_SAMPLES = 32
JOBS_ENV = "FQ_ONNX_JOBS"  # worker processes measuring the layer curves (default_jobs)
PARALLEL_MIN_WEIGHTS = 200_000  # fewer weights in all (the digits CNN: 111k): curves measured inline
Choice = tuple[float, int, int]  # (sparsity, bits, mantissa) of one layer
FLOAT: Choice = (-1.0, 32, 0)  # the plan entry of a layer left uncompressed (float32 weights, no error)
FLOAT16: Choice = (-1.0, 16, 0)  # left in float, its weight stored as float16 (rewrite.store_float16)


def is_float(choice: Choice) -> bool:
    return choice[0] < 0


@dataclass
class Float16Layer:
    """The result of the FLOAT16 choice: the layer's relative output error from rounding its
    weight to float16 (about 3e-4)."""

    output_error: float


@dataclass
class LayerCurve:
    """One layer's measured trade-off: stored bytes and relative output error per choice."""

    name: str
    fp32_bytes: int
    bytes: dict[Choice, int] = field(default_factory=dict)
    errors: dict[Choice, float] = field(default_factory=dict)
    results: dict[Choice, CompressedLayer] = field(default_factory=dict, repr=False)
    gain: float = 1.0

    def cost(self, choice: Choice) -> float:
        """Estimated output noise (relative, squared) this layer adds with ``choice``."""
        return self.gain * self.errors[choice] ** 2


def layer_curves(targets: list[rewrite.Target], stats: dict[str, LayerStats], options: LayerOptions,
                 grid=SPARSITY_GRID, bits_grid: tuple[int, ...] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 keep_float: bool = True, mantissa_grid: tuple[int, ...] | None = None,
                 jobs: int | None = None) -> list[LayerCurve]:
    """Compress every layer alone at every (sparsity, bits, mantissa) of the grids; record bytes
    and error.

    ``bits_grid`` defaults to ``options.bits`` alone, ``mantissa_grid`` to ``options.mantissa``
    alone; a mantissa is tried only with the widths that leave it a sign and an exponent bit. With ``keep_float`` leaving a layer in
    float is one more choice, which the search takes for fragile layers that weigh little:
    ``FLOAT16`` (2 bytes a weight, a tiny error) or ``FLOAT`` (4 bytes, none; the only one for
    weights beyond float16's range). MobileNet-V2 at 8x with float32 alone kept 20 small layers
    in float, 292 KB of its 1.7 MB; with float16 the estimated noise at 8x drops 25% (0.075 to
    0.056) and the plan keeps 30 layers in float.

    The layers are independent: with ``jobs`` > 1 (None: ``default_jobs()`` for models of at
    least PARALLEL_MIN_WEIGHTS weights) they are measured in that many worker processes, largest
    first; the results do not depend on ``jobs``.
    """
    work = [(t.node.name, t.weight, t.bias, stats[t.node.name], options, tuple(grid),
             bits_grid or (options.bits,), mantissa_grid or (options.mantissa,), keep_float) for t in targets]
    if jobs is None:  # starting the workers costs ~5 s: small models are measured inline
        jobs = default_jobs() if sum(t.weight.size for t in targets) >= PARALLEL_MIN_WEIGHTS else 1
    jobs = min(max(1, jobs), len(work))
    curves: list[LayerCurve | None] = [None] * len(work)
    if jobs <= 1:
        for index, args in enumerate(work):
            curves[index] = _indexed_curve(index, *args)[1]
            if progress:
                progress(args[0], index + 1, len(work))
        return curves
    from joblib import Parallel, delayed  # scikit-learn's process pool: loky workers, reused across calls

    # largest layers first, so that no worker is left alone with a big one at the end
    order = sorted(range(len(work)), key=lambda i: -work[i][1].size * work[i][3].gram.shape[-1])
    pool = Parallel(n_jobs=jobs, return_as="generator_unordered", max_nbytes=None)
    for done, (index, curve) in enumerate(pool(delayed(_indexed_curve)(i, *work[i]) for i in order), 1):
        curves[index] = curve
        if progress:
            progress(work[index][0], done, len(work))
    return curves


def default_jobs() -> int:
    """Worker processes for the layer curves: ``$FQ_ONNX_JOBS``, else one per usable CPU."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{JOBS_ENV} must be a whole number of worker processes, got {value!r}") from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _indexed_curve(index: int, *args) -> tuple[int, LayerCurve]:
    """``_layer_curve`` on one BLAS thread, in a worker or not: multi-threaded BLAS sums in
    another order (errors 1e-5 apart, a code here and there), and the plan must not depend on
    the number of workers or CPUs."""
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    with threadpool_limits(1):
        return index, _layer_curve(*args)


def _layer_curve(name: str, weight: np.ndarray, bias: np.ndarray | None, layer_stats: LayerStats,
                 options: LayerOptions, grid: tuple[float, ...], bits_grid: tuple[int, ...],
                 mantissa_grid: tuple[int, ...], keep_float: bool) -> LayerCurve:
    """One layer's curve (see layer_curves)."""
    curve = LayerCurve(name, 4 * weight.size)
    choices, settings = [], []
    for sparsity, pruned in zip(grid, prune_rows_at(weight, list(grid), options, layer_stats)):
        for bits, m in widths(bits_grid, mantissa_grid):
            choices.append((sparsity, bits, m))
            settings.append((pruned, replace(options, bits=bits, mantissa=m)))
    for choice, result in zip(choices, compress_choices(weight, bias, settings, layer_stats)):
        curve.bytes[choice] = result.layer.encoded_size(options.block)
        curve.errors[choice] = result.output_error
        curve.results[choice] = result
    if keep_float:
        curve.bytes[FLOAT], curve.errors[FLOAT], curve.results[FLOAT] = curve.fp32_bytes, 0.0, None
        half = weight.astype(np.float16)
        if np.all(np.isfinite(half)):
            shape = layer_stats.gram.shape[:1] + (-1, layer_stats.gram.shape[-1])
            error = reconstruct.output_error(weight.reshape(shape), half.astype(np.float64).reshape(shape),
                                             layer_stats.second_moment)
            curve.bytes[FLOAT16], curve.errors[FLOAT16] = 2 * weight.size, error
            curve.results[FLOAT16] = Float16Layer(error)
    return curve


def widths(bits_grid: tuple[int, ...], mantissa_grid: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (bits, mantissa) pairs of two grids that make a code: m <= bits - 2."""
    return [(b, m) for b in bits_grid for m in mantissa_grid if m <= b - 2]


def plain_model(graph: gs.Graph, layers: dict[str, CompressedLayer | Float16Layer | None], block: int) -> bytes:
    """Serialized float model with the given layers replaced by their dequantized weights."""
    work = graph.copy()
    for target in rewrite.find_targets(work)[0]:
        result = layers.get(target.node.name)
        if isinstance(result, Float16Layer):
            rewrite.store_float16(work, target.node)
        elif result is not None:
            target.bias = result.bias
            blob = result.layer.encode(block)
            target.replace(work, blob, {}, fuse_activation=False)
    rewrite.to_plain(work)
    work.cleanup().toposort()  # the float16 layers' Cast nodes were appended last
    return gs.export_onnx(work).SerializeToString()


def run_model(model: bytes, inputs: Samples | np.ndarray, batch_size: int = 64) -> list[list[np.ndarray]]:
    """Every output of ``model`` on ``inputs`` (Samples, or one array): per batch, the list of outputs."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    samples = Samples.of(inputs, session.get_inputs()[0].name)
    return [session.run(None, feeds) for feeds in samples.batches(batch_size)]


def noise(reference: list[list[np.ndarray]], test: list[list[np.ndarray]]) -> float:
    """Relative squared output error, each output channel counted alike: the mean over channels
    (of every output) of ``|test - ref|^2 / |ref|^2`` (SQNR = -10 log10 of it).

    A channel is an index of an output's smallest non-batch axis when it has two or more (a
    detector's [N, 4 + classes, anchors]: its box rows and each class's scores; a segmenter's
    classes), else the whole output (a classifier's logits). Summed over all elements, YOLOv8n's
    box coordinates (up to 320) hid its class scores (below 1): a plan that destroyed every class
    score measured 7e-6.
    """
    ratios = []
    for index in range(len(reference[0])):
        refs = [batch[index] for batch in reference]
        outs = [batch[index] for batch in test]
        if any(r.shape != o.shape for r, o in zip(refs, outs)):
            continue  # a dynamic-size output (detections after NMS): not comparable element-wise
        axis = _channel_axis(refs)
        error = energy = 0.0
        for r, o in zip(refs, outs):
            r64 = r.astype(np.float64)
            sums = tuple(a for a in range(r.ndim) if a != axis)
            error = error + np.sum((o.astype(np.float64) - r64) ** 2, axis=sums)
            energy = energy + np.sum(r64**2, axis=sums)
        energy = np.atleast_1d(energy)
        ratios.append(np.atleast_1d(error) / np.maximum(energy, max(float(energy.max()) * 1e-12, 1e-30)))
    if not ratios:
        raise FqOnnxError("cannot measure the output noise: no output of the model has the same shape in the "
                          "original and the compressed model (every output has a data-dependent size)")
    return float(np.mean(np.concatenate(ratios)))


def _channel_axis(batches: list[np.ndarray]) -> int | None:
    """The smallest non-batch axis of an output of rank 3 or more, the same size in every batch."""
    shape = batches[0].shape
    if len(shape) < 3:
        return None
    axis = min(range(1, len(shape)), key=lambda a: (shape[a], a))
    return axis if all(b.shape[axis] == shape[axis] for b in batches) else None


def probe_choice(curve: LayerCurve) -> Choice:
    """Where a layer's gain is measured: the widest code at the sparsest grid point up to
    GAIN_PROBE_SPARSITY."""
    compressed = [c for c in curve.errors if not is_float(c)]
    return max((c for c in compressed if c[0] <= GAIN_PROBE_SPARSITY), default=min(compressed))


def layer_gain(graph: gs.Graph, name: str, result: CompressedLayer, block: int, inputs: Samples,
               reference: np.ndarray) -> float:
    """Output noise on ``inputs`` per unit of the layer's squared error, with only it compressed."""
    out = run_model(plain_model(graph, {name: result}, block), inputs)
    return noise(reference, out) / max(result.output_error, 1e-6) ** 2


def gain_samples(layers: int, inputs: Samples) -> int:
    """How many calibration inputs measure the gains (see GAIN_ELEMENTS): deterministic, so a
    conversion replays exactly."""
    first = inputs[:1]
    elements = sum(int(np.prod(v.shape[1:])) for chunk in first.chunks for v in chunk.values()) or 1
    return int(np.clip(GAIN_ELEMENTS // (max(layers, 1) * elements), GAIN_MIN_SAMPLES, GAIN_SAMPLES))


def measure_gains(graph: gs.Graph, targets: list[rewrite.Target], curves: list[LayerCurve], block: int,
                  inputs: Samples, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Set each curve's gain from one inference with that layer alone compressed (at probe_choice)."""
    reference = run_model(gs.export_onnx(graph).SerializeToString(), inputs)
    for index, (target, curve) in enumerate(zip(targets, curves)):
        curve.gain = layer_gain(graph, target.node.name, curve.results[probe_choice(curve)], block, inputs, reference)
        if progress:
            progress(target.node.name, index + 1, len(targets))


def measure_held_out_gains(graph: gs.Graph, targets: list[rewrite.Target], curves: list[LayerCurve],
                           stats: dict[str, LayerStats], inputs: Samples, options: LayerOptions) -> None:
    """Re-measure the gain of layers with fewer calibration vectors than inputs on unseen samples.

    Such a layer (a classifier fed one vector per image) fits its calibration samples: its
    error there understates the error on new data (MobileNet-V2's classifier: gain 0.88 in
    sample, 3.5 on held-out images), and the allocator would compress it too hard. Its probe is
    compressed from the statistics of half the samples and measured on the other half; the
    larger gain is kept.
    """
    few = [(t, c) for t, c in zip(targets, curves) if stats[t.node.name].count < t.weight[0].size]
    half = len(inputs) // 2
    if not few or half < 2:
        return
    fit = collect(graph, [t for t, _ in few], inputs[:half], use_cache=False, seed=options.seed)
    held = inputs[half:]
    reference = run_model(gs.export_onnx(graph).SerializeToString(), held)
    for target, curve in few:
        sparsity, bits, m = probe_choice(curve)
        result = compress_layer(target.weight, target.bias, sparsity, replace(options, bits=bits, mantissa=m),
                                fit[target.node.name])
        curve.gain = max(curve.gain, layer_gain(graph, target.node.name, result, options.block, held, reference))


def plan_for_budget(curves: list[LayerCurve], budget_bytes: float) -> dict[str, Choice]:
    """Per-layer choice minimising the estimated output noise with total bytes <= budget.

    Bisection on the Lagrange multiplier of ``sum cost + lambda * bytes``; if even the smallest
    plan exceeds the budget, that plan is returned.
    """
    def choose(lam: float) -> dict[str, Choice]:
        return {c.name: min(c.bytes, key=lambda k: (c.cost(k) + lam * c.bytes[k], c.bytes[k])) for c in curves}

    def size(plan: dict[str, Choice]) -> int:
        return sum(c.bytes[plan[c.name]] for c in curves)

    low, high = -30.0, 0.0  # log10 of lambda
    while size(choose(10.0**high)) > budget_bytes and high < 30:
        high += 3
    if size(choose(10.0**high)) > budget_bytes:
        return choose(10.0**high)
    for _ in range(60):
        mid = (low + high) / 2
        if size(choose(10.0**mid)) > budget_bytes:
            low = mid
        else:
            high = mid
    return choose(10.0**high)


def plan_bytes(curves: list[LayerCurve], plan: dict[str, Choice]) -> int:
    return sum(c.bytes[plan[c.name]] for c in curves)


def estimated_noise(curves: list[LayerCurve], plan: dict[str, Choice]) -> float:
    return sum(c.cost(plan[c.name]) for c in curves)


@dataclass
class Trial:
    """One candidate plan that was built and measured."""

    ratio: float  # weights-only compression ratio of the plan
    noise: float  # estimated relative output noise (sum of g * e^2)
    top1: float | None = None  # measured on the evaluation data (the top-1 objective)
    drop: float | None = None  # objective points lost against the original (top-1, agreement, metric)
    score: float | None = None  # the objective's measured value (fq_onnx.evaluation.objective)
    objective: str | None = None  # its name

    def to_dict(self) -> dict:
        """The four fields every trial stores, plus the score of a measured objective."""
        values = self.__dict__
        return {k: v for k, v in values.items() if k in ("ratio", "noise", "top1", "drop") or v is not None}


@dataclass
class Allocation:
    plan: dict[str, Choice]
    results: dict[str, CompressedLayer | None]
    trials: list[Trial]
    target: str
    met: bool
    message: str

    def to_dict(self) -> dict:
        plan = {name: {FLOAT: "float", FLOAT16: "float16"}.get(c) or
                {"sparsity": c[0], "bits": c[1], **({"mantissa": c[2]} if c[2] else {})}  # no trace at m = 0
                for name, c in self.plan.items()}
        return {"plan": plan, "target": self.target, "met": self.met, "message": self.message,
                "trials": [t.to_dict() for t in self.trials]}


def top1_classes(outputs: list[list[np.ndarray]]) -> np.ndarray:
    """Each sample's largest first output (outputs per batch, flattened per sample)."""
    return np.concatenate([np.argmax(batch[0].reshape(len(batch[0]), -1), axis=1) for batch in outputs])


def top1(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    """Share of samples whose largest first output is their label (outputs per batch)."""
    return float(np.mean(top1_classes(outputs) == labels))


def search(graph: gs.Graph, curves: list[LayerCurve], block: int, float_bytes: int, *,
           target_ratio: float | None = None, max_drop: float | None = None, min_score: float | None = None,
           objective: Objective | None = None, max_trials: int = 8,
           report: Callable[[Trial], None] | None = None) -> Allocation:
    """Choose per-layer sparsity, bits and mantissa for ``target_ratio`` (weights-only), or for the
    largest ratio whose ``objective`` (fq_onnx.evaluation.objective) drops at most ``max_drop``
    below the original's or stays at least ``min_score``.

    ``float_bytes`` are the bytes of weight layers left uncompressed (they count in the ratio).
    The measured searches bisect the ratio, building and scoring each candidate. With
    ``target_ratio`` an ``objective``, if given, scores the chosen plan.
    """
    total = sum(c.fp32_bytes for c in curves) + float_bytes

    def ratio_of(plan):
        return total / (plan_bytes(curves, plan) + float_bytes)

    def plan_for_ratio(ratio):
        return plan_for_budget(curves, total / ratio - float_bytes)

    def results_of(plan):
        return {c.name: c.results[plan[c.name]] for c in curves}

    def scored(plan) -> Trial:
        trial = Trial(ratio_of(plan), estimated_noise(curves, plan))
        if objective is not None:
            trial.score = objective.score(plain_model(graph, results_of(plan), block))
            trial.objective = objective.name
            if math.isfinite(objective.baseline):
                trial.drop = objective.baseline - trial.score
            if objective.name == "top-1":
                trial.top1 = trial.score / 100
        return trial

    densest = {c.name: min(c.bytes, key=lambda k: (c.cost(k), c.bytes[k])) for c in curves}
    sparsest = {c.name: min(c.bytes, key=lambda k: (c.bytes[k], c.cost(k))) for c in curves}
    if target_ratio is not None:
        plan = plan_for_ratio(target_ratio)
        trial = scored(plan)
        met = trial.ratio >= target_ratio
        message = (f"target ratio {target_ratio:g}x met: {trial.ratio:.2f}x" if met else
                   f"target ratio {target_ratio:g}x cannot be reached at these settings: "
                   f"the sparsest plan gives {trial.ratio:.2f}x")
        if objective is not None:
            message += f"; {objective.describe(trial.score)} (original {objective.describe(objective.baseline)})"
        if report:
            report(trial)
        return Allocation(plan, results_of(plan), [trial], f"ratio >= {target_ratio:g}", met, message)

    if objective is None or (max_drop is None) == (min_score is None):
        raise ValueError("give target_ratio, or an objective with max_drop or min_score")
    trials: list[Trial] = []
    measured: dict[tuple, Trial] = {}

    def within(trial: Trial) -> bool:
        return trial.drop <= max_drop if max_drop is not None else trial.score >= min_score

    def measure(plan) -> Trial:
        key = tuple(sorted(plan.items()))
        if key in measured:  # the bisection can land on a plan it already built
            return measured[key]
        trial = scored(plan)
        trials.append(trial)
        measured[key] = trial
        if report:
            report(trial)
        return trial

    best_plan, best = densest, measure(densest)
    low, high = np.log(best.ratio), np.log(ratio_of(sparsest))
    if within(best):
        for _ in range(max_trials - 1):
            if high - low < 0.01:
                break
            mid = (low + high) / 2
            plan = plan_for_ratio(np.exp(mid))
            trial = measure(plan)
            if within(trial):
                low = mid
                if trial.ratio > best.ratio:
                    best_plan, best = plan, trial
            else:
                high = mid
    met = within(best)
    name, baseline = objective.name, objective.describe(objective.baseline)
    if max_drop is not None:
        unit = "points" if objective.unit == "%" else "(metric)"
        target = f"{name} drop <= {max_drop:g}"
        lead = "max drop" if name == "top-1" else f"max {name} drop"
        message = (f"{lead} {max_drop:g} {unit} met: {best.ratio:.2f}x at {objective.describe(best.score)} "
                   f"(original {baseline}, drop {best.drop:.2f})" if met else
                   f"{lead} {max_drop:g} {unit} cannot be met: even the least compressed plan "
                   f"({best.ratio:.2f}x) loses {best.drop:.2f}; wrote that plan")
        if name == "top-1":  # the words of before objectives existed
            target = f"top-1 drop <= {max_drop:g}"
            message = (f"max drop {max_drop:g} points met: {best.ratio:.2f}x at top-1 {best.score:.2f}% "
                       f"(original {objective.baseline:.2f}%, drop {best.drop:.2f})" if met else
                       f"max drop {max_drop:g} points cannot be met: even the least compressed plan "
                       f"({best.ratio:.2f}x) loses {best.drop:.2f} points; wrote that plan")
    else:
        target = f"{name} >= {min_score:g}"
        message = (f"min {name} {min_score:g}{objective.unit} met: {best.ratio:.2f}x at "
                   f"{objective.describe(best.score)}" if met else
                   f"min {name} {min_score:g}{objective.unit} cannot be met: even the least compressed plan "
                   f"({best.ratio:.2f}x) reaches {objective.describe(best.score)}; wrote that plan")
    return Allocation(best_plan, results_of(best_plan), trials, target, met, message)
