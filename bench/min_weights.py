#!/usr/bin/env python
"""A plain conversion (sparsity 0.5, 5 bits) of a corpus model with ``--min-weights 0`` and with
the default: ratio, output SQNR (and, for class scores, argmax agreement) against the original on its own inputs.

    python bench/min_weights.py yolov8n [--inputs 8]     # any model of bench/real_models.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_models  # noqa: E402

from fq_onnx import api, runtime  # noqa: E402
from fq_onnx.options import DEFAULTS  # noqa: E402


def outputs(session, name: str, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=f"one of {', '.join(real_models.MODELS)}")
    parser.add_argument("--inputs", type=int, default=8)
    args = parser.parse_args()
    x = real_models.make_task(args.model, args.inputs, 12).calibration()[: args.inputs]
    source = real_models.model_path(args.model)
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    name = original.get_inputs()[0].name
    want = outputs(original, name, x)
    with tempfile.TemporaryDirectory() as folder:
        for min_weights in (0, DEFAULTS.min_weights):
            out = Path(folder) / f"m{min_weights}.onnx"
            report = api.convert(source, out, sparsity=0.5, bits=5, min_weights=min_weights)
            got = outputs(runtime.session(str(out)), name, x)
            sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
            agree = ""
            if want.ndim == 2:  # class scores: top-1 agreement means something
                agree = f", argmax agreement {100 * np.mean(want.argmax(1) == got.argmax(1)):.0f}% of {len(x)}"
            kept = [n for n, _, why in report.skipped if "min-weights" in why or "not smaller" in why]
            print(f"--min-weights {min_weights}: {report.summary()}; output SQNR {sqnr:.1f} dB{agree}; "
                  f"kept in float by the rule: {kept}")


if __name__ == "__main__":
    main()
