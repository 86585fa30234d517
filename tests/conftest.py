"""Tiny models built with onnx.helper, one per op variant the converter must handle."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# The suite tests ShiftConv's kernels through runtime.session(); by default that would turn the
# denser layers of its fixtures into onnxruntime's own nodes (fq_onnx_runtime.dense_graph) and
# test onnxruntime instead. tests/test_dense_graph.py tests that rewrite, asking for it by name.
os.environ.setdefault("FQ_ONNX_DENSE_GRAPH", "off")


def make_model(nodes, inputs, outputs, initializers, opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def conv_model(x_shape, w_shape, rng, bias=True, relu=False, batchnorm=False, **attrs):
    """X -> Conv(W, B) [-> BatchNormalization] [-> Relu] -> Y, with random weights."""
    weight = rng.standard_normal(w_shape).astype(np.float32) * 0.3
    inits = [tensor("W", weight)]
    conv_inputs = ["X", "W"]
    if bias:
        inits.append(tensor("B", rng.standard_normal(w_shape[0]) * 0.1))
        conv_inputs.append("B")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", **attrs)]
    last = "c"
    if batchnorm:
        m = w_shape[0]
        inits += [tensor("s", rng.uniform(0.5, 1.5, m)), tensor("t", rng.standard_normal(m) * 0.1),
                  tensor("mu", rng.standard_normal(m) * 0.1), tensor("var", rng.uniform(0.5, 2.0, m))]
        nodes.append(helper.make_node("BatchNormalization", [last, "s", "t", "mu", "var"], ["bn"], name="bn"))
        last = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["r"], name="relu"))
        last = "r"
    nodes.append(helper.make_node("Identity", [last], ["Y"], name="out"))
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * len(x_shape))
    return make_model(nodes, [x], [y], inits)


def gemm_model(m, k, n, rng, c_shape=(None,), trans_a=0, trans_b=0, alpha=1.0, beta=1.0):
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32) * 0.3
    inits = [tensor("Bw", b)]
    inputs = ["X", "Bw"]
    if c_shape != (None,):
        inits.append(tensor("C", rng.standard_normal(c_shape)))
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["Y"], name="gemm", transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [k, m] if trans_a else [m, k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, None])
    return make_model([node], [x], [y], inits)


def matmul_model(x_shape, n, rng):
    k = x_shape[-1]
    inits = [tensor("Wm", rng.standard_normal((k, n)) * 0.3)]
    node = helper.make_node("MatMul", ["X", "Wm"], ["Y"], name="matmul")
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * len(x_shape))
    return make_model([node], [x], [y], inits)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def run_concurrently(check, threads: int = 6, runs: int = 20) -> None:
    """Call ``check(thread, run)`` from several threads at once, ``runs`` times each, and fail
    with every error any call raised (a session must be safe for concurrent ``run`` calls)."""
    import threading

    errors = []

    def worker(thread):
        for run in range(runs):
            try:
                check(thread, run)
            except Exception as exc:  # collected and reported by the main thread
                errors.append(f"thread {thread} run {run}: {exc!r}")

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
