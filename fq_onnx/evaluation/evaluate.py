"""Measure a (compressed) model against its reference: accuracy, agreement, SQNR, size, speed.

:func:`evaluate` runs both models on the same inputs and returns an :class:`EvaluationResult`
(``.to_table()`` for people, ``.to_dict()`` / ``.to_json()`` for machines). Every number in it is
measured here:

- accuracy: top-1 / top-5 of each model on labelled data; the paired difference (compressed minus
  reference) with a 95% confidence interval by Newcombe's hybrid score method for paired
  proportions (1998, method 10), which stays sensible when few predictions change;
- agreement: share of samples where both models predict the same top-1 class (no labels needed);
- SQNR: ``10 log10(sum ref^2 / sum (comp - ref)^2)`` over all output values, in dB;
- sizes: bytes on disk (external-data files included) and the weights-only compression ratio
  (float32 bytes of the compressible weights over the bytes that store them, from
  :func:`fq_onnx.inspect.inspect_model`);
- latency: wall time of ``InferenceSession.run`` at batch 1 and at the evaluation batch size,
  after warm-up runs, runs of the two models interleaved so drift hits both alike; median and
  10th/90th percentiles;
- session creation: median wall time of creating the session (for a compressed model this
  includes decoding the weights);
- peak memory: measured in a fresh subprocess per model, so models do not pollute each other's
  numbers: the resident-set high-water mark (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` after imports; ``ru_maxrss`` elsewhere) while creating the session and
  running one batch, minus the resident set before it. That is the memory the model costs a
  process that already has Python, numpy and onnxruntime loaded.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fq_onnx.evaluation import data as data_mod
from fq_onnx.evaluation import feeds as feeds_mod
from fq_onnx.evaluation.data import DataError
from fq_onnx.errors import FqOnnxError

__all__ = [
    "evaluate",
    "EvaluationResult",
    "ModelStats",
    "Comparison",
    "PairedDifference",
    "LatencyStats",
    "MemoryStats",
    "EvaluateError",
    "paired_difference_ci",
    "wilson_interval",
    "sqnr_db",
    "topk_correct",
    "model_io",
    "model_file_bytes",
]

Z95 = 1.959963984540054
DEFAULT_BATCH_SIZE = 32


class EvaluateError(FqOnnxError):
    """A model or option problem found while evaluating; the message names the file."""


# --------------------------------------------------------------------------------------------
# Statistics (pure functions, tested on known answers)
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def paired_difference_ci(new_correct: np.ndarray, ref_correct: np.ndarray,
                         z: float = Z95) -> tuple[float, float, float]:
    """Difference ``mean(new) - mean(ref)`` of paired 0/1 outcomes and its confidence interval.

    Newcombe (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", method 10: Wilson intervals of both marginals combined
    with the phi correlation of the 2x2 table. Returns ``(difference, low, high)``.
    """
    a_new = np.asarray(new_correct, dtype=bool)
    a_ref = np.asarray(ref_correct, dtype=bool)
    if a_new.shape != a_ref.shape:
        raise ValueError("paired outcomes must have the same length")
    n = a_new.size
    if n == 0:
        return (0.0, -1.0, 1.0)
    both = int(np.sum(a_new & a_ref))
    only_new = int(np.sum(a_new & ~a_ref))
    only_ref = int(np.sum(~a_new & a_ref))
    neither = n - both - only_new - only_ref
    p1, p2 = (both + only_new) / n, (both + only_ref) / n
    l1, u1 = wilson_interval(both + only_new, n, z)
    l2, u2 = wilson_interval(both + only_ref, n, z)
    denom = (both + only_new) * (only_ref + neither) * (both + only_ref) * (only_new + neither)
    phi = 0.0 if denom == 0 else (both * neither - only_new * only_ref) / math.sqrt(denom)
    d = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (d, max(-1.0, d - dl), min(1.0, d + du))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` in dB (inf if equal)."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.asarray(test, dtype=np.float64) - ref
    return _sqnr(float(np.sum(ref * ref)), float(np.sum(err * err)))


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: is ``labels[i]`` among the ``k`` largest of ``logits[i]``?

    Ties are broken towards the lower class index, as ``argmax`` does, so top-1 equals
    ``argmax == label``.
    """
    logits = np.asarray(logits)
    k = min(k, logits.shape[1])
    if k == 1:
        return np.argmax(logits, axis=1) == labels
    label_score = np.take_along_axis(logits, labels[:, None], axis=1)
    idx = np.arange(logits.shape[1])[None, :]
    beats = (logits > label_score) | ((logits == label_score) & (idx < labels[:, None]))
    return beats.sum(axis=1) < k


# --------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Wall time of one ``run`` call, in milliseconds."""

    batch_size: int
    runs: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch_size

    @classmethod
    def from_times(cls, batch_size: int, seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(batch_size, len(ms), float(np.median(ms)), float(np.percentile(ms, 10)),
                   float(np.percentile(ms, 90)), float(ms.min()), float(ms.mean()))


@dataclass
class MemoryStats:
    """Resident memory of one session, measured in a fresh subprocess (bytes)."""

    peak_delta_bytes: int  # high-water mark during create + one run, minus RSS before
    session_delta_bytes: int  # RSS after creating the session, minus RSS before
    peak_rss_bytes: int  # the process's whole high-water mark
    batch_size: int
    method: str


@dataclass
class ModelStats:
    """What was measured for one model."""

    path: str
    file_bytes: int
    input_name: str
    output_name: str
    weights_fp32_bytes: int | None = None
    weights_stored_bytes: int | None = None
    weight_sparsity: float | None = None
    top1: float | None = None
    top5: float | None = None
    correct1: int | None = None
    correct5: int | None = None
    session_s: float | None = None
    session_first_s: float | None = None
    latency_batch1: LatencyStats | None = None
    latency_batch: LatencyStats | None = None
    memory: MemoryStats | None = None

    @property
    def weights_ratio(self) -> float | None:
        """Weights-only compression ratio (1.0 for an uncompressed model)."""
        if self.weights_fp32_bytes is None or not self.weights_stored_bytes:
            return None
        return self.weights_fp32_bytes / self.weights_stored_bytes


@dataclass
class PairedDifference:
    """Compressed minus reference accuracy (fractions), with a 95% CI from paired predictions."""

    difference: float
    ci_low: float
    ci_high: float
    gained: int  # right only with the compressed model
    lost: int  # right only with the reference
    n: int
    method: str = "Newcombe paired hybrid score (1998, method 10), 95%"


@dataclass
class Comparison:
    """Compressed model vs reference on the same inputs."""

    agreement: float
    agree: int
    n: int
    sqnr_db: float
    max_abs_diff: float
    file_ratio: float
    top1: PairedDifference | None = None
    top5: PairedDifference | None = None
    latency_ratio_batch1: float | None = None  # compressed median / reference median
    latency_ratio_batch: float | None = None
    session_ratio: float | None = None
    memory_ratio: float | None = None


@dataclass
class EvaluationResult:
    model: ModelStats
    reference: ModelStats | None
    comparison: Comparison | None
    data: str
    samples: int
    labelled: bool
    preprocessing: str
    batch_size: int
    threads: int | None
    label_offset: int
    num_classes: int | None
    input_shape: list[Any]
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    # ---- machine-readable -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-safe (infinite SQNR of identical outputs becomes ``null`` with
        ``outputs_identical: true``)."""

        def model_dict(m: ModelStats | None):
            if m is None:
                return None
            d = asdict(m)
            d["weights_ratio"] = m.weights_ratio
            for key in ("latency_batch1", "latency_batch"):
                lat = getattr(m, key)
                if lat is not None:
                    d[key]["per_sample_ms"] = lat.per_sample_ms
            return d

        comp = None
        if self.comparison is not None:
            comp = asdict(self.comparison)
            comp["outputs_identical"] = self.comparison.max_abs_diff == 0.0
        out = {
            "model": model_dict(self.model),
            "reference": model_dict(self.reference),
            "comparison": comp,
            "data": self.data,
            "samples": self.samples,
            "labelled": self.labelled,
            "preprocessing": self.preprocessing,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "label_offset": self.label_offset,
            "num_classes": self.num_classes,
            "input_shape": self.input_shape,
            "elapsed_s": self.elapsed_s,
            "notes": list(self.notes),
            "versions": dict(self.versions),
        }
        return _json_safe(out)

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The :meth:`to_dict` as JSON text; also written to ``path`` (atomically) if given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            try:
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return text

    # ---- human-readable ---------------------------------------------------------------------
    def to_table(self) -> str:
        """A plain-text report: one column per model and a change column."""
        m, r, c = self.model, self.reference, self.comparison
        lines = []
        title = f"fq-onnx evaluate: {m.path}" + (f"  vs reference {r.path}" if r else "")
        lines.append(title)
        data_line = f"data: {self.data}"
        if f"{self.samples} " not in self.data:
            data_line += f"; {self.samples} samples evaluated"
        if not self.labelled:
            data_line += "; no labels (label-free mode)"
        lines.append(data_line)
        thr = "default" if self.threads is None else str(self.threads)
        lines.append(f"preprocessing: {self.preprocessing}; batch {self.batch_size}; "
                     f"threads {thr}"
                     + (f"; label offset {self.label_offset}" if self.label_offset else ""))
        lines.append("")
        rows: list[tuple[str, str, str, str]] = []
        cols = ("", "reference", "compressed" if r else "model", "change") if r else (
            "", "model", "", "")

        def pair(label, fmt, get, change=""):
            mv = get(m)
            rv = get(r) if r else None
            if mv is None and rv is None:
                return
            if r:
                rows.append((label, fmt(rv) if rv is not None else "-",
                             fmt(mv) if mv is not None else "-", change))
            else:
                rows.append((label, fmt(mv) if mv is not None else "-", "", ""))

        pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
        if self.labelled:
            pair("top-1 accuracy", pct, lambda s: s.top1, _diff_text(c.top1) if c else "")
            pair("top-5 accuracy", pct, lambda s: s.top5, _diff_text(c.top5) if c else "")
        if c is not None:
            rows.append(("top-1 agreement", "", "", f"{100 * c.agreement:.2f}% ({c.agree}/{c.n})"))
            sq = "identical outputs" if c.max_abs_diff == 0 else f"{c.sqnr_db:.1f} dB"
            rows.append(("output SQNR", "", "", sq))
            rows.append(("max |output difference|", "", "", f"{c.max_abs_diff:.4g}"))
        pair("file size", _bytes, lambda s: s.file_bytes,
             _ratio_text(c.file_ratio, "x smaller") if c else "")
        pair("weights (stored)", _bytes, lambda s: s.weights_stored_bytes,
             _ratio_text(m.weights_ratio, "x smaller (weights only)"))
        pair("weight sparsity", pct, lambda s: s.weight_sparsity)
        pair("latency, batch 1", _lat_text, lambda s: s.latency_batch1,
             _speed_text(c.latency_ratio_batch1) if c else "")
        if m.latency_batch is not None and m.latency_batch.batch_size != 1:
            pair(f"latency, batch {m.latency_batch.batch_size}", _lat_text,
                 lambda s: s.latency_batch, _speed_text(c.latency_ratio_batch) if c else "")
        pair("session creation", lambda v: f"{1e3 * v:.1f} ms", lambda s: s.session_s,
             _speed_text(c.session_ratio) if c else "")
        pair("peak memory (session + run)", lambda v: _bytes(v.peak_delta_bytes),
             lambda s: s.memory, _ratio_text(1 / c.memory_ratio if c and c.memory_ratio else None,
                                             "x less"))
        lines += _format_rows(cols, rows)
        if self.labelled is False and c is None:
            lines.append("(no labels and no reference: only size and speed were measured)")
        for note in self.notes:
            lines.append(f"note: {note}")
        foot = []
        if m.latency_batch1 is not None:
            foot.append("latency: median [p10-p90] of run() wall time")
        if m.memory is not None:
            foot.append("peak memory: RSS high-water mark above the baseline while creating the "
                        "session and running one batch, in a fresh subprocess per model")
        if foot:
            lines.append("; ".join(foot))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _format_rows(cols, rows) -> list[str]:
    used = [i for i in range(4) if cols[i] or any(row[i] for row in rows)]
    table = [tuple(cols[i] for i in used)] + [tuple(row[i] for i in used) for row in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(used))]
    out = []
    last = len(used) - 1
    for n, row in enumerate(table):
        cells = [cell.ljust(w) if j == 0 or (j == last and used[j] == 3) else cell.rjust(w)
                 for j, (cell, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _diff_text(d: PairedDifference | None) -> str:
    if d is None:
        return ""
    return (f"{100 * d.difference:+.2f} pp [{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}] 95% CI"
            f" (+{d.gained}/-{d.lost})")


def _ratio_text(v: float | None, unit: str) -> str:
    if v is None:
        return ""
    return "same" if abs(v - 1) < 0.005 else f"{v:.2f}{unit}"


def _speed_text(ratio: float | None) -> str:
    if ratio is None or ratio <= 0:
        return ""
    if abs(ratio - 1) < 0.005:
        return "same"
    if ratio <= 1:
        return f"{1 / ratio:.2f}x faster"
    return f"{ratio:.2f}x slower"


def _lat_text(lat: LatencyStats) -> str:
    return (f"{_num(lat.median_ms)} ms [{_num(lat.p10_ms)}-{_num(lat.p90_ms)}]")


def _num(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


# --------------------------------------------------------------------------------------------
# Models and sessions
# --------------------------------------------------------------------------------------------


@dataclass
class _IO:
    input_name: str
    input_shape: list[Any]  # int or None per dim
    input_dtype: str
    output_name: str
    output_index: int
    output_shape: list[Any]
    inputs: list[feeds_mod.InputSpec] = field(default_factory=list)  # every input, the first above


def _check_model_path(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise EvaluateError(f"{p}: {what} not found")
    if p.is_dir():
        raise EvaluateError(f"{p}: {what} is a folder, expected an .onnx file")
    return p


def model_io(path: str | os.PathLike, output: str | None = None) -> _IO:
    """Input name/shape/dtype and the chosen output of an ONNX model (read from the graph)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise EvaluateError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if not inputs:
        raise EvaluateError(f"{path}: model has no inputs")
    inp = inputs[0]
    outs = list(model.graph.output)
    if not outs:
        raise EvaluateError(f"{path}: model has no outputs")
    if output is None:
        index = 0
    else:
        names = [o.name for o in outs]
        if output not in names:
            raise EvaluateError(f"{path}: no output named {output!r} (outputs: {', '.join(names)})")
        index = names.index(output)

    def dims(vi):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return []
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in t.shape.dim]

    try:
        specs = feeds_mod.model_inputs(model)
    except DataError as e:
        raise EvaluateError(f"{path}: {e}") from None
    return _IO(inp.name, dims(inp), specs[0].dtype, outs[index].name, index, dims(outs[index]), specs)


