"""Which nodes can be compressed, and how each op type becomes a ``fq_onnx.ShiftConv`` node.

One rewriter per source op type in ``REWRITERS``: ``match`` says whether a node's weight can be
compressed (and why not), ``Target.replace`` swaps the node for a ShiftConv. Graph editing only;
the compression math lives in prune/focus/fmt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fq_onnx.op import geometry
from fq_onnx.graph import constant_value, is_external, select

DOMAIN = "fq_onnx"
OP_TYPE = "ShiftConv"
OPSET_VERSION = 1
CONV_ATTRS = geometry.ATTRS  # what a Conv hands its ShiftConv


@dataclass
class Target:
    """A node whose weight will be compressed, with the weight in the stored layout.

    ``weight`` is ``[M, C/group, k...]`` for a conv and ``[M, K]`` (one row per output) for a
    dense op; ``bias`` is one float per output row or None.
    """

    node: gs.Node
    kind: str
    _weight: np.ndarray | None
    bias: np.ndarray | None
    attrs: dict = field(default_factory=dict)
    transpose_input: bool = False
    # For a weight in an external data file: reads it again. Matching then keeps no copy, and
    # release() drops it once compressed, so a converted model streams one layer at a time.
    reload: Callable[[], np.ndarray] | None = None

    def __post_init__(self):
        if self.reload is not None:
            self._weight = None

    @property
    def weight(self) -> np.ndarray:
        if self._weight is None:
            self._weight = self.reload()
        return self._weight

    def release(self) -> None:
        """Forget a weight that can be read again from its external data file."""
        if self.reload is not None:
            self._weight = None

    def replace(self, graph: gs.Graph, blob: bytes, info: dict, fuse_activation: bool) -> gs.Node:
        """Put a ShiftConv in the node's place (fusing a following Relu/Clip when ``fuse_activation``)."""
        """Put a ShiftConv in the node's place; ``info`` adds informational attributes."""
        node = self.node
        data = node.inputs[0]
        if self.transpose_input:
            transposed = gs.Variable(f"{node.name}/transposed_input", dtype=data.dtype)
            graph.nodes.append(gs.Node("Transpose", f"{node.name}/transpose_a", {"perm": [1, 0]}, [data], [transposed]))
            data = transposed
        inputs = [data, gs.Constant(f"{node.name}/fq_weight", np.frombuffer(blob, dtype=np.uint8).copy())]
        if self.bias is not None:
            inputs.append(gs.Constant(f"{node.name}/fq_bias", self.bias.astype(np.float32)))
        # M (outputs) as an attribute, as onnxruntime's MatMulNBits keeps N: shape inference then
        # needs no initializer data, which tools such as onnxslim do not hand to custom ops.
        attrs = {"kind": self.kind, "M": int(self.weight.shape[0]), **self.attrs, **info, "activation": "none"}
        # a following Relu or Clip is applied in the kernel's output store
        outputs = list(node.outputs)
        fused = _fusable_activation(graph, outputs[0]) if fuse_activation else None
        if fused is not None:
            follower, activation = fused
            attrs.update(activation)
            outputs = list(follower.outputs)
            follower.outputs = []
            follower.inputs = []
        node.outputs = []
        node.inputs = []
        shift = gs.Node(OP_TYPE, node.name, attrs, inputs, outputs, domain=DOMAIN)
        graph.nodes.append(shift)
        return shift


def store_float16(graph: gs.Graph, node: gs.Node) -> None:
    """Keep ``node`` in float with its weight stored as float16 behind a Cast: 2 bytes a weight
    instead of 4. onnxruntime folds the Cast when it creates the session, so the node then runs
    exactly as before on the rounded weight."""
    value = constant_value(node.inputs[1])
    half = gs.Constant(f"{node.name}/weight_fp16", value.astype(np.float16))
    weight = gs.Variable(f"{node.name}/weight_fp32", dtype=np.float32, shape=list(value.shape))
    graph.nodes.append(gs.Node("Cast", f"{node.name}/weight_cast", {"to": onnx.TensorProto.FLOAT}, [half], [weight]))
    node.inputs[1] = weight


