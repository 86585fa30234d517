"""A corpus of malformed compressed models, each with the error it must produce.

Every case starts from one real model compressed by ``api.convert`` (a Conv with bias and a
fused Clip, then a Gemm: two ShiftConv nodes, ``conv`` and ``fc``) and breaks one thing: the
file, a blob's bytes (docs/FORMAT.md), the node around a blob, or a float parameter. Every case
exists for both kinds of node: the float one and the integer one (``MODES``: the same model with
the integer-mode attributes on both nodes), which share the node frame in C++. The models are
built on the fly; nothing binary is committed. tests/test_malformed.py runs each case through
session creation, ``fq-onnx inspect`` / ``decompress`` and the numpy reference.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fq_onnx import api, fmt

X_SHAPE = (1, 3, 6, 6)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[bytes], bytes]  # the valid model's bytes -> the malformed file's bytes
    node: str | None  # the node every error names (None: a file-level problem, the path is named)
    message: str  # regex found in the error of onnxruntime and of the Python tools
    python: str | None = None  # another regex for the Python tools, where their words differ


def source_model(rng: np.random.Generator) -> onnx.ModelProto:
    """X [1,3,6,6] -> Conv(8x3x3x3, bias, pads 1) -> Clip(0, 6) -> Flatten -> Gemm(288 -> 10, bias)."""
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "B"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             numpy_helper.from_array((rng.standard_normal((288, 10)) * 0.1).astype(np.float32), "Wf"),
             numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "Bf")]
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="relu6"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "Wf", "Bf"], ["Y"], name="fc")]
    graph = helper.make_graph(nodes, "malformed-base",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(X_SHAPE))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


MODES = ("float", "integer")
# Integer mode (docs/SHIFTCONV.md): 8-bit signed inputs in steps of 2^-4 on both nodes.
INT_ATTRS = {"act_bits": 8, "act_scale_log2": -4, "act_signed": 1}


def compressed_model(directory: Path, mode: str = "float") -> bytes:
    """The valid compressed model every case starts from, its nodes in float or integer mode."""
    src = directory / "source.onnx"
    onnx.save(source_model(np.random.default_rng(2026)), str(src))
    out = directory / "compressed.onnx"
    # the conv has 216 weights, below the default --min-weights: compress it anyway
    report = api.convert(src, out, sparsity=0.5, bits=5, min_weights=0)
    assert all(r.mode != "float" for r in report.layers), "both nodes must be ShiftConv"
    if mode == "float":
        return out.read_bytes()
    model = onnx.load(str(out))
    for node in model.graph.node:
        if node.op_type == "ShiftConv":
            node.attribute.extend(helper.make_attribute(k, v) for k, v in INT_ATTRS.items())
    return model.SerializeToString()


# --- editing helpers ---------------------------------------------------------------------------

def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _edit_model(edit: Callable[[onnx.ModelProto], None]) -> Callable[[bytes], bytes]:
    def build(data: bytes) -> bytes:
        model = onnx.load_from_string(data)
        edit(model)
        return model.SerializeToString()

    return build


def _set_array(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(array, name))


def _edit_blob(node: str, edit: Callable[[bytes], bytes], fix_crc: bool = True) -> Callable[[bytes], bytes]:
    """Rewrites the blob of ``node`` (its input 1); ``fix_crc`` recomputes the CRC-32 so the
    decoder's later checks are the ones reached."""
    def apply(model: onnx.ModelProto) -> None:
        name = _node(model, node).input[1]
        blob = edit(numpy_helper.to_array(_init(model, name)).tobytes())
        if fix_crc:
            blob = blob[:-4] + struct.pack("<I", zlib.crc32(blob[:-4]))
        _set_array(model, name, np.frombuffer(blob, np.uint8).copy())

    return _edit_model(apply)


def _drop_m(node: str) -> Callable[[bytes], bytes]:
    def apply(model: onnx.ModelProto) -> None:
        attrs = _node(model, node).attribute
        kept = [a for a in attrs if a.name != "M"]
        del attrs[:]
        attrs.extend(kept)

    return _edit_model(apply)


