"""numpy reference of ``fq_onnx.ShiftConv`` as an ``onnx.reference`` operator.

``run(model, inputs)`` executes any compressed model without the C++ library: slow, but the
definition the C++ kernel is tested against (docs/SHIFTCONV.md).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import _conv_implementation

from fq_onnx.format import fmt
from fq_onnx.op import intmode, validate
from fq_onnx.graph import load_model


class ShiftConv(OpRun):
    op_domain = "fq_onnx"

    def _run(self, X, W, B=None, kind="conv", auto_pad="NOTSET", dilations=None, group=1,
             kernel_shape=None, pads=None, strides=None, activation="none", clip_min=None, clip_max=None,
             M=None, act_bits=None, act_scale_log2=None, act_signed=None, **informational):
        weight = self._weight(W)
        if M is not None and M != weight.shape[0]:
            raise ValueError(f"ShiftConv {self.onnx_node.name}: attribute M={M}, the weight stores {weight.shape[0]} outputs")
        if B is not None:
            validate.check_bias_values(self.onnx_node.name, B)
        if act_bits is not None:  # integer mode (SHIFTCONV.md "Integer mode")
            try:
                layer = self._int_layer(W, intmode.act_quant(act_bits, act_scale_log2, act_signed))
                y = intmode.forward(layer, X, B, kind, activation, clip_min, clip_max, auto_pad=auto_pad,
                                    dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads,
                                    strides=strides)
            except (intmode.IntModeError, fmt.FormatError) as exc:
                raise intmode.IntModeError(f"ShiftConv {self.onnx_node.name}: {exc}") from None
            return (y,)
        if kind == "dense":
            if X.shape[-1] != weight.shape[1]:
                raise ValueError(f"ShiftConv {self.onnx_node.name}: input has {X.shape[-1]} features, weight expects {weight.shape[1]}")
            y = np.matmul(X.astype(np.float32), weight.T)
            if B is not None:
                y = y + B
        elif kind == "conv":
            if X.ndim != weight.ndim:
                raise ValueError(f"ShiftConv {self.onnx_node.name}: input rank {X.ndim} does not match weight rank {weight.ndim}")
            y = _conv_implementation(X, weight, B, auto_pad, dilations, group or 1, kernel_shape, pads, strides)
        else:
            raise ValueError(f"ShiftConv {self.onnx_node.name}: unknown kind {kind!r}")
        if activation == "relu":
            y = np.maximum(y, 0)
        elif activation == "clip":
            y = np.clip(y, -np.inf if clip_min is None else clip_min, np.inf if clip_max is None else clip_max)
        elif activation not in (None, "none"):
            raise ValueError(f"ShiftConv {self.onnx_node.name}: unknown activation {activation!r}")
        return (y.astype(np.float32),)

    def _weight(self, blob: np.ndarray) -> np.ndarray:
        # Decode once per node, as the C++ kernel does in its constructor: the evaluator hands
        # the same initializer array to every run, so identity is checked before any bytes.
        cached = getattr(self, "_decoded", None)
        if cached is not None and (cached[0] is blob or np.array_equal(cached[0], blob)):
            return cached[1]
        try:
            weight = fmt.dequantize(np.asarray(blob, dtype=np.uint8).tobytes())
        except fmt.FormatError as exc:
            raise fmt.FormatError(f"ShiftConv node '{self.onnx_node.name}': {exc}") from None
        self._decoded = (blob, weight)
        return weight


    def _int_layer(self, blob: np.ndarray, act) -> "intmode.IntLayer":
        cached = getattr(self, "_int", None)
        if cached is not None and cached[1] == act and (cached[0] is blob or np.array_equal(cached[0], blob)):
            return cached[2]
        layer = intmode.prepare(np.asarray(blob, dtype=np.uint8).tobytes(), act)
        self._int = (blob, act, layer)
        return layer


def evaluator(model: onnx.ModelProto | str | os.PathLike) -> ReferenceEvaluator:
    """A ReferenceEvaluator that knows ShiftConv; reuse it to decode the weights only once.

    Refuses (validate.InvalidShiftConv, naming the file and node) what onnxruntime would refuse
    at session creation: a bad blob, a weight that is not a constant, a shape or bias that
    disagrees with the node.
    """
    if isinstance(model, onnx.ModelProto):
        validate.check_model(model)
    else:
        path = model
        model = load_model(path)
        try:
            validate.check_model(model)
        except validate.InvalidShiftConv as exc:
            raise validate.InvalidShiftConv(f"{path}: {exc}") from None
    return ReferenceEvaluator(model, new_ops=[ShiftConv])


def run(model, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run a (compressed) model on ``inputs`` with the numpy reference; returns its outputs."""
    return evaluator(model).run(outputs, inputs)
