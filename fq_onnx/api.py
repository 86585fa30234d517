"""The public Python API; the CLI (fq_onnx.cli) is a thin wrapper over these functions."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fq_onnx import __version__
from fq_onnx.calibration import act_scales, calibrate
from fq_onnx.quantize import allocate
from fq_onnx.graph import rewrite, select
from fq_onnx.quantize.compress import compress_layer
from fq_onnx.errors import FqOnnxError
from fq_onnx.graph import check_output_directory, fold_batchnorms, load_model, save_model
from fq_onnx.reporting.inspect import LayerRow, ModelReport, check_shiftconvs, float_row, inspect_model, shiftconv_row
from fq_onnx.options import DEFAULTS, OBJECTIVES, SETTINGS_KEY, ConvertOptions, load_sparsity_file

__all__ = ["convert", "ConvertOptions", "decompress", "inspect_model", "load_sparsity_file", "ConversionReport"]


@dataclass
class ConversionReport(ModelReport):
    """What ``convert`` did: the output model's per-layer report plus the input's size."""

    input_path: str = ""
    input_file_bytes: int = 0
    folded_batchnorms: tuple[str, ...] = ()
    settings: dict | None = None
    report_path: str | None = None  # the HTML report, when one was asked for
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of convert, in order

    def summary(self) -> str:
        """One line: sizes, weights-only ratio, layer modes and overall sparsity."""
        totals = self.totals
        counts = self.mode_counts()
        modes = ", ".join(f"{counts[m]} {m}" for m in ("FQ", "shift", "float") if counts.get(m))
        integer = [r for r in self.layers if r.act and "bits" in r.act]
        acts = (f", {integer[0].act['bits']}-bit integer activations in {len(integer)} of "
                f"{sum(1 for r in self.layers if r.act)} layers") if integer else ""
        return (
            f"{Path(self.input_path).name} {_mb(self.input_file_bytes)} -> {_mb(self.file_bytes)} "
            f"({totals.ratio:.1f}x weights-only), {len(self.layers)} layers: {modes}, "
            f"sparsity {100 * totals.sparsity:.0f}%{acts}"
        )

    def to_dict(self) -> dict:
        return {**super().to_dict(), "input_path": self.input_path, "input_file_bytes": self.input_file_bytes,
                "folded_batchnorms": list(self.folded_batchnorms), "settings": self.settings,
                "report_path": self.report_path, "timings": self.timings}

    def timing_summary(self) -> str:
        """Where the conversion's time went: ``calibration statistics 12.1 s, layer curves ...``."""
        total = sum(self.timings.values())
        parts = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.timings.items())
        return f"time: {total:.1f} s ({parts})"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n / 1e3:.1f} kB"


def _unique_names(graph: gs.Graph) -> None:
    """Give unnamed or duplicate-named nodes a unique name (named nodes keep theirs)."""
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            base = f"{node.op}_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        seen.add(node.name)