def _then(*builders: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def build(data: bytes) -> bytes:
        for builder in builders:
            data = builder(data)
        return data

    return build


def _offsets(blob: bytes) -> dict[str, int]:
    """Field offsets of FORMAT.md's layout: dims, A, scales, centres, b, T, P, table, payload
    (read from the bytes alone, so edits can be chained on a blob that no longer decodes)."""
    bits, ndim, run_max = blob[6], blob[7], blob[9]
    h = 12 + 4 * ndim
    (count,) = struct.unpack_from("<I", blob, h)
    a = h + 4 + 4 * count
    table_bytes = ((run_max + 1) * (1 << bits) + 2) // 2
    return {"dims": 12, "A": h, "scales": h + 4, "centre0": a, "b": a + 8, "T": a + 12, "P": a + 16,
            "table": a + 20, "payload": a + 20 + table_bytes, "table_bytes": table_bytes}


def _put(field: str, fmt_char: str, value, index: int = 0) -> Callable[[bytes], bytes]:
    def edit(blob: bytes) -> bytes:
        out = bytearray(blob)
        struct.pack_into("<" + fmt_char, out, _offsets(blob)[field] + 4 * index, value)
        return bytes(out)

    return edit


def _reencode(shape: tuple[int, ...]) -> Callable[[bytes], bytes]:
    """The same codes and parameters stored under another shape (same element count)."""
    def edit(blob: bytes) -> bytes:
        d = fmt.decode(blob)
        alphas = None if d.alphas.size == 1 else np.resize(d.alphas, shape[0])
        return fmt.encode(d.codes.reshape(shape), d.params, d.block, d.run_max, alphas)

    return edit


def _table(lengths: Callable[[int], bytes], payload_msb: bool = False) -> Callable[[bytes], bytes]:
    """Replaces the code length table (its byte count given); optionally sets the payload's first bit."""
    def edit(blob: bytes) -> bytes:
        o = _offsets(blob)
        out = bytearray(blob)
        out[o["table"] : o["payload"]] = lengths(o["table_bytes"])
        if payload_msb:
            out[o["payload"]] |= 0x80
        return bytes(out)

    return edit


def _payload_resize(delta: int) -> Callable[[bytes], bytes]:
    """Drops (delta < 0) or appends payload bytes without updating P."""
    def edit(blob: bytes) -> bytes:
        body = blob[:-4]
        body = body[:delta] if delta < 0 else body + bytes(delta)
        return body + blob[-4:]

    return edit


def _attr(node: str, **values) -> Callable[[bytes], bytes]:
    def apply(model: onnx.ModelProto) -> None:
        n = _node(model, node)
        for key, value in values.items():
            for a in list(n.attribute):
                if a.name == key:
                    n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(key, value))

    return _edit_model(apply)


def _bias_value(node: str, index: int, value: float) -> Callable[[bytes], bytes]:
    def apply(model: onnx.ModelProto) -> None:
        name = _node(model, node).input[2]
        bias = numpy_helper.to_array(_init(model, name)).copy()
        bias[index] = value
        _set_array(model, name, bias)

    return _edit_model(apply)


def _weight_as_graph_input(model: onnx.ModelProto) -> None:
    name = _node(model, "conv").input[1]
    size = numpy_helper.to_array(_init(model, name)).size
    model.graph.initializer.remove(_init(model, name))
    model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.UINT8, [size]))


def _weight_computed(model: onnx.ModelProto) -> None:
    """W = Concat(blob, Z) with Z an empty uint8 graph input: computed, not an initializer."""
    node = _node(model, "conv")
    blob = node.input[1]
    model.graph.input.append(helper.make_tensor_value_info("Z", TensorProto.UINT8, [0]))
    model.graph.node.insert(0, helper.make_node("Concat", [blob, "Z"], ["computed_w"], name="make_w", axis=0))
    node.input[1] = "computed_w"


def _empty_weight(model: onnx.ModelProto) -> None:
    _set_array(model, _node(model, "conv").input[1], np.zeros(0, np.uint8))


# --- the corpus --------------------------------------------------------------------------------

def _flip_payload_bit(blob: bytes) -> bytes:
    out = bytearray(blob)
    out[_offsets(blob)["payload"]] ^= 0x01
    return bytes(out)


NAN, INF = float("nan"), float("inf")

