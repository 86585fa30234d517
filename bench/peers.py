"""Whole models against their peers: the original fp32 model in onnxruntime (ORT_ENABLE_ALL) and
the compressed one with dense layers as onnxruntime nodes (dense_graph=auto, the default) or all
ShiftConv (dense_graph=off, the behaviour before), in one process.

    python bench/peers.py --assets ../shared/assets                   # ResNet-20, MobileNet-V2
    python bench/peers.py --assets ../shared/assets --sparsities 0.3 0.5 0.85 --threads 1 2 --batches 1 8

Models are compressed as bench/kernel.py's whole-model table does (every Conv and Gemm, uniform
magnitude pruning, 5-bit shift codes, a following Relu/Clip fused): the timing depends on the
sparsity and the layer shapes, not on how the codes were chosen. Timing on a shared machine:
each block first runs the same session untimed for at least 50 ms (onnxruntime's pool threads
spin after a run and would take a core from the next session), then times `--block` runs; the
sessions' blocks alternate until each has `--runs` runs. Medians with p10/p90 per session; the
ratio is fp32's median over the other's (> 1: faster than the original).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel  # noqa: E402  (bench/kernel.py: compress_existing, input_name_and_shape)

from fq_onnx import runtime  # noqa: E402

ort.set_default_logger_severity(3)  # the originals carry initializers BN folding left unused

MODELS = {"resnet20": "resnet20_cifar10.onnx", "mobilenetv2": "mobilenetv2_imagenet.onnx"}


def time_blocks(sessions, feed, runs, block, settle):
    """Per-run seconds of each session, alternating settled blocks."""
    times = [[] for _ in sessions]
    while len(times[0]) < runs:
        for s, acc in zip(sessions, times):
            t0 = time.perf_counter()
            n = 0
            while n < 2 or time.perf_counter() - t0 < settle:
                s.run(None, feed)
                n += 1
            for _ in range(block):
                t1 = time.perf_counter()
                s.run(None, feed)
                acc.append(time.perf_counter() - t1)
    return [np.asarray(t) for t in times]


def stats(t):
    return tuple(float(np.percentile(t, p)) * 1e3 for p in (50, 10, 90))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "assets"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.85])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runs", type=int, default=40, help="timed runs per session and cell")
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.05, help="seconds of untimed runs before each block")
    ap.add_argument("--modes", nargs="+", default=["off", "auto"], choices=["off", "auto", "all"],
                    help="dense_graph settings timed against fp32 (off: every layer ShiftConv, as before)")
    ap.add_argument("--markdown", help="write the table to this file")
    args = ap.parse_args(argv)

    names = {"off": "ShiftConv only", "auto": "dense_graph=auto", "all": "dense_graph=all"}
    header = "| model | sparsity | threads | batch | fp32 ms (p10-p90) |" + "".join(
        f" {names[m]} ms (p10-p90) | ratio |" for m in args.modes) + " layers as onnxruntime nodes (auto) |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    print(header, flush=True)
    for name in args.models:
        source = onnx.load(str(Path(args.assets) / "models" / MODELS[name]))
        for sparsity in args.sparsities:
            orig, comp = kernel.compress_existing(source, sparsity, 1)
            in_name, shape = kernel.input_name_and_shape(orig)
            data = comp.SerializeToString()
            converted = onnx.ModelProto()
            converted.ParseFromString(runtime.prepare_model(data, "auto"))
            n_ort = sum(1 for n in converted.graph.node if n.op_type in ("Conv", "Gemm", "MatMul"))
            n_all = sum(1 for n in comp.graph.node if n.op_type == "ShiftConv")
            for threads in args.threads:
                sessions = [kernel.plain_session(orig, threads)]
                sessions += [runtime.session(data, threads=threads, dense_graph=m) for m in args.modes]
                for batch in args.batches:
                    x = np.random.default_rng(1).standard_normal([batch] + shape[1:]).astype(np.float32)
                    feed = {in_name: x}
                    ref = sessions[0].run(None, feed)[0]
                    for s in sessions[1:]:
                        err = float(np.abs(s.run(None, feed)[0] - ref).max() / (np.abs(ref).max() + 1e-12))
                        assert err < 1e-3, f"{name} {sparsity}: outputs differ by {err:.1e} of the largest"
                    cells = [stats(t) for t in time_blocks(sessions, feed, args.runs, args.block, args.settle)]
                    fo, f10, f90 = cells[0]
                    row = f"| {name} | {sparsity:.2f} | {threads} | {batch} | {fo:.3f} ({f10:.3f}-{f90:.3f}) |"
                    for med, p10, p90 in cells[1:]:
                        row += f" {med:.3f} ({p10:.3f}-{p90:.3f}) | {fo / med:.2f}x |"
                    row += f" {n_ort} of {n_all} |"
                    lines.append(row)
                    print(row, flush=True)
    load = os.getloadavg()[0]
    lines.append("")
    lines.append(f"onnxruntime {ort.__version__}; 1-minute load average at the end {load:.1f}.")
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
