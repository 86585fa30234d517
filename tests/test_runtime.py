"""fq_onnx.runtime: finding the custom-op library and opening sessions with it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fq_onnx import fmt, reference, runtime


def _tiny_model(per_row: bool = False) -> onnx.ModelProto:
    """One ShiftConv; per_row stores one scale per output channel (A = dims[0] = 4)."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(4, 3, 3, 3))
    codes[rng.random(codes.shape) < 0.5] = -1
    alphas = np.array([0.1, 1e-3, 25.0, 0.7], np.float32) if per_row else None
    blob = fmt.encode(codes, fmt.QuantParams(mode=0, bits=4, alpha=0.1, b=2), alphas=alphas)
    node = helper.make_node("ShiftConv", ["X", "W"], ["Y"], domain="fq_onnx", name="sc", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.frombuffer(blob, np.uint8).copy(), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("fq_onnx", 1)])
    model.ir_version = 8
    return model


def test_library_is_installed_inside_the_runtime_package():
    path = runtime.library_path()
    assert path.endswith(runtime.LIBRARY_NAME)


def test_library_env_override(monkeypatch, tmp_path):
    real = runtime.library_path()
    monkeypatch.setenv(runtime.LIBRARY_ENV, real)
    assert runtime.library_path() == real
    monkeypatch.setenv(runtime.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(runtime.LibraryNotFoundError, match="FQ_ONNX_OPS_LIBRARY"):
        runtime.library_path()


def test_missing_library_message(monkeypatch, tmp_path):
    monkeypatch.delenv(runtime.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "runtime.py"))
    with pytest.raises(runtime.LibraryNotFoundError, match="pip install"):
        runtime.library_path()


@pytest.mark.parametrize("per_row", [False, True], ids=["A1", "Arows"])
@pytest.mark.parametrize("form", ["path", "bytes", "proto", "pathlike"])
def test_session_accepts_every_model_form(form, per_row, tmp_path):
    model = _tiny_model(per_row)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    arg = {"path": str(path), "bytes": model.SerializeToString(), "proto": model, "pathlike": path}[form]
    sess = runtime.session(arg, threads=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = sess.run(None, {"X": x})[0]
    ref = reference.run(model, {"X": x})[0]
    # Per channel, relative to the channel's magnitude (the per-row scales span 1e-3 .. 25).
    for c in range(y.shape[1]):
        np.testing.assert_allclose(y[:, c], ref[:, c], rtol=1e-5, atol=1e-5 * float(np.abs(ref[:, c]).max()))


def test_session_options_are_applied():
    so = runtime.session_options(threads=2, kernel="scalar", log_severity_level=3,
                                 execution_mode=ort.ExecutionMode.ORT_SEQUENTIAL)
    assert so.intra_op_num_threads == 2
    assert so.log_severity_level == 3
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so = runtime.session_options(graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_session_thread_count_reaches_the_library():
    """The library cannot query the intra-op threads; session_options passes them as a config
    entry, from ``threads`` or ``intra_op_num_threads``, and leaves it unset for the default."""
    assert runtime.session_options(threads=2).get_session_config_entry(runtime.THREADS_CONFIG_KEY) == "2"
    so = runtime.session_options(intra_op_num_threads=3)
    assert so.get_session_config_entry(runtime.THREADS_CONFIG_KEY) == "3"
    with pytest.raises(Exception, match="does not have configuration"):
        runtime.session_options().get_session_config_entry(runtime.THREADS_CONFIG_KEY)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="kernel"):
        runtime.session_options(kernel="sse9")
    with pytest.raises(ValueError, match="threads"):
        runtime.session_options(threads=0)
    with pytest.raises(TypeError, match="no_such_option"):
        runtime.session_options(no_such_option=1)


def test_plain_onnxruntime_without_the_library_cannot_run_shiftconv():
    with pytest.raises(Exception, match="ShiftConv"):
        ort.InferenceSession(_tiny_model().SerializeToString(), providers=["CPUExecutionProvider"])


def test_converted_default_model_matches_reference(tmp_path):
    """The bundled model compressed by fq_onnx.api.convert gives the reference's outputs."""
    from pathlib import Path

    api = pytest.importorskip("fq_onnx.api")
    source = Path(__file__).resolve().parents[1] / "models" / "digits_cnn.onnx"
    if not source.exists():
        pytest.skip("bundled model not present")
    out = tmp_path / "digits_fq.onnx"
    api.convert(source, out, sparsity=0.8, block=4)
    model = onnx.load(str(out))
    assert any(n.op_type == "ShiftConv" for n in model.graph.node)
    inp = model.graph.input[0]
    dims = [d.dim_value or 5 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    ref = reference.run(model, {inp.name: x})[0]
    for kernel in ("scalar", "auto"):
        y = runtime.session(out, threads=2, kernel=kernel).run(None, {inp.name: x})[0]
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
        assert (y.argmax(-1) == ref.argmax(-1)).all()