def model_file_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of the model: the .onnx file plus any external-data files it references."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return total
    seen = set()
    for t in _all_tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in seen:
                seen.add(loc)
                f = path.parent / loc
                if f.is_file():
                    total += f.stat().st_size
    return total


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _uses_custom_ops(path: str) -> bool:
    """Does the model have nodes outside the standard ONNX domains (e.g. ``fq_onnx.ShiftConv``)?"""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return True
    standard = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    return any(n.domain not in standard for n in model.graph.node) or any(
        f.domain not in standard for f in model.functions)


def _make_session(path: str, threads: int | None):
    """A session through :func:`fq_onnx.runtime.session` (ShiftConv registered). A plain model
    still runs when the custom-op library is not built; a compressed one cannot."""
    from fq_onnx.runtime import LibraryNotFoundError, session

    try:
        try:
            return session(path, threads=threads)
        except LibraryNotFoundError as e:
            if _uses_custom_ops(path):
                raise EvaluateError(f"{path}: this compressed model needs the fq-onnx custom-op "
                                    f"library: {e}") from None
            return _plain_session(path, threads)
    except FqOnnxError:
        raise
    except Exception as e:
        raise EvaluateError(f"{path}: onnxruntime cannot create a session "
                            f"({type(e).__name__}: {e})") from None


