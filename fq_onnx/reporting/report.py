"""The HTML report of one conversion (``fq-onnx convert --report DIR``): one self-contained file.

``DIR/index.html`` holds the per-layer table (the numbers ``fq-onnx inspect`` prints for the
written model), bar charts of sparsity, bits and bytes per layer, the accuracy of the
allocation trials against their ratio when the allocator measured accuracy (``--max-drop``),
and for every compressed layer the picture that explains the method: the histogram of the
weights that survived pruning, the two-component mixture fitted to them and the quantization
levels the layer was rounded to. Charts are inline SVG drawn by fq_onnx.svg; no network, no
scripts.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fq_onnx import __version__
from fq_onnx.format import fmt
from fq_onnx.errors import FqOnnxError
from fq_onnx.quantize.focus import Histogram, Mixture, QuantizedLayer
from fq_onnx.reporting.inspect import LayerRow, ModelReport
from fq_onnx.reporting.svg import PALETTE, Chart

REPORT_NAME = "index.html"
MODE_COLOURS = {"FQ": PALETTE[0], "shift": PALETTE[1], "float": "#999999"}
COMPONENT_COLOURS = (PALETTE[3], PALETTE[2])  # levels of component - and +


@dataclass(frozen=True)
class LayerPicture:
    """What the distribution plot of one compressed layer needs, captured at conversion.

    ``histogram`` counts the kept weights the level set was fitted on, divided by their row's
    RMS when the layer has per-channel scales (``normalised``); ``levels`` are the level set's
    values in the same units; ``components`` the mixture component of each level (focused).
    """

    name: str
    mode: str
    histogram: Histogram
    mixture: Mixture | None
    levels: np.ndarray
    components: np.ndarray | None
    normalised: bool
    w_sep: float


def layer_picture(name: str, layer: QuantizedLayer, *, per_channel: bool, w_sep: float) -> LayerPicture | None:
    """The plot data of one quantized layer (None when no weight survived pruning)."""
    if layer.histogram is None:
        return None
    params = layer.params
    levels = fmt.levels(params).astype(np.float64)
    components = np.arange(levels.size) >> (params.bits - 1) if params.mode == fmt.MODE_FOCUSED else None
    return LayerPicture(name, layer.mode_name, layer.histogram, layer.mixture, levels, components, per_channel, w_sep)


# ---------------------------------------------------------------------------------------------
# charts

def distribution_chart(p: LayerPicture, width: int = 380, height: int = 240) -> str:
    """Histogram of the kept weights, the fitted mixture density and the quantization levels."""
    h = p.histogram
    bins = h.counts.size
    step = (h.high - h.low) / bins
    centres = h.low + step * (np.arange(bins) + 0.5)
    low, high = min(h.low, float(p.levels.min())), max(h.high, float(p.levels.max()))
    pad = 0.03 * (high - low)
    x = np.linspace(low - pad, high + pad, 240)
    density = p.mixture.density(x) * h.counts.sum() * step if p.mixture is not None else None
    top = max(float(h.counts.max()), float(density.sum(0).max()) if density is not None else 0.0) * 1.12
    unit = "weight / row RMS" if p.normalised else "weight"
    chart = Chart(width, height, title=p.name, x_label=unit, y_label="weights per bin",
                  x_range=(low - pad, high + pad), y_range=(0, max(top, 1.0)))
    chart.bars(centres, h.counts, step * 0.92, "#9db4d6")
    if density is not None:
        visible = density > 0.004 * density.max()  # no dashes crawling along the axis
        chart.line(x, np.where(visible[0], density[0], np.nan), COMPONENT_COLOURS[0], dash="4,3")
        chart.line(x, np.where(visible[1], density[1], np.nan), COMPONENT_COLOURS[1], dash="4,3")
        chart.line(x, density.sum(0), "#222222", f"mixture, W2 {p.mixture.w2:.2f}", width=1.4)
    if p.components is not None:
        for c, sign in ((0, "-"), (1, "+")):
            chart.ticks(p.levels[p.components == c], COMPONENT_COLOURS[c], f"FQ levels {sign}", length=12)
    else:
        chart.ticks(p.levels, "#222222", f"{p.mode} levels", length=12)
    separation = (f"W2 {p.mixture.w2:.2f} {'>=' if p.mixture.w2 >= p.w_sep else '<'} {p.w_sep:g}"
                  if p.mixture is not None else "no mixture fitted")
    return chart.svg(f"{p.name}: {p.mode}, {separation}, {int(h.counts.sum())} kept weights, {p.levels.size} levels")


def sparsity_chart(rows: list[LayerRow], width: int) -> str:
    names = [r.name for r in rows]
    chart = Chart(width, 250, title="Sparsity per layer", y_label="pruned weights", x_categories=names,
                  y_range=(0, 100), y_format=lambda v: f"{v:g}%")
    for mode, colour in MODE_COLOURS.items():
        xs = [i for i, r in enumerate(rows) if r.mode == mode]
        if xs:
            chart.bars(xs, [100 * rows[i].sparsity for i in xs], 0.7, colour, mode,
                       titles=[f"{rows[i].name}: {100 * rows[i].sparsity:.1f}% pruned ({mode})" for i in xs])
    return chart.svg("Fraction of each layer's weights that are zero in the written model.")


def bits_chart(rows: list[LayerRow], width: int) -> str:
    """Bits of one nonzero code, and stored bits per weight (all bytes of the blob / weights)."""
    names = [r.name for r in rows]
    stored = [8 * r.stored_bytes / (r.fp32_bytes / 4) for r in rows]
    compressed = [r.bits for r in rows if r.mode != "float"]
    top = max(compressed + [s for s, r in zip(stored, rows) if r.mode != "float"] + [1]) + 1
    chart = Chart(width, 250, title="Bits per layer", y_label="bits", x_categories=names, y_range=(0, top))
    idx = [i for i, r in enumerate(rows) if r.mode != "float"]
    chart.bars(idx, [rows[i].bits for i in idx], 0.36, "#c9d3e3", "code bits (nonzero)", offset=-0.19,
               titles=[f"{rows[i].name}: {rows[i].bits}-bit codes" for i in idx])
    chart.bars(idx, [stored[i] for i in idx], 0.36, PALETTE[0], "stored bits / weight", offset=0.19,
               titles=[f"{rows[i].name}: {stored[i]:.2f} bits per weight stored" for i in idx])
    kept = [i for i, r in enumerate(rows) if r.mode == "float"]
    if kept:  # 32 bits would flatten the rest: the bar runs off the top
        chart.bars(kept, [float(top)] * len(kept), 0.74, MODE_COLOURS["float"], "float (32 bits, off scale)",
                   titles=[f"{rows[i].name}: kept in float, 32 bits per weight" for i in kept])
    return chart.svg("Code bits per nonzero weight, and the stored bits per weight (headers, tables, zeros included).")


def bytes_chart(rows: list[LayerRow], width: int) -> str:
    names = [r.name for r in rows]
    values = [r.fp32_bytes for r in rows] + [r.stored_bytes for r in rows]
    low = 10 ** np.floor(np.log10(max(min(values), 1)))
    high = 10 ** np.ceil(np.log10(max(values) * 1.5))
    chart = Chart(width, 250, title="Bytes per layer (log scale)", y_label="bytes", x_categories=names,
                  y_range=(low, high), y_log=True)
    idx = list(range(len(rows)))
    chart.bars(idx, [r.fp32_bytes for r in rows], 0.36, "#c9d3e3", "before (float32)", offset=-0.19,
               titles=[f"{r.name}: {r.fp32_bytes:,} bytes as float32" for r in rows])
    chart.bars(idx, [r.stored_bytes for r in rows], 0.36, PALETTE[2], "after (stored)", offset=0.19,
               titles=[f"{r.name}: {r.stored_bytes:,} bytes stored, {r.ratio:.1f}x" for r in rows])
    return chart.svg("Weight bytes of each layer as float32 and as stored in the written model.")


def trials_chart(allocation: dict, chosen_ratio: float, max_drop: float | None, width: int = 560) -> str | None:
    """Top-1 of each plan the max-drop search built and measured, against its weights-only ratio."""
    trials = [t for t in allocation.get("trials", []) if t.get("top1") is not None]
    if not trials:
        return None
    trials.sort(key=lambda t: t["ratio"])
    ratios = [t["ratio"] for t in trials]
    top1 = [100 * t["top1"] for t in trials]
    baseline = 100 * trials[0]["top1"] + trials[0]["drop"]
    floor = baseline - max_drop if max_drop is not None else None
    lows = top1 + ([floor] if floor is not None else []) + [baseline]
    span = max(lows) - min(lows)
    y_range = (min(lows) - 0.12 * span - 0.1, max(lows) + 0.12 * span + 0.1)
    x_pad = 0.06 * (max(ratios) - min(ratios)) + 0.2
    chart = Chart(width, 280, title="Allocation trials: accuracy against ratio", x_label="weights-only ratio (x)",
                  y_label="top-1 (%)", x_range=(min(ratios) - x_pad, max(ratios) + x_pad), y_range=y_range,
                  y_format=lambda v: f"{v:.4g}", x_format=lambda v: f"{v:g}")
    chart.hline(baseline, "#555555", f"original {baseline:.2f}%")
    if floor is not None:
        chart.hline(floor, PALETTE[3], f"allowed (drop <= {max_drop:g})")
    chart.line(ratios, top1, PALETTE[0], "measured plans", markers=True)
    best = min(range(len(trials)), key=lambda i: abs(ratios[i] - chosen_ratio))
    chart.points([ratios[best]], [top1[best]], PALETTE[3], f"written: {ratios[best]:.2f}x, {top1[best]:.2f}%",
                 radius=7, hollow=True)
    return chart.svg("Each point is one per-layer sparsity and bits plan the allocator built and measured on the evaluation data.")


# ---------------------------------------------------------------------------------------------
# the page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;
padding:0 16px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.summary{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f4f6f8;padding:8px 10px;border-radius:4px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 9px;border-bottom:1px solid #e5e5e5;white-space:nowrap}
th{background:#f0f2f5;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;border-top:2px solid #bbb}.grid{display:flex;flex-wrap:wrap;gap:10px}
.note{color:#555;font-size:13px;max-width:900px}dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0}
dt{color:#555}dd{margin:0}
"""

