"""The converter on awkward inputs: it compresses what it can, says why it skips the rest, and
never leaves a partial output behind."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import conv_model, save
from onnx import TensorProto, helper, numpy_helper

from fq_onnx import api, graph, reference
from fq_onnx.errors import FqOnnxError


def test_nan_weights_are_skipped_with_a_reason(tmp_path, rng):
    model = conv_model((1, 3, 6, 6), (4, 3, 3, 3), rng)
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[0, 0, 0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "W"))
    with pytest.raises(FqOnnxError, match="NaN or Inf"):
        api.convert(save(model, tmp_path / "in.onnx"), tmp_path / "out.onnx")


def test_empty_graph_is_a_clear_error(tmp_path):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g", [x],
                                                [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(FqOnnxError, match="nothing to compress"):
        api.convert(save(model, tmp_path / "in.onnx"), tmp_path / "out.onnx")


def test_duplicate_and_missing_node_names_get_unique_ones(tmp_path, rng):
    model = conv_model((1, 3, 6, 6), (4, 3, 3, 3), rng, pads=[1, 1, 1, 1])
    second = helper.make_node("Conv", ["c", "W2"], ["c2"], name="conv", pads=[1, 1, 1, 1])
    model.graph.initializer.append(numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "W2"))
    model.graph.node.insert(1, second)
    model.graph.node[-1].input[0] = "c2"
    third = model.graph.node[0]
    third.name = ""
    report = api.convert(save(model, tmp_path / "in.onnx"), tmp_path / "out.onnx", sparsity=0.0, bits=7, min_weights=0)
    names = [row.name for row in report.layers]
    assert len(names) == len(set(names)) == 2 and "conv" in names


def test_shared_weight_used_by_two_nodes(tmp_path, rng):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 8])
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["a"], name="first"),
             helper.make_node("MatMul", ["a", "W"], ["Y"], name="second")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 8])], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    src = save(model, tmp_path / "in.onnx")
    report = api.convert(src, tmp_path / "out.onnx", sparsity=0.0, bits=7, min_weights=0)
    assert len(report.layers) == 2
    inputs = {"X": rng.standard_normal((2, 8)).astype(np.float32)}
    got = reference.run(str(tmp_path / "out.onnx"), inputs)[0]
    expected = ort.InferenceSession(src).run(None, inputs)[0]
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.5


def test_conv_inside_an_if_body_is_listed_not_compressed(tmp_path, rng):
    inner_w = numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "Wi")
    body = helper.make_graph([helper.make_node("Conv", ["X", "Wi"], ["yi"], name="inner_conv")], "then", [],
                             [helper.make_tensor_value_info("yi", TensorProto.FLOAT, [None] * 4)], [inner_w])
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["yo"], name="pass")], "else", [],
                              [helper.make_tensor_value_info("yo", TensorProto.FLOAT, [None] * 4)])
    outer = conv_model((1, 3, 6, 6), (3, 3, 3, 3), rng, pads=[1, 1, 1, 1])
    outer.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    outer.graph.node.append(helper.make_node("If", ["flag"], ["branch"], name="maybe", then_branch=body,
                                             else_branch=other))
    outer.graph.output.append(helper.make_tensor_value_info("branch", TensorProto.FLOAT, [None] * 4))
    report = api.convert(save(outer, tmp_path / "in.onnx"), tmp_path / "out.onnx", min_weights=0)
    assert ("inner_conv", "Conv") in [(n, op) for n, op, _ in report.skipped]
    assert any("inside the body of If maybe" in why for _, _, why in report.skipped)


def test_failed_save_leaves_no_partial_file(tmp_path, rng, monkeypatch):
    model = conv_model((1, 3, 6, 6), (4, 3, 3, 3), rng)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", interrupted)
    with pytest.raises(KeyboardInterrupt):
        graph.save_model(model, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []
