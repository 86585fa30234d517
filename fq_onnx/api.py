"""The public Python API; the CLI (fq_onnx.cli) is a thin wrapper over these functions."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fq_onnx import __version__, allocate, calibrate, focus, fmt, intmode, rewrite
from fq_onnx.compress import PRUNE_METHODS, ROUNDINGS, LayerOptions, compress_layer
from fq_onnx.errors import FqOnnxError
from fq_onnx.graph import fold_batchnorms, load_model, save_model
from fq_onnx.inspect import LayerRow, ModelReport, check_shiftconvs, float_row, inspect_model, shiftconv_row

__all__ = ["convert", "decompress", "inspect_model", "load_sparsity_file", "ConversionReport"]


@dataclass
class ConversionReport(ModelReport):
    """What ``convert`` did: the output model's per-layer report plus the input's size."""

    input_path: str = ""
    input_file_bytes: int = 0
    folded_batchnorms: tuple[str, ...] = ()
    settings: dict | None = None
    report_path: str | None = None  # the HTML report, when one was asked for

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
                "report_path": self.report_path}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n / 1e3:.1f} kB"


def load_sparsity_file(path: str | os.PathLike) -> dict[str, float]:
    """Read a per-layer sparsity table: a JSON or YAML mapping of node name to sparsity.

    The key ``"*"`` sets the sparsity of every layer not named.
    """
    path = Path(path)
    if not path.exists():
        raise FqOnnxError(f"{path}: no such sparsity file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise FqOnnxError(f"{path}: reading YAML needs PyYAML (pip install 'fq-onnx[yaml]'), or use JSON") from None
            table = yaml.safe_load(text)
        else:
            table = json.loads(text)
    except (ValueError, Exception) as exc:
        if isinstance(exc, FqOnnxError):
            raise
        raise FqOnnxError(f"{path}: cannot parse the sparsity table: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in table.values()):
        raise FqOnnxError(f"{path}: expected a mapping of node name to a sparsity number")
    return {str(k): float(v) for k, v in table.items()}


def _check_options(sparsity: float, bits: int, w_sep: float, block: int, assign: str) -> None:
    if not 0.0 <= sparsity <= 0.99:
        raise FqOnnxError(f"--sparsity must be in 0..0.99, got {sparsity}")
    if not 2 <= bits <= 8:
        raise FqOnnxError(f"--bits must be in 2..8, got {bits}")
    if not w_sep >= 0:
        raise FqOnnxError(f"--w-sep must be >= 0, got {w_sep}")
    if not 1 <= block <= 255:
        raise FqOnnxError(f"--block must be in 1..255, got {block}")
    if assign not in focus.ASSIGNMENTS:
        raise FqOnnxError(f"--assign must be one of {', '.join(focus.ASSIGNMENTS)}, got {assign!r}")


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
    *,
    sparsity: float = 0.5,
    sparsity_file: str | os.PathLike | None = None,
    bits: int = 5,
    w_sep: float = 2.0,
    block: int = 1,
    exclude: Iterable[str] = (),
    seed: int = 0,
    pow2_centres: bool = True,
    assign: str = "argmax",
    per_channel: bool = True,
    fuse_activation: bool = True,
    calib=None,
    calib_size: int = 256,
    preset: str | None = None,
    prune_method: str | None = None,
    rounding: str | None = None,
    bias_correction: bool | None = None,
    sequential: bool = False,
    target_ratio: float | None = None,
    max_drop: float | None = None,
    data=None,
    eval_size: int = 1000,
    keep_float: bool = True,
    alloc_bits: Iterable[int] | None = None,
    act_bits: int | None = None,
    act_calib: str = "mse",
    progress: Callable[[str, int, int], None] | None = None,
    report_dir: str | os.PathLike | None = None,
) -> ConversionReport:
    """Compress every Conv, Gemm and constant-weight MatMul of a model into ShiftConv nodes.

    ``sparsity`` is the fraction of each layer's weights pruned (overridden per node name by
    ``sparsity_file``); ``bits`` counts the bits of one nonzero code; ``w_sep`` is the
    Wasserstein threshold above which a layer uses focused quantization; ``block`` makes G
    consecutive output channels share one mask; ``per_channel`` stores one scale per output
    channel (one level set per layer) instead of the paper's one per layer.
    ``progress(layer_name, done, total)`` is called
    after each layer. The same inputs and seed give a byte-identical output file.

    Calibration: ``calib`` is data in any form fq_onnx.data.open_data reads (a path, arrays or a
    reader; ``"digits"`` is the bundled training split), ``calib_size`` the samples used and
    ``preset`` their preprocessing. With it the defaults become OBS pruning with weight updates
    (``prune_method="obs"``), error-feedback rounding followed by coordinate-descent passes (``rounding="gptq-cd"``) and per-channel bias
    correction; without it, magnitude pruning and nearest rounding. ``sequential`` measures each
    layer's inputs with the layers before it already compressed, so later layers compensate the
    errors of earlier ones (one calibration pass per layer; slower, and not better on every model).

    Allocation (needs ``calib``): ``target_ratio`` picks per-layer sparsity and bit width (from
    ``alloc_bits``, default ``bits - 3`` to ``bits + 1``) giving the smallest
    estimated output damage at that weights-only ratio; ``max_drop`` the largest ratio whose
    top-1 drop on ``data`` (labelled, at most ``eval_size`` samples) is at most that many points.
    Either replaces ``sparsity``/``sparsity_file``; the report's ``allocation`` lists the trials.
    With ``keep_float`` the allocator may leave a fragile layer that weighs little uncompressed.

    ``report_dir``: also write ``report_dir/index.html``, a self-contained report with the layer
    table and charts (fq_onnx.report); its path is the result's ``report_path``.

    Integer mode (needs ``calib``): ``act_bits`` quantizes every ShiftConv's input to that many
    bits with a power-of-two scale chosen on the calibration data by ``act_calib`` (``mse``,
    ``minmax`` or ``percentile``), so the node computes with integer shifts and adds
    (docs/SHIFTCONV.md). A layer whose int32 accumulator could overflow keeps float activations;
    each row's ``act`` says which and why.
    """
    _check_options(sparsity, bits, w_sep, block, assign)
    if act_bits is not None:
        intmode.check_convert_options(act_bits, act_calib, calib, pow2_centres)
    options = _layer_options(calib, bits, w_sep, block, pow2_centres, assign, seed, prune_method, rounding,
                             bias_correction, per_channel)
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise FqOnnxError(f"{output_path}: refusing to overwrite the input model; choose another output path")
    if report_dir is not None:
        from fq_onnx import report as html_report

        html_report.check_report_dir(report_dir)
        pictures = {}
    per_layer = load_sparsity_file(sparsity_file) if sparsity_file else {}
    default_sparsity = per_layer.pop("*", sparsity)
    for name, value in per_layer.items():
        if not 0.0 <= value <= 0.99:
            raise FqOnnxError(f"{sparsity_file}: sparsity {value} for {name!r} is outside 0..0.99")

    # Without calibration nothing runs the model: weights in external data stay on disk until compressed.
    model = load_model(input_path, lazy_external=calib is None)
    graph = gs.import_onnx(model)
    _unique_names(graph)
    folded = fold_batchnorms(graph)
    targets, skipped = rewrite.find_targets(graph, tuple(exclude))
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    unknown = set(per_layer) - {t.node.name for t in targets} - {name for name, _, _ in skipped}
    if unknown:
        raise FqOnnxError(f"{sparsity_file}: no compressible node named {', '.join(sorted(unknown))}")
    if not targets:
        reasons = "; ".join(f"{n} ({op}): {why}" for n, op, why in skipped) or "it has no Conv, Gemm or MatMul node"
        raise FqOnnxError(f"{input_path}: nothing to compress: {reasons}")

    workdir = tempfile.TemporaryDirectory(prefix="fq-onnx-calib-") if calib is not None else None
    inputs = None
    if workdir:
        reader = _calibration_reader(model, calib, calib_size, preset)
        inputs = calibrate.sample_inputs(reader, calib_size, workdir.name, seed)
        collect = functools.partial(calibrate.collect, inputs=inputs, seed=seed, description=_describe(reader))
    stats = collect(graph, targets) if workdir else {}
    allocation = None
    if target_ratio is not None or max_drop is not None:
        allocation = _allocate(graph, targets, skipped, stats, inputs, options, target_ratio, max_drop, model, data,
                               preset, eval_size, keep_float, _bits_grid(alloc_bits, bits), progress)
        per_layer = {name: choice[0] for name, choice in allocation.plan.items() if not allocate.is_float(choice)}
    rows: list[LayerRow] = []
    for index, target in enumerate(targets):
        name = target.node.name
        layer_stats = stats.get(name)
        if workdir and sequential and index > 0:
            # Statistics of the inputs this layer sees once the layers before it are compressed.
            current = graph.copy()
            rewrite.to_plain(current)
            layer_stats = collect(current, [target])[name]
        if allocation and allocate.is_float(allocation.plan[name]):
            if allocation.plan[name] == allocate.FLOAT16:
                rewrite.store_float16(graph, target.node)
            continue  # the allocator keeps this layer in float
        result = allocation.results[name] if allocation else compress_layer(
            target.weight, target.bias, per_layer.get(name, default_sparsity), options, layer_stats)
        layer = result.layer
        target.bias = result.bias
        blob = layer.encode(block)
        info = {"w2": float(layer.mixture.w2) if layer.mixture else 0.0, "rel_error": layer.rel_error,
                "source_op": target.node.op}
        if result.output_error is not None:
            info["out_error"] = result.output_error
        shift = target.replace(graph, blob, info, fuse_activation)
        target.release()
        rows.append(shiftconv_row(shift))
        if report_dir is not None:
            pictures[name] = html_report.layer_picture(name, layer, per_channel=per_channel, w_sep=w_sep)
        if progress:
            progress(name, index + 1, len(targets))
    graph.cleanup()
    if act_bits is not None:  # integer mode: each ShiftConv's input scale, on the compressed model
        acts = intmode.assign_scales(graph, inputs, act_bits, act_calib, seed=seed, progress=progress)
        for row in rows:
            row.act = acts.get(row.name, row.act)
    for target in rewrite.find_targets(graph)[0]:  # layers left as float count at full size
        rows.append(float_row(target))
    if workdir:
        workdir.cleanup()
    rows.sort(key=lambda row: position.get(row.name, len(position)))
    graph.cleanup().toposort()

    settings = {"sparsity": default_sparsity, "per_layer_sparsity": per_layer or None, "bits": bits,
                "per_layer_bits": {n: c[1] for n, c in allocation.plan.items() if not allocate.is_float(c)} if allocation else None, "w_sep": w_sep,
                "block": block, "exclude": list(exclude), "seed": seed, "pow2_centres": pow2_centres,
                "assign": assign, "per_channel": per_channel, "fuse_activation": fuse_activation, "prune_method": options.prune_method,
                "rounding": options.rounding, "bias_correction": options.bias_correction,
                "sequential": bool(workdir and sequential),
                "calibration": None if calib is None else {"data": str(calib), "samples": calib_size,
                                                            "preset": preset},
                "target_ratio": target_ratio, "max_drop": max_drop,
                "allocation": allocation.to_dict() if allocation else None,
                "act_bits": act_bits, "act_calib": act_calib if act_bits is not None else None}
    out_model = _export(graph, model, settings)
    file_bytes = save_model(out_model, output_path)
    conversion = ConversionReport(str(output_path), file_bytes, rows, skipped, str(input_path),
                                  input_path.stat().st_size, tuple(folded), settings)
    if report_dir is not None:
        pictures = {k: v for k, v in pictures.items() if v is not None}
        conversion.report_path = str(html_report.write_report(report_dir, conversion, pictures))
    return conversion


def _layer_options(calib, bits, w_sep, block, pow2_centres, assign, seed, prune_method, rounding,
                   bias_correction, per_channel=True) -> LayerOptions:
    calibrated = calib is not None
    prune_method = prune_method or ("obs" if calibrated else "magnitude")
    rounding = rounding or ("gptq-cd" if calibrated else "nearest")
    bias_correction = calibrated if bias_correction is None else bias_correction
    if prune_method not in PRUNE_METHODS:
        raise FqOnnxError(f"--prune-method must be one of {', '.join(PRUNE_METHODS)}, got {prune_method!r}")
    if rounding not in ROUNDINGS:
        raise FqOnnxError(f"--rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if not calibrated and (prune_method != "magnitude" or rounding != "nearest" or bias_correction):
        raise FqOnnxError("OBS pruning, GPTQ rounding and bias correction need calibration data (--calib)")
    return LayerOptions(bits, w_sep, block, pow2_centres, assign, seed, prune_method, rounding, bias_correction,
                        per_channel)


def _bits_grid(alloc_bits: Iterable[int] | None, bits: int) -> tuple[int, ...]:
    """The widths the allocator may choose; by default ``bits - 3 .. bits + 1`` (2..6 for 5 bits):
    on ResNet-20 at 12x, narrow codes on the robust layers cut the top-1 drop from 4.2 to 0.9 points."""
    grid = tuple(sorted(set(alloc_bits))) if alloc_bits else tuple(range(max(2, bits - 3), min(8, bits + 1) + 1))
    if not all(2 <= b <= 8 for b in grid):
        raise FqOnnxError(f"--alloc-bits must be in 2..8, got {', '.join(map(str, grid))}")
    return grid


def _allocate(graph, targets, skipped, stats, inputs, options, target_ratio, max_drop, model, data, preset,
              eval_size, keep_float, bits_grid, progress) -> allocate.Allocation:
    """Measure every layer's trade-off curve and gain, then search the per-layer sparsity and bits."""
    if not stats:
        raise FqOnnxError("--target-ratio and --max-drop need calibration data (--calib)")
    if target_ratio is not None and max_drop is not None:
        raise FqOnnxError("give --target-ratio or --max-drop, not both")
    if target_ratio is not None and not target_ratio > 1:
        raise FqOnnxError(f"--target-ratio must be above 1, got {target_ratio}")
    if max_drop is not None and not max_drop >= 0:
        raise FqOnnxError(f"--max-drop must be >= 0 points, got {max_drop}")
    evaluation = None
    if max_drop is not None:
        if data is None:
            raise FqOnnxError("--max-drop needs labelled evaluation data (--data), separate from --calib")
        evaluation = _arrays(model, data, preset, eval_size)
        if evaluation[1] is None:
            raise FqOnnxError(f"{data}: --max-drop needs labelled data, these samples have no labels")
    curves = allocate.layer_curves(targets, stats, options, bits_grid=bits_grid, keep_float=keep_float,
                                   progress=(lambda n, i, t: progress(f"measuring {n}", i, t)) if progress else None)
    allocate.measure_gains(graph, targets, curves, options.block, inputs[: allocate.GAIN_SAMPLES])
    allocate.measure_held_out_gains(graph, targets, curves, stats, inputs, options)
    excluded = graph.copy()
    float_bytes = sum(4 * t.weight.size for t in rewrite.find_targets(excluded)[0]
                      if t.node.name in {name for name, _, why in skipped})
    return allocate.search(graph, curves, options.block, float_bytes, target_ratio=target_ratio,
                           max_drop=max_drop, evaluation=evaluation)