COLUMNS = ("layer", "op", "weight shape", "mode", "sparsity", "bits", "W2", "bytes before", "bytes after", "ratio",
           "rel. error", "out. error")


def row_cells(r: LayerRow) -> list[str]:
    """The table cells of one layer, formatted as ``fq-onnx inspect`` formats them."""
    return [r.name, r.op, "x".join(map(str, r.shape)), r.mode, f"{100 * r.sparsity:.1f}%", str(r.bits),
            "-" if r.w2 is None else f"{r.w2:.2f}", f"{r.fp32_bytes:,}", f"{r.stored_bytes:,}", f"{r.ratio:.1f}x",
            "-" if r.rel_error is None else f"{r.rel_error:.3f}", "-" if r.out_error is None else f"{r.out_error:.3f}"]


def _table(report: ModelReport) -> str:
    calibrated = any(r.out_error is not None for r in report.layers)
    columns = COLUMNS if calibrated else COLUMNS[:-1]
    numeric = {"sparsity", "bits", "W2", "bytes before", "bytes after", "ratio", "rel. error", "out. error",
               "weight shape"}
    head = "".join(f'<th class="n">{c}</th>' if c in numeric else f"<th>{c}</th>" for c in columns)
    body = []
    for r in report.layers:
        cells = row_cells(r)[: len(columns)]
        body.append("<tr>" + "".join(f'<td class="n">{html.escape(v)}</td>' if c in numeric else f"<td>{html.escape(v)}</td>"
                                     for c, v in zip(columns, cells)) + "</tr>")
    t = report.totals
    total = ["total", "", "", "", f"{100 * t.sparsity:.1f}%", "", "", f"{t.fp32_bytes:,}", f"{t.compressed_bytes:,}",
             f"{t.ratio:.1f}x", "", ""][: len(columns)]
    body.append('<tr class="total">' + "".join(f'<td class="n">{html.escape(v)}</td>' if c in numeric else f"<td>{html.escape(v)}</td>"
                                              for c, v in zip(columns, total)) + "</tr>")
    return f'<table id="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _settings(settings: dict) -> str:
    calibration = settings.get("calibration")
    items = [("bits per nonzero code", settings.get("bits")), ("W2 threshold", settings.get("w_sep")),
             ("scales", "one per output channel" if settings.get("per_channel") else "one per layer"),
             ("pruning", f"{settings.get('prune_method')}, blocks of {settings.get('block')} output channel(s)"),
             ("rounding", settings.get("rounding")), ("bias correction", "on" if settings.get("bias_correction") else "off"),
             ("calibration", "none" if not calibration else f"{calibration['data']} ({calibration['samples']} samples)")]
    allocation = settings.get("allocation")
    if allocation:
        items.append(("allocation", allocation["message"]))
    else:
        items.append(("sparsity", f"{settings.get('sparsity')}" + (" (per-layer table)" if settings.get("per_layer_sparsity") else "")))
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items) + "</dl>"


