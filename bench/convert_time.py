#!/usr/bin/env python
"""Time `fq_onnx.api.convert` on a synthetic 26 M-parameter model (11 conv layers 512x512x3x3).

    python bench/convert_time.py [--sparsity 0.7] [--layers 11]

The weights are random (conversion time does not depend on their values); the model is built
with onnx.helper in a temporary folder, converted without calibration, and the wall time printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(path: Path, layers: int, channels: int = 512) -> int:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "X"
    for i in range(layers):
        weight = (rng.standard_normal((channels, channels, 3, 3)) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    shape = [1, channels, 7, 7]
    graph = helper.make_graph(nodes, "convert_time", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return layers * channels * channels * 9


def main() -> None:
    from fq_onnx import api

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--layers", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "big.onnx"
        params = build(source, args.layers)
        start = time.perf_counter()
        report = api.convert(source, Path(folder) / "big.fq.onnx", sparsity=args.sparsity)
        seconds = time.perf_counter() - start
    print(f"{params / 1e6:.1f} M parameters converted in {seconds:.1f} s: {report.summary()}")


if __name__ == "__main__":
    main()
