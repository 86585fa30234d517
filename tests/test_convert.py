"""Convert tiny models of every op variant; check structure and numbers against onnxruntime."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import conv_model, gemm_model, matmul_model, save

from fq_onnx import api, reference
from fq_onnx.errors import FqOnnxError

CONV_VARIANTS = {
    "2d": ((2, 4, 9, 9), (6, 4, 3, 3), {}),
    "2d-stride2-pads": ((1, 3, 10, 11), (5, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "2d-asym-pads-dilation": ((2, 3, 12, 12), (4, 3, 3, 2), dict(pads=[0, 1, 2, 0], dilations=[2, 1])),
    "2d-same-upper": ((1, 4, 7, 8), (4, 4, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "2d-same-lower": ((1, 4, 7, 8), (4, 4, 2, 2), dict(auto_pad="SAME_LOWER")),
    "2d-valid": ((1, 2, 6, 6), (3, 2, 3, 3), dict(auto_pad="VALID")),
    "2d-group": ((2, 8, 6, 6), (6, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "2d-depthwise": ((1, 6, 8, 8), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),
    "2d-1x1": ((3, 16, 5, 5), (8, 16, 1, 1), {}),
    "1d": ((2, 3, 20), (5, 3, 3), dict(pads=[1, 1])),
    "1d-stride-dilation": ((1, 4, 30), (6, 4, 5), dict(strides=[3], dilations=[2])),
}


def ort_run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]


def check_conversion(tmp_path, model, x, sparsity=0.5, bits=5, expect_shiftconv=1, **options):
    src = save(model, tmp_path / "in.onnx")
    options.setdefault("min_weights", 0)  # these layers are tiny: compress them anyway
    report = api.convert(src, tmp_path / "out.onnx", sparsity=sparsity, bits=bits, **options)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert sum(n.op_type == "ShiftConv" and n.domain == "fq_onnx" for n in out.graph.node) == expect_shiftconv
    got = reference.run(out, {"X": x})[0]
    api.decompress(tmp_path / "out.onnx", tmp_path / "plain.onnx")
    plain = ort_run(tmp_path / "plain.onnx", x)
    np.testing.assert_allclose(got, plain, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(plain).max()))
    return report, got, ort_run(src, x)


@pytest.mark.parametrize("variant", sorted(CONV_VARIANTS))
def test_conv_variants(tmp_path, rng, variant):
    x_shape, w_shape, attrs = CONV_VARIANTS[variant]
    x = rng.standard_normal(x_shape).astype(np.float32)
    model = conv_model(x_shape, w_shape, rng, **attrs)
    report, _, _ = check_conversion(tmp_path, model, x)
    assert 0.45 <= report.layers[0].sparsity <= 0.55


@pytest.mark.parametrize("variant", ["2d", "2d-depthwise", "1d"])
def test_dense_seven_bits_is_close_to_original(tmp_path, rng, variant):
    x_shape, w_shape, attrs = CONV_VARIANTS[variant]
    x = rng.standard_normal(x_shape).astype(np.float32)
    _, got, original = check_conversion(tmp_path, conv_model(x_shape, w_shape, rng, **attrs), x, sparsity=0.0, bits=7)
    error = np.linalg.norm(got - original) / np.linalg.norm(original)
    assert error < 0.25  # power-of-two levels: about 10-20% weight error per layer


GEMM_VARIANTS = {
    "plain": dict(),
    "transB": dict(trans_b=1),
    "transA": dict(trans_a=1),
    "alpha-beta-bias": dict(alpha=0.5, beta=2.0, c_shape=(7,)),
    "row-bias": dict(c_shape=(1, 7), trans_b=1),
    "scalar-bias": dict(c_shape=(1,)),
}


@pytest.mark.parametrize("variant", sorted(GEMM_VARIANTS))
def test_gemm_variants(tmp_path, rng, variant):
    options = GEMM_VARIANTS[variant]
    model = gemm_model(5, 12, 7, rng, **options)
    x = rng.standard_normal((12, 5) if options.get("trans_a") else (5, 12)).astype(np.float32)
    _, got, original = check_conversion(tmp_path, model, x, sparsity=0.0, bits=7)
    assert got.shape == original.shape == (5, 7)
    assert np.linalg.norm(got - original) / np.linalg.norm(original) < 0.25


def test_gemm_full_matrix_bias_is_skipped_with_reason(tmp_path, rng):
    src = save(gemm_model(5, 12, 7, rng, c_shape=(5, 7)), tmp_path / "in.onnx")
    with pytest.raises(FqOnnxError, match="not a per-output bias"):
        api.convert(src, tmp_path / "out.onnx")


@pytest.mark.parametrize("x_shape", [(4, 10), (2, 3, 10), (10,)])
def test_matmul_constant_weight(tmp_path, rng, x_shape):
    x = rng.standard_normal(x_shape).astype(np.float32)
    _, got, original = check_conversion(tmp_path, matmul_model(x_shape, 6, rng), x, sparsity=0.3)
    assert got.shape == original.shape


def test_batchnorm_folded_and_relu_fused(tmp_path, rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model = conv_model((2, 3, 8, 8), (4, 3, 3, 3), rng, bias=False, batchnorm=True, relu=True, pads=[1, 1, 1, 1])
    report, got, original = check_conversion(tmp_path, model, x, sparsity=0.0, bits=7)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in out.graph.node] == ["ShiftConv", "Identity"]
    assert report.folded_batchnorms == ("bn",)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in out.graph.node[0].attribute}
    assert attrs["activation"] == b"relu"
    assert got.min() >= 0
    assert np.linalg.norm(got - original) / np.linalg.norm(original) < 0.25


def test_non_constant_weight_is_left_alone(tmp_path, rng):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"], name="dynamic"),
             helper.make_node("Conv", ["Y", "K"], ["Z"], name="conv")]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 6, 6]),
              helper.make_tensor_value_info("W", TensorProto.FLOAT, [6, 6])]
    k = onnx.numpy_helper.from_array(rng.standard_normal((2, 4, 3, 3)).astype(np.float32), "K")
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None] * 4)], [k]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    src = save(model, tmp_path / "in.onnx")
    report = api.convert(src, tmp_path / "out.onnx", min_weights=0)  # the conv has 72 weights
    assert [(n, why) for n, _, why in report.skipped] == [("dynamic", "second input is not a constant weight")]
    assert [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node] == ["MatMul", "ShiftConv"]


def test_exclude_by_name_and_op_type(tmp_path, rng):
    src = save(conv_model((1, 3, 6, 6), (4, 3, 3, 3), rng), tmp_path / "in.onnx")
    for exclude in (["conv"], ["Conv"]):
        with pytest.raises(FqOnnxError, match="nothing to compress.*excluded"):
            api.convert(src, tmp_path / "out.onnx", exclude=exclude)


def test_same_seed_gives_identical_bytes_and_input_is_untouched(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng, batchnorm=True), tmp_path / "in.onnx")
    before = hashlib.sha256(open(src, "rb").read()).hexdigest()
    api.convert(src, tmp_path / "a.onnx", sparsity=0.6, seed=3)
    api.convert(src, tmp_path / "b.onnx", sparsity=0.6, seed=3)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert hashlib.sha256(open(src, "rb").read()).hexdigest() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_inspect_sizes_equal_bytes_in_file(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    api.convert(src, tmp_path / "out.onnx", sparsity=0.8)
    report = api.inspect_model(tmp_path / "out.onnx")
    model = onnx.load(str(tmp_path / "out.onnx"))
    blobs = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    assert report.totals.compressed_bytes == sum(len(b.raw_data) for b in blobs)
    assert report.file_bytes == (tmp_path / "out.onnx").stat().st_size
    assert report.layers[0].fp32_bytes == 16 * 8 * 9 * 4
    original = api.inspect_model(src)
    assert original.layers[0].mode == "float" and original.totals.ratio == 1.0


def test_per_layer_sparsity_file(tmp_path, rng):
    import json

    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    (tmp_path / "s.json").write_text(json.dumps({"conv": 0.9}))
    report = api.convert(src, tmp_path / "out.onnx", sparsity_file=tmp_path / "s.json")
    assert abs(report.layers[0].sparsity - 0.9) < 0.01
    (tmp_path / "bad.json").write_text(json.dumps({"nope": 0.5}))
    with pytest.raises(FqOnnxError, match="no compressible node named or matching 'nope'"):
        api.convert(src, tmp_path / "out.onnx", sparsity_file=tmp_path / "bad.json")
    yaml = pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"*": 0.25}))
    report = api.convert(src, tmp_path / "out.onnx", sparsity_file=tmp_path / "s.yaml")
    assert abs(report.layers[0].sparsity - 0.25) < 0.01


def test_clear_errors(tmp_path, rng):
    with pytest.raises(FqOnnxError, match="no such file"):
        api.convert(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01this is not a model" * 10)
    with pytest.raises(FqOnnxError, match="not an ONNX model"):
        api.convert(tmp_path / "junk.onnx", tmp_path / "out.onnx")
    src = save(conv_model((1, 3, 6, 6), (4, 3, 3, 3), rng), tmp_path / "in.onnx")
    with pytest.raises(FqOnnxError, match="refusing to overwrite the input"):
        api.convert(src, src)
    with pytest.raises(FqOnnxError, match="sparsity"):
        api.convert(src, tmp_path / "o.onnx", sparsity=1.0)
    with pytest.raises(FqOnnxError, match="output directory"):
        api.convert(src, tmp_path / "nodir" / "o.onnx")  # checked before any work
    with pytest.raises(FqOnnxError, match="no ShiftConv node"):
        api.decompress(src, tmp_path / "plain.onnx")


def test_bundled_model_converts_and_keeps_accuracy_at_low_sparsity(tmp_path):
    from fq_onnx.digits import load_digits_split
    from fq_onnx.digits import default_model_path

    x, y = load_digits_split("val")
    report = api.convert(default_model_path(), tmp_path / "d.onnx", sparsity=0.3, bits=5)
    assert report.folded_batchnorms and len(report.layers) == 7
    assert report.totals.ratio > 7
    logits = reference.run(str(tmp_path / "d.onnx"), {"input": x})[0]
    original = ort.InferenceSession(str(default_model_path())).run(None, {"input": x})[0]
    assert np.mean(logits.argmax(1) == y) >= np.mean(original.argmax(1) == y) - 0.03


@pytest.mark.parametrize("clip_bounds", [(0.0, 6.0), (None, 1.0), (-1.0, None)])
def test_following_clip_is_fused(tmp_path, rng, clip_bounds):
    from onnx import TensorProto, helper

    model = conv_model((1, 4, 6, 6), (5, 4, 3, 3), rng, pads=[1, 1, 1, 1])
    graph = model.graph
    graph.node[-1].input[0] = "clipped"  # out: Identity(clipped)
    names = []
    for key, value in zip(("lo", "hi"), clip_bounds):
        if value is None:
            names.append("")
        else:
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, np.float32), key))
            names.append(key)
    while names and names[-1] == "":
        names.pop()
    clip = helper.make_node("Clip", ["c", *names], ["clipped"], name="clip")
    graph.node.insert(len(graph.node) - 1, clip)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32) * 3
    _, got, original = check_conversion(tmp_path, model, x, sparsity=0.0, bits=7)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in out.graph.node] == ["ShiftConv", "Identity"]
    if clip_bounds[0] is not None:
        assert got.min() >= clip_bounds[0]
    if clip_bounds[1] is not None:
        assert got.max() <= clip_bounds[1]
