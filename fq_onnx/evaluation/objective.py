"""What a candidate model is scored by when the allocator or ``sensitivity`` measures it.

An :class:`Objective` turns a serialized candidate model into one number, higher is better,
and knows the original model's score (its baseline):

- ``top1``: top-1 accuracy in percent on labelled data;
- ``agreement``: percent of samples whose top-1 class equals the original model's (no labels);
- ``sqnr``: output SQNR in dB against the original model, every output channel weighing alike
  (fq_onnx.quantize.allocate.noise; no labels; the baseline is infinite);
- a user metric ``metric(session) -> float`` (``--metric file.py:function``): called with an
  onnxruntime session of the candidate, it runs whatever data and scoring the user wants.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from fq_onnx.errors import FqOnnxError
from fq_onnx.evaluation import user_code
from fq_onnx.options import OBJECTIVES


def _outputs(model: bytes, samples) -> list[list[np.ndarray]]:
    from fq_onnx.quantize.allocate import run_model  # the allocator's batched runner

    return run_model(model, samples)


def _argmax(outputs: list[list[np.ndarray]]) -> np.ndarray:
    from fq_onnx.quantize.allocate import top1_classes

    return top1_classes(outputs)


@dataclass
class Objective:
    name: str  # "top1", "agreement", "sqnr" or "metric <function>"
    unit: str  # shown after a score: "%" or " dB" or ""
    score: Callable[[bytes], float]  # candidate model bytes -> score, higher is better
    baseline: float  # the original model's score

    def describe(self, value: float) -> str:
        return f"{self.name} {value:.2f}{self.unit}" if math.isfinite(value) else f"{self.name} {value}"


def data_objective(kind: str, original: bytes, samples, labels: np.ndarray | None) -> Objective:
    """``top1``, ``agreement`` or ``sqnr`` of candidates on ``samples`` (fq_onnx.evaluation.feeds.Samples)."""
    from fq_onnx.quantize.allocate import noise

    if kind not in OBJECTIVES:
        raise FqOnnxError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")
    reference = _outputs(original, samples)
    if kind == "top1":
        if labels is None:
            raise FqOnnxError("the top-1 objective needs labelled data; for unlabelled data use --objective "
                              "agreement or sqnr")

        def top1(model: bytes) -> float:
            return 100 * float(np.mean(_argmax(_outputs(model, samples)) == labels))

        return Objective("top-1", "%", top1, 100 * float(np.mean(_argmax(reference) == labels)))
    if kind == "agreement":
        classes = _argmax(reference)
        return Objective("agreement", "%", lambda m: 100 * float(np.mean(_argmax(_outputs(m, samples)) == classes)),
                         100.0)

    def sqnr(model: bytes) -> float:
        return -10 * math.log10(max(noise(reference, _outputs(model, samples)), 1e-30))

    return Objective("SQNR", " dB", sqnr, math.inf)


def metric_objective(metric: Callable | str, original: bytes) -> Objective:
    """A user metric: ``metric(session) -> float`` (or ``"file.py:function"`` / ``"module:function"``)."""
    function = load_metric(metric) if isinstance(metric, str) else metric
    if not callable(function):
        raise FqOnnxError(f"metric must be a callable metric(session) -> float or 'file.py:function', got "
                          f"{type(metric).__name__}")
    name = getattr(function, "__name__", type(function).__name__)

    def score(model: bytes) -> float:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        value = function(session)
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(float(value)):
            raise FqOnnxError(f"metric {name} must return a number (higher is better), it returned "
                              f"{value!r} ({type(value).__name__})")
        return float(value)

    return Objective(f"metric {name}", "", score, score(original))


def load_metric(spec: str) -> Callable:
    """``path/to/file.py:function`` or ``package.module:function`` -> the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise FqOnnxError(f"--metric takes file.py:function or module:function, got {spec!r}")
    module = user_code.import_module(target, "metric", f"--metric {spec}", FqOnnxError)
    function = getattr(module, attr, None)
    if not callable(function):
        raise FqOnnxError(f"{target}: has no function {attr!r} (from --metric {spec})")
    return function