def _plain_session(path: str, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _weights_info(path: str, notes: list[str]) -> tuple[int | None, int | None, float | None]:
    try:
        from fq_onnx.reporting.inspect import inspect_model
    except ImportError as e:
        notes.append(f"weights-only sizes not measured (fq_onnx.inspect unavailable: {e})")
        return None, None, None
    try:
        totals = inspect_model(path).totals
    except Exception as e:
        notes.append(f"weights-only sizes of {path} not measured ({type(e).__name__}: {e})")
        return None, None, None
    if not totals.fp32_bytes:
        return None, None, None
    return int(totals.fp32_bytes), int(totals.compressed_bytes), float(totals.sparsity)


class _Runner:
    """Runs one session on batches of any size, also for a model with a fixed batch size."""

    def __init__(self, sess, io: _IO, fixed_batch: int | None):
        self.sess, self.io, self.fixed = sess, io, fixed_batch
        self.out_names = [o.name for o in sess.get_outputs()]
        if io.output_name not in self.out_names:
            self.out_names = [self.out_names[io.output_index]]
        else:
            self.out_names = [io.output_name]

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = feeds_mod.batch_len(feeds)
        if self.fixed is None or n == self.fixed:
            return self._run(feeds)
        outs = []
        for s in range(0, n, self.fixed):
            chunk = {k: v[s:s + self.fixed] for k, v in feeds.items()}
            m = feeds_mod.batch_len(chunk)
            if m < self.fixed:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self.fixed - m, axis=0)]) for k, v in chunk.items()}
            outs.append(self._run(chunk)[:m])
        return np.concatenate(outs)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return np.asarray(self.sess.run(self.out_names, feeds)[0])
        except Exception as e:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise EvaluateError(f"running the model failed on a batch of shape "
                                f"{shapes} ({type(e).__name__}: {e})") from None


