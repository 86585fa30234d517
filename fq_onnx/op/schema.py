"""The ``fq_onnx.ShiftConv`` schema, registered with onnx so its checker and shape inference know it.

Registered once when ``fq_onnx`` is imported. Without it ``onnx.checker.check_model(model,
full_check=True)`` and ``onnx.shape_inference.infer_shapes(model, strict_mode=True)`` reject a
compressed model (unknown op), and tools built on onnx's shape inference (onnxslim, onnxsim)
lose every shape after the first ShiftConv.

Y's shape needs M, the number of outputs. The converter stores it as the attribute ``M``
(as onnxruntime's MatMulNBits stores N), because tools that run onnx's inference node by node
(onnxslim) do not hand a custom op its initializers. When the weight blob is at hand (onnx's own
``infer_shapes`` and ``check_model(full_check=True)`` pass constant initializers) its header
(docs/FORMAT.md) is read as well: it checks the blob, gives M for models written before the
attribute existed, and an ``M`` that disagrees with the blob is an error. With neither, M stays
unknown rather than guessed.
"""

from __future__ import annotations

import re
import warnings

import onnx
from onnx import AttributeProto, TensorProto, TypeProto, helper

from fq_onnx.op import geometry

DOMAIN = "fq_onnx"
OP_TYPE = "ShiftConv"
VERSION = 1

#: Why the schema is not registered (None when it is).
note: str | None = None
_schema = None  # keeps the schema and its Python inference function alive for the process


def _attributes():
    """Every attribute of docs/SHIFTCONV.md, with its type and default."""
    Attribute = onnx.defs.OpSchema.Attribute
    AttrType = onnx.defs.OpSchema.AttrType

    def default(name, value, doc):
        return Attribute(name, helper.make_attribute(name, value), doc)

    def optional(name, kind, doc):
        return Attribute(name, kind, doc, required=False)

    return [
        default("kind", "conv", '"conv" (X is [N, C, D1(, D2)]) or "dense" (X is [..., K]).'),
        optional("M", AttrType.INT, "Outputs (channels or features): the stored weight's dims[0]."),
        default("auto_pad", "NOTSET", "conv: as ONNX Conv."),
        optional("dilations", AttrType.INTS, "conv: as ONNX Conv (default 1 per spatial axis)."),
        default("group", 1, "conv: as ONNX Conv."),
        optional("kernel_shape", AttrType.INTS, "conv: as ONNX Conv; must equal the stored weight's."),
        optional("pads", AttrType.INTS, "conv: as ONNX Conv (default 0)."),
        optional("strides", AttrType.INTS, "conv: as ONNX Conv (default 1 per spatial axis)."),
        default("activation", "none", '"none", "relu" or "clip", applied after the bias.'),
        default("clip_min", float("-inf"), 'Lower bound of "clip".'),
        default("clip_max", float("inf"), 'Upper bound of "clip".'),
        default("w2", 0.0, "Wasserstein separation at conversion (informational)."),
        default("rel_error", 0.0, "||W - W_hat|| / ||W|| at conversion (informational)."),
        default("source_op", "", "The op the node replaced: Conv, Gemm or MatMul (informational)."),
        optional("out_error", AttrType.FLOAT, "Relative output error on the calibration data (informational)."),
        # integer mode (docs/SHIFTCONV.md "Integer mode"): act_bits selects it
        optional("act_bits", AttrType.INT, "Integer mode: bits of a quantized input activation (2..8)."),
        optional("act_scale_log2", AttrType.INT, "Integer mode: the input scale is 2^act_scale_log2."),
        optional("act_signed", AttrType.INT, "Integer mode: 1 signed inputs, 0 non-negative inputs."),
        optional("act_clip_rate", AttrType.FLOAT, "Integer mode: calibration values clipped (informational)."),
        optional("act_fallback", AttrType.STRING, "Why the converter kept float activations (informational)."),
    ]


def build_schema():
    """The ShiftConv ``OpSchema`` with its type-and-shape inference function attached."""
    OpSchema = onnx.defs.OpSchema
    Param = OpSchema.FormalParameter
    schema = OpSchema(
        OP_TYPE, DOMAIN, VERSION,
        "A Conv, Gemm or MatMul whose weight is stored compressed (fq-onnx docs/SHIFTCONV.md, docs/FORMAT.md).",
        inputs=[Param("X", "tensor(float)", "Activations."),
                Param("W", "tensor(uint8)", "One compressed weight tensor: a 1-D constant initializer."),
                Param("B", "tensor(float)", "Bias [M].", param_option=OpSchema.FormalParameterOption.Optional)],
        outputs=[Param("Y", "tensor(float)", "Result.")],
        attributes=_attributes(),
    )
    schema.set_type_and_shape_inference_function(infer)
    return schema


