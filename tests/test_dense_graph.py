"""Dense layers turned into onnxruntime's own nodes at session creation (fq_onnx_runtime.dense_graph):
the outputs match ShiftConv's, the file stays compressed, and whatever the rewrite cannot do
exactly stays ShiftConv (integer mode, broken blobs, inconsistent attributes)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fq_onnx import api, fmt, runtime
from fq_onnx.digits import default_model_path, load_digits_split
from fq_onnx_runtime import dense_graph
from test_custom_ops import NODE, assert_close, make_blob, shiftconv_model
from test_dense_delegate import ACTIVATIONS, CASES


def outputs(model, x, mode, threads=1):
    return runtime.session(model, threads=threads, dense_graph=mode).run(None, {"X": x})[0]


def rewritten(model, mode="all") -> tuple[onnx.ModelProto, int]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, dense_graph.rewrite(copy, runtime.library_path(), mode)


def op_types(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("act", range(len(ACTIVATIONS)))
def test_conv_matches_shiftconv(case, act):
    x_shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(hash((case, act)) % 2**32)
    blob = make_blob(rng, w_shape, sparsity=0.3, per_row=act == 1)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32) if act != 2 else None
    model = shiftconv_model(blob, (None,) + x_shape, bias=bias, **attrs, **ACTIVATIONS[act])
    new, count = rewritten(model)
    assert count == 1 and "ShiftConv" not in op_types(new)
    assert op_types(new)[0] == "Conv"
    assert new.graph.node[0].name == NODE  # onnxruntime's errors name the node
    assert all(i.name != "Wq" for i in new.graph.initializer)  # the blob is not kept
    for batch in (1, 3):
        x = rng.standard_normal((batch,) + x_shape).astype(np.float32)
        assert_close(outputs(model, x, "all"), outputs(model, x, "off").astype(np.float64), x, fmt.dequantize(blob))


@pytest.mark.parametrize("source_op", ["Gemm", "MatMul"])
@pytest.mark.parametrize("act", range(len(ACTIVATIONS)))
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_matches_shiftconv(source_op, act, with_bias):
    rng = np.random.default_rng(7 + act)
    blob = make_blob(rng, (24, 40), sparsity=0.4)
    bias = rng.standard_normal(24).astype(np.float32) if with_bias else None
    x_shape = (None, 40) if source_op == "Gemm" else (None, 3, 40)  # MatMul: any leading axes
    model = shiftconv_model(blob, x_shape, bias=bias, kind="dense", source_op=source_op, **ACTIVATIONS[act])
    new, count = rewritten(model)
    assert count == 1 and op_types(new)[0] == source_op
    for batch in (1, 5):
        x = rng.standard_normal((batch,) + x_shape[1:]).astype(np.float32)
        assert_close(outputs(model, x, "all"), outputs(model, x, "off").astype(np.float64), x, fmt.dequantize(blob))


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (12, 1, 3, 3), (24, 40), (6, 4, 5)])
@pytest.mark.parametrize("per_row", [False, True])
def test_decoded_weight_is_fmt_dequantize_bit_for_bit(shape, per_row):
    rng = np.random.default_rng(3)
    blob = make_blob(rng, shape, sparsity=0.5, per_row=per_row)
    dec = dense_graph.Decoder(runtime.library_path())
    arr = np.frombuffer(blob, dtype=np.uint8)
    info = dec.info(arr, 1)
    expected = fmt.dequantize(blob)
    assert info.dims == shape and info.nonzeros == np.count_nonzero(expected)
    np.testing.assert_array_equal(dec.dense(arr, info.dims).view(np.uint32), expected.astype(np.float32).view(np.uint32))


def test_auto_rewrites_dense_layers_and_keeps_sparse_ones():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 32, 9, 9)).astype(np.float32)
    for sparsity, expect in ((0.3, 1), (0.9, 0)):
        blob = make_blob(rng, (32, 32, 3, 3), sparsity=sparsity)
        model = shiftconv_model(blob, (None, 32, 9, 9), pads=[1, 1, 1, 1])
        assert rewritten(model, "auto")[1] == expect
        assert rewritten(model, "off")[1] == 0
        assert_close(outputs(model, x, "auto"), outputs(model, x, "off").astype(np.float64), x, fmt.dequantize(blob))


def test_integer_mode_and_runtime_bias_stay_shiftconv():
    rng = np.random.default_rng(2)
    blob = make_blob(rng, (8, 16), sparsity=0.3)
    integer = shiftconv_model(blob, (None, 16), kind="dense", act_bits=8, act_scale_log2=-4, act_signed=1)
    assert rewritten(integer)[1] == 0
    run_bias = shiftconv_model(blob, (None, 16), kind="dense", bias=np.zeros(8), bias_as_input=True)
    assert rewritten(run_bias)[1] == 0


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[5, 5], pads=[1, 1, 1, 1]),   # disagrees with the weight
    dict(M=7, pads=[1, 1, 1, 1]),                     # disagrees with the weight
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),      # onnxruntime's SAME differs at stride > 1
    dict(auto_pad="SAME_UPPER", pads=[1, 1, 1, 1]),   # both: ShiftConv's error
    dict(activation="clip", clip_min=1.0, clip_max=0.0),
])
def test_what_the_rewrite_cannot_do_exactly_stays_shiftconv(attrs):
    blob = make_blob(np.random.default_rng(4), (8, 8, 3, 3), sparsity=0.3)
    assert rewritten(shiftconv_model(blob, (None, 8, 9, 9), **attrs))[1] == 0


def test_bias_of_the_wrong_length_stays_shiftconv_and_is_its_error():
    blob = make_blob(np.random.default_rng(5), (8, 8, 3, 3), sparsity=0.3)
    model = shiftconv_model(blob, (None, 8, 9, 9), bias=np.zeros(5), pads=[1, 1, 1, 1])
    assert rewritten(model)[1] == 0
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'"):
        runtime.session(model, dense_graph="all")


def test_corrupted_blob_is_still_an_error_naming_the_node():
    blob = bytearray(make_blob(np.random.default_rng(6), (8, 8, 3, 3), sparsity=0.3))
    blob[len(blob) // 2] ^= 0x5A  # the CRC no longer matches
    model = shiftconv_model(bytes(blob), (None, 8, 9, 9), pads=[1, 1, 1, 1])
    assert rewritten(model)[1] == 0
    with pytest.raises(Exception, match=f"ShiftConv node '{NODE}'.*invalid compressed weight"):
        runtime.session(model, dense_graph="all")


def test_a_blob_shared_by_a_kept_node_is_kept():
    rng = np.random.default_rng(8)
    blob = make_blob(rng, (8, 8, 3, 3), sparsity=0.3)
    model = shiftconv_model(blob, (None, 8, 9, 9), pads=[1, 1, 1, 1])
    kept = helper.make_node("ShiftConv", ["Y", "Wq"], ["Z"], domain="fq_onnx", name="kept", pads=[1, 1, 1, 1],
                            act_bits=8, act_scale_log2=-3, act_signed=1)
    model.graph.node.append(kept)
    model.graph.output[0].name = "Z"
    new, count = rewritten(model)
    assert count == 1 and op_types(new) == ["Conv", "ShiftConv"]
    assert any(i.name == "Wq" for i in new.graph.initializer)


def test_switches(monkeypatch):
    monkeypatch.delenv(runtime.DENSE_GRAPH_ENV, raising=False)  # conftest turns it off for the suite
    so = runtime.session_options()
    assert runtime._dense_graph_mode(so) == "auto"
    assert runtime._dense_graph_mode(so, "off") == "off"
    assert runtime._dense_graph_mode(runtime.session_options(config={runtime.DENSE_GRAPH_CONFIG_KEY: "all"})) == "all"
    # Forcing a kernel inside ShiftConv measures ShiftConv: no rewrite unless asked for.
    assert runtime._dense_graph_mode(runtime.session_options(config={runtime.DENSE_CONFIG_KEY: "own"})) == "off"
    forced = runtime.session_options(config={runtime.DENSE_CONFIG_KEY: "own", runtime.DENSE_GRAPH_CONFIG_KEY: "all"})
    assert runtime._dense_graph_mode(forced) == "all"
    monkeypatch.setenv(runtime.DENSE_GRAPH_ENV, "off")
    assert runtime._dense_graph_mode(runtime.session_options()) == "off"
    with pytest.raises(ValueError, match="dense_graph must be one of"):
        runtime.prepare_model(b"", "sometimes")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense-graph") / "digits.fq.onnx"
    api.convert(default_model_path(), path, sparsity=0.3, bits=5, seed=0, min_weights=0)
    x, _ = load_digits_split("val")
    return path, np.ascontiguousarray(x[:16], dtype=np.float32)


def test_converted_model_matches_and_the_file_stays_compressed(converted):
    path, x = converted
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    stored = onnx.load(str(path))
    assert "ShiftConv" in op_types(stored)
    new, count = rewritten(stored, "all")
    assert count == op_types(stored).count("ShiftConv") and "ShiftConv" not in op_types(new)
    name = stored.graph.input[0].name
    for batch in (1, 16):
        feed = {name: x[:batch]}
        on = runtime.session(path, threads=2, dense_graph="all").run(None, feed)[0]
        off = runtime.session(path, threads=2, dense_graph="off").run(None, feed)[0]
        np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-4 * float(np.abs(off).max()))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # every initializer is read by a node: the biases are reused, the replaced blobs dropped
    # (onnxruntime warns about each unused initializer)
    read = {i for n in new.graph.node for i in n.input}
    assert [i.name for i in new.graph.initializer if i.name not in read] == []


def test_enable_rewrites_plain_inferencesession_and_registered_library_still_works(converted):
    path, x = converted
    name = onnx.load(str(path)).graph.input[0].name
    off = runtime.session(path, dense_graph="off").run(None, {name: x})[0]
    # Registering the library on plain SessionOptions: ShiftConv everywhere (the slower path).
    so = runtime.register(ort.SessionOptions())
    plain = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    np.testing.assert_array_equal(plain, off)
    runtime.enable()
    try:
        so = ort.SessionOptions()
        so.add_session_config_entry(runtime.DENSE_GRAPH_CONFIG_KEY, "all")
        on = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    finally:
        runtime.disable()
    np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-4 * float(np.abs(off).max()))


def test_models_without_shiftconv_are_passed_through_untouched(tmp_path):
    path = tmp_path / "plain.onnx"
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g", [x], [y]))
    onnx.save(model, str(path))
    assert runtime.prepare_model(str(path)) == str(path)
    assert runtime.prepare_model(model) is model
    data = path.read_bytes()
    assert runtime.prepare_model(data) is data