def _fusable_activation(graph: gs.Graph, tensor: gs.Tensor) -> tuple[gs.Node, dict] | None:
    """The Relu, or Clip with constant bounds, that alone consumes ``tensor``, and its attributes."""
    if len(tensor.outputs) != 1 or any(tensor is out for out in graph.outputs):
        return None
    consumer = tensor.outputs[0]
    if not consumer.inputs or consumer.inputs[0] is not tensor:
        return None
    if consumer.op == "Relu":
        return consumer, {"activation": "relu"}
    if consumer.op == "Clip":
        bounds = {}
        for index, key in ((1, "clip_min"), (2, "clip_max")):
            if len(consumer.inputs) > index and consumer.inputs[index].name:
                value = constant_value(consumer.inputs[index])
                if value is None or value.size != 1:
                    return None
                bounds[key] = float(value.reshape(()))
        for key in ("min", "max"):  # Clip-6 and older keep the bounds in attributes
            if key in consumer.attrs:
                bounds[f"clip_{key}"] = float(consumer.attrs[key])
        return consumer, {"activation": "clip", **bounds}
    return None


def _float_weight(value: np.ndarray | None) -> str | None:
    if value is None:
        return "weight is not a constant"
    if value.dtype != np.float32:
        return f"weight dtype {value.dtype} is not float32"
    if not np.all(np.isfinite(value)):
        return "weight contains NaN or Inf"
    return None


def match_conv(node: gs.Node) -> Target | str:
    if len(node.inputs) < 2:
        return "Conv without a weight input"
    weight = constant_value(node.inputs[1])
    reason = _float_weight(weight)
    if reason:
        return reason
    if weight.ndim not in (3, 4):
        return f"{weight.ndim - 2}-D convolution (only 1-D and 2-D are supported)"
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        bias = constant_value(node.inputs[2])
        if bias is None:
            return "bias is not a constant"
    attrs = {k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs}
    attrs.setdefault("kernel_shape", list(weight.shape[2:]))
    return Target(node, "conv", weight, bias, attrs, reload=_reloader(node.inputs[1]))


def match_gemm(node: gs.Node) -> Target | str:
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    reason = _float_weight(weight)
    if reason:
        return reason
    if weight.ndim != 2:
        return "Gemm weight is not 2-D"

    def stored(w: np.ndarray) -> np.ndarray:  # [N_out, K] with alpha folded in
        w = w if int(node.attrs.get("transB", 0)) else w.T
        return np.ascontiguousarray(w * np.float32(node.attrs.get("alpha", 1.0)))

    weight = stored(weight)
    outputs = weight.shape[0]
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = constant_value(node.inputs[2])
        if c is None:
            return "C is not a constant"
        if c.size == 1:
            c = np.full(outputs, c.reshape(()), dtype=np.float32)
        elif c.shape in ((outputs,), (1, outputs)):
            c = c.reshape(outputs)
        else:
            return f"C of shape {list(c.shape)} is not a per-output bias"
        bias = (c * np.float32(node.attrs.get("beta", 1.0))).astype(np.float32)
    return Target(node, "dense", weight, bias, transpose_input=bool(int(node.attrs.get("transA", 0))),
                  reload=_reloader(node.inputs[1], stored))


def match_matmul(node: gs.Node) -> Target | str:
    if len(node.inputs) < 2:
        return "MatMul without a second input"
    weight = constant_value(node.inputs[1])
    if weight is None:
        return "second input is not a constant weight"
    reason = _float_weight(weight)
    if reason:
        return reason
    if weight.ndim != 2:
        return f"weight of rank {weight.ndim} (only 2-D weights are compressed)"
    return Target(node, "dense", np.ascontiguousarray(weight.T), None,
                  reload=_reloader(node.inputs[1], lambda w: np.ascontiguousarray(w.T)))


def _reloader(tensor: gs.Tensor, stored: Callable[[np.ndarray], np.ndarray] = lambda w: w):
    """How to read a weight kept in external data again (None for one held in memory)."""
    return (lambda: stored(constant_value(tensor))) if is_external(tensor) else None


