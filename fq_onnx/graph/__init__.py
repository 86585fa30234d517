"""Editing the ONNX graph. This module: loading, validating and saving ONNX models, folding
BatchNormalization into Conv, the constants behind tensors; ``fq_onnx.graph.rewrite``: the
registry that turns Conv, Gemm and MatMul into ShiftConv nodes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx import external_data_helper, numpy_helper

from fq_onnx.errors import FqOnnxError

# Above this the protobuf cannot hold the weights inline.
PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: str | os.PathLike, *, lazy_external: bool = False) -> onnx.ModelProto:
    """Load a model, run the checker and shape inference.

    Weights kept in external data files are validated (inside the model's directory, within
    their file) and, with ``lazy_external``, left on disk: ``constant_value`` reads one when it
    is needed and the graph never caches it, so converting a model bigger than memory (or than
    protobuf's 2 GB) streams; ``save_model`` copies the ones left uncompressed. Without it they
    are read into the model (what onnxruntime needs to run it from memory).

    Raises FqOnnxError naming the file for a missing file, a file that is not ONNX, a model
    the checker rejects, or external data that is missing or out of bounds.
    """
    path = Path(path)
    if not path.exists():
        raise FqOnnxError(f"{path}: no such file")
    if path.is_dir():
        raise FqOnnxError(f"{path}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise FqOnnxError(f"{path}: not an ONNX model (the file does not parse as an ONNX protobuf)") from None
    except (OSError, ValueError) as exc:
        raise FqOnnxError(f"{path}: cannot be read as ONNX: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FqOnnxError(f"{path}: not an ONNX model (it parses, but holds no graph)")
    external = [t for t in _all_tensors(model) if external_data_helper.uses_external_data(t)]
    for tensor in external:
        _locate_external(tensor, path)
    try:
        # The in-memory checker would look for external files relative to the working directory.
        onnx.checker.check_model(str(path) if external else model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FqOnnxError(f"{path}: the ONNX checker rejects this model: {first}") from None
    if external and not lazy_external:
        total = model.ByteSize() + sum(_external_length(t) for t in external)
        if total > PROTOBUF_LIMIT:
            raise FqOnnxError(f"{path}: {total / 2**30:.1f} GiB of weights do not fit in one protobuf (2 GiB); "
                              "this operation needs the whole model in memory")
        for tensor in external:
            tensor.raw_data = read_external(tensor).tobytes()
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help, not a requirement (custom ops, odd models)
        pass
    return model


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers and constant attributes of the graph and of every subgraph."""
    return list(external_data_helper._get_all_tensors(model))


def _external_length(tensor: onnx.TensorProto) -> int:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize


def _locate_external(tensor: onnx.TensorProto, model_path: Path) -> None:
    """Checks where an external tensor's data lives and records that directory in the tensor
    (the "basepath" key of ONNX's external data), so it can be read without the model path."""
    info = external_data_helper.ExternalDataInfo(tensor)
    base = model_path.resolve().parent
    where = f"{model_path}: initializer '{tensor.name}' keeps its data in '{info.location}'"
    file = (base / info.location).resolve()
    if Path(info.location).is_absolute() or base not in file.parents:
        raise FqOnnxError(f"{where}, outside the model's directory")
    if not file.is_file():
        raise FqOnnxError(f"{where}, which does not exist")
    offset = int(info.offset or 0)
    needed = _external_length(tensor)
    length = needed if info.length is None else int(info.length)
    if length != needed:
        raise FqOnnxError(f"{where}: its length {length} is not the {needed} bytes of shape {list(tensor.dims)}")
    if offset + length > file.stat().st_size:
        raise FqOnnxError(f"{where}: bytes {offset}..{offset + length} are beyond the file's "
                          f"{file.stat().st_size}")
    for entry in list(tensor.external_data):
        if entry.key == "basepath":
            tensor.external_data.remove(entry)
    tensor.external_data.add(key="basepath", value=str(base))


def read_external(tensor: onnx.TensorProto) -> np.ndarray:
    """The values of a tensor kept in an external file (located by ``load_model``)."""
    info = external_data_helper.ExternalDataInfo(tensor)
    file = _external_file(tensor)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    count = int(np.prod(tensor.dims, dtype=np.int64))
    with open(file, "rb") as handle:
        handle.seek(int(info.offset or 0))
        data = np.fromfile(handle, dtype=dtype, count=count)
    if data.size != count:
        raise FqOnnxError(f"{file}: ends inside the data of '{tensor.name}'")
    return data.astype(dtype.newbyteorder("="), copy=False).reshape(tuple(tensor.dims))


def check_output_directory(path: str | os.PathLike) -> Path:
    """The directory ``path`` will be written into; FqOnnxError unless it exists."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FqOnnxError(f"{path}: the output directory {directory} does not exist")
    return directory


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Write ``model`` atomically (temporary files in the same directory, then renames).

    The model is self-contained when it can be. Tensors still kept in an input's external data
    (layers left uncompressed in a lazily loaded model) are copied, in chunks, into one data file
    ``<name>.data`` beside it; so are the largest inline tensors of a model above protobuf's
    2 GB limit, until the rest fits. Returns the size in bytes of the written .onnx file.
    """
    path = Path(path)
    directory = check_output_directory(path)
    external = [t for t in _all_tensors(model) if external_data_helper.uses_external_data(t)]
    data_path = None
    if external or model.ByteSize() > PROTOBUF_LIMIT:
        data_path = directory / (path.name + ".data")
        if data_path.resolve() in {_external_file(t).resolve() for t in external}:
            raise FqOnnxError(f"{path}: its data file {data_path.name} would overwrite the input's external data; "
                              "choose another output name")
    temps = []
    try:
        if data_path is not None:
            temps.append(_temp_beside(data_path))
            with open(temps[-1], "r+b") as data:
                _write_external(model, external, data, data_path.name)
        temps.append(_temp_beside(path))
        with open(temps[-1], "wb") as handle:
            handle.write(model.SerializeToString(deterministic=True))
        if data_path is not None:  # the data first: the .onnx never names a missing file
            os.replace(temps[0], data_path)
        os.replace(temps[-1], path)
    except BaseException:
        for temp in temps:
            if os.path.exists(temp):
                os.unlink(temp)
        raise
    if data_path is not None:  # the in-memory model stays readable (read_external)
        for tensor in _all_tensors(model):
            if external_data_helper.uses_external_data(tensor):
                tensor.external_data.add(key="basepath", value=str(directory.resolve()))
    return path.stat().st_size


def _temp_beside(path: Path) -> str:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    return temp


# Tensor offsets in a written data file are multiples of this, so onnxruntime can map them.
_ALIGN = 4096
_CHUNK = 16 << 20


def _write_external(model: onnx.ModelProto, external: list[onnx.TensorProto], data, name: str) -> None:
    """Fill the data file: the external tensors (copied chunk by chunk), then the largest inline
    tensors while the model is above the protobuf limit; point those tensors at it."""
    def place(tensor: onnx.TensorProto, length: int) -> None:
        offset = -(-data.tell() // _ALIGN) * _ALIGN
        data.seek(offset)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", name), ("offset", str(offset)), ("length", str(length))):
            tensor.external_data.add(key=key, value=value)

    buffer = bytearray(min(_CHUNK, max((_external_length(t) for t in external), default=0)))
    for tensor in external:
        info = external_data_helper.ExternalDataInfo(tensor)
        length = _external_length(tensor)
        with open(_external_file(tensor), "rb") as source:
            source.seek(int(info.offset or 0))
            place(tensor, length)
            left = length
            while left:
                view = memoryview(buffer)[: min(left, len(buffer))]
                got = source.readinto(view)
                if not got:
                    raise FqOnnxError(f"{source.name}: ends inside the data of '{tensor.name}'")
                data.write(view[:got])
                left -= got
    inline = sorted((t for t in _all_tensors(model) if not external_data_helper.uses_external_data(t)),
                    key=lambda t: t.ByteSize(), reverse=True)
    for tensor in inline:
        if model.ByteSize() <= PROTOBUF_LIMIT:
            break
        raw = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
        name_, dims, dtype = tensor.name, list(tensor.dims), tensor.data_type
        tensor.Clear()
        tensor.name, tensor.data_type = name_, dtype
        tensor.dims.extend(dims)
        place(tensor, len(raw))
        data.write(raw)
        del raw


def _external_file(tensor: onnx.TensorProto) -> Path:
    info = external_data_helper.ExternalDataInfo(tensor)
    return Path(info.basepath) / info.location


def _graph_constant(tensor: gs.Tensor) -> gs.Constant | None:
    """The constant ``tensor`` is: an initializer, or a Constant node's output; else None."""
    if not isinstance(tensor, gs.Constant) and len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        tensor = tensor.inputs[0].attrs.get("value")
    return tensor if isinstance(tensor, gs.Constant) else None


def float16_source(tensor: gs.Tensor) -> gs.Constant | None:
    """The float16 constant behind ``tensor`` when it is ``Cast(to=float)`` of one (a weight
    stored in half precision, as the allocator's float16 layers are), else None. Reads no data."""
    if isinstance(tensor, gs.Constant) or len(tensor.inputs) != 1:
        return None
    cast = tensor.inputs[0]
    if cast.op != "Cast" or cast.attrs.get("to") != onnx.TensorProto.FLOAT or len(cast.inputs) != 1:
        return None
    source = _graph_constant(cast.inputs[0])
    return source if source is not None and source.dtype == np.float16 else None


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a graph constant (initializer or Constant node output, or float16 constant
    cast to float), else None."""
    source = float16_source(tensor)
    constant = source or _graph_constant(tensor)
    if constant is None:
        return None
    lazy = constant._values
    if isinstance(lazy, LazyValues) and external_data_helper.uses_external_data(lazy.tensor):
        value = read_external(lazy.tensor)  # read per use, never cached in the graph: converting streams
    else:
        value = np.asarray(constant.values)
    return value.astype(np.float32) if source is not None else value


def is_external(tensor: gs.Tensor) -> bool:
    """Whether ``constant_value(tensor)`` reads an external data file (each time it is called)."""
    constant = float16_source(tensor) or _graph_constant(tensor)
    lazy = getattr(constant, "_values", None)
    return isinstance(lazy, LazyValues) and external_data_helper.uses_external_data(lazy.tensor)


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
