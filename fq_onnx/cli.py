"""The ``fq-onnx`` command line: parse, call fq_onnx.api, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from fq_onnx import __version__, api
from fq_onnx.op import intmode
from fq_onnx.errors import FqOnnxError
from fq_onnx.reporting.inspect import ModelReport
from fq_onnx.options import DEFAULTS, FIELDS, ConvertOptions, read_recipe, recipe_fields, stored_settings

# Tables are wide: when piped, do not squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class _Verbosity:
    """--quiet / --verbose of the running command (every command sets it first)."""

    quiet = False
    verbose = False


def _verbosity(quiet: bool, verbose: bool) -> None:
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    _Verbosity.quiet, _Verbosity.verbose = quiet, verbose


def _info(text: str) -> None:
    """An info line: what happened on the way, not the result (--quiet drops it)."""
    if not _Verbosity.quiet:
        out.print(text, markup=False, highlight=False)


# Preprocessing of image data, shared by convert (--calib, --data), sensitivity and evaluate.
PRESET = typer.Option(None, "--preset", help="Preprocessing preset: imagenet, cifar, yolo, paddle or none (default: uint8 data / 255, nothing else; docs/DATA.md).")
SIZE = typer.Option(None, "--size", help="Resize: short side (256) or HxW (224x224).")
CROP = typer.Option(None, "--crop", help="Centre crop: 224 or HxW.")
RESIZE = typer.Option(None, "--resize", help="Reach --size HxW (default: the model's) by stretch, crop (cover, centre-crop) or letterbox (fit, pad grey 114).")
MEAN = typer.Option(None, "--mean", help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.")
STD = typer.Option(None, "--std", help="Per-channel std to divide by, e.g. 0.229,0.224,0.225.")
SCALE = typer.Option(None, "--scale", help="Divide raw values by this (default: 255 for uint8 data, else 1).")
LAYOUT = typer.Option(None, "--layout", help="Model input layout nchw or nhwc (default: read from the model).")
CHANNELS = typer.Option(None, "--channels", help="Channel order the model expects: rgb (default) or bgr.")


def _preprocess(size, crop, resize, mean, std, scale, layout, channels) -> dict | None:
    """The explicit preprocessing flags as fq_onnx.data.resolve_preprocess keywords."""
    given = dict(size=size, crop=crop, fit=resize, mean=mean, std=std, scale=scale, layout=layout, channels=channels)
    return {k: v for k, v in given.items() if v is not None} or None


QUIET = typer.Option(False, "--quiet", "-q", help="No progress and no info lines; results are still printed and written.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Extra detail, and the traceback of an error.")


class _Commands(TyperGroup):
    """Turns errors into one line on stderr and an exit code, for the console script and CliRunner alike:
    1 for a problem with the user's input, 2 for a bug (with the traceback under --verbose)."""

    def invoke(self, ctx):
        _Verbosity.quiet = _Verbosity.verbose = False
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except FqOnnxError as exc:
            if _Verbosity.verbose:
                err.print(traceback.format_exc(), markup=False, highlight=False, end="")
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("aborted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _usage_error(exc):
                raise
            if _Verbosity.verbose:
                err.print(traceback.format_exc(), markup=False, highlight=False, end="")
                err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False, highlight=False)
            else:
                err.print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
                          markup=False, highlight=False)
            raise typer.Exit(2) from None


def _usage_error(exc: BaseException) -> bool:
    # click's UsageError and kin (typer vendors its own click, so match by what they can do)
    return callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code")


app = typer.Typer(help="Compress ONNX CNNs with focused quantization and run them in onnxruntime.",
                  no_args_is_help=True, add_completion=True, cls=_Commands)