def register() -> bool:
    """Register the schema with onnx unless it is there already; True when onnx knows ShiftConv.

    With an onnx that lacks the Python registration API (before 1.16) nothing is registered,
    ``note`` says why and a warning is issued: everything else works, only onnx's checker
    and shape inference do not know the op.
    """
    global note, _schema
    defs = onnx.defs
    if not (hasattr(defs, "register_schema") and hasattr(defs.OpSchema, "set_type_and_shape_inference_function")):
        note = (f"onnx {onnx.__version__} cannot register op schemas from Python (needs onnx >= 1.16): "
                f"onnx.checker and shape inference will not know {DOMAIN}.{OP_TYPE}")
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        return False
    if not defs.has(OP_TYPE, DOMAIN):
        _schema = build_schema()
        defs.register_schema(_schema)
    note = None
    return True


# ---------------------------------------------------------------------------------------------
# Type and shape inference. Errors raised here become onnx InferenceErrors: fatal in strict
# mode (and in checker full_check), skipped with the output left unknown otherwise.

class ShapeError(onnx.shape_inference.InferenceError):
    """A ShiftConv node whose shapes or attributes do not fit together (names the node)."""


def _attr(ctx, name, default):
    attr = ctx.get_attribute(name)  # None when absent: onnx does not apply schema defaults here
    if attr is None:
        return default
    if attr.type == AttributeProto.INTS:
        return list(attr.ints)
    if attr.type == AttributeProto.INT:
        return attr.i
    if attr.type == AttributeProto.STRING:
        return attr.s.decode()
    return helper.get_attribute_value(attr)


def _weight_dims(ctx, where: str) -> list[int] | None:
    """Dims of the stored weight from the blob header, checked; None when the blob is not at hand."""
    from fq_onnx.format import fmt

    tensor = ctx.get_input_data(1)
    if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
        return None
    from onnx import numpy_helper

    try:
        return list(fmt.read_header(numpy_helper.to_array(tensor).tobytes()).shape)
    except fmt.FormatError as exc:
        raise ShapeError(f"{where}: weight blob: {exc}") from None


def _dims(type_proto) -> list | None:
    """The input's dims (Dimension protos), or None when its rank is unknown."""
    if type_proto is None or not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return list(type_proto.tensor_type.shape.dim)


def _value(dim) -> int | None:
    return dim.dim_value if dim.HasField("dim_value") else None


def _conv_shape(ctx, where, x_dims, w_dims, m) -> list | None:
    kernel = _attr(ctx, "kernel_shape", w_dims[2:] if w_dims is not None else None)
    kind_rank = len(w_dims) if w_dims is not None else (len(kernel) + 2 if kernel is not None else None)
    if x_dims is not None and len(x_dims) not in (3, 4):
        raise ShapeError(f"{where}: conv input of rank {len(x_dims)} (1-D or 2-D convolution needs rank 3 or 4)")
    if w_dims is not None and kind_rank not in (3, 4):
        raise ShapeError(f"{where}: conv weight of shape {w_dims} (rank 3 or 4 expected)")
    if x_dims is not None and w_dims is not None and len(x_dims) != kind_rank:
        raise ShapeError(f"{where}: input rank {len(x_dims)} does not match the weight's {w_dims}")
    rank = len(x_dims) if x_dims is not None else kind_rank
    if rank is None:
        return None
    spatial = rank - 2
    group = _attr(ctx, "group", 1)
    auto_pad = _attr(ctx, "auto_pad", "NOTSET")
    strides = _attr(ctx, "strides", [1] * spatial)
    dilations = _attr(ctx, "dilations", [1] * spatial)
    pads = _attr(ctx, "pads", [0] * (2 * spatial))
    if auto_pad not in geometry.AUTO_PADS:
        raise ShapeError(f"{where}: auto_pad {auto_pad!r} is not one of {', '.join(geometry.AUTO_PADS)}")
    if auto_pad != "NOTSET" and ctx.get_attribute("pads") is not None:
        raise ShapeError(f"{where}: pads and auto_pad cannot both be given")
    if group < 1:
        raise ShapeError(f"{where}: group {group} must be >= 1")
    for name, values, length in (("strides", strides, spatial), ("dilations", dilations, spatial),
                                 ("pads", pads, 2 * spatial)):
        if len(values) != length:
            raise ShapeError(f"{where}: {name} {values} needs {length} values for a {spatial}-D convolution")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise ShapeError(f"{where}: strides and dilations must be >= 1 and pads >= 0")
    if kernel is not None and len(kernel) != spatial:
        raise ShapeError(f"{where}: kernel_shape {kernel} does not fit a {spatial}-D convolution")
    if m is not None and m % group:
        raise ShapeError(f"{where}: {m} output channels do not split into {group} groups")
    if w_dims is not None:
        per_group = w_dims[1]
        if list(kernel) != w_dims[2:]:
            raise ShapeError(f"{where}: kernel_shape {kernel} differs from the stored weight's {w_dims[2:]}")
        channels = _value(x_dims[1]) if x_dims is not None else None
        if channels is not None and channels != per_group * group:
            raise ShapeError(f"{where}: input has {channels} channels, the weight {w_dims} with group {group} "
                             f"expects {per_group * group}")
    out = [None, m]
    for axis in range(spatial):
        size = _value(x_dims[2 + axis]) if x_dims is not None else None
        if size is None or kernel is None:
            same = auto_pad.startswith("SAME") and strides[axis] == 1 and x_dims is not None
            out.append(x_dims[2 + axis] if same else None)  # SAME at stride 1 keeps even a symbolic size
            continue
        length = geometry.output_size(size, kernel[axis], strides[axis], dilations[axis],
                                  pads[axis] + pads[axis + spatial], auto_pad)
        if length < 1:
            raise ShapeError(f"{where}: spatial axis {axis} of size {size} is smaller than the dilated kernel "
                             f"({kernel[axis]}, dilation {dilations[axis]}, pads {pads[axis]}+{pads[axis + spatial]})")
        out.append(length)
    return out


