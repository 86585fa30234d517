"""Output SQNR and file ratio of plain conversions with the mantissa level family (issue 16).

    python bench/mantissa_levels.py [--model ~/.cache/fq-onnx-bench/models/yolov8n/320n.onnx]
        [--photos 8] [--sparsity 0 0.5] [--mantissa 0 1 2 3] [--json out.json]

YOLOv8n (nudenet's 320n.onnx) on photos of ../shared/assets/data/imagenet-samples, preprocessed
as nudenet does (pad to a square, resize to 320, RGB / 255, NCHW). Each conversion keeps the
exponent bits of 5-bit codes and adds the mantissa bits (``bits = 5 + m``), with the DFL conv
excluded (docs/REAL_MODELS_DIAGNOSIS.md). SQNR = 10 log10(|y|^2 / |y - y_ref|^2) over all
outputs; ratio = the model files' sizes (original / compressed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fq_onnx import api, runtime

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "assets" / "data" / "imagenet-samples"
MODEL = Path.home() / ".cache" / "fq-onnx-bench" / "models" / "yolov8n" / "320n.onnx"
DFL = "/model.22/dfl/conv/Conv"


def photos(count: int, size: int = 320) -> np.ndarray:
    files = sorted(PHOTOS.glob("*.JPEG"))
    files = files[:: max(1, len(files) // count)][:count]
    out = []
    for f in files:
        img = Image.open(f).convert("RGB")
        side = max(img.size)
        square = Image.new("RGB", (side, side))
        square.paste(img, (0, 0))
        out.append(np.asarray(square.resize((size, size), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255)
    return np.stack(out).astype(np.float32)


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = runtime.session(str(path))
    name = session.get_inputs()[0].name
    return np.concatenate([np.concatenate([o.astype(np.float64).ravel() for o in session.run(None, {name: x[i:i + 1]})])
                           for i in range(len(x))])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--mantissa", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    x = photos(args.photos)
    reference = outputs(args.model, x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in args.sparsity:
            for m in args.mantissa:
                out = Path(tmp) / f"s{sparsity}-m{m}.onnx"
                api.convert(args.model, out, sparsity=sparsity, bits=5 + m, mantissa=m, exclude=[DFL])
                y = outputs(out, x)
                sqnr = float(10 * np.log10(np.sum(reference**2) / np.sum((y - reference) ** 2)))
                ratio = args.model.stat().st_size / out.stat().st_size
                rows.append({"sparsity": sparsity, "bits": 5 + m, "mantissa": m, "sqnr_db": sqnr, "file_ratio": ratio})
                print(f"sparsity {sparsity:g}, bits {5 + m}, m = {m}: {sqnr:5.1f} dB, file ratio {ratio:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
