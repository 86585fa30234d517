#!/usr/bin/env python
"""Convert a model bigger than protobuf's 2 GB limit, its weights in an external data file.

    python bench/large_model.py [--gb 2.2] [--channels 1024] [--exclude 1] [--dir DIR]

Builds a chain of 3x3 Conv + Relu layers (random weights, written layer by layer to
``big.onnx.data``, never all in memory), converts it without calibration in a subprocess that
reports its peak resident memory (VmHWM) and wall time, then opens the result in onnxruntime
with the ShiftConv library and runs it once. ``--exclude N`` leaves the last N layers
uncompressed, so the output keeps them in its own external data file. Prints sizes, times and
memory; docs/LARGE_MODELS.md records a run. tests/test_large_models.py uses ``build`` and
``measure`` on a ~100 MB model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

INPUT_HW = 4


def build(path: Path, total_bytes: int, channels: int = 1024, seed: int = 0, scale: float = 0.02) -> dict:
    """Writes ``path`` and ``path.data``: conv layers of channels x channels x 3 x 3 (normal
    weights times ``scale``) until the weights reach ``total_bytes``. One layer is in memory at
    a time. Returns a summary."""
    rng = np.random.default_rng(seed)
    per_layer = channels * channels * 9
    layers = max(1, -(-total_bytes // (4 * per_layer)))
    data_name = path.name + ".data"
    nodes, inits, prev = [], [], "X"
    with open(path.parent / data_name, "wb") as data:
        for i in range(layers):
            weight = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) * np.float32(scale)
            offset = data.tell()
            weight.tofile(data)
            tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=weight.shape)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(weight.nbytes))):
                tensor.external_data.add(key=key, value=value)
            inits.append(tensor)
            nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    shape = [1, channels, INPUT_HW, INPUT_HW]
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return {"layers": layers, "params": layers * per_layer, "weight_bytes": 4 * layers * per_layer,
            "input_shape": shape}


# Runs in a fresh interpreter: VmHWM is then this conversion's peak alone.
_CONVERT = """
import json, sys, time
from fq_onnx import api
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
source, output, sparsity, exclude = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[6:]
# Load every lazily imported module (scikit-learn, onnxruntime...) with a tiny model first, so
# the growth of VmHWM afterwards is the conversion's own memory.
api.convert(sys.argv[4], sys.argv[5], sparsity=sparsity)
before = hwm()
start = time.perf_counter()
report = api.convert(source, output, sparsity=sparsity, exclude=exclude)
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - start, "hwm_before": before, "hwm": hwm(),
                  "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "summary": report.summary(), "file_bytes": report.file_bytes}))
"""


def measure(source: Path, output: Path, sparsity: float = 0.5, exclude: tuple[str, ...] = ()) -> dict:
    """Convert in a subprocess; returns its wall time, peak RSS before and after, and the report line."""
    warm = output.parent / "warm-up.onnx"
    build(warm, 4 * 8 * 8 * 9, channels=8)
    run = subprocess.run([sys.executable, "-c", _CONVERT, str(source), str(output), str(sparsity), str(warm),
                          str(output.parent / "warm-up.fq.onnx"), *exclude],
                         capture_output=True, text=True, cwd=output.parent)
    for leftover in (warm, warm.with_name(warm.name + ".data"), output.parent / "warm-up.fq.onnx"):
        leftover.unlink(missing_ok=True)
    if run.returncode:
        raise RuntimeError(f"conversion failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


_SESSION = """
import json, sys, time
import numpy as np
from fq_onnx import runtime
start = time.perf_counter()
session = runtime.session(sys.argv[1])
created = time.perf_counter() - start
x = np.random.default_rng(0).standard_normal(json.loads(sys.argv[2])).astype(np.float32)
start = time.perf_counter()
y = session.run(None, {"X": x})[0]
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"session_seconds": created, "run_seconds": time.perf_counter() - start, "hwm": hwm,
                  "finite": bool(np.isfinite(y).all()), "shape": list(y.shape)}))
"""


def open_and_run(model: Path, input_shape: list[int]) -> dict:
    run = subprocess.run([sys.executable, "-c", _SESSION, str(model), json.dumps(input_shape)],
                         capture_output=True, text=True, cwd=model.parent)
    if run.returncode:
        raise RuntimeError(f"onnxruntime failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.2, help="weights to generate, in GiB")
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--exclude", type=int, default=1, help="last N layers left uncompressed")
    parser.add_argument("--dir", type=Path, help="where the temporary files go (default: the system temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        folder = Path(folder)
        source, output = folder / "big.onnx", folder / "big.fq.onnx"
        start = time.perf_counter()
        info = build(source, int(args.gb * 2**30), args.channels)
        print(f"built {info['layers']} conv layers, {info['params'] / 1e6:.0f} M parameters, "
              f"{info['weight_bytes'] / 2**30:.2f} GiB of weights in {source.name}.data "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        exclude = tuple(f"conv{i}" for i in range(info["layers"] - args.exclude, info["layers"]))
        result = measure(source, output, args.sparsity, exclude)
        peak = result["hwm"]
        print(f"convert: {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s CPU "
              f"({info['params'] / result['seconds'] / 1e6:.2f} M params/s of wall time), "
              f"peak RSS {peak / 2**30:.2f} GiB = {peak / info['weight_bytes']:.2f}x the weights; "
              f"{(peak - result['hwm_before']) / 2**20:.0f} MiB above the {result['hwm_before'] / 2**20:.0f} MiB "
              "of an interpreter that has converted a tiny model", flush=True)
        print(f"  {result['summary']}")
        data = output.with_name(output.name + ".data")
        print(f"output: {output.name} {output.stat().st_size / 2**20:.1f} MiB"
              + (f" + {data.name} {data.stat().st_size / 2**20:.1f} MiB" if data.exists() else ", no external data"))
        ran = open_and_run(output, info["input_shape"])
        print(f"onnxruntime + ShiftConv: session {ran['session_seconds']:.1f} s, one run {ran['run_seconds']:.2f} s, "
              f"peak RSS {ran['hwm'] / 2**30:.2f} GiB, output {ran['shape']} finite={ran['finite']}")


if __name__ == "__main__":
    main()