def _version(value: bool) -> None:
    if value:
        out.print(f"fq-onnx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """fq-onnx: focused quantization for sparse CNNs."""


def layer_table(report: ModelReport, title: str) -> Table:
    """Per-layer table: node, op, shape, sparsity, mode, bits, W2, error, bytes, ratio."""
    table = Table(title=title, title_justify="left")
    acts = any(r.act for r in report.layers)  # integer mode: input quantizer, clipping rate
    columns = ["node", "op", "weight shape", "sparsity", "mode", "bits", "W2", "rel. error", "bytes before",
               "bytes after", "ratio"] + (["act", "clip"] if acts else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("node", "op", "mode", "act") else "right")
    for r in report.layers:
        extra = [intmode.describe(r.act), f"{100 * r.act['clip_rate']:.3f}%" if r.act and "clip_rate" in r.act
                 else "-"] if acts else []
        table.add_row(r.name, r.op, "x".join(map(str, r.shape)), f"{100 * r.sparsity:.1f}%", r.mode, r.bits_text,
                      "-" if r.w2 is None else f"{r.w2:.2f}", "-" if r.rel_error is None else f"{r.rel_error:.3f}",
                      f"{r.fp32_bytes:,}", f"{r.stored_bytes:,}", f"{r.ratio:.1f}x", *extra)
    t = report.totals
    table.add_row("total", "", "", f"{100 * t.sparsity:.1f}%", "", "", "", "", f"{t.fp32_bytes:,}",
                  f"{t.compressed_bytes:,}", f"{t.ratio:.1f}x", *([""] * 2 if acts else []), style="bold")
    return table


def detail_table(path: Path) -> Table:
    """--verbose: what each compressed weight blob holds (docs/FORMAT.md), read from the file."""
    from fq_onnx.reporting.inspect import blob_details

    table = Table(title=f"{path}: compressed weights in detail", title_justify="left")
    for column in ("node", "centres", "b", "scales", "block", "zero run", "tokens", "header", "code table",
                   "payload", "activation"):
        table.add_column(column, justify="left" if column in ("node", "activation") else "right")
    for d in blob_details(path):
        centres = "-" if d["mode"] == "shift" else f"{d['centre0']:+.4g}, {d['centre1']:+.4g}"
        table.add_row(d["name"], centres, str(d["b"]), f"{d['scales']:,}", str(d["block"]), str(d["run_max"]),
                      f"{d['tokens']:,}", f"{d['header_bytes']:,}", f"{d['table_bytes']:,}", f"{d['payload_bytes']:,}",
                      d["activation"])
    return table


def _print_skipped(report: ModelReport) -> None:
    for name, op, reason in report.skipped:
        _info(f"skipped {name} ({op}): {reason}")
    for r in report.layers:
        if r.act and "fallback" in r.act:
            _info(f"float activations in {r.name}: {r.act['fallback']}")


def _show_progress() -> bool:
    return err.is_terminal and not _Verbosity.quiet


def _progress(label: str):
    """A per-layer progress callback drawing a bar on a terminal, silent otherwise (and under --quiet)."""
    if not _show_progress():
        return None
    from rich.progress import Progress

    bar = Progress(console=err, transient=True)
    task = bar.add_task(label, total=None)
    bar.start()

    def update(name: str, done: int, total: int) -> None:
        bar.update(task, total=total, completed=done, description=f"{label} {name}")
        if done == total:
            bar.stop()

    return update


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise FqOnnxError(f"{option} takes comma-separated integers, e.g. 3,4,5, got {text!r}") from None


@app.command()
def convert(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="Input .onnx model (never modified)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .onnx path."),
    config: Optional[Path] = typer.Option(None, "--config", help="Recipe: JSON/YAML of these options (names with _), or a compressed .onnx whose stored settings to replay; flags given here override it."),
    sparsity: float = typer.Option(DEFAULTS.sparsity, help="Fraction of each layer's weights to prune (0..0.99)."),
    sparsity_file: Optional[Path] = typer.Option(None, help="Per-layer sparsity, JSON/YAML {key: sparsity}; a key is a node name, an op type or a glob pattern of either ('*/se/*', 'Conv_1?'); '*' sets the rest."),
    bits: int = typer.Option(DEFAULTS.bits, help="Bits per nonzero weight code (paper: 5 or 7)."),
    mantissa: int = typer.Option(DEFAULTS.mantissa, help="Mantissa bits of each code (0..bits-2): levels 2^e*(1+k/2^m), 0 = powers of two (the paper)."),
    w_sep: float = typer.Option(DEFAULTS.w_sep, help="Wasserstein separation above which a layer uses focused quantization."),
    block: int = typer.Option(DEFAULTS.block, help="Output channels sharing one pruning mask (4 speeds up the kernel)."),
    exclude: list[str] = typer.Option([], help="Node name, op type or glob pattern of either ('*/fc', 'Gemm', 'stem*') to leave untouched (repeatable)."),
    min_weights: int = typer.Option(DEFAULTS.min_weights, help="Without --target-ratio/--max-drop, keep layers of fewer weights (or that would not shrink) in float, saying so; 0 compresses every layer."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed of the mixture fit and subsampling."),
    pow2_centres: bool = typer.Option(DEFAULTS.pow2_centres, "--pow2-centres/--no-pow2-centres", help="Round the two centres to powers of two."),
    assign: str = typer.Option(DEFAULTS.assign, help="Component assignment: argmax, sample or nearest."),
    per_channel: bool = typer.Option(DEFAULTS.per_channel, "--per-channel/--per-layer", help="One scale per output channel, or one per layer (the paper)."),
    fuse_activation: bool = typer.Option(DEFAULTS.fuse_activation, "--fuse-activation/--no-fuse-activation", help="Fuse a following Relu or Clip into ShiftConv."),
    calib: Optional[str] = typer.Option(None, help="Calibration data (npz, image folder, .npy; 'digits' = bundled train split)."),
    calib_size: int = typer.Option(DEFAULTS.calib_size, help="Calibration samples to use."),
    preset: Optional[str] = PRESET,
    size: Optional[str] = SIZE,
    crop: Optional[str] = CROP,
    resize: Optional[str] = RESIZE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    scale: Optional[float] = SCALE,
    layout: Optional[str] = LAYOUT,
    channels: Optional[str] = CHANNELS,
    prune_method: Optional[str] = typer.Option(None, help="magnitude, or obs (needs --calib; its default)."),
    rounding: Optional[str] = typer.Option(None, help="nearest, gptq, or gptq-cd: GPTQ then coordinate-descent passes (needs --calib; its default)."),
    bias_correction: Optional[bool] = typer.Option(None, "--bias-correction/--no-bias-correction",
                                                   help="Correct each output's mean (default: on with --calib)."),
    sequential: bool = typer.Option(DEFAULTS.sequential, "--sequential/--parallel", help="Calibrate each layer on the already compressed layers before it."),
    target_ratio: Optional[float] = typer.Option(None, help="Choose per-layer sparsity for this weights-only ratio (needs --calib)."),
    max_drop: Optional[float] = typer.Option(None, help="Largest ratio whose --objective (top1 or agreement) drops <= this many points on --data (needs --calib)."),
    objective: Optional[str] = typer.Option(None, help="What --max-drop bounds and --target-ratio reports: top1 (labels), agreement or sqnr (no labels).  [default: top1]"),
    min_sqnr: Optional[float] = typer.Option(None, help="Largest ratio whose output SQNR on --data (no labels needed) is >= this many dB (needs --calib)."),
    metric: Optional[str] = typer.Option(None, help="Your metric, file.py:function or module:function: metric(session) -> float, higher is better; scores each plan."),
    max_metric_drop: Optional[float] = typer.Option(None, help="Largest ratio whose --metric drops <= this much below the original's (needs --calib)."),
    data: Optional[str] = typer.Option(None, help="Evaluation data for --max-drop / --min-sqnr, labelled for top1 ('digits' = bundled validation split)."),
    eval_size: int = typer.Option(DEFAULTS.eval_size, help="Evaluation samples used by --max-drop and --min-sqnr."),
    keep_float: bool = typer.Option(DEFAULTS.keep_float, "--keep-float/--compress-all", help="Let the allocator leave fragile, small layers in float (stored as float16)."),
    alloc_bits: Optional[str] = typer.Option(None, help="Bit widths the allocator may give a layer, e.g. 3,4,5 (default: --bits minus 3 to plus 1)."),
    alloc_mantissa: Optional[str] = typer.Option(None, help="Mantissa widths the allocator may give a layer, e.g. 0,1,2 (default: --mantissa alone; each one more multiplies the measuring time)."),
    act_bits: Optional[int] = typer.Option(None, help="Integer mode: quantize every layer's input to this many bits (4..8; needs --calib)."),
    act_calib: str = typer.Option(DEFAULTS.act_calib, help="How --act-bits chooses each power-of-two input scale: mse, minmax or percentile (99.99%)."),
    jobs: Optional[int] = typer.Option(None, help="Worker processes measuring the allocator's layer curves (default: $FQ_ONNX_JOBS, else one per CPU; 1 for models under 200k weights); the output does not depend on it."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the per-layer report as JSON."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Also write DIR/index.html: layer table, charts, weight histograms."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Compress MODEL into OUTPUT: prune, focus-quantize, Huffman-code, rewrite to ShiftConv."""
    _verbosity(quiet, verbose)
    given = {name: value for name, value in ctx.params.items()
             if name in FIELDS and ctx.get_parameter_source(name).name != "DEFAULT"}
    if "alloc_bits" in given:
        given["alloc_bits"] = _int_list(given["alloc_bits"], "--alloc-bits")
    if "alloc_mantissa" in given:
        given["alloc_mantissa"] = _int_list(given["alloc_mantissa"], "--alloc-mantissa")
    recipe = recipe_fields(read_recipe(config), str(config)) if config else {}
    if "sparsity_file" in given:  # the flag replaces the recipe's table
        recipe.pop("per_layer_sparsity", None)
    preprocess = _preprocess(size, crop, resize, mean, std, scale, layout, channels)
    if preprocess:
        given["preprocess"] = {**(recipe.get("preprocess") or {}), **preprocess}
    options = ConvertOptions(**{**recipe, **given})
    report = api.convert(model, output, options, progress=_progress("compressing"), report_dir=report_dir)
    allocation = report.settings.get("allocation")
    if allocation:
        for trial in allocation["trials"]:
            measured = "" if trial.get("score") is None else f", {trial['objective']} {trial['score']:.4g}" + (
                "" if trial["drop"] is None else f" (drop {trial['drop']:.2f})")
            _info(f"trial: {trial['ratio']:.2f}x weights-only, estimated output noise {trial['noise']:.4f}{measured}")
        _info(allocation["message"])
        if verbose:
            plan = ", ".join(f"{name} " + (c if isinstance(c, str) else f"{c['sparsity']:g}@{c['bits']}b"
                                                           + (f"m{c['mantissa']}" if c.get("mantissa") else ""))
                             for name, c in allocation["plan"].items())
            out.print(f"plan (sparsity@bits per layer): {plan}", markup=False, highlight=False)
    if not quiet:
        out.print(layer_table(report, f"{output}"))
        _print_skipped(report)
    if verbose:
        out.print(detail_table(output))
        out.print(report.timing_summary(), markup=False, highlight=False)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if report.report_path:
        _info(f"report: {report.report_path}")
    out.print(report.summary())


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="An original or a compressed .onnx model."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON."),
    settings_path: Optional[Path] = typer.Option(None, "--settings", help="Also write the settings a compressed MODEL was converted with, as a recipe for convert --config."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Per-layer table of MODEL's weights: shape, sparsity, mode, bits, bytes and ratio."""
    _verbosity(quiet, verbose)
    if settings_path:
        settings_path.write_text(json.dumps(stored_settings(model), indent=2, sort_keys=True) + "\n")
    report = api.inspect_model(model)
    out.print(layer_table(report, f"{model} ({report.file_bytes:,} bytes)"))
    _print_skipped(report)
    if verbose and any(r.mode != "float" for r in report.layers):
        out.print(detail_table(model))
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))


@app.command()
def decompress(
    model: Path = typer.Argument(..., help="A compressed .onnx model."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the plain float model."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Write a standard ONNX model with the dequantized weights in plain Conv/MatMul nodes."""
    _verbosity(quiet, verbose)
    report = api.decompress(model, output)
    _info(f"wrote {output} ({report.file_bytes:,} bytes, {len(report.layers)} float weight layers)")
    if verbose:
        out.print(layer_table(report, f"{output} ({report.file_bytes:,} bytes)"))


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="The model to measure (usually the compressed one)."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="The original model to compare against."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Validation data: .npz with x/y, image folder (class sub-folders, <synset>_* files or a labels file), .npy file/folder, or file.py:reader. Default: the bundled digits split."),
    preset: Optional[str] = PRESET,
    size: Optional[str] = SIZE,
    crop: Optional[str] = CROP,
    resize: Optional[str] = RESIZE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    scale: Optional[float] = SCALE,
    layout: Optional[str] = LAYOUT,
    channels: Optional[str] = CHANNELS,
    labels: Optional[Path] = typer.Option(None, help="Labels file for an image folder ('<file> <label>' lines)."),
    label_offset: Optional[int] = typer.Option(None, help="Added to the labels (default: 1 for 1001-class models, else 0)."),
    output_name: Optional[str] = typer.Option(None, help="Model output holding the logits (default: the first)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Evaluation batch size."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only N samples, spread evenly over the data (every k-th)."),
    random_inputs: Optional[int] = typer.Option(None, help="Label-free mode: N seeded random inputs instead of --data."),
    seed: int = typer.Option(0, help="Seed of --random-inputs."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads (default: onnxruntime's choice)."),
    latency_runs: int = typer.Option(20, help="Timed runs per batch size and model (0 skips latency)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (one subprocess per model)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every number as JSON."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Accuracy, agreement, SQNR, size, latency and memory of MODEL, side by side with --reference."""
    from fq_onnx.evaluation.evaluate import evaluate as run_evaluate

    _verbosity(quiet, verbose)
    result = run_evaluate(model, reference, data, preset=preset, size=size, crop=crop, fit=resize, mean=mean,
                          std=std, layout=layout, scale=scale, channels=channels, labels=labels, label_offset=label_offset,
                          output_name=output_name, batch_size=batch_size, limit=limit,
                          random_inputs=random_inputs, seed=seed, threads=threads,
                          latency_runs=latency_runs, memory=memory, progress=_show_progress())
    out.print(result.to_table(), markup=False, highlight=False, soft_wrap=True)
    if verbose:
        shape = "x".join(str(d) for d in result.input_shape)
        versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
        classes = "" if result.num_classes is None else f", {result.num_classes} classes"
        out.print(f"input {shape}{classes}, label offset {result.label_offset}, "
                  f"evaluated in {result.elapsed_s:.1f} s; {versions}", markup=False, highlight=False)
    if json_path:
        result.to_json(json_path)


@app.command()
def sensitivity(
    model: Path = typer.Argument(..., help="The original .onnx model."),
    data: str = typer.Option(..., help="Evaluation data (labelled: top-1 drop; unlabelled: SQNR). 'digits' = bundled."),
    sparsities: str = typer.Option("0.5,0.7,0.9", help="Comma-separated sparsities to try per layer."),
    bits: int = typer.Option(DEFAULTS.bits, help="Bits per nonzero weight code."),
    calib: Optional[str] = typer.Option(None, help="Calibration data: compress as convert --calib does."),
    calib_size: int = typer.Option(DEFAULTS.calib_size, help="Calibration samples."),
    preset: Optional[str] = PRESET,
    size: Optional[str] = SIZE,
    crop: Optional[str] = CROP,
    resize: Optional[str] = RESIZE,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    scale: Optional[float] = SCALE,
    layout: Optional[str] = LAYOUT,
    channels: Optional[str] = CHANNELS,
    limit: int = typer.Option(500, help="Evaluation samples."),
    objective: Optional[str] = typer.Option(None, help="Sort by top1 drop (default with labels), agreement, or sqnr (default without)."),
    metric: Optional[str] = typer.Option(None, help="Your metric, file.py:function: metric(session) -> float, higher is better; sort by its drop."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the table as JSON."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Compress each layer alone at a few sparsities; table sorted by sensitivity."""
    _verbosity(quiet, verbose)
    try:
        values = [float(v) for v in sparsities.split(",") if v.strip()]
    except ValueError:
        raise FqOnnxError(f"--sparsities must be comma-separated numbers, got {sparsities!r}") from None
    report = api.sensitivity(model, data, sparsities=values, bits=bits, calib=calib, calib_size=calib_size,
                             preset=preset, preprocess=_preprocess(size, crop, resize, mean, std, scale, layout, channels),
                             limit=limit, objective=objective, metric=metric, progress=_progress("layer"))
    key, unit, fmt = {"top1": ("drop", "top-1 drop (points)", "{:+.2f}"),
                         "agreement": ("agreement", "top-1 agreement with the original (%)", "{:.2f}"),
                         "sqnr": ("sqnr_db", "output SQNR (dB)", "{:.1f}"),
                         "metric": ("metric_drop", f"{metric} drop", "{:+.4g}")}[report.objective]
    table = Table(title=f"{model}: each layer compressed alone, {unit}", title_justify="left")
    for column in ["node", "op", "weights"] + [f"s={s:g}" for s in report.sparsities]:
        table.add_column(column, justify="left" if column in ("node", "op") else "right")
    for row in report.rows:
        cells = [row["by_sparsity"][str(s)] for s in report.sparsities]
        values = [fmt.format(c[key]) for c in cells]
        if verbose and report.objective != "sqnr":  # the output SQNR behind each value
            values = [f"{v} ({c['sqnr_db']:.1f} dB)" for v, c in zip(values, cells)]
        table.add_row(row["node"], row["op"], f"{row['weights']:,}", *values)
    out.print(table)
    if report.baseline_top1 is not None:
        _info(f"original top-1 {100 * report.baseline_top1:.2f}% on {limit} samples at most")
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))


@app.command()
def demo(
    output_dir: Path = typer.Option(Path("fq-onnx-demo"), "-o", "--output-dir", help="Where to write the compressed model."),
    target_ratio: float = typer.Option(api.DEMO_TARGET_RATIO, help="Weights-only compression ratio to allocate for."),
    bits: int = typer.Option(api.DEMO_BITS, help="Bits per nonzero weight code."),
    seed: int = typer.Option(0, help="Seed of the mixture fit."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Convert the bundled digits CNN and compare original vs compressed side by side."""
    _verbosity(quiet, verbose)
    report, result = api.demo(output_dir, target_ratio=target_ratio, bits=bits, seed=seed, progress=_show_progress())
    out.print(layer_table(report, f"{report.path}"))
    if verbose:
        out.print(detail_table(Path(report.path)))
    out.print(report.summary())
    out.print(result.to_table(), markup=False, highlight=False)


def main() -> None:
    """Entry point: user errors (bad input, bad usage) print one line and exit 1; bugs exit 2."""
    try:
        code = app(standalone_mode=False)  # typer hands back a command's exit code instead of exiting
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        if not _usage_error(exc):
            raise
        exc.show()  # a bad option or argument: a user error
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
