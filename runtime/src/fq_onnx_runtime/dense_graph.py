"""ShiftConv nodes that our sparse kernel would not win on, turned into onnxruntime's own nodes.

Why: a layer too dense for the sparse kernel already runs in onnxruntime's kernel from inside
ShiftConv, but a custom op cannot join onnxruntime's NCHWc graph: every such layer pays a
reorder in and out and the residual Adds stay unfused, so a compressed model at the sparsities
that keep accuracy ran slower than the original (docs/PERFORMANCE.md, "Dense layers in
onnxruntime's graph"). Here, when a session is created, those nodes become plain Conv / Gemm /
MatMul nodes (and their fused activation a Relu / Clip node) with the weight decoded in memory;
the file on disk stays compressed, and ShiftConv stays where sparsity pays.

Decoding goes through the library's own bounds-checked decoder (``fq_onnx_weight_info`` and
``fq_onnx_decode_dense`` of ``custom_ops/src/op/c_api.cc``, via ctypes). Anything this module
cannot turn into an exact equivalent - integer mode, a broken blob, attributes or a bias that
disagree with the weight, SAME padding with a stride - is left as ShiftConv, whose kernel then
runs it or reports the error naming the node, exactly as without this step.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Choices of the rewrite (session config entry ``fq_onnx.dense_graph``, env
#: ``FQ_ONNX_DENSE_GRAPH``, ``session(dense_graph=...)``).
MODES = ("auto", "all", "off")

#: auto: rewrite a float layer when our kernel's relative cost (dense_path.h: the row-group cost
#: units per dense multiply-add: 0.49 for a dense layer, about the density from 60% unstructured
#: sparsity on, 0.525 x density in blocks of 4 rows; higher for layers of few output channels)
#: is above this. Lower than the library's own rule inside ShiftConv (0.35 for k x k layers)
#: because a model mixing both pays NCHWc reorders at every boundary: bench/peers.py, 1 thread,
#: MobileNet-V2 at 70% unstructured measured 0.89x / 0.82x of fp32 (batch 1 / 8) with 0.35 (17
#: of 53 layers rewritten) and 1.00x / 1.01x with 0.22 (52 of 53); ResNet-20 at 85% kept
#: 1.16x / 1.20x (ShiftConv only: 1.19x / 1.20x). docs/PERFORMANCE.md has the tables.
AUTO_COST_ABOVE = 0.22


class DecodeError(ValueError):
    """The library's decoder rejected a blob (the message says which rule)."""


@dataclass
class WeightInfo:
    dims: tuple[int, ...]
    nonzeros: int
    cost: float  # relative_cost, dense_path.h