def convert(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: ConvertOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    report_dir: str | os.PathLike | None = None,
    **changes,
) -> ConversionReport:
    """Compress every Conv, Gemm and constant-weight MatMul of a model into ShiftConv nodes.

    ``options`` (a :class:`ConvertOptions`, by default every default) says how; keyword
    arguments with the names of its fields change single settings (an unknown name is an error).
    ``progress(layer_name, done, total)`` is called after each layer. The same inputs and
    options give a byte-identical output file.

    ``sparsity`` is the fraction of each layer's weights pruned (overridden per node by
    ``sparsity_file``, or the inline table ``per_layer_sparsity``, whose keys are node names, op
    types or glob patterns of either: fq_onnx.graph.select); ``bits`` counts the bits of
    one nonzero code, ``mantissa`` (0..bits-2) of them refine each power of two into 2^m levels
    (docs/FORMAT.md; 0 = the paper's powers of two); ``w_sep`` is the Wasserstein threshold above which a layer uses focused
    quantization; ``block`` makes G consecutive output channels share one mask; ``per_channel``
    stores one scale per output channel (one level set per layer) instead of the paper's one per
    layer; ``exclude`` names nodes, op types or glob patterns of either left untouched.

    Calibration: ``calib`` is data in any form fq_onnx.data.open_data reads (a path, arrays or a
    reader, an iterable of batches, a ``CalibrationDataReader``; ``"digits"`` is the bundled
    training split), ``calib_size`` the samples used, ``preset`` and ``preprocess`` (keywords of
    fq_onnx.data.resolve_preprocess: size, crop, fit, scale, mean, std, layout, channels) their
    preprocessing, applied to ``data`` too. With it the defaults become OBS pruning with weight updates
    (``prune_method="obs"``), error-feedback rounding followed by coordinate-descent passes (``rounding="gptq-cd"``) and per-channel bias
    correction; without it, magnitude pruning and nearest rounding. ``sequential`` measures each
    layer's inputs with the layers before it already compressed, so later layers compensate the
    errors of earlier ones (one calibration pass per layer; slower, and not better on every model).

    Allocation (needs ``calib``): ``target_ratio`` picks per-layer sparsity and bit width (from
    ``alloc_bits``, default ``bits - 3`` to ``bits + 1``) and mantissa width (from
    ``alloc_mantissa``, default ``mantissa`` alone) giving the smallest
    estimated output damage at that weights-only ratio; ``max_drop`` the largest ratio whose
    top-1 drop on ``data`` (labelled, at most ``eval_size`` samples) is at most that many points,
    or with ``objective="agreement"`` whose share of samples changing class is (no labels);
    ``min_sqnr`` the largest ratio whose output SQNR on ``data`` is at least that many dB;
    ``max_metric_drop`` the largest ratio whose ``metric(session) -> float`` (a callable or
    ``"file.py:function"``, higher is better) drops at most that much (fq_onnx.evaluation.objective).
    With ``target_ratio``, ``data`` or ``metric`` also score the chosen plan. Any of these
    replaces ``sparsity``/``sparsity_file``; the report's ``allocation`` lists the trials.
    With ``keep_float`` the allocator may leave a fragile layer that weighs little uncompressed.

    ``report_dir``: also write ``report_dir/index.html``, a self-contained report with the layer
    table and charts (fq_onnx.report); its path is the result's ``report_path``.

    Integer mode (needs ``calib``): ``act_bits`` quantizes every ShiftConv's input to that many
    bits with a power-of-two scale chosen on the calibration data by ``act_calib`` (``mse``,
    ``minmax`` or ``percentile``), so the node computes with integer shifts and adds
    (docs/SHIFTCONV.md). A layer whose int32 accumulator could overflow keeps float activations;
    each row's ``act`` says which and why.

    The result's ``settings`` (also stored in the output's metadata) replay the conversion:
    ``ConvertOptions.from_file(output_path)``.
    """
    options = (options or DEFAULTS).replace(**changes)
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise FqOnnxError(f"{output_path}: refusing to overwrite the input model; choose another output path")
    check_output_directory(output_path)  # before any work, not after minutes of it
    pictures = None
    if report_dir is not None:
        from fq_onnx.reporting import report as html_report

        html_report.check_report_dir(report_dir)
        pictures = {}
    start = time.perf_counter()
    job = _prepare(input_path, options)
    job.timings["load and fold"] = time.perf_counter() - start
    with contextlib.ExitStack() as cleanup:
        with job.timed("calibration statistics") if options.calibrated else contextlib.nullcontext():
            calibration = _calibrate(job, options, cleanup)
        allocation = _allocate(job, calibration, options, progress) if options.allocating else None
        with job.timed("compress"):
            rows = _compress(job, calibration, allocation, options, progress, pictures)
        if options.act_bits is not None:
            with job.timed("integer mode"):
                _integer_mode(job.graph, calibration, rows, options, progress)
    with job.timed("export"):
        conversion = _export(job, rows, options, allocation, output_path)
    conversion.timings = dict(job.timings)
    if report_dir is not None:
        pictures = {k: v for k, v in pictures.items() if v is not None}
        conversion.report_path = str(html_report.write_report(report_dir, conversion, pictures))
    return conversion


