#!/usr/bin/env python
"""Time `fq_onnx.api.convert`: plain on a synthetic 26 M-parameter model, or calibrated on a real one.

    python bench/convert_time.py [--sparsity 0.7] [--layers 11]
    python bench/convert_time.py --real yolov8n [--target-ratio 8] [--calib 64]

Synthetic: the weights are random (conversion time does not depend on their values); the model
is built with onnx.helper in a temporary folder and converted without calibration.
Real: a model of bench/real_models.py's corpus (downloaded there once) with that many of its
real preprocessed inputs, allocated at ``--target-ratio``, with an empty calibration cache.
Prints wall and CPU seconds (CPU time is the steadier figure on a shared machine) and the
seconds per stage of the conversion.
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


def real(name: str, target_ratio: float, calib: int) -> None:
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_models

    from fq_onnx import api

    inputs = real_models.make_task(name, calib, 12).calibration()[:calib]
    with tempfile.TemporaryDirectory() as folder:
        os.environ["FQ_ONNX_CACHE"] = folder  # nothing cached: the statistics are collected
        start, cpu = time.perf_counter(), time.process_time()
        report = api.convert(real_models.model_path(name), Path(folder) / "out.onnx", calib=inputs,
                             target_ratio=target_ratio)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{name}: {len(inputs)} inputs {list(inputs.shape[1:])}, --target-ratio {target_ratio:g}: "
          f"{seconds:.1f} s wall, {cpu:.1f} s CPU; {report.summary()}")
    print(report.timing_summary())


def main() -> None:
    from fq_onnx import api

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--layers", type=int, default=11)
    parser.add_argument("--real", help="a model of bench/real_models.py (e.g. yolov8n), converted calibrated")
    parser.add_argument("--target-ratio", type=float, default=8.0)
    parser.add_argument("--calib", type=int, default=64, help="calibration inputs of --real")
    args = parser.parse_args()
    if args.real:
        real(args.real, args.target_ratio, args.calib)
        return
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "big.onnx"
        params = build(source, args.layers)
        start = time.perf_counter()
        report = api.convert(source, Path(folder) / "big.fq.onnx", sparsity=args.sparsity)
        seconds = time.perf_counter() - start
    print(f"{params / 1e6:.1f} M parameters converted in {seconds:.1f} s: {report.summary()}")


if __name__ == "__main__":
    main()