def to_plain(graph: gs.Graph) -> int:
    """Replace every ShiftConv by plain float nodes with its dequantized weight; returns the count."""
    from fq_onnx.format import fmt

    shiftconvs = [n for n in graph.nodes if n.op == OP_TYPE and n.domain == DOMAIN]
    for node in shiftconvs:
        _plain_node(graph, node, fmt.dequantize(constant_value(node.inputs[1]).tobytes()))
    if shiftconvs:
        graph.cleanup().toposort()
    return len(shiftconvs)


def _plain_node(graph: gs.Graph, node: gs.Node, weight: np.ndarray) -> None:
    """Replace one ShiftConv by Conv, or MatMul(+Add), then Relu when it fused one."""
    name = node.name
    x, bias = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
    outputs = list(node.outputs)
    node.inputs, node.outputs = [], []
    activation = node.attrs.get("activation", "none")
    relu = activation in ("relu", "clip")
    result = gs.Variable(f"{name}/linear_out", dtype=np.float32) if relu else outputs[0]
    if node.attrs.get("kind", "conv") == "conv":
        attrs = {k: node.attrs[k] for k in CONV_ATTRS if k in node.attrs}
        inputs = [x, gs.Constant(f"{name}/weight", weight)] + ([bias] if bias is not None else [])
        graph.nodes.append(gs.Node("Conv", name, attrs, inputs, [result]))
    else:
        product = gs.Variable(f"{name}/matmul_out", dtype=np.float32) if bias is not None else result
        graph.nodes.append(gs.Node("MatMul", name, {}, [x, gs.Constant(f"{name}/weight", np.ascontiguousarray(weight.T))], [product]))
        if bias is not None:
            graph.nodes.append(gs.Node("Add", f"{name}/bias_add", {}, [product, bias], [result]))
    if activation == "relu":
        graph.nodes.append(gs.Node("Relu", f"{name}/relu", {}, [result], outputs))
    elif activation == "clip":
        bounds = [gs.Constant(f"{name}/clip_{k}", np.array(node.attrs.get(f"clip_{k}", default), np.float32))
                  for k, default in (("min", -np.inf), ("max", np.inf))]
        graph.nodes.append(gs.Node("Clip", f"{name}/clip", {}, [result, *bounds], outputs))


REWRITERS = {"Conv": match_conv, "Gemm": match_gemm, "MatMul": match_matmul}


def find_targets(graph: gs.Graph, exclude: tuple[str, ...] = ()) -> tuple[list[Target], list[tuple[str, str, str]]]:
    """Targets to compress, and ``(node, op, reason)`` for every weight op left untouched.

    ``exclude`` holds node names, op types or glob patterns of either (fq_onnx.graph.select) to skip.
    """
    targets, skipped = [], []
    for node in graph.nodes:
        matcher = REWRITERS.get(node.op)
        if matcher is None or node.domain not in (None, "", "ai.onnx"):
            continue
        if select.selected(exclude, node.name, node.op):
            skipped.append((node.name, node.op, "excluded by the user"))
            continue
        result = matcher(node)
        if isinstance(result, str):
            skipped.append((node.name, node.op, result))
        else:
            targets.append(result)
    skipped.extend(_inside_subgraphs(graph))
    return targets, skipped


def _inside_subgraphs(graph: gs.Graph, owner: str = "") -> list[tuple[str, str, str]]:
    """Weight ops inside If/Loop/Scan bodies: listed, not compressed (control flow is kept)."""
    found = []
    for node in graph.nodes:
        for value in node.attrs.values():
            bodies = value if isinstance(value, list) else [value]
            for body in bodies:
                if isinstance(body, gs.Graph):
                    where = f"{owner}{node.op} {node.name}"
                    found += [(n.name, n.op, f"inside the body of {where} (control flow is left as it is)")
                              for n in body.nodes if n.op in REWRITERS]
                    found += _inside_subgraphs(body, f"{where} > ")
    return found
