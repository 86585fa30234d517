"""The fq_onnx.ShiftConv schema registered with onnx: checker, shape inference, graph tools.

Each converted model must pass ``onnx.checker.check_model(full_check=True)`` and strict shape
inference, and the inferred shape of every ShiftConv output must equal the shape onnx infers
for the original node and the shape onnxruntime actually produces.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_model, gemm_model, matmul_model, save
from onnx import numpy_helper

from fq_onnx import api, reference, rewrite, runtime, schema
from fq_onnx.digits import default_model_path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def inferred(model: onnx.ModelProto) -> dict[str, list]:
    """Shapes of every tensor after strict shape inference (which must pass), from scratch."""
    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(fresh, strict_mode=True)
    return {v.name: dims(v) for v in list(model.graph.value_info) + list(model.graph.output)}


def shiftconv_outputs(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type == schema.OP_TYPE]


def convert(tmp_path, model, **options) -> onnx.ModelProto:
    src = save(model, tmp_path / "in.onnx")
    options.setdefault("min_weights", 0)  # these layers are tiny: compress them anyway
    api.convert(src, tmp_path / "out.onnx", sparsity=options.pop("sparsity", 0.5), **options)
    return onnx.load(str(tmp_path / "out.onnx"))


def test_registered_once_with_every_documented_attribute():
    assert onnx.defs.has(schema.OP_TYPE, schema.DOMAIN)
    assert (schema.OP_TYPE, schema.DOMAIN, schema.VERSION) == (rewrite.OP_TYPE, rewrite.DOMAIN, rewrite.OPSET_VERSION)
    assert schema.register() is True and schema.note is None  # a second call is a no-op
    registered = onnx.defs.get_schema(schema.OP_TYPE, schema.VERSION, schema.DOMAIN)
    text = (DOCS / "SHIFTCONV.md").read_text()
    tables = [part.split("\n\n", 2)[1] for part in text.split("## Attributes")[1:]]  # float and integer mode
    documented = {name for table in tables for row in table.splitlines()[2:]
                  for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(registered.attributes) == documented
    assert registered.attributes["kind"].default_value.s == b"conv"
    assert registered.attributes["group"].default_value.i == 1
    assert [p.name for p in registered.inputs] == ["X", "W", "B"] and registered.min_input == 2


def test_without_the_registration_api_a_clear_note(monkeypatch):
    monkeypatch.delattr(onnx.defs, "register_schema")
    with pytest.warns(RuntimeWarning, match=r"cannot register op schemas from Python \(needs onnx >= 1.16\)"):
        assert schema.register() is False
    assert "fq_onnx.ShiftConv" in schema.note
    monkeypatch.undo()
    assert schema.register() is True and schema.note is None


def test_bundled_model_checks_and_infers_the_original_shapes(tmp_path):
    original = onnx.shape_inference.infer_shapes(onnx.load(str(default_model_path())), strict_mode=True)
    expected = {v.name: dims(v) for v in list(original.graph.value_info) + list(original.graph.output)}
    api.convert(default_model_path(), tmp_path / "d.fq.onnx", sparsity=0.5)
    model = onnx.load(str(tmp_path / "d.fq.onnx"))
    del model.graph.value_info[:]  # only the schema can bring them back
    onnx.checker.check_model(model, full_check=True)
    shapes = inferred(model)
    outputs = shiftconv_outputs(model)
    assert len(outputs) == 7
    for name in outputs:
        assert shapes[name] == expected[name], name
    assert shapes["logits"] == ["N", 10]


CONVS = {
    "2d_pads": ((1, 8, 8, 8), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    "2d_stride2": ((2, 4, 9, 7), (8, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "asymmetric_pads": ((1, 4, 7, 7), (8, 4, 3, 3), {"pads": [0, 1, 2, 0]}),
    "same_upper_stride2": ((1, 4, 9, 9), (8, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower": ((1, 4, 7, 6), (8, 4, 2, 3), {"auto_pad": "SAME_LOWER"}),
    "valid_dilated": ((1, 4, 10, 11), (8, 4, 3, 3), {"auto_pad": "VALID", "dilations": [2, 2]}),
    "group": ((1, 8, 6, 6), (8, 2, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "depthwise": ((1, 8, 6, 6), (8, 1, 3, 3), {"group": 8}),
    "1d": ((2, 4, 20), (6, 4, 5), {"strides": [3], "pads": [2, 1]}),
    "1d_same": ((1, 4, 11), (6, 4, 4), {"auto_pad": "SAME_UPPER", "strides": [2]}),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_shape_equals_onnx_conv_and_onnxruntime(tmp_path, rng, case):
    x_shape, w_shape, attrs = CONVS[case]
    original = conv_model(x_shape, w_shape, rng, **attrs)
    conv_shape = inferred(original)["c"]
    model = convert(tmp_path, original)
    onnx.checker.check_model(model, full_check=True)
    (y,) = shiftconv_outputs(model)
    shape = inferred(model)[y]
    x = rng.standard_normal(x_shape).astype(np.float32)
    actual = runtime.session(model).run(None, {"X": x})[0].shape  # Y = Identity(ShiftConv output)
    assert shape == conv_shape == list(actual)


def test_dense_gemm_and_matmul_shapes(tmp_path, rng):
    gemm = convert(tmp_path, gemm_model(3, 12, 5, rng, c_shape=(5,), trans_a=1))
    onnx.checker.check_model(gemm, full_check=True)
    assert inferred(gemm)["Y"] == [3, 5]
    assert runtime.session(gemm).run(None, {"X": rng.standard_normal((12, 3)).astype(np.float32)})[0].shape == (3, 5)
    matmul = convert(tmp_path, matmul_model((2, 7, 12), 6, rng))
    onnx.checker.check_model(matmul, full_check=True)
    assert inferred(matmul)["Y"] == [2, 7, 6]


def test_symbolic_sizes_pass_through_and_same_stride1_keeps_them(tmp_path, rng):
    model = convert(tmp_path, conv_model((1, 4, 6, 6), (8, 4, 3, 3), rng, auto_pad="SAME_UPPER"))
    x = model.graph.input[0].type.tensor_type.shape.dim
    x[0].dim_param, x[2].dim_param, x[3].dim_param = "N", "H", "W"
    (y,) = shiftconv_outputs(model)
    assert inferred(model)[y] == ["N", 8, "H", "W"]


def _blob_as_graph_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The weight fed as a graph input: its bytes are then unknown to shape inference."""
    init = next(i for i in model.graph.initializer if i.name.endswith("fq_weight"))
    model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, onnx.TensorProto.UINT8, list(init.dims)))
    model.graph.initializer.remove(init)
    return model