def _dense_shape(where, x_dims, w_dims, m) -> list | None:
    if w_dims is not None and len(w_dims) != 2:
        raise ShapeError(f"{where}: dense weight of shape {w_dims} (2-D [M, K] expected)")
    if x_dims is None:
        return None
    if not x_dims:
        raise ShapeError(f"{where}: dense input must have rank >= 1")
    k = _value(x_dims[-1])
    if w_dims is not None and k is not None and k != w_dims[1]:
        raise ShapeError(f"{where}: input has {k} features, the weight {w_dims} expects {w_dims[1]}")
    return [None] * (len(x_dims) - 1) + [m]


def infer(ctx) -> None:
    """Y is float32; its shape follows ONNX Conv (kind "conv") or X[..., K] -> [..., M] ("dense")."""
    # onnx names a node "node ShiftConv[fq_onnx] (name)"; the messages say "ShiftConv name"
    named = re.search(r"\(([^()]*)\)\s*$", ctx.get_display_name())
    where = f"{OP_TYPE} {named.group(1) if named else ctx.get_display_name()}"
    x_type = ctx.get_input_type(0)
    if x_type is not None and x_type.HasField("tensor_type") and x_type.tensor_type.elem_type not in (0, TensorProto.FLOAT):
        raise ShapeError(f"{where}: X must be float32")
    kind = _attr(ctx, "kind", "conv")
    w_dims = _weight_dims(ctx, where)
    m = _attr(ctx, "M", None)
    if w_dims is not None:
        if m is not None and m != w_dims[0]:
            raise ShapeError(f"{where}: attribute M={m}, the weight stores {w_dims[0]} outputs")
        m = w_dims[0]
    if m is not None and m < 1:
        raise ShapeError(f"{where}: attribute M={m} must be >= 1")
    x_dims = _dims(x_type)
    if kind == "conv":
        shape = _conv_shape(ctx, where, x_dims, w_dims, m)
    elif kind == "dense":
        shape = _dense_shape(where, x_dims, w_dims, m)
    else:
        raise ShapeError(f"{where}: kind {kind!r} is not 'conv' or 'dense'")
    if m is not None and ctx.get_num_inputs() > 2 and ctx.has_input(2):
        bias = _dims(ctx.get_input_type(2))
        if bias is not None and (len(bias) != 1 or _value(bias[0]) not in (None, m)):
            raise ShapeError(f"{where}: bias of shape {[_value(d) for d in bias]} does not match {m} outputs")
    out = TypeProto()
    out.tensor_type.elem_type = TensorProto.FLOAT
    if shape is not None:
        dims = out.tensor_type.shape.dim
        for index, value in enumerate(shape):
            dim = dims.add()
            if isinstance(value, int):
                dim.dim_value = value
            elif value is not None:
                dim.CopyFrom(value)
            elif x_dims is not None and (kind == "conv" and index == 0 or kind == "dense" and index < len(shape) - 1):
                dim.CopyFrom(x_dims[index])  # batch (and leading) axes pass through, symbolic names too
    ctx.set_output_type(0, out)


# Importing this module registers the schema (fq_onnx/_onnx_hook.py relies on it).
register()
