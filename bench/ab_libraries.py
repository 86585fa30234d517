"""A/B of two builds of libfq_onnx_ops.so on the per-layer bench (bench/kernel.py's layers).

Each row times onnxruntime's dense Conv, the compressed layer with library A and the same
layer with library B, in alternating blocks in one process (kernel.py's time_many), so load
from other work hits all three alike. Typical use: build the base commit's library once into a
temp dir, then

    python -P bench/ab_libraries.py --a /tmp/base/build/custom_ops/libfq_onnx_ops.so \\
        --b /tmp/new/build/custom_ops/libfq_onnx_ops.so --batches 1 8 --reps 2

B/A > 1: B faster.

With more than one thread each timed block first settles for 50 ms of untimed runs
(kernel.settle_seconds): before that, the session timed after another one was slowed by the
other sessions' spinning thread pools (512@7² at 90%, blocks of 4, batch 8 had measured B/A
0.29 with the new library as B and 0.38 with it as A, 2026-11-25, load < 2).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import kernel as bk  # noqa: E402
from fq_onnx import runtime  # noqa: E402


def session(model, lib: str, threads: int):
    # runtime.library_path() reads the variable when the session options are made.
    os.environ[runtime.LIBRARY_ENV] = lib
    return bk.our_session(model, threads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="library A (the base)")
    ap.add_argument("--b", required=True, help="library B (the change)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--only", nargs="*", help="layers whose name contains one of these")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20, help="minimum timed runs per case")
    ap.add_argument("--reps", type=int, default=1, help="alternations per row")
    args = ap.parse_args(argv)
    for name, c_in, c_out, size, k, stride in bk.LAYERS:
        if args.only and not any(o in name for o in args.only):
            continue
        for batch in args.batches:
            for sparsity in args.sparsities:
                for block in args.blocks:
                    orig, comp = bk.layer_pair(c_in, c_out, size, k, stride, sparsity, block)
                    x = np.random.default_rng(0).standard_normal((batch, c_in, size, size)).astype(np.float32)
                    o = bk.plain_session(orig, args.threads)
                    a, b = session(comp, args.a, args.threads), session(comp, args.b, args.threads)
                    yo = o.run(None, {"X": x})[0]
                    scale = np.abs(yo).max() + 1e-12
                    err = max(float(np.abs(s.run(None, {"X": x})[0] - yo).max() / scale) for s in (a, b))
                    for _ in range(args.reps):
                        to, ta, tb = bk.time_many([o, a, b], {"X": x}, args.runs, settle=bk.settle_seconds(args.threads))
                        print(f"{name:26s} b{batch} {bk.fmt_sparsity(sparsity, block):10s} ort {to * 1e3:7.3f}  "
                              f"A {ta * 1e3:7.3f} ({to / ta:4.2f}x)  B {tb * 1e3:7.3f} ({to / tb:4.2f}x)  "
                              f"B/A {ta / tb:5.3f}  max rel diff {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