class Decoder:
    """The two C functions of libfq_onnx_ops.so, through ctypes."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        self._info = lib.fq_onnx_weight_info
        self._info.restype = ctypes.c_int
        self._info.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, ctypes.POINTER(ctypes.c_uint32),
            ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_double),
            ctypes.c_char_p, ctypes.c_size_t,
        ]
        self._decode = lib.fq_onnx_decode_dense
        self._decode.restype = ctypes.c_int
        self._decode.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t,
        ]

    def info(self, blob: np.ndarray, group: int) -> WeightInfo:
        dims = (ctypes.c_uint32 * 8)()
        ndim, nonzeros, cost = ctypes.c_int(0), ctypes.c_uint64(0), ctypes.c_double(0)
        err = ctypes.create_string_buffer(512)
        if self._info(blob.ctypes.data, blob.size, group, dims, ctypes.byref(ndim), ctypes.byref(nonzeros),
                      ctypes.byref(cost), err, len(err)):
            raise DecodeError(err.value.decode(errors="replace"))
        return WeightInfo(tuple(int(d) for d in dims[: ndim.value]), int(nonzeros.value), float(cost.value))

    def dense(self, blob: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
        out = np.empty(dims, dtype=np.float32)
        err = ctypes.create_string_buffer(512)
        if self._decode(blob.ctypes.data, blob.size, out.ctypes.data, out.size, err, len(err)):
            raise DecodeError(err.value.decode(errors="replace"))
        return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(v, default: str) -> str:
    return v.decode() if isinstance(v, bytes) else (default if v is None else str(v))


class _Names:
    """Fresh value/initializer names (a rewrite must not collide with the user's)."""

    def __init__(self, graph):
        self.used = {i.name for i in graph.initializer} | {i.name for i in graph.input}
        for n in graph.node:
            self.used.update(n.input)
            self.used.update(n.output)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _plan_node(node, attrs: dict, inits: dict, decoder: Decoder, want: Callable[[str, WeightInfo], bool]):
    """The decoded weight, bias and layer of a node this module may replace, or None to keep it."""
    from onnx import numpy_helper

    if "act_bits" in attrs or len(node.input) < 2 or node.input[1] not in inits:
        return None
    kind = _text(attrs.get("kind"), "conv")
    blob = numpy_helper.to_array(inits[node.input[1]])
    if blob.dtype != np.uint8 or blob.ndim != 1:
        return None
    blob = np.ascontiguousarray(blob)
    group = int(attrs.get("group", 1)) if kind == "conv" else 1
    try:
        info = decoder.info(blob, group)
    except DecodeError:
        return None  # ShiftConv's kernel reports it, naming the node
    dims = info.dims
    if kind == "dense":
        if len(dims) != 2:
            return None
    elif kind == "conv":
        spatial = len(dims) - 2
        if spatial not in (1, 2) or not _conv_attrs_ok(attrs, dims, spatial):
            return None
    else:
        return None
    if "M" in attrs and int(attrs["M"]) != dims[0]:
        return None
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits:
            return None  # a run-time bias: ShiftConv checks it per run
        bias = numpy_helper.to_array(inits[node.input[2]])
        if bias.dtype != np.float32 or bias.shape != (dims[0],) or not np.all(np.isfinite(bias)):
            return None
    activation = _text(attrs.get("activation"), "none")
    lo, hi = float(attrs.get("clip_min", -math.inf)), float(attrs.get("clip_max", math.inf))
    if activation not in ("none", "relu", "clip") or math.isnan(lo) or math.isnan(hi) or lo > hi:
        return None
    if not want(kind, info):
        return None
    try:
        weight = decoder.dense(blob, dims)
    except DecodeError:
        return None
    return kind, weight, bias, activation, lo, hi


def _conv_attrs_ok(attrs: dict, dims: tuple[int, ...], spatial: int) -> bool:
    """Attributes onnxruntime's Conv reads exactly as ShiftConv does (SHIFTCONV.md)."""
    kernel = list(attrs.get("kernel_shape", dims[2:]))
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    auto_pad = _text(attrs.get("auto_pad"), "NOTSET")
    if kernel != list(dims[2:]) or len(strides) != spatial or len(dilations) != spatial or len(pads) != 2 * spatial:
        return False
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        return False
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return False
    if auto_pad != "NOTSET" and "pads" in attrs:
        return False
    # SAME_*: onnxruntime's Conv lets the padding go negative for strides above the kernel and
    # rejects dilations; ShiftConv follows the ONNX spec. Only stride 1, dilation 1 agree.
    if auto_pad.startswith("SAME") and (max(strides) > 1 or max(dilations) > 1):
        return False
    return True


def _replacement(node, plan, names: _Names, opset: int):
    """The nodes and initializers that compute what `node` did."""
    from onnx import helper, numpy_helper

    kind, weight, bias, activation, lo, hi = plan
    attrs = _attrs(node)
    name = node.name or node.output[0]
    x, y = node.input[0], node.output[0]
    out = names.fresh(f"{y}/pre_activation") if activation != "none" else y
    inits = []

    def const(base: str, array: np.ndarray) -> str:
        n = names.fresh(base)
        inits.append(numpy_helper.from_array(array, n))
        return n

    w_name = const(f"{node.input[1]}/decoded", weight if kind == "conv" or _is_gemm(attrs) else weight.T.copy())
    # the bias initializer as it is (checked float32 [M] by _plan_node): a copy would leave the
    # original unread, and onnxruntime warns about every unused initializer
    b_name = node.input[2] if bias is not None else None
    nodes = []
    if kind == "conv":
        keep = {k: attrs[k] for k in ("dilations", "group", "pads", "strides") if k in attrs}
        auto_pad = _text(attrs.get("auto_pad"), "NOTSET")
        if auto_pad != "NOTSET":
            keep["auto_pad"] = auto_pad
        keep["kernel_shape"] = list(weight.shape[2:])
        nodes.append(helper.make_node("Conv", [x, w_name] + ([b_name] if b_name else []), [out], name=name, **keep))
    elif _is_gemm(attrs):
        # The converter's Gemm: X is 2-D (transA became a Transpose in front), W is [M, K].
        nodes.append(helper.make_node("Gemm", [x, w_name] + ([b_name] if b_name else []), [out], name=name,
                                      transB=1))
    else:
        # A MatMul with its weight [K, M], as the original; the bias (if any) as the Add after it.
        mm_out = names.fresh(f"{y}/matmul") if b_name else out
        nodes.append(helper.make_node("MatMul", [x, w_name], [mm_out], name=name))
        if b_name:
            nodes.append(helper.make_node("Add", [mm_out, b_name], [out], name=f"{name}/bias"))
    if activation == "relu":
        nodes.append(helper.make_node("Relu", [out], [y], name=f"{name}/relu"))
    elif activation == "clip":
        if opset >= 11:
            lo_name = const(f"{name}/clip_min", np.array(lo, dtype=np.float32))
            hi_name = const(f"{name}/clip_max", np.array(hi, dtype=np.float32))
            nodes.append(helper.make_node("Clip", [out, lo_name, hi_name], [y], name=f"{name}/clip"))
        else:
            nodes.append(helper.make_node("Clip", [out], [y], name=f"{name}/clip", min=lo, max=hi))
    return nodes, inits


def _is_gemm(attrs: dict) -> bool:
    return _text(attrs.get("kind"), "conv") == "dense" and _text(attrs.get("source_op"), "") == "Gemm"


def rule(mode: str) -> Callable[[str, WeightInfo], bool]:
    """Which decodable float layers become onnxruntime nodes under `mode` (MODES)."""
    if mode == "all":
        return lambda kind, info: True
    if mode == "auto":
        return lambda kind, info: info.cost > AUTO_COST_ABOVE
    return lambda kind, info: False


def rewrite(model, library: str, mode: str = "auto") -> int:
    """Replaces, in `model` (an onnx.ModelProto, edited in place), the float ShiftConv nodes of its
    main graph that `mode` selects by onnxruntime nodes; returns how many were replaced."""
    if mode not in MODES:
        raise ValueError(f"dense_graph must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return 0
    graph = model.graph
    if not any(n.op_type == "ShiftConv" and n.domain == "fq_onnx" for n in graph.node):
        return 0
    decoder = _decoder(library)
    want = rule(mode)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inits = {i.name: i for i in graph.initializer}
    names = _Names(graph)
    new_nodes, new_inits, graph_nodes_replaced = [], [], []
    for node in graph.node:
        plan = None
        if node.op_type == "ShiftConv" and node.domain == "fq_onnx":
            plan = _plan_node(node, _attrs(node), inits, decoder, want)
        if plan is None:
            new_nodes.append(node)
            continue
        nodes, added = _replacement(node, plan, names, opset)
        new_nodes.extend(nodes)
        new_inits.extend(added)
        graph_nodes_replaced.append(node)
    if not graph_nodes_replaced:
        return 0
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    # Blobs no node reads any more: onnxruntime would keep them in memory (and warn).
    gone = {n.input[1] for n in graph_nodes_replaced} - _referenced(graph) - {o.name for o in graph.output}
    if gone:
        keep = [i for i in graph.initializer if i.name not in gone]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        kept_inputs = [i for i in graph.input if i.name not in gone]
        del graph.input[:]
        graph.input.extend(kept_inputs)
    return len(graph_nodes_replaced)


def _referenced(graph) -> set:
    """Every value name a node of `graph` or of its subgraphs (If, Loop, Scan bodies) reads."""
    from onnx import AttributeProto

    names = set()
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                names |= _referenced(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    names |= _referenced(g)
    return names


_decoders: dict[str, Decoder] = {}


def _decoder(library: str) -> Decoder:
    if library not in _decoders:
        _decoders[library] = Decoder(library)
    return _decoders[library]