def _node(model):
    return next(n for n in model.graph.node if n.op_type == schema.OP_TYPE)


def _drop_attribute(node, name):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def test_outputs_from_the_attribute_or_from_the_blob(tmp_path, rng):
    model = convert(tmp_path, conv_model((1, 4, 6, 6), (8, 4, 3, 3), rng))
    (y,) = shiftconv_outputs(model)
    old = onnx.ModelProto()
    old.CopyFrom(model)
    _drop_attribute(_node(old), "M")  # written before M was an attribute: read from the blob header
    assert inferred(old)[y] == [1, 8, 4, 4]
    rank_unknown = onnx.ModelProto()
    rank_unknown.CopyFrom(model)
    rank_unknown.graph.input[0].type.tensor_type.ClearField("shape")  # X of unknown rank: the kernel's
    shape = inferred(rank_unknown)[y]
    assert len(shape) == 4 and shape[1] == 8 and not any(isinstance(d, int) for d in shape[:1] + shape[2:])
    without_blob = _blob_as_graph_input(model)
    assert inferred(without_blob)[y] == [1, 8, 4, 4]  # M from the attribute
    _drop_attribute(_node(without_blob), "M")
    shape = inferred(without_blob)[y]  # neither: unknown (onnx names it unk__*), not guessed
    assert shape[:1] + shape[2:] == [1, 4, 4] and not isinstance(shape[1], int)