def render(report, pictures: dict[str, LayerPicture]) -> str:
    """The whole page for a ``ConversionReport`` and the layer pictures captured while converting."""
    rows = report.layers
    settings = report.settings or {}
    width = min(1200, max(560, 70 + 34 * len(rows)))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fq-onnx report: "
             f"{html.escape(Path(report.path).name)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(Path(report.input_path).name)} &rarr; {html.escape(Path(report.path).name)}</h1>",
             f'<p class="summary">{html.escape(report.summary())}</p>',
             f'<p class="note">Input {html.escape(report.input_path)} ({report.input_file_bytes:,} bytes), output '
             f'{html.escape(report.path)} ({report.file_bytes:,} bytes). Ratios are weights-only: float32 bytes '
             f'over the bytes stored for the same weights, headers and code tables included. fq-onnx {__version__}.</p>',
             _settings(settings), "<h2>Layers</h2>", _table(report)]
    if report.skipped:
        parts.append('<p class="note">Left untouched: ' + "; ".join(
            html.escape(f"{n} ({op}): {why}") for n, op, why in report.skipped) + "</p>")
    parts += ["<h2>Sparsity, bits and bytes per layer</h2>", '<div class="grid">', sparsity_chart(rows, width),
              bits_chart(rows, width), bytes_chart(rows, width), "</div>"]
    allocation = settings.get("allocation")
    if allocation:
        chart = trials_chart(allocation, report.totals.ratio, settings.get("max_drop"))
        parts.append("<h2>Allocation</h2>")
        parts.append(f'<p class="note">{html.escape(allocation["message"])}</p>')
        if chart:
            parts.append(chart)
        else:
            parts.append('<p class="note">The ratio target needs no accuracy measurement, so there are no '
                         "measured trials to plot (--max-drop measures each plan).</p>")
    parts.append("<h2>Weights, mixture and levels per layer</h2>")
    parts.append('<p class="note">Histogram of the weights that survived pruning (divided by their output '
                 "channel's RMS when each channel has its own scale: the level set is shared in those units), "
                 "the two-component Gaussian mixture fitted to them (dashed: the components) and the "
                 "quantization levels the layer was rounded to. Focused layers code each weight relative to "
                 "its component's centre; layers whose components are not separated enough use plain "
                 "power-of-two (shift) levels.</p>")
    parts.append('<div class="grid">')
    for r in rows:
        if r.name in pictures:
            parts.append(distribution_chart(pictures[r.name]))
    parts.append("</div>")
    missing = [r.name for r in rows if r.name not in pictures]
    if missing:
        parts.append('<p class="note">No picture (kept in float, or no weight survived): '
                     + html.escape(", ".join(missing)) + "</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(report_dir: str | os.PathLike, report, pictures: dict[str, LayerPicture]) -> Path:
    """Write ``report_dir/index.html`` atomically (temporary file, then rename); returns its path."""
    directory = Path(report_dir)
    if directory.exists() and not directory.is_dir():
        raise FqOnnxError(f"{directory}: --report needs a directory, this is a file")
    directory.mkdir(parents=True, exist_ok=True)
    page = render(report, pictures)
    path = directory / REPORT_NAME
    fd, temp = tempfile.mkstemp(prefix=f".{REPORT_NAME}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


def check_report_dir(report_dir: str | os.PathLike) -> None:
    """Fail before any work when ``report_dir`` cannot hold the report."""
    directory = Path(report_dir)
    if directory.exists() and not directory.is_dir():
        raise FqOnnxError(f"{directory}: --report needs a directory, this is a file")