@dataclass
class _Job:
    """A model on its way through ``convert``: the graph being edited and what was found in it."""

    input_path: Path
    model: onnx.ModelProto
    graph: gs.Graph
    folded: list[str]
    targets: list[rewrite.Target]
    skipped: list[tuple[str, str, str]]
    position: dict[str, int]  # node name -> index in the input graph (the report's row order)
    default_sparsity: float
    per_layer: dict[str, float]  # node name -> sparsity (the table, then the allocator's plan)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (the report's)

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the time spent in the ``with`` block to ``timings[stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class _Calibration:
    """The calibration sample and the statistics of each target's inputs on it."""

    inputs: np.ndarray
    stats: dict[str, calibrate.LayerStats]
    collect: Callable  # (graph, targets) -> stats, on the same sample


def _prepare(input_path: Path, options: ConvertOptions) -> _Job:
    """Load, name every node, fold BatchNorms and find the layers to compress."""
    default_sparsity, per_layer, source = options.sparsity_table()
    # Without calibration nothing runs the model: weights in external data stay on disk until compressed.
    model = load_model(input_path, lazy_external=not options.calibrated)
    graph = gs.import_onnx(model)
    _unique_names(graph)
    folded = fold_batchnorms(graph)
    targets, skipped = rewrite.find_targets(graph, options.exclude)
    per_layer = select.resolve_table(
        per_layer, [(t.node.name, t.node.op) for t in targets] + [(name, op) for name, op, _ in skipped], source)
    if not targets:
        reasons = "; ".join(f"{n} ({op}): {why}" for n, op, why in skipped) or "it has no Conv, Gemm or MatMul node"
        raise FqOnnxError(f"{input_path}: nothing to compress: {reasons}")
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    return _Job(input_path, model, graph, folded, targets, skipped, position, default_sparsity, per_layer)


def _calibrate(job: _Job, options: ConvertOptions, cleanup: contextlib.ExitStack) -> _Calibration | None:
    """Sample the calibration data (into a temporary file ``cleanup`` removes) and collect every
    target's input statistics; None without calibration data."""
    if not options.calibrated:
        return None
    workdir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fq-onnx-calib-"))
    calib = _model_data(job.model, options.calib, "train", options.preset, preprocess=options.preprocess)
    inputs = calibrate.sample_inputs(calib, options.calib_size, workdir, options.seed)
    collect = functools.partial(calibrate.collect, inputs=inputs, seed=options.seed, description=calib.description)
    return _Calibration(inputs, collect(job.graph, job.targets), collect)


def _allocate(job: _Job, calibration: _Calibration, options: ConvertOptions,
              progress) -> allocate.Allocation:
    """Measure every layer's trade-off curve and gain, then search the per-layer sparsity and bits
    (``job.per_layer`` becomes the plan)."""
    objective = _objective(job, options)
    layer_options = options.layer_options()
    graph, targets, stats, inputs = job.graph, job.targets, calibration.stats, calibration.inputs
    with job.timed("layer curves"):
        curves = allocate.layer_curves(targets, stats, layer_options, bits_grid=options.bits_grid(),
                                       keep_float=options.keep_float, mantissa_grid=options.mantissa_grid(),
                                       jobs=options.jobs,
                                       progress=(lambda n, i, t: progress(f"measuring {n}", i, t)) if progress else None)
    with job.timed("layer gains"):
        allocate.measure_gains(graph, targets, curves, options.block,
                               inputs[: allocate.gain_samples(len(targets), inputs)])
        allocate.measure_held_out_gains(graph, targets, curves, stats, inputs, layer_options)
    excluded = graph.copy()
    float_bytes = sum(4 * t.weight.size for t in rewrite.find_targets(excluded)[0]
                      if t.node.name in {name for name, _, why in job.skipped})
    with job.timed("plan search"):
        allocation = allocate.search(
            graph, curves, options.block, float_bytes, target_ratio=options.target_ratio,
            max_drop=options.max_drop if options.max_drop is not None else options.max_metric_drop,
            min_score=options.min_sqnr, objective=objective)
    job.per_layer = {name: choice[0] for name, choice in allocation.plan.items() if not allocate.is_float(choice)}
    return allocation


def _objective(job: _Job, options: ConvertOptions):
    """What the allocator scores candidate plans by: the user's metric, or top-1 / agreement / SQNR
    on ``options.data``; None for a target ratio with neither."""
    from fq_onnx.evaluation import objective

    original = gs.export_onnx(job.graph).SerializeToString()
    if options.metric is not None:
        return objective.metric_objective(options.metric, original)
    if options.data is None:
        return None
    samples, labels = _samples(job.model, options.data, options.preset, options.eval_size, options.preprocess)
    kind = options.objective or ("sqnr" if options.min_sqnr is not None else "top1")
    if kind == "top1" and labels is None:
        if options.max_drop is not None:
            raise FqOnnxError(f"{options.data}: --max-drop measures top-1 on labelled data and these samples "
                              f"have no labels; give --objective agreement (or --min-sqnr) for unlabelled data")
        kind = "sqnr"  # a target ratio on unlabelled data: report the output SQNR
    return objective.data_objective(kind, original, samples, labels)


def _compress(job: _Job, calibration: _Calibration | None, allocation: allocate.Allocation | None,
              options: ConvertOptions, progress, pictures: dict | None) -> list[LayerRow]:
    """Compress each target and put a ShiftConv in its place; the report's rows, in order."""
    graph, targets = job.graph, job.targets
    layer_options = options.layer_options()
    rows: list[LayerRow] = []
    for index, target in enumerate(targets):
        name = target.node.name
        layer_stats = calibration.stats.get(name) if calibration else None
        if calibration and options.sequential and index > 0:
            # Statistics of the inputs this layer sees once the layers before it are compressed.
            current = graph.copy()
            rewrite.to_plain(current)
            layer_stats = calibration.collect(current, [target])[name]
        if allocation and allocate.is_float(allocation.plan[name]):
            if allocation.plan[name] == allocate.FLOAT16:
                rewrite.store_float16(graph, target.node)
            continue  # the allocator keeps this layer in float
        if not allocation and target.weight.size < options.min_weights:
            job.skipped.append((name, target.node.op, f"{target.weight.size} weights, fewer than "
                                f"--min-weights {options.min_weights}: kept in float"))
            continue
        result = allocation.results[name] if allocation else compress_layer(
            target.weight, target.bias, job.per_layer.get(name, job.default_sparsity), layer_options, layer_stats)
        layer = result.layer
        blob = layer.encode(options.block)
        if not allocation and options.min_weights and len(blob) >= 4 * target.weight.size:
            job.skipped.append((name, target.node.op, f"compressed {len(blob)} bytes, not smaller than its "
                                f"{4 * target.weight.size} float32 bytes: kept in float"))
            continue
        target.bias = result.bias
        info = {"w2": float(layer.mixture.w2) if layer.mixture else 0.0, "rel_error": layer.rel_error,
                "source_op": target.node.op}
        if result.output_error is not None:
            info["out_error"] = result.output_error
        shift = target.replace(graph, blob, info, options.fuse_activation)
        target.release()
        rows.append(shiftconv_row(shift))
        if pictures is not None:
            from fq_onnx.reporting import report as html_report

            pictures[name] = html_report.layer_picture(name, layer, per_channel=options.per_channel,
                                                       w_sep=options.w_sep)
        if progress:
            progress(name, index + 1, len(targets))
    if not rows and not allocation:
        kept = "; ".join(f"{n}: {why}" for n, _, why in job.skipped)
        raise FqOnnxError(f"{job.input_path}: nothing compressed ({kept}); --min-weights 0 compresses every layer")
    graph.cleanup()
    return rows


def _integer_mode(graph: gs.Graph, calibration: _Calibration, rows: list[LayerRow], options: ConvertOptions,
                  progress) -> None:
    """Choose each ShiftConv's input scale on the compressed model; note it in the rows."""
    acts = act_scales.assign_scales(graph, calibration.inputs, options.act_bits, options.act_calib,
                                 seed=options.seed, progress=progress)
    for row in rows:
        row.act = acts.get(row.name, row.act)


def _export(job: _Job, rows: list[LayerRow], options: ConvertOptions, allocation, output_path: Path) -> ConversionReport:
    """Write the output model (its settings in the metadata) and report on it."""
    graph = job.graph
    for target in rewrite.find_targets(graph)[0]:  # layers left as float count at full size
        rows.append(float_row(target))
    rows.sort(key=lambda row: job.position.get(row.name, len(job.position)))
    graph.cleanup().toposort()
    settings = options.settings(job.per_layer, job.default_sparsity, allocation)
    file_bytes = save_model(_export_model(graph, job.model, settings), output_path)
    return ConversionReport(str(output_path), file_bytes, rows, job.skipped, str(job.input_path),
                            job.input_path.stat().st_size, tuple(job.folded), settings)


def _model_data(model: onnx.ModelProto, data, digits_split: str, preset: str | None, limit: int | None = None,
                preprocess: dict | None = None):
    """``data`` as batches of the model's feeds (fq_onnx.evaluation.feeds, the one entry point);
    ``preprocess`` holds resolve_preprocess keywords over the preset."""
    from fq_onnx.evaluation import feeds

    return feeds.open_model_data(data, feeds.model_inputs(model), digits_split=digits_split, preset=preset,
                                 limit=limit, **(preprocess or {}))


def _export_model(graph: gs.Graph, original: onnx.ModelProto, settings: dict) -> onnx.ModelProto:
    """Export the edited graph, keeping the original's model-level fields and noting our settings."""
    model = gs.export_onnx(graph)
    if not any(op.domain == rewrite.DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(rewrite.DOMAIN, rewrite.OPSET_VERSION))
    model.ir_version = original.ir_version
    model.producer_name, model.producer_version = "fq-onnx", __version__
    model.doc_string = original.doc_string
    model.model_version = original.model_version
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in original.metadata_props},
                                        SETTINGS_KEY: json.dumps(settings, sort_keys=True)})
    return model


