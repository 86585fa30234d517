"""Deploy hosts: the runtime-only package imports nothing of the converter, and a C++ program
built from examples/cpp/ runs a compressed model exactly as the Python session does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fq_onnx_runtime
from fq_onnx import api, runtime
from fq_onnx.digits import default_model_path, load_digits_split

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    path = tmp_path_factory.mktemp("deploy") / "digits.fq.onnx"
    api.convert(default_model_path(), path, sparsity=0.5, bits=5, seed=0)
    x, _ = load_digits_split("val")
    return path, np.ascontiguousarray(x[:24], dtype=np.float32)


def test_fq_onnx_runtime_is_the_runtime_module():
    assert runtime is fq_onnx_runtime
    assert Path(runtime.library_path()).parent == Path(fq_onnx_runtime.__file__).parent


def test_running_a_model_imports_nothing_of_the_converter(compressed):
    """onnx is the runtime's (fq_onnx_runtime.dense_graph edits the graph in memory); the rest is not."""
    path, x = compressed
    np.save(path.with_suffix(".x.npy"), x)
    code = (
        "import os; os.environ.pop('FQ_ONNX_DENSE_GRAPH', None)\n"
        "import sys, numpy as np, fq_onnx_runtime\n"
        f"s = fq_onnx_runtime.session({str(path)!r}, threads=1)\n"
        f"y = s.run(None, {{'input': np.load({str(path.with_suffix('.x.npy'))!r})}})[0]\n"
        "assert y.shape == (24, 10), y.shape\n"
        "loaded = sorted(m for m in ('sklearn', 'typer', 'onnx_graphsurgeon', 'fq_onnx', 'scipy')\n"
        "                if m in sys.modules)\n"
        "print('loaded:', loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _compiler_and_cmake() -> bool:
    return shutil.which("cmake") is not None and (shutil.which("c++") or shutil.which("g++")) is not None


@pytest.fixture(scope="module")
def cpp_host(tmp_path_factory):
    if not _compiler_and_cmake():
        if os.environ.get("CI"):
            pytest.fail("CI must build examples/cpp: cmake or a C++ compiler is missing")
        pytest.skip("cmake or a C++ compiler is missing")
    build = tmp_path_factory.mktemp("cpp-host")
    for cmd in (["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython3_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", str(build)]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "fq_onnx_run"


@pytest.mark.parametrize("threads", [1, 2])
def test_cpp_host_matches_the_python_session(cpp_host, compressed, tmp_path, threads):
    path, x = compressed
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([str(cpp_host), str(path), runtime.library_path(), str(tmp_path / "x.npy"),
                             str(tmp_path / "y.npy"), str(threads)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The C++ host runs the file as stored (ShiftConv everywhere): the same as dense_graph="off".
    expected = runtime.session(path, threads=threads, dense_graph="off").run(None, {"input": x})[0]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_cpp_host_reports_a_broken_model(cpp_host, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    result = subprocess.run([str(cpp_host), str(bad), runtime.library_path(), str(tmp_path / "x.npy"),
                             str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "fq_onnx_run:" in result.stderr


# An app that builds its own sessions the way rapidocr's OrtInferSession does: InferenceSession
# imported by name before fq_onnx_runtime.enable(), its own SessionOptions, providers as tuples.
APP = '''
from onnxruntime import GraphOptimizationLevel, InferenceSession, SessionOptions

def open_model(path):
    so = SessionOptions()
    so.log_severity_level = 4
    so.enable_cpu_mem_arena = False
    so.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    return InferenceSession(path, sess_options=so,
                            providers=[("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})])
'''


@pytest.fixture
def app(tmp_path, monkeypatch):
    (tmp_path / "ocr_app.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("ocr_app")
    yield module
    fq_onnx_runtime.disable()
    sys.modules.pop("ocr_app", None)


def test_enable_lets_an_app_open_compressed_models_unchanged(app, compressed):
    import onnxruntime as ort

    path, x = compressed
    with pytest.raises(Exception, match="fq_onnx"):  # without it, onnxruntime knows no ShiftConv
        app.open_model(str(path))
    fq_onnx_runtime.enable()
    fq_onnx_runtime.enable()  # twice is once
    session = app.open_model(str(path))
    expected = runtime.session(path, threads=2).run(None, {"input": x})[0]
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], expected)
    # no options at all, and the package's own session(), also work while enabled
    np.testing.assert_array_equal(ort.InferenceSession(str(path)).run(None, {"input": x})[0], expected)
    np.testing.assert_array_equal(runtime.session(path, threads=2).run(None, {"input": x})[0], expected)
    fq_onnx_runtime.disable()
    with pytest.raises(Exception, match="fq_onnx"):
        app.open_model(str(path))


def test_register_is_idempotent_and_passes_the_thread_count(compressed):
    import onnxruntime as ort

    path, x = compressed
    so = ort.SessionOptions()
    so.intra_op_num_threads = 3
    assert fq_onnx_runtime.register(fq_onnx_runtime.register(so)) is so
    assert so.get_session_config_entry(runtime.THREADS_CONFIG_KEY) == "3"
    for _ in range(2):  # the same options serve two sessions (a second registration would fail)
        y = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert y.shape == (len(x), 10)
