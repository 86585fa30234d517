"""An app that builds its own onnxruntime sessions, unchanged, on compressed models.

rapidocr_onnxruntime creates its own ``onnxruntime.InferenceSession`` for each of its three
models. After ``fq_onnx_runtime.enable()`` it opens compressed ``.fq.onnx`` files given as its
own ``det_model_path`` / ``rec_model_path`` / ``cls_model_path`` options, with no other change.
This converts the three models (plain, no pruning, 7-bit codes; fidelity is
bench/real_models.py's job), runs the pipeline with the originals and with each compressed
model in turn (then all three) on rendered text lines, and prints how many lines read the same.

    pip install rapidocr-onnxruntime==1.4.4
    python bench/dropin_rapidocr.py [--pages 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_models  # noqa: E402  (model cache and rendered text pages)

import fq_onnx_runtime  # noqa: E402
from fq_onnx import api  # noqa: E402

PARTS = {"det": "ppocr-det", "rec": "ppocr-rec", "cls": "ppocr-cls"}


def read(engine, pages) -> list[list[str]]:
    return [[r[1] for r in (engine(page)[0] or [])] for page, _ in pages]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args(argv)
    from rapidocr_onnxruntime import RapidOCR

    pages = real_models.text_pages(args.pages, seed=11)
    with tempfile.TemporaryDirectory() as work:
        paths = {}
        for part, name in PARTS.items():
            start = time.perf_counter()
            paths[f"{part}_model_path"] = str(Path(work) / f"{part}.fq.onnx")
            report = api.convert(real_models.model_path(name), paths[f"{part}_model_path"], sparsity=0.0, bits=7)
            print(f"{name}: {report.totals.ratio:.1f}x weights-only, {time.perf_counter() - start:.0f} s")
        reference = read(RapidOCR(), pages)
        fq_onnx_runtime.enable()  # the one line: rapidocr itself is not changed
        runs = {f"{part} compressed": {f"{part}_model_path": paths[f"{part}_model_path"]} for part in PARTS}
        runs["det, rec and cls compressed"] = paths
        lines = sum(len(r) for r in reference)
        for label, options in runs.items():
            compressed = read(RapidOCR(**options), pages)
            same = sum(sum(1 for text in r if text in c) for r, c in zip(reference, compressed))
            print(f"rapidocr, {label}: {same}/{lines} lines read as with the originals ({100 * same / max(lines, 1):.1f}%)")

if __name__ == "__main__":
    main()