CASES = [
    # the file
    Case("truncated-file", lambda data: data[: len(data) // 2], None, "Protobuf parsing failed",
         python="not an ONNX model"),
    Case("not-onnx", lambda data: b"name,accuracy\nresnet,0.71\n" * 40, None, "Protobuf parsing failed",
         python="not an ONNX model"),
    Case("empty-file", lambda data: b"", None, "No graph was found", python="holds no graph"),
    # the blob's header
    Case("bad-magic", _edit_blob("conv", lambda b: b"FQX1" + b[4:]), "conv", "bad magic"),
    Case("bad-version", _edit_blob("conv", lambda b: b[:4] + bytes([3]) + b[5:]), "conv",
         "format version 3 is not supported"),
    # the mantissa byte (10) and the reserved byte (11): the model's blobs are version 1, m = 0
    Case("mantissa-too-large", _edit_blob("conv", lambda b: b[:4] + bytes([2]) + b[5:10] + bytes([4]) + b[11:]),
         "conv", "mantissa 4 leaves no exponent bit in 5-bit"),
    Case("v2-without-mantissa", _edit_blob("conv", lambda b: b[:4] + bytes([2]) + b[5:]), "conv",
         "a version 2 blob must have mantissa >= 1"),
    Case("v1-with-mantissa", _edit_blob("fc", lambda b: b[:10] + bytes([1]) + b[11:]), "fc",
         "reserved field is not 0"),
    Case("reserved-byte-11", _edit_blob("conv", lambda b: b[:11] + bytes([1]) + b[12:]), "conv",
         "reserved field is not 0"),
    Case("shape-vs-kernel-shape", _edit_blob("conv", _reencode((8, 3, 9, 1))), "conv",
         r"kernel_shape \[3, 3\] disagrees with the weight's \[9, 1\]"),
    # without the node's M attribute (models written before it), so the bias check is the one reached
    Case("shape-vs-bias", _then(_edit_blob("fc", _reencode((20, 144))), _drop_m("fc")), "fc",
         r"bias B has shape \[10\], expected \[20\]"),
    Case("rank-vs-kind", _edit_blob("conv", _reencode((8, 27))), "conv", "a conv weight must have rank 3 or 4"),
    Case("bit-flip", _edit_blob("conv", _flip_payload_bit, fix_crc=False), "conv", "CRC-32 mismatch"),
    Case("payload-shorter", _edit_blob("conv", _payload_resize(-1)), "conv", "bytes but its header declares"),
    Case("payload-longer", _edit_blob("fc", _payload_resize(3)), "fc", "bytes but its header declares"),
    # sizes that would need gigabytes: refused before anything of that size is allocated
    Case("giant-dims", _edit_blob("conv", lambda b: _put("dims", "I", 1 << 20, 1)(_put("dims", "I", 1 << 20)(b))),
         "conv", "exceeds the limit"),
    Case("giant-token-count", _edit_blob("fc", _put("T", "I", 2**31)), "fc", "tokens for a tensor of 2880 elements"),
    Case("giant-payload-size", _edit_blob("fc", _put("P", "I", 2**32 - 1)), "fc", "bytes but its header declares"),
    Case("giant-scale-count", _edit_blob("conv", _put("A", "I", 2**32 - 1)), "conv",
         r"scale count A=4294967295 must be 1 or dims\[0\]=8"),
    # the Huffman code
    Case("huffman-oversubscribed", _edit_blob("conv", _table(lambda n: bytes([0x11]) * (n - 1) + bytes([0x01]))), "conv",
         "over-subscribed"),
    Case("huffman-incomplete", _edit_blob("conv", _table(lambda n: bytes([0x01]) + bytes(n - 1), payload_msb=True)),
         "conv", "matches no code"),
    Case("huffman-empty", _edit_blob("fc", _table(lambda n: bytes(n))), "fc", "code table is empty"),
    # the weight tensor itself
    Case("zero-length-weight", _edit_model(_empty_weight), "conv", "blob of 0 bytes is too short"),
    Case("weight-is-graph-input", _edit_model(_weight_as_graph_input), "conv",
         r"input 1 \(W\) must be a constant initializer"),
    Case("weight-is-computed", _edit_model(_weight_computed), "conv", r"input 1 \(W\) must be a constant initializer"),
    # float parameters: scales and centres in the blob, clip bounds and bias around it
    Case("nan-scale", _edit_blob("conv", _put("scales", "f", NAN, 0)), "conv",
         r"alpha\[0\] must be finite and positive, got nan"),
    Case("inf-scale", _edit_blob("fc", _put("scales", "f", INF, 7)), "fc",
         r"alpha\[7\] must be finite and positive, got inf"),
    Case("negative-scale", _edit_blob("conv", _put("scales", "f", -0.5, 3)), "conv", r"alpha\[3\] must be finite"),
    Case("nan-centre", _edit_blob("conv", _put("centre0", "f", NAN)), "conv", "the centres must be finite"),
    Case("nan-clip-bound", _attr("conv", clip_max=NAN), "conv", "clip_min and clip_max must be numbers"),
    Case("inverted-clip-bounds", _attr("conv", clip_min=7.0, clip_max=6.0), "conv", "clip_min must not exceed clip_max"),
    Case("nan-bias", _bias_value("conv", 3, NAN), "conv", r"bias B holds NaN or Inf \(element 3"),
    Case("inf-bias", _bias_value("fc", 9, -INF), "fc", r"bias B holds NaN or Inf \(element 9"),
]

BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"