def decompress(input_path: str | os.PathLike, output_path: str | os.PathLike) -> ModelReport:
    """Write a standard ONNX model with the dequantized float weights in plain Conv/Gemm nodes.

    Any onnxruntime runs the result; its outputs equal the compressed model's up to float
    rounding. Returns the report of the written model.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise FqOnnxError(f"{output_path}: refusing to overwrite the input model; choose another output path")
    model = load_model(input_path)
    graph = gs.import_onnx(model)
    check_shiftconvs(graph, input_path)  # what onnxruntime would refuse, naming file and node
    if rewrite.to_plain(graph) == 0:
        raise FqOnnxError(f"{input_path}: has no ShiftConv node to decompress")
    graph.cleanup().toposort()
    model_out = gs.export_onnx(graph)
    kept = [op for op in model_out.opset_import if op.domain != rewrite.DOMAIN]
    del model_out.opset_import[:]
    model_out.opset_import.extend(kept)
    model_out.ir_version = model.ir_version
    onnx.checker.check_model(model_out)
    save_model(model_out, output_path)
    return inspect_model(output_path)


@dataclass
class SensitivityReport:
    """Each layer compressed alone: top-1 change (points) or output SQNR (dB) per sparsity."""

    model: str
    sparsities: tuple[float, ...]
    labelled: bool
    baseline_top1: float | None
    rows: list[dict]  # {"node", "op", "weights", "by_sparsity": {s: {"top1", "drop", "sqnr_db", ...}}, "score"}
    objective: str = "top1"  # what "score" (mean damage) and the sort order measure
    baseline_metric: float | None = None  # the original model's user metric

    def to_dict(self) -> dict:
        return {"model": self.model, "sparsities": list(self.sparsities), "labelled": self.labelled,
                "baseline_top1": self.baseline_top1, "objective": self.objective,
                "baseline_metric": self.baseline_metric, "layers": self.rows}


def sensitivity(
    model_path: str | os.PathLike,
    data,
    *,
    sparsities: Iterable[float] = (0.5, 0.7, 0.9),
    bits: int = DEFAULTS.bits,
    calib=None,
    calib_size: int = DEFAULTS.calib_size,
    preset: str | None = None,
    preprocess: dict | None = None,
    limit: int = 500,
    seed: int = DEFAULTS.seed,
    objective: str | None = None,
    metric: Callable | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SensitivityReport:
    """Compress each layer alone at each sparsity and measure the damage on ``data``.

    Every entry holds the output SQNR in dB against the original model and the top-1 agreement
    with it in percent, the top-1 accuracy and its drop in points with labels, and ``metric``
    with a user metric (``metric(session) -> float``, or ``"file.py:function"``). Layers are
    sorted most sensitive first by ``objective``: ``top1`` (mean drop; the default with labels),
    ``agreement`` (mean disagreement), ``sqnr`` (lowest mean SQNR; the default without labels),
    or the metric's mean drop when ``metric`` is given. With ``calib`` the layers are
    compressed as ``convert`` does with calibration (OBS, GPTQ, bias correction). ``preset`` and
    ``preprocess`` (keywords of fq_onnx.data.resolve_preprocess) prepare both data sets.
    """
    sparsities = tuple(float(s) for s in sparsities)
    if not sparsities or not all(0.0 <= s <= 0.99 for s in sparsities):
        raise FqOnnxError(f"sparsities must be in 0..0.99, got {sparsities}")
    model = load_model(model_path)
    graph = gs.import_onnx(model)
    _unique_names(graph)
    fold_batchnorms(graph)
    targets, _ = rewrite.find_targets(graph)
    if not targets:
        raise FqOnnxError(f"{model_path}: nothing to compress")
    x, y = _samples(model, data, preset, limit, preprocess)
    options = ConvertOptions(bits=bits, calib=calib, calib_size=calib_size, seed=seed).layer_options()
    stats = {}
    if calib is not None:
        with tempfile.TemporaryDirectory(prefix="fq-onnx-calib-") as workdir:
            inputs = calibrate.sample_inputs(_model_data(model, calib, "train", preset, preprocess=preprocess),
                                             calib_size, workdir, seed)
            stats = calibrate.collect(graph, targets, inputs, seed=seed)
    original = gs.export_onnx(graph).SerializeToString()
    reference = allocate.run_model(original, x)
    baseline = allocate.top1(reference, y) if y is not None else None
    kind = objective or ("top1" if y is not None else "sqnr")
    if kind not in OBJECTIVES:
        raise FqOnnxError(f"objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")
    if kind == "top1" and y is None:
        raise FqOnnxError(f"{data}: the top-1 objective needs labelled data; use agreement or sqnr")
    scorer = None
    if metric is not None:
        from fq_onnx.evaluation.objective import metric_objective

        scorer = metric_objective(metric, original)
        kind = "metric"
    agree_with = allocate.top1_classes(reference)
    rows = []
    for index, target in enumerate(targets):
        name = target.node.name
        row = {"node": name, "op": target.node.op, "weights": int(target.weight.size), "by_sparsity": {}}
        for s in sparsities:
            result = compress_layer(target.weight, target.bias, s, options, stats.get(name))
            candidate = allocate.plain_model(graph, {name: result}, 1)
            logits = allocate.run_model(candidate, x)
            noise = allocate.noise(reference, logits)
            entry = {"sqnr_db": float(-10 * np.log10(max(noise, 1e-30))),
                     "agreement": 100 * float(np.mean(agree_with == allocate.top1_classes(logits)))}
            if y is not None:
                accuracy = allocate.top1(logits, y)
                entry.update(top1=accuracy, drop=100 * (baseline - accuracy))
            if scorer is not None:
                value = scorer.score(candidate)
                entry.update(metric=value, metric_drop=scorer.baseline - value)
            row["by_sparsity"][str(s)] = entry
        entries = row["by_sparsity"].values()
        damage = {"top1": lambda e: e["drop"], "agreement": lambda e: 100 - e["agreement"],
                  "sqnr": lambda e: -e["sqnr_db"], "metric": lambda e: e["metric_drop"]}[kind]
        row["score"] = float(np.mean([damage(e) for e in entries]))
        rows.append(row)
        if progress:
            progress(name, index + 1, len(targets))
    rows.sort(key=lambda r: -r["score"])
    return SensitivityReport(str(model_path), sparsities, y is not None, baseline, rows, kind,
                             scorer.baseline if scorer else None)


def _samples(model: onnx.ModelProto, data, preset: str | None, limit: int, preprocess: dict | None = None):
    """Up to ``limit`` preprocessed inputs as Samples, and their labels (None when the data has none)."""
    from fq_onnx.evaluation.feeds import Samples

    source = _model_data(model, data, "val", preset, limit, preprocess)
    batches, ys = [], []
    for feeds, y in source.batches(64):
        batches.append(feeds)
        ys.append(y)
    samples = Samples.concatenate(batches)[:limit]
    if not len(samples):
        raise FqOnnxError(f"{data}: no samples")
    labels = None if any(v is None for v in ys) else np.concatenate(ys)[:limit].astype(np.int64)
    return samples, labels


# The demo's settings: calibrate on the bundled training split, then let the allocator pick
# per-layer sparsity for this weights-only ratio; accuracy is measured on the validation split.
DEMO_TARGET_RATIO = 16.0
DEMO_BITS = 5


def demo(output_dir: str | os.PathLike = "fq-onnx-demo", *, target_ratio: float = DEMO_TARGET_RATIO,
         bits: int = DEMO_BITS, seed: int = 0, progress: bool = True):
    """Convert the bundled digits CNN and evaluate original vs compressed on its validation split.

    Calibrates on the bundled training split (never on the validation images). Writes
    ``OUTPUT_DIR/digits_cnn.fq.onnx`` and returns ``(ConversionReport, EvaluationResult)``.
    """
    from fq_onnx.digits import default_model_path
    from fq_onnx.evaluation.evaluate import evaluate

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    original = default_model_path()
    compressed = output_dir / "digits_cnn.fq.onnx"
    report = convert(original, compressed, target_ratio=target_ratio, bits=bits, seed=seed, calib="digits")
    result = evaluate(compressed, reference=original, progress=progress)
    return report, result