def _compatible(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# Memory (subprocess)
# --------------------------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import json, os, sys, resource
path, inputs, threads = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
threads = int(threads) if threads != "none" else None
def rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
def hwm():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024
import numpy as np
import onnxruntime
from fq_onnx.evaluation.evaluate import _make_session as session
feeds = {name: np.zeros(shape, dtype=dtype) for name, shape, dtype in inputs}
method = "VmHWM reset via /proc/self/clear_refs"
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    method = "ru_maxrss (process peak, not reset after imports)"
before = rss() or hwm()
s = session(path, threads=threads)
after_session = rss() or hwm()
s.run(None, feeds)
peak = hwm()
print(json.dumps({"before": before, "after_session": after_session, "peak": peak, "method": method}))
"""


def _measure_memory(path: str, first: dict[str, np.ndarray], threads: int | None,
                    timeout: float = 900.0) -> MemoryStats:
    """Peak memory of a session of ``path`` running zeros shaped like the batch ``first``."""
    inputs = [(name, list(v.shape), v.dtype.name) for name, v in first.items()]
    batch = feeds_mod.batch_len(first)
    cmd = [sys.executable, "-c", _MEMORY_CHILD, str(Path(path).resolve()), json.dumps(inputs),
           "none" if threads is None else str(threads)]
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])  # import the same fq_onnx as this process
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    # `python -c` puts the working directory first on sys.path: run from pkg_root so a source
    # checkout in the caller's directory cannot shadow the installed package.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=pkg_root)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory subprocess failed: {tail[0]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return MemoryStats(max(0, r["peak"] - r["before"]), max(0, r["after_session"] - r["before"]),
                       r["peak"], batch, r["method"])


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def _latency(runners: dict[str, _Runner], x: dict[str, np.ndarray], runs: int, warmup: int,
             budget_s: float, tick=None) -> dict[str, LatencyStats]:
    """Time ``runs`` calls per model (interleaved), stopping early after ``budget_s`` per model
    once at least 3 runs were made."""
    for r in runners.values():
        for _ in range(warmup):
            r(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    spent = {k: 0.0 for k in runners}
    for i in range(runs):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            dt = time.perf_counter() - t0
            times[k].append(dt)
            spent[k] += dt
        if tick:
            tick()
        if i >= 2 and max(spent.values()) > budget_s:
            break
    return {k: LatencyStats.from_times(feeds_mod.batch_len(x), v) for k, v in times.items()}


# --------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------


def _progress(enabled: bool):
    """A rich progress bar on stderr, or a no-op when disabled or stderr is not a terminal."""
    if enabled and sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        except ImportError:  # pragma: no cover
            pass
    return _NoProgress()


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def evaluate(
    model: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    data: Any = None,
    *,
    preset: str | None = None,
    size: int | tuple[int, int] | str | None = None,
    crop: int | tuple[int, int] | str | None = None,
    mean: Any = None,
    std: Any = None,
    layout: str | None = None,
    scale: float | None = None,
    fit: str | None = None,
    channels: str | None = None,
    labels: str | os.PathLike | None = None,
    label_offset: int | None = None,
    output_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    random_inputs: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    latency_runs: int = 20,
    latency_budget_s: float = 10.0,
    session_repeats: int = 3,
    memory: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate ``model`` (typically compressed) and, if given, ``reference`` on the same data.

    Args:
        model: path of the ONNX model to evaluate (a compressed one runs through the ShiftConv
            library).
        reference: the original model to compare against (optional).
        data: ``None`` for the bundled digits validation split; a path (``.npz`` with ``x``/``y``,
            an image folder, ``.npy`` file or folder of them), ``file.py:name`` / ``module:name``
            of a reader factory, an ``(x, y)`` tuple, or any object with ``batches(batch_size)``
            (see :mod:`fq_onnx.data`).
        preset: preprocessing preset ``imagenet``, ``cifar``, ``yolo``, ``paddle`` or ``none``
            (default: automatic, i.e. uint8 data divided by 255, nothing else).
        size, crop, mean, std, layout, scale, fit, channels: explicit preprocessing, overriding
            the preset (``size`` an int = short side, or HxW; ``layout`` the model's nchw/nhwc,
            read from the model by default; ``scale`` divides raw values; ``fit`` stretch, crop
            or letterbox to ``size``; ``channels`` rgb or bgr; fq_onnx.data.Preprocess).
        labels: labels file for an image folder (default: ``labels.txt``/``.csv`` inside it).
        label_offset: added to the data's labels to get the model's class index; default 1 for
            models with 1001 outputs (class 0 = background), else 0.
        output_name: name of the output holding the logits (default: the first).
        batch_size: evaluation batch size (a model with a fixed batch dimension uses its own).
        limit: evaluate only ``limit`` samples, spread evenly over the data by the built-in
            readers (so class-sorted data keeps every class); the first ``limit`` of a
            user's reader.
        random_inputs: label-free mode on this many seeded random inputs (instead of ``data``).
        seed: seed of the random inputs.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        latency_runs: timed runs per batch size and model (0 skips latency); warm-up runs
            precede them and ``latency_budget_s`` caps the time per model and batch size.
        session_repeats: how many sessions to create to time creation (median reported).
        memory: measure peak memory in a subprocess per model.
        progress: show a progress bar (only when stderr is a terminal).
    """
    t_start = time.perf_counter()
    notes: list[str] = []
    if threads is not None and int(threads) < 1:
        raise EvaluateError(f"threads must be a positive integer, got {threads}")
    if batch_size is None or int(batch_size) < 1:
        raise EvaluateError(f"batch size must be a positive integer, got {batch_size}")
    batch_size = int(batch_size)
    if limit is not None and int(limit) < 1:
        raise EvaluateError(f"limit must be a positive integer, got {limit}")
    pairs = _open_models(model, reference, output_name)
    io, fixed_batch = pairs[-1].io, pairs[-1].fixed_batch
    if fixed_batch is not None and fixed_batch != batch_size:
        notes.append(f"the model's batch dimension is fixed to {fixed_batch}: batches are run "
                     f"in chunks of {fixed_batch}")

    source = feeds_mod.open_model_data(
        data, io.inputs, preset=preset, size=size, crop=crop, scale=scale, mean=mean, std=std,
        layout=layout, fit=fit, channels=channels, limit=limit, labels=labels, random_inputs=random_inputs, seed=seed)
    pre, reader = source.preprocess, source.reader
    for side in reversed(pairs):  # the model's notes first
        side.stats = _model_stats(side.path, side.io, notes)
    stats = pairs[-1].stats
    ref_stats = pairs[0].stats if len(pairs) > 1 else None

    with _progress(progress) as bar:
        runners = _create_sessions(pairs, threads, session_repeats, bar)
        run = _run_data(runners, pairs, source, batch_size, limit, label_offset, notes, bar)
        comparison = _accuracy(run, stats, ref_stats, notes)
        if latency_runs > 0 and run.first_x is not None:
            _time_latency(runners, run.first_x, latency_runs, latency_budget_s, stats, ref_stats, bar)
        del runners
        if memory and run.first_x is not None:
            _measure_memories(pairs, run.first_x, threads, notes, bar)

    if comparison is not None:
        _speed_and_memory_ratios(comparison, stats, ref_stats)
    return EvaluationResult(
        model=stats, reference=ref_stats, comparison=comparison,
        data=data_mod.reader_description(reader), samples=run.n, labelled=run.labelled,
        preprocessing=_describe_pre(pre, reader), batch_size=feeds_mod.batch_len(run.first_x)
        if run.first_x is not None else batch_size, threads=threads, label_offset=run.offset, num_classes=run.num_classes,
        input_shape=list(io.input_shape), elapsed_s=time.perf_counter() - t_start,
        notes=notes, versions=_versions())


@dataclass
class _Side:
    """One model being evaluated: ``key`` is "model" or "reference"."""

    key: str
    path: Path
    io: _IO
    fixed_batch: int | None  # the model's fixed batch dimension (None: any)
    stats: ModelStats | None = None


def _open_models(model, reference, output_name: str | None) -> list[_Side]:
    """The models' inputs and outputs, checked against each other: ``[reference, model]`` (the
    reference first: it runs first) or ``[model]``."""
    model_path = _check_model_path(model, "model")
    ref_path = _check_model_path(reference, "reference model") if reference is not None else None
    io = model_io(model_path, output_name)
    ref_io = model_io(ref_path, output_name) if ref_path is not None else None
    if ref_io is not None:
        if [s.name for s in ref_io.inputs] != [s.name for s in io.inputs]:
            raise EvaluateError(f"{ref_path}: reference inputs {', '.join(s.name for s in ref_io.inputs)} differ "
                                f"from {model_path}'s {', '.join(s.name for s in io.inputs)}")
        if not _compatible(io.input_shape, ref_io.input_shape):
            raise EvaluateError(
                f"{ref_path}: reference input {ref_io.input_name!r} has shape "
                f"{_shape_str(ref_io.input_shape)} but {model_path} expects "
                f"{_shape_str(io.input_shape)}: are these the same network?")
        if ref_io.output_shape and io.output_shape and not _compatible(
                io.output_shape, ref_io.output_shape):
            raise EvaluateError(
                f"{ref_path}: reference output {ref_io.output_name!r} has shape "
                f"{_shape_str(ref_io.output_shape)} but {model_path}'s {io.output_name!r} is "
                f"{_shape_str(io.output_shape)}")
    sides = [_Side("model", model_path, io, io.input_shape[0] if io.input_shape else None)]
    if ref_path is not None:
        sides.insert(0, _Side("reference", ref_path, ref_io, ref_io.input_shape[0] if ref_io.input_shape else None))
    return sides


def _model_stats(path: Path, io: _IO, notes: list[str]) -> ModelStats:
    """File size and weights-only sizes of one model."""
    fp32, stored, sparsity = _weights_info(str(path), notes)
    return ModelStats(str(path), model_file_bytes(path), io.input_name, io.output_name, fp32, stored, sparsity)


def _create_sessions(sides: list[_Side], threads: int | None, repeats: int, bar) -> dict[str, _Runner]:
    """One session per model, created ``repeats`` times to time creation (median kept)."""
    runners: dict[str, _Runner] = {}
    task = bar.add_task("creating sessions", total=len(sides) * max(1, repeats))
    for side in sides:
        times = []
        sess = None
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            sess = _make_session(str(side.path), threads)
            times.append(time.perf_counter() - t0)
            bar.advance(task)
        side.stats.session_first_s = times[0]
        side.stats.session_s = float(np.median(times))
        runners[side.key] = _Runner(sess, side.io, side.fixed_batch)
    bar.update(task, visible=False)
    return runners


@dataclass
class _DataRun:
    """What one pass of both models over the data gathered."""

    n: int = 0
    labelled: bool | None = None
    first_x: dict[str, np.ndarray] | None = None  # the first batch's feeds
    num_classes: int | None = None
    offset: int = 0
    correct: dict[str, dict[int, list[np.ndarray]]] = field(default_factory=dict)  # key -> k -> per batch
    agree: int = 0
    signal: float = 0.0
    noise: float = 0.0
    max_abs: float = 0.0


def _run_data(runners: dict[str, _Runner], sides: list[_Side], source: feeds_mod.ModelData, batch_size: int,
              limit: int | None, label_offset: int | None, notes: list[str], bar) -> _DataRun:
    """Run both models over the data: top-1/top-5 hits per sample, agreement and output noise."""
    model = sides[-1]
    reference = sides[0] if len(sides) > 1 else None
    reader = source.reader
    total = data_mod.num_samples(reader)
    if limit is not None and total is not None:
        total = min(total, int(limit))
    task = bar.add_task("evaluating", total=total)
    run = _DataRun(correct={k: {1: [], 5: []} for k in runners})
    for xb, yb in source.batches(batch_size):
        n = feeds_mod.batch_len(xb)
        if limit is not None and run.n + n > limit:
            xb = {k: v[: limit - run.n] for k, v in xb.items()}
            yb = None if yb is None else yb[: limit - run.n]
            n = feeds_mod.batch_len(xb)
        if n == 0:
            break
        if run.first_x is None:
            run.first_x = xb
        if run.labelled is None:
            run.labelled = yb is not None
        elif run.labelled != (yb is not None):
            raise DataError(f"{data_mod.reader_description(reader)}: some batches have labels "
                            f"and some do not")
        outs = {k: r(xb) for k, r in runners.items()}
        out = outs["model"]
        if run.num_classes is None:
            run.num_classes = int(np.prod(out.shape[1:])) if out.ndim >= 2 else 1
            run.offset = _resolve_offset(label_offset, run.num_classes, run.labelled, notes)
        logits = {k: v.reshape(n, -1) for k, v in outs.items()}
        if "reference" in outs and outs["reference"].shape != out.shape:
            raise EvaluateError(
                f"{reference.path}: reference output {reference.io.output_name!r} has shape "
                f"{list(outs['reference'].shape)} but {model.path}'s {model.io.output_name!r} has "
                f"{list(out.shape)} for the same batch")
        if run.labelled:
            yb = np.asarray(yb, dtype=np.int64).reshape(-1) + run.offset
            bad = (yb < 0) | (yb >= run.num_classes)
            if bad.any():
                raise DataError(
                    f"{data_mod.reader_description(reader)}: label {int(yb[bad][0]) - run.offset} "
                    f"(+ offset {run.offset}) is outside the model's {run.num_classes} classes")
            for k, lg in logits.items():
                run.correct[k][1].append(topk_correct(lg, yb, 1))
                run.correct[k][5].append(topk_correct(lg, yb, 5))
        if "reference" in logits:
            ref_lg, lg = logits["reference"].astype(np.float64), logits["model"].astype(np.float64)
            run.agree += int(np.sum(np.argmax(ref_lg, 1) == np.argmax(lg, 1)))
            run.signal += float(np.sum(ref_lg * ref_lg))
            err = lg - ref_lg
            run.noise += float(np.sum(err * err))
            run.max_abs = max(run.max_abs, float(np.max(np.abs(err))) if err.size else 0.0)
        run.n += n
        bar.advance(task, n)
        if limit is not None and run.n >= limit:
            break
    if run.n == 0:
        raise DataError(f"{data_mod.reader_description(reader)}: no samples")
    notes += [note for note in getattr(reader, "notes", []) if note not in notes]
    bar.update(task, visible=False)
    run.labelled = bool(run.labelled)
    if not run.labelled and reference is None:
        notes.append("no labels and no reference: accuracy and agreement cannot be measured")
    return run


def _accuracy(run: _DataRun, stats: ModelStats, ref_stats: ModelStats | None,
              notes: list[str]) -> Comparison | None:
    """Top-1/top-5 of each model and, with a reference, the paired comparison."""
    num_classes, n, corr = run.num_classes, run.n, run.correct
    if run.labelled:
        for key, st in (("model", stats), ("reference", ref_stats)):
            if st is None:
                continue
            c1 = np.concatenate(corr[key][1])
            st.correct1, st.top1 = int(c1.sum()), float(c1.mean())
            if num_classes and num_classes > 5:
                c5 = np.concatenate(corr[key][5])
                st.correct5, st.top5 = int(c5.sum()), float(c5.mean())
    base = ref_stats if ref_stats is not None else stats
    if run.labelled and num_classes and num_classes > 2 and n >= 50 and base.top1 is not None \
            and base.top1 < 2.0 / num_classes:
        who = "the reference" if ref_stats is not None else "the model"
        notes.append(f"top-1 of {who} ({100 * base.top1:.1f}%) is near chance for "
                     f"{num_classes} classes: check the preprocessing (--preset, --mean/--std, "
                     f"--layout), the label order and --label-offset")
    if ref_stats is None:
        return None
    comparison = Comparison(agreement=run.agree / n, agree=run.agree, n=n,
                            sqnr_db=_sqnr(run.signal, run.noise), max_abs_diff=run.max_abs,
                            file_ratio=ref_stats.file_bytes / stats.file_bytes)
    if run.labelled:
        comparison.top1 = _paired(corr["model"][1], corr["reference"][1])
        if stats.top5 is not None:
            comparison.top5 = _paired(corr["model"][5], corr["reference"][5])
    return comparison


def _time_latency(runners: dict[str, _Runner], first_x: dict[str, np.ndarray], runs: int, budget_s: float,
                  stats: ModelStats, ref_stats: ModelStats | None, bar) -> None:
    """Latency at batch 1 and at the evaluation batch, the two models' runs interleaved."""
    eff_batch = feeds_mod.batch_len(first_x)
    sizes = [1] if eff_batch == 1 else [1, eff_batch]
    task = bar.add_task("timing", total=runs * len(sizes))
    for bs in sizes:
        lat = _latency(runners, {k: v[:bs] for k, v in first_x.items()}, runs, warmup=3 if bs == 1 else 1,
                       budget_s=budget_s, tick=lambda: bar.advance(task))
        for key, st in (("model", stats), ("reference", ref_stats)):
            if st is not None:
                setattr(st, "latency_batch1" if bs == 1 else "latency_batch", lat[key])
    bar.update(task, visible=False)
    if eff_batch == 1:
        stats.latency_batch = stats.latency_batch1
        if ref_stats is not None:
            ref_stats.latency_batch = ref_stats.latency_batch1


def _measure_memories(sides: list[_Side], first: dict[str, np.ndarray], threads: int | None, notes: list[str],
                      bar) -> None:
    """Peak memory of each model, one subprocess each."""
    task = bar.add_task("measuring memory", total=len(sides))
    for side in sides:
        try:
            side.stats.memory = _measure_memory(str(side.path), first, threads)
        except Exception as e:
            notes.append(f"peak memory of {side.path} not measured ({e})")
        bar.advance(task)
    bar.update(task, visible=False)


def _speed_and_memory_ratios(comparison: Comparison, stats: ModelStats, ref_stats: ModelStats) -> None:
    comparison.latency_ratio_batch1 = _ratio(stats.latency_batch1, ref_stats.latency_batch1)
    comparison.latency_ratio_batch = _ratio(stats.latency_batch, ref_stats.latency_batch)
    if stats.session_s and ref_stats.session_s:
        comparison.session_ratio = stats.session_s / ref_stats.session_s
    if stats.memory and ref_stats.memory and ref_stats.memory.peak_delta_bytes:
        comparison.memory_ratio = stats.memory.peak_delta_bytes / ref_stats.memory.peak_delta_bytes


def _describe_pre(pre, reader) -> str:
    if isinstance(reader, data_mod.RandomReader):
        return "none (random inputs)"
    if isinstance(reader, data_mod.IterableReader):
        return pre.describe(None) if pre.rank is not None else "as given (model with several inputs)"
    if not isinstance(reader, (data_mod.ArrayReader, data_mod.ImageFolderReader)):
        return "done by the reader"
    raw = np.uint8 if isinstance(reader, data_mod.ImageFolderReader) else reader.x.dtype
    return pre.describe(raw)


def _resolve_offset(label_offset, num_classes, labelled, notes) -> int:
    if label_offset is not None:
        return int(label_offset)
    if num_classes == 1001 and labelled:
        notes.append("the model has 1001 outputs (class 0 = background): labels are shifted by 1; "
                     "pass label_offset=0 (--label-offset 0) if the data already counts from 1")
        return 1
    return 0


def _paired(new: list[np.ndarray], ref: list[np.ndarray]) -> PairedDifference:
    a, b = np.concatenate(new), np.concatenate(ref)
    d, lo, hi = paired_difference_ci(a, b)
    return PairedDifference(d, lo, hi, int(np.sum(a & ~b)), int(np.sum(~a & b)), int(a.size))


def _ratio(a: LatencyStats | None, b: LatencyStats | None) -> float | None:
    if a is None or b is None or b.median_ms <= 0:
        return None
    return a.median_ms / b.median_ms


def _shape_str(shape: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        from fq_onnx import __version__

        out["fq_onnx"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return out