def test_errors_name_the_node(tmp_path, rng):
    model = convert(tmp_path, conv_model((1, 4, 6, 6), (8, 4, 3, 3), rng))
    wrong_channels = onnx.ModelProto()
    wrong_channels.CopyFrom(model)
    wrong_channels.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(onnx.shape_inference.InferenceError, match="ShiftConv conv: input has 5 channels"):
        onnx.shape_inference.infer_shapes(wrong_channels, strict_mode=True)

    corrupted = onnx.ModelProto()
    corrupted.CopyFrom(model)
    init = next(i for i in corrupted.graph.initializer if i.name.endswith("fq_weight"))
    blob = numpy_helper.to_array(init).copy()
    blob[len(blob) // 2] ^= 0xFF
    init.CopyFrom(numpy_helper.from_array(blob, init.name))
    with pytest.raises(onnx.shape_inference.InferenceError, match="ShiftConv conv: weight blob: CRC-32 mismatch"):
        onnx.checker.check_model(corrupted, full_check=True)

    wrong_m = onnx.ModelProto()
    wrong_m.CopyFrom(model)
    next(a for a in _node(wrong_m).attribute if a.name == "M").i = 9
    with pytest.raises(onnx.shape_inference.InferenceError, match="attribute M=9, the weight stores 8 outputs"):
        onnx.shape_inference.infer_shapes(wrong_m, strict_mode=True)
    x = {"X": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    with pytest.raises(Exception, match="attribute M=9"):  # the C++ kernel and the reference agree
        runtime.session(wrong_m)
    with pytest.raises(ValueError, match="attribute M=9"):
        reference.run(wrong_m, x)


def _slim_roundtrip(tmp_path, simplify) -> None:
    api.convert(default_model_path(), tmp_path / "d.fq.onnx", sparsity=0.5)
    model = onnx.load(str(tmp_path / "d.fq.onnx"))
    del model.graph.value_info[:]
    slim = simplify(model)
    onnx.checker.check_model(slim, full_check=True)
    shapes = {v.name: dims(v) for v in slim.graph.value_info}
    assert shapes and all(s[0] == "N" and all(isinstance(d, int) for d in s[1:]) for s in shapes.values())
    assert [n.op_type for n in slim.graph.node].count(schema.OP_TYPE) == 7
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    before = runtime.session(model).run(None, {"input": x})[0]
    after = runtime.session(slim).run(None, {"input": x})[0]
    assert np.array_equal(before, after)


def test_onnxslim_slims_a_compressed_model(tmp_path):
    onnxslim = pytest.importorskip("onnxslim")
    _slim_roundtrip(tmp_path, onnxslim.slim)


def test_onnxsim_simplifies_a_compressed_model(tmp_path):
    onnxsim = pytest.importorskip("onnxsim")

    def simplify(model):
        simplified, ok = onnxsim.simplify(model)
        assert ok
        return simplified

    _slim_roundtrip(tmp_path, simplify)



@pytest.mark.parametrize("first, then", [
    ("import fq_onnx", "import onnx"),  # onnx imported after fq_onnx: registered by the import hook
    ("import onnx", "import fq_onnx"),
    ("import fq_onnx.schema", "import onnx"),
    ("import fq_onnx.graph", "import onnx"),
])
def test_schema_is_registered_whatever_the_import_order(first, then):
    import subprocess
    import sys

    code = f"{first}\n{then}\nimport onnx\nassert onnx.defs.has('ShiftConv', 'fq_onnx')"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, cwd=Path(__file__).parent)


def test_running_compressed_models_does_not_import_onnx():
    """onnx costs ~15 MB of resident memory that a deployment does not need."""
    import subprocess
    import sys

    code = "import sys, fq_onnx.runtime\nassert 'onnx' not in sys.modules, 'fq_onnx.runtime imported onnx'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
