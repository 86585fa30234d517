"""Models with external data: conversion streams one layer at a time, the output keeps what it
must outside the protobuf, and onnxruntime runs the result.

The >2 GB conversion itself takes minutes (bench/large_model.py, docs/LARGE_MODELS.md); these
tests run the same code path on a ~100 MB model and assert its memory bound.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fq_onnx import api, graph, reference, runtime
from fq_onnx.errors import FqOnnxError

BENCH = Path(__file__).resolve().parent.parent / "bench" / "large_model.py"
_spec = importlib.util.spec_from_file_location("large_model", BENCH)
large_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(large_model)


def _data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def _outputs_agree(path: Path, input_shape) -> None:
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    got = runtime.session(path).run(None, {"X": x})[0]
    expected = reference.run(path, {"X": x})[0]
    assert np.isfinite(got).all()
    assert np.abs(expected).max() > 1e-6  # activations neither vanished nor blew up on the way
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_conversion_streams_and_keeps_uncompressed_layers_external(tmp_path):
    """~100 MB of weights in external data: every 8th layer compressed, the rest excluded. Peak
    memory grows by well under the weights (an eager load alone would add all of them), and the
    excluded layers are copied into the output's own data file."""
    source, output = tmp_path / "big.onnx", tmp_path / "big.fq.onnx"
    info = large_model.build(source, 100 << 20, channels=128, scale=0.05)  # activations stay O(1) over 170 layers
    layers = info["layers"]
    excluded = tuple(f"conv{i}" for i in range(layers) if i % 8)
    result = large_model.measure(source, output, 0.5, excluded)
    growth = result["hwm"] - result["hwm_before"]
    assert growth < 0.3 * info["weight_bytes"], f"peak RSS grew by {growth >> 20} MiB"

    per_layer = info["weight_bytes"] // layers
    data = _data_file(output)
    assert data.stat().st_size >= len(excluded) * per_layer
    assert data.stat().st_size < (len(excluded) + 1) * (per_layer + graph._ALIGN)
    report = api.inspect_model(output)
    assert sum(row.mode == "float" for row in report.layers) == len(excluded)
    assert sum(row.mode != "float" for row in report.layers) == layers - len(excluded)
    _outputs_agree(output, info["input_shape"])
    # The input and its data file are untouched and nothing else was left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, _data_file(source).name, output.name,
                                                                 data.name])


def test_fully_compressed_output_is_self_contained(tmp_path):
    source, output = tmp_path / "m.onnx", tmp_path / "out" / "m.fq.onnx"
    output.parent.mkdir()
    info = large_model.build(source, 1 << 20, channels=64)
    api.convert(source, output, sparsity=0.6)
    assert not _data_file(output).exists()
    model = onnx.load(str(output), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    _outputs_agree(output, info["input_shape"])


def test_output_above_the_protobuf_limit_moves_its_largest_tensors_out(tmp_path, monkeypatch):
    """The > 2 GB save path, with the limit lowered so that a 1 MB model crosses it."""
    source, output = tmp_path / "m.onnx", tmp_path / "m.fq.onnx"
    info = large_model.build(source, 1 << 20, channels=64)
    onnx.save(onnx.load(str(source)), str(source))  # the same model with its weights inline
    _data_file(source).unlink()
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 300_000)
    api.convert(source, output, sparsity=0.6, exclude=["conv0", "conv1"])
    assert output.stat().st_size <= 300_000 and _data_file(output).stat().st_size >= 64 * 64 * 9 * 4
    monkeypatch.undo()
    _outputs_agree(output, info["input_shape"])


def test_output_may_not_overwrite_the_inputs_data(tmp_path):
    source = tmp_path / "a.onnx"
    large_model.build(source, 1 << 20, channels=64)
    model = onnx.load(str(source), load_external_data=False)
    for t in model.graph.initializer:  # the input's data file is named like the output's would be
        t.external_data[0].value = "b.onnx.data"
    onnx.save(model, str(source))
    _data_file(source).rename(tmp_path / "b.onnx.data")
    before = (tmp_path / "b.onnx.data").read_bytes()
    with pytest.raises(FqOnnxError, match="would overwrite the input's external data"):
        api.convert(source, tmp_path / "b.onnx", exclude=["conv0"])
    assert (tmp_path / "b.onnx.data").read_bytes() == before and not (tmp_path / "b.onnx").exists()


def _external_model(tmp_path: Path, location: str, offset: int = 0, length: int | None = None) -> Path:
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    weight.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        weight.external_data.add(key=key, value=value)
    node = helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 5, 5])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "sub" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "keeps its data in 'w.bin', which does not exist"),
    ("outside", "keeps its data in '../w.bin', outside the model's directory"),
    ("short", r"bytes 0\.\.432 are beyond the file's 100"),
    ("length", "its length 8 is not the 432 bytes of shape"),
])
def test_bad_external_data_is_a_clear_error(tmp_path, case, message):
    if case == "outside":
        (tmp_path / "w.bin").write_bytes(bytes(432))
        path = _external_model(tmp_path, "../w.bin")
    else:
        path = _external_model(tmp_path, "w.bin", length=8 if case == "length" else None)
        if case != "missing":
            (path.parent / "w.bin").write_bytes(bytes(100 if case == "short" else 432))
    for call in (lambda: api.convert(path, tmp_path / "o.onnx"), lambda: api.inspect_model(path)):
        with pytest.raises(FqOnnxError, match=message) as info:
            call()
        assert str(path) in str(info.value) and "initializer 'W'" in str(info.value)
    assert not (tmp_path / "o.onnx").exists()


def test_calibration_reads_external_data_into_memory(tmp_path, monkeypatch):
    """With --calib the model runs in onnxruntime from memory: its external data is loaded, and
    a model above the protobuf limit is refused with a message saying why."""
    source, output = tmp_path / "m.onnx", tmp_path / "m.fq.onnx"
    info = large_model.build(source, 1 << 19, channels=32)
    model = onnx.load(str(source), load_external_data=False)
    for value in (model.graph.input[0], model.graph.output[0]):  # calibration feeds batches
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(source))
    calib = np.random.default_rng(1).standard_normal((16, *info["input_shape"][1:])).astype(np.float32)
    api.convert(source, output, calib=calib, calib_size=16, sparsity=0.5)
    assert not _data_file(output).exists()
    x = calib[:1]
    assert runtime.session(output).run(None, {"X": x})[0].shape == tuple(info["input_shape"])
    monkeypatch.setattr(graph, "PROTOBUF_LIMIT", 100_000)
    with pytest.raises(FqOnnxError, match="do not fit in one protobuf.*needs the whole model in memory"):
        api.convert(source, tmp_path / "again.onnx", calib=calib, calib_size=16)
