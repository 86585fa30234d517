"""Loading, validating and saving ONNX models, and folding BatchNormalization into Conv."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from fq_onnx.errors import FqOnnxError

# Above this the protobuf cannot hold the weights inline.
PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model with its external data, run the checker and shape inference.

    Raises FqOnnxError naming the file for a missing file, a file that is not ONNX, or a model
    the checker rejects.
    """
    path = Path(path)
    if not path.exists():
        raise FqOnnxError(f"{path}: no such file")
    if path.is_dir():
        raise FqOnnxError(f"{path}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except DecodeError:
        raise FqOnnxError(f"{path}: not an ONNX model (the file does not parse as an ONNX protobuf)") from None
    except (OSError, ValueError) as exc:
        raise FqOnnxError(f"{path}: cannot be read as ONNX: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FqOnnxError(f"{path}: not an ONNX model (it parses, but holds no graph)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FqOnnxError(f"{path}: the ONNX checker rejects this model: {first}") from None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help, not a requirement (custom ops, odd models)
        pass
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Write ``model`` atomically (temporary file in the same directory, then rename).

    Models above protobuf's 2 GB limit get their weights in one external data file beside it.
    Returns the size in bytes of the written .onnx file.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FqOnnxError(f"{path}: the output directory {directory} does not exist")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    try:
        if model.ByteSize() > PROTOBUF_LIMIT:
            data_name = path.name + ".data"
            onnx.save_model(model, temp, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
        else:
            with open(temp, "wb") as handle:
                handle.write(model.SerializeToString(deterministic=True))
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path.stat().st_size


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a graph constant (initializer or Constant node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if isinstance(attrs.get("value"), gs.Constant):
            return np.asarray(attrs["value"].values)
    return None


def fold_batchnorms(graph: gs.Graph) -> list[str]:
    """Fold each inference BatchNormalization that directly follows a Conv into that Conv.

    Only folds when the Conv's output feeds nothing else and every parameter is constant.
    Returns the names of the folded BatchNormalization nodes.
    """
    folded = []
    outputs = set(id(t) for t in graph.outputs)
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or len(bn.outputs) != 1 or not bn.inputs:
            continue
        conv_out = bn.inputs[0]
        if len(conv_out.inputs) != 1 or conv_out.inputs[0].op != "Conv":
            continue
        conv = conv_out.inputs[0]
        if len(conv_out.outputs) != 1 or id(conv_out) in outputs:
            continue
        params = [constant_value(t) for t in bn.inputs[1:5]]
        weight = constant_value(conv.inputs[1]) if len(conv.inputs) > 1 else None
        bias = constant_value(conv.inputs[2]) if len(conv.inputs) > 2 else None
        if any(p is None for p in params) or weight is None or (len(conv.inputs) > 2 and bias is None):
            continue
        scale, shift, mean, var = (p.astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_weight = weight.astype(np.float64) * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        old_bias = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
        new_bias = (old_bias - mean) * factor + shift
        name = conv.name or bn.name
        data = conv.inputs[0]
        conv.inputs.clear()
        conv.inputs.extend([
            data,
            gs.Constant(f"{name}/folded_weight", new_weight.astype(weight.dtype)),
            gs.Constant(f"{name}/folded_bias", new_bias.astype(weight.dtype)),
        ])
        conv.outputs = bn.outputs
        bn.outputs = []
        folded.append(bn.name)
    if folded:
        graph.cleanup()
    return folded
