"""The checks the C++ kernel makes when a session is created, for the Python tools.

docs/SHIFTCONV.md: a blob that breaks a rule of docs/FORMAT.md, or whose shape disagrees with the
node (rank, kernel_shape, group, bias length), is an error naming the node. ``fq-onnx inspect``,
``fq-onnx decompress`` and the numpy reference run these checks so that they refuse what
onnxruntime refuses, in the same words (custom_ops/src/op/node_frame.cc, plan/conv_geometry.cc).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from fq_onnx.format import fmt
from fq_onnx.op import geometry
from fq_onnx.errors import FqOnnxError

KINDS = ("conv", "dense")
ACTIVATIONS = ("none", "relu", "clip")
NOT_CONSTANT = "input 1 (W) must be a constant initializer holding the compressed weight"


class InvalidShiftConv(FqOnnxError):
    """A ShiftConv node onnxruntime would refuse: ``ShiftConv node 'NAME': problem``."""


def check_node(name: str, attrs: Mapping, weight: np.ndarray | None, bias: np.ndarray | None = None) -> fmt.Decoded:
    """Validate one ShiftConv node; returns its decoded weight.

    ``weight`` is the constant W (None when W is not a constant initializer); ``bias`` the
    constant B, or None when absent or given at run time (checked per run instead).
    """
    try:
        return _check(attrs, weight, bias)
    except (fmt.FormatError, ValueError) as exc:
        raise InvalidShiftConv(f"ShiftConv node '{name}': {exc}") from None


def check_bias_values(name: str, bias: np.ndarray) -> None:
    """A run-time bias: finite, like a constant one."""
    try:
        _finite_bias(np.asarray(bias))
    except ValueError as exc:
        raise InvalidShiftConv(f"ShiftConv node '{name}': {exc}") from None


def _finite_bias(bias: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(bias.astype(np.float32, copy=False).reshape(-1)))
    if bad.size:
        raise ValueError(f"bias B holds NaN or Inf (element {int(bad[0])} is {bias.reshape(-1)[bad[0]]})")


def _check(attrs: Mapping, weight: np.ndarray | None, bias: np.ndarray | None) -> fmt.Decoded:
    kind = attrs.get("kind", "conv")
    activation = attrs.get("activation", "none")
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}' (conv or dense)")
    if activation == "clip":
        lo, hi = float(attrs.get("clip_min", -math.inf)), float(attrs.get("clip_max", math.inf))
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"clip_min and clip_max must be numbers, got {lo} and {hi}")
        if lo > hi:
            raise ValueError("clip_min must not exceed clip_max")
    elif activation not in ("none", "relu"):
        raise ValueError(f"unknown activation '{activation}' (none, relu or clip)")
    auto_pad = geometry.auto_pad(attrs)
    if kind == "conv":
        if auto_pad not in geometry.AUTO_PADS:
            raise ValueError(f"unknown auto_pad '{auto_pad}'")
        if auto_pad != "NOTSET" and attrs.get("pads"):
            raise ValueError("pads and auto_pad cannot both be given")

    if weight is None:
        raise ValueError(NOT_CONSTANT)
    weight = np.asarray(weight)
    if weight.dtype != np.uint8 or weight.ndim != 1:
        raise ValueError("input 1 (W) must be a 1-D uint8 tensor")
    try:
        decoded = fmt.decode(weight.tobytes())
    except fmt.FormatError as exc:
        raise ValueError(f"invalid compressed weight (docs/FORMAT.md): {exc}") from None

    dims = list(decoded.shape)
    if kind == "dense":
        if len(dims) != 2:
            raise ValueError(f"a dense weight must have rank 2 [M, K], the blob has rank {len(dims)}")
    else:
        geometry.check_weight_attrs(attrs, dims)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.ndim != 1 or bias.size != dims[0]:
            raise ValueError(f"bias B has shape {list(bias.shape)}, expected [{dims[0]}]")
        _finite_bias(bias)
    return decoded


def check_model(model: onnx.ModelProto) -> None:
    """Every ShiftConv node of the main graph, with the model's constants (initializers and
    Constant nodes); raises InvalidShiftConv for the first bad one."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    constants[node.output[0]] = a.t
    for node in model.graph.node:
        if node.op_type != "ShiftConv" or node.domain != "fq_onnx":
            continue
        attrs = {a.name: _attribute(a) for a in node.attribute}
        weight = constants.get(node.input[1]) if len(node.input) > 1 else None
        bias = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        check_node(node.name, attrs, None if weight is None else numpy_helper.to_array(weight),
                   None if bias is None else numpy_helper.to_array(bias))


def _attribute(attribute: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
