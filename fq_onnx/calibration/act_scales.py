"""Integer mode's activation scales: each ShiftConv input's power-of-two scale, chosen on
calibration data (docs/SHIFTCONV.md, "Integer mode"; the arithmetic is fq_onnx.intmode).

The compressed model runs with its ShiftConvs as plain float ops over the calibration inputs;
per node, streaming statistics count exactly how many values each scale would clip and keep a
seeded sample for the ``mse`` choice. Whether a node's input is signed comes from the graph
(``nonnegative``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from fq_onnx.calibration import calibrate
from fq_onnx.evaluation.feeds import Samples
from fq_onnx.graph import rewrite
from fq_onnx.errors import FqOnnxError
from fq_onnx.graph import constant_value
from fq_onnx.op.intmode import ATTRS, SCALE_LOG2_RANGE, ActQuant, IntModeError, prepare, quantize
from fq_onnx.options import ACT_CALIBS

METHODS = ACT_CALIBS  # how a node's activation scale is chosen
PERCENTILE = 99.99  # share of calibration values the "percentile" scale keeps unclipped
MSE_CANDIDATES = 8  # the "mse" method tries a_minmax - 7 .. a_minmax
SAMPLE_VALUES = 1 << 18  # values per layer kept (seeded, uniform) to evaluate the MSE

_LOW, _HIGH = SCALE_LOG2_RANGE


class ActStats:
    """Streaming statistics of one node's input: for every scale 2^a how many values it clips
    (exactly), plus a seeded uniform sample for the MSE choice."""

    def __init__(self, bits: int, signed: bool, quota: int, rng: np.random.Generator):
        self.bits, self.signed, self.quota, self.rng = bits, signed, quota, rng
        # need[i]: values first representable at a = _LOW + i; the last bin: at no a in range
        self.need = np.zeros(_HIGH - _LOW + 2, dtype=np.int64)
        self.always = 0  # negative values of an unsigned input: clipped at every scale
        self.total = 0
        self.max_abs = 0.0
        self.samples: list[np.ndarray] = []

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        self.total += x.size
        if x.size == 0:
            return
        act = ActQuant(self.bits, 0, self.signed)
        finite = x[np.isfinite(x)]
        if finite.size:
            self.max_abs = max(self.max_abs, float(np.abs(finite).max()))
        self.need[-1] += int(np.count_nonzero(np.isinf(x)))
        positive, negative = finite[finite > 0].astype(np.float64), finite[finite < 0].astype(np.float64)
        if not self.signed:
            self.always += negative.size
            negative = negative[:0]
        for values, limit in ((positive, act.qmax), (-negative, -act.qmin)):
            if values.size == 0:
                continue
            # smallest a with values <= limit * 2^a, corrected for log2's rounding (exact compare)
            a = np.ceil(np.log2(values / limit))
            a = np.where(values > limit * np.exp2(a), a + 1, a)
            a = np.where(values <= limit * np.exp2(a - 1), a - 1, a)
            self.need += np.bincount((np.clip(a, _LOW, _HIGH + 1) - _LOW).astype(np.int64), minlength=self.need.size)
        keep = finite if finite.size <= self.quota else finite[self.rng.integers(0, finite.size, self.quota)]
        self.samples.append(keep.copy())

    def clipped(self, a: int) -> int:
        """Values outside ``[qmin * 2^a, qmax * 2^a]``."""
        return int(self.need[a - _LOW + 1:].sum()) + self.always

    def choose(self, method: str) -> tuple[int, float]:
        """``(act_scale_log2, clip rate on the calibration values)`` by ``method``."""
        if method not in METHODS:
            raise FqOnnxError(f"activation calibration method must be one of {', '.join(METHODS)}, got {method!r}")
        if self.max_abs == 0.0 and not self.need[-1]:
            return 0, self.always / max(self.total, 1)  # only zeros seen: any scale is exact
        minmax = next((a for a in range(_LOW, _HIGH + 1) if self.clipped(a) == self.always), _HIGH)
        if method == "minmax":
            a = minmax
        elif method == "percentile":
            allowed = (1 - PERCENTILE / 100) * self.total + self.always
            a = next((a for a in range(_LOW, _HIGH + 1) if self.clipped(a) <= allowed), _HIGH)
        else:
            sample = np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)
            errors = []
            for a in range(max(_LOW, minmax - MSE_CANDIDATES + 1), minmax + 1):
                q = quantize(sample, ActQuant(self.bits, a, self.signed)).astype(np.float64)
                errors.append((float(((sample - np.ldexp(q, a)) ** 2).sum()), -a))
            a = -min(errors)[1]  # smallest error; on a tie the larger scale
        return a, self.clipped(a) / max(self.total, 1)


def _check_range(entry: ActStats) -> None:
    """Raise IntModeError for inputs no scale 2^a of the format's range can hold: values clipped
    even at the largest scale (a layer after weights of ~1e30), or a nonzero input that rounds to
    zero at the smallest (~1e-20 and below)."""
    if entry.clipped(_HIGH) > entry.always:
        raise IntModeError(f"inputs up to {entry.max_abs:.3g} need an activation scale above 2^{_HIGH}")
    if 0 < entry.max_abs < np.ldexp(0.5, _LOW):
        raise IntModeError(f"inputs of at most {entry.max_abs:.3g} round to zero at the smallest "
                           f"activation scale 2^{_LOW}")


# Ops whose output is >= 0 whatever their input, and ops that keep an input's sign.
_NONNEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus"}
_SIGN_KEEPING_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze",
                     "Unsqueeze", "Transpose", "Identity", "Slice", "Dropout", "Resize", "Upsample", "SpaceToDepth",
                     "DepthToSpace", "Pad"}
_ALL_INPUTS_OPS = {"Concat", "Add", "Sum", "Mul", "Max", "Min"}


def nonnegative(tensor: gs.Tensor, _seen: dict | None = None) -> bool:
    """True when the graph guarantees ``tensor >= 0`` (a ReLU or Clip(0, .) before it, through
    pooling, reshapes, concatenations and sums of such tensors); False when unknown."""
    seen = {} if _seen is None else _seen
    if tensor.name in seen:
        return seen[tensor.name]
    seen[tensor.name] = False  # cycles (none in a valid graph) and unknowns are "may be negative"
    value = constant_value(tensor)
    if value is not None:
        result = bool(value.size == 0 or np.all(value >= 0))
    elif len(tensor.inputs) != 1:
        result = False
    else:
        node = tensor.inputs[0]
        op = node.op
        if node.domain == rewrite.DOMAIN and op == rewrite.OP_TYPE:
            act = node.attrs.get("activation", "none")
            result = act == "relu" or (act == "clip" and float(node.attrs.get("clip_min", -np.inf)) >= 0)
        elif node.domain not in (None, "", "ai.onnx"):
            result = False
        elif op in _NONNEGATIVE_OPS:
            result = True
        elif op == "Clip":
            low = node.attrs.get("min")
            if len(node.inputs) > 1 and node.inputs[1].name:
                bound = constant_value(node.inputs[1])
                low = None if bound is None or bound.size != 1 else float(bound.reshape(()))
            high = node.attrs.get("max")
            if len(node.inputs) > 2 and node.inputs[2].name:
                bound = constant_value(node.inputs[2])
                high = None if bound is None or bound.size != 1 else float(bound.reshape(()))
                high = -np.inf if high is None else high  # unknown upper bound: may be negative
            result = (high is None or high >= 0) and (
                (low is not None and low >= 0) or (bool(node.inputs) and nonnegative(node.inputs[0], seen)))
        elif op in _SIGN_KEEPING_OPS:
            result = bool(node.inputs) and nonnegative(node.inputs[0], seen)
            if op == "Resize" and str(node.attrs.get("mode", "nearest")) == "cubic":
                result = False  # cubic interpolation overshoots below zero
            if result and op == "Pad" and len(node.inputs) > 2 and node.inputs[2].name:
                fill = constant_value(node.inputs[2])
                result = fill is not None and bool(np.all(fill >= 0))
        elif op in _ALL_INPUTS_OPS:
            result = bool(node.inputs) and all(nonnegative(t, seen) for t in node.inputs if t.name)
        else:
            result = False
    seen[tensor.name] = result
    return result


def _shiftconvs(graph: gs.Graph) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op == rewrite.OP_TYPE and n.domain == rewrite.DOMAIN]


def assign_scales(graph: gs.Graph, inputs: Samples | np.ndarray, act_bits: int, method: str = "mse", *, batch_size: int = 32,
                  seed: int = 0, progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict]:
    """Calibrate and set the integer-mode attributes of every ShiftConv node of ``graph``.

    Runs the compressed model (its ShiftConvs replaced by plain float ops on the dequantized
    weights) over the calibration ``inputs``; for each node chooses the power-of-two input
    scale by ``method`` and checks the accumulator bound and output scales. A node that fails
    keeps float activations and gets the reason in ``act_fallback``. Returns, per node, the
    ``act`` entry of its report row.
    """
    nodes = _shiftconvs(graph)
    if not nodes:
        return {}
    seen: dict = {}
    signed = {n.name: not nonnegative(n.inputs[0], seen) for n in nodes}
    plain = graph.copy()
    rewrite.to_plain(plain)
    names = [n.inputs[0].name for n in nodes]
    model = calibrate.probe_model(plain, names)
    inputs = Samples.of(inputs, graph.inputs[0].name)
    batches = inputs.count_batches(batch_size)
    rng = np.random.default_rng(seed)
    stats: dict[tuple[str, bool], ActStats] = {}
    for node, name in zip(nodes, names):
        stats.setdefault((name, signed[node.name]), ActStats(act_bits, signed[node.name],
                                                             -(-SAMPLE_VALUES // batches), rng))
    done = 0
    for count, values in calibrate.tensor_batches(model, inputs, batch_size):
        for (name, _), entry in stats.items():
            entry.update(values[name])
        done += count
        if progress:
            progress("activation scales", done, len(inputs))
    results = {}
    for node, name in zip(nodes, names):
        entry = stats[(name, signed[node.name])]
        a, rate = entry.choose(method)
        act = ActQuant(act_bits, a, signed[node.name])
        for key in (*ATTRS, "act_clip_rate", "act_fallback"):
            node.attrs.pop(key, None)
        try:
            _check_range(entry)
            prepare(np.asarray(node.inputs[1].values).tobytes(), act)
        except IntModeError as exc:
            node.attrs["act_fallback"] = str(exc)
            results[node.name] = {"fallback": str(exc)}
            continue
        node.attrs.update(act_bits=act.bits, act_scale_log2=act.scale_log2, act_signed=int(act.signed),
                          act_clip_rate=float(rate))
        results[node.name] = {"bits": act.bits, "scale_log2": act.scale_log2, "signed": act.signed,
                              "clip_rate": float(rate), "method": method}
    return results