def _calibration_reader(model: onnx.ModelProto, calib, calib_size: int, preset: str | None):
    """A reader of the calibration data, preprocessed for the model's input."""
    from fq_onnx import data as data_module

    if calib_size < 1:
        raise FqOnnxError(f"--calib-size must be >= 1, got {calib_size}")
    if isinstance(calib, str) and calib == "digits":
        return data_module.DigitsReader(split="train")
    shape = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    return data_module.open_data(calib, data_module.resolve_preprocess(preset, input_shape=shape))


def _describe(reader) -> str:
    from fq_onnx.data import reader_description

    return reader_description(reader) if reader is not None else ""


def _export(graph: gs.Graph, original: onnx.ModelProto, settings: dict) -> onnx.ModelProto:
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
                                        "fq_onnx.settings": json.dumps(settings, sort_keys=True)})
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
    rows: list[dict]  # {"node", "op", "weights", "by_sparsity": {s: {"top1", "drop", "sqnr_db"}}, "score"}

    def to_dict(self) -> dict:
        return {"model": self.model, "sparsities": list(self.sparsities), "labelled": self.labelled,
                "baseline_top1": self.baseline_top1, "layers": self.rows}


def sensitivity(
    model_path: str | os.PathLike,
    data,
    *,
    sparsities: Iterable[float] = (0.5, 0.7, 0.9),
    bits: int = 5,
    calib=None,
    calib_size: int = 256,
    preset: str | None = None,
    limit: int = 500,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> SensitivityReport:
    """Compress each layer alone at each sparsity and measure the damage on ``data``.

    With labels the damage is the top-1 drop in points, else the output SQNR in dB against the
    original model; layers are sorted most sensitive first. With ``calib`` the layers are
    compressed as ``convert`` does with calibration (OBS, GPTQ, bias correction).
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
    x, y = _arrays(model, data, preset, limit)
    options = _layer_options(calib, bits, 2.0, 1, True, "argmax", seed, None, None, None)
    stats = {}
    if calib is not None:
        with tempfile.TemporaryDirectory(prefix="fq-onnx-calib-") as workdir:
            inputs = calibrate.sample_inputs(_calibration_reader(model, calib, calib_size, preset), calib_size, workdir, seed)
            stats = calibrate.collect(graph, targets, inputs, seed=seed)
    reference = allocate.run_model(gs.export_onnx(graph).SerializeToString(), x)
    baseline = allocate.top1(reference, y) if y is not None else None
    rows = []
    for index, target in enumerate(targets):
        name = target.node.name
        row = {"node": name, "op": target.node.op, "weights": int(target.weight.size), "by_sparsity": {}}
        for s in sparsities:
            result = compress_layer(target.weight, target.bias, s, options, stats.get(name))
            logits = allocate.run_model(allocate.plain_model(graph, {name: result}, 1), x)
            noise = allocate.noise(reference, logits)
            entry = {"sqnr_db": float(-10 * np.log10(max(noise, 1e-30)))}
            if y is not None:
                accuracy = allocate.top1(logits, y)
                entry.update(top1=accuracy, drop=100 * (baseline - accuracy))
            row["by_sparsity"][str(s)] = entry
        entries = row["by_sparsity"].values()
        row["score"] = float(np.mean([e["drop"] for e in entries])) if y is not None else \
            float(-np.mean([e["sqnr_db"] for e in entries]))
        rows.append(row)
        if progress:
            progress(name, index + 1, len(targets))
    rows.sort(key=lambda r: -r["score"])
    return SensitivityReport(str(model_path), sparsities, y is not None, baseline, rows)


def _arrays(model: onnx.ModelProto, data, preset: str | None, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``limit`` preprocessed inputs (and labels, when the data has them), in memory."""
    from fq_onnx import data as data_module

    if isinstance(data, str) and data == "digits":
        reader = data_module.DigitsReader(split="val", limit=limit)
    else:
        shape = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
        reader = data_module.open_data(data, data_module.resolve_preprocess(preset, input_shape=shape), limit=limit)
    xs, ys = [], []
    for x, y in reader.batches(64):
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(None if y is None else np.asarray(y))
    if not xs:
        raise FqOnnxError(f"{data}: no samples")
    labels = None if any(v is None for v in ys) else np.concatenate(ys)[:limit]
    return np.concatenate(xs)[:limit], labels


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
    from fq_onnx.evaluate import evaluate

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    original = default_model_path()
    compressed = output_dir / "digits_cnn.fq.onnx"
    report = convert(original, compressed, target_ratio=target_ratio, bits=bits, seed=seed, calib="digits")
    result = evaluate(compressed, reference=original, progress=progress)
    return report, result
