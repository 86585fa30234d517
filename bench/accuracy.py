#!/usr/bin/env python
"""Compress the real models at several settings, measure them, and write docs/RESULTS.md.

    python bench/accuracy.py                                  # everything (tens of minutes)
    python bench/accuracy.py --models resnet20 --limit 2000   # a quicker look
    python bench/accuracy.py --settings 5:0.7,7:0.5:4         # bits:sparsity[:block] list
    python bench/accuracy.py --settings 5:r8:w0:a8 --append   # integer activations, rows added

Models and data come from ``../shared/assets`` (``--assets``): MobileNet-V2 on the 1000 ImageNet
sample images and ResNet-20 on the 10,000 CIFAR-10 test images (see its README). Each setting
runs ``fq_onnx.api.convert`` and then ``fq_onnx.evaluate.evaluate`` of the compressed model
against the original on the same inputs, so every number in the generated table is measured.
The images are decoded and resized once per model (Pillow needed for the ImageNet samples) and
kept as uint8; scaling and mean/std are applied per batch by ``evaluate``.

RESULTS.md is rewritten after every setting, so an interrupted run still leaves the rows it
finished; the raw numbers go to a JSON file next to it. ``--append`` keeps the rows already in
that JSON file (a row of the same model and setting is replaced).

A setting with ``a<bits>`` (``5:r8:w0:a8``) converts with integer activations (integer mode,
docs/SHIFTCONV.md): the compressed model is that one, and the same file with the integer-mode
attributes removed (the same weights, float activations) is evaluated beside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fq_onnx.svg import PALETTE, Chart

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = REPO.parent / "shared" / "assets"
DEFAULT_SETTINGS = "5:0.5:plain,5:0.5,7:0.5,5:0.7,5:r8:w0,5:r12:w0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODELS = {
    "mobilenetv2": {
        "title": "MobileNet-V2",
        "model": "models/mobilenetv2_imagenet.onnx",
        "data": "data/imagenet-samples",
        "data_title": "ImageNet samples (1000 images, 1 per class)",
        "pre": "resize short side 256 (bilinear), centre-crop 224, /255, ImageNet mean/std",
    },
    "resnet20": {
        "title": "ResNet-20",
        "model": "models/resnet20_cifar10.onnx",
        "data": "data/cifar10_test_jpeg.npz",
        "data_title": "CIFAR-10 test set from JPEG (10,000 images)",
        "pre": "/255, ImageNet mean/std",
    },
}

# Quoted from the paper (after ~22 epochs of fine-tuning, full ImageNet validation set), for
# context only: not measured here and not comparable image for image.
PAPER = [
    ("ResNet-18", "68.94", "68.36", "74.9%", 5, "16.33x"),
    ("ResNet-50", "75.58", "74.86", "82.7%", 5, "18.08x"),
    ("MobileNet-V2", "71.65", "70.05", "31.7%", 7, "8.14x"),
]


def parse_settings(text: str) -> list[dict]:
    """Comma-separated settings ``bits:amount[:option...]``.

    ``amount`` is a uniform sparsity (``0.7``) or a target weights-only ratio (``r12``, chosen
    per layer by the allocator). Options: an integer block size (``4``), ``plain`` (no
    calibration: magnitude pruning and nearest rounding), ``w<x>`` (``--w-sep x``; ``w0`` makes
    every layer focused), ``perlayer`` (one scale per layer, as in the paper), ``b<digits>`` (the
    bit widths the allocator may choose per layer, e.g. ``b3456``; with a target ratio only), ``a<bits>`` or
    ``a<bits><method>`` (integer activations of that many bits, scales by ``mse`` (default),
    ``minmax`` or ``percentile``: ``a8``, ``a8minmax``).
    """
    usage = "use bits:amount[:option...], e.g. 5:0.7, 5:r12:w0, 5:r12:w0:b3456, 5:0.5:plain, 5:0.9:4"
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) < 2:
            raise SystemExit(f"bad setting {item!r}: {usage}")
        setting = {"name": item, "bits": 0, "sparsity": None, "target_ratio": None, "block": 1,
                   "calibrated": True, "w_sep": 2.0, "per_channel": True, "alloc_bits": None,
                   "act_bits": None, "act_calib": None}
        try:
            setting["bits"] = int(parts[0])
            if parts[1].startswith("r"):
                setting["target_ratio"] = float(parts[1][1:])
            else:
                setting["sparsity"] = float(parts[1])
            for option in parts[2:]:
                if option == "plain":
                    setting["calibrated"] = False
                elif option == "perlayer":
                    setting["per_channel"] = False
                elif option.startswith("w"):
                    setting["w_sep"] = float(option[1:])
                elif option.startswith("b") and option[1:].isdigit():
                    setting["alloc_bits"] = [int(d) for d in option[1:]]
                elif option.startswith("a"):
                    digits = "".join(ch for ch in option[1:] if ch.isdigit())
                    method = option[1 + len(digits):] or "mse"
                    if method not in ("mse", "minmax", "percentile"):
                        raise ValueError(option)
                    setting["act_bits"], setting["act_calib"] = int(digits), method
                else:
                    setting["block"] = int(option)
        except ValueError:
            raise SystemExit(f"bad setting {item!r}: {usage}") from None
        if setting["target_ratio"] is not None and not setting["calibrated"]:
            raise SystemExit(f"bad setting {item!r}: a target ratio needs calibration (drop 'plain')")
        if setting["alloc_bits"] and setting["target_ratio"] is None:
            raise SystemExit(f"bad setting {item!r}: b<digits> chooses bits per layer, which needs a target ratio (r..)")
        if setting["act_bits"] is not None and not setting["calibrated"]:
            raise SystemExit(f"bad setting {item!r}: integer activations need calibration (drop 'plain')")
        out.append(setting)
    if not out:
        raise SystemExit("no settings given")
    return out


def _decoded(key: str, assets: Path, work: Path) -> Path:
    """The model's data as an .npz of uint8 NHWC images + labels. The CIFAR file is used as is;
    the ImageNet samples are decoded, resized (short side 256, bilinear) and centre-cropped
    (224) once with Pillow and cached in ``work``."""
    from fq_onnx import data as fqdata

    path = assets / MODELS[key]["data"]
    if not path.exists():
        raise SystemExit(f"{path}: data not found (pass --assets DIR)")
    if path.suffix == ".npz":
        return path
    cache = work / f"{path.name}_256_224.npz"
    if cache.exists():
        return cache
    t0 = time.perf_counter()
    pre = fqdata.Preprocess(size=256, crop=224, scale=1.0, layout="nhwc",
                            input_shape=(None, 224, 224, 3), dtype="uint8")
    reader = fqdata.ImageFolderReader(path, preprocess=pre)
    xs, ys = zip(*reader.batches(64))
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, x=np.concatenate(xs), y=np.concatenate(ys))
    os.replace(tmp, cache)
    print(f"[{key}] {len(reader)} images from {path} decoded, resized and cropped in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return cache


def prepare_data(key: str, assets: Path, work: Path, calib: int) -> tuple[Path | None, Path, int]:
    """Split the model's data into calibration and evaluation sets that do not overlap.

    ``calib`` samples spread evenly over the data (every k-th, so every class is represented)
    calibrate the conversion; the evaluation uses all the others. Returns ``(calib .npz or None,
    eval .npz, total samples)``.
    """
    from fq_onnx.data import subset_indices

    source = _decoded(key, assets, work)
    if calib <= 0:
        with np.load(source) as z:
            return None, source, len(z["y"])
    calib_path, eval_path = work / f"{key}_calib{calib}.npz", work / f"{key}_eval_calib{calib}.npz"
    with np.load(source) as z:
        x, y = z["x"], z["y"].astype(np.int64)
    index = subset_indices(len(x), calib)
    if index is None:
        raise SystemExit(f"--calib {calib} leaves no evaluation data ({len(x)} samples)")
    rest = np.setdiff1d(np.arange(len(x)), index)
    np.savez(calib_path, x=x[index])
    np.savez(eval_path, x=x[rest], y=y[rest])
    return calib_path, eval_path, len(x)


def run(args) -> int:
    from fq_onnx import api
    from fq_onnx.evaluate import evaluate

    settings = parse_settings(args.settings)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    for k in keys:
        if k not in MODELS:
            raise SystemExit(f"unknown model {k!r}: choose from {', '.join(MODELS)}")
    out_md = Path(args.out)
    out_json = Path(args.json) if args.json else out_md.with_suffix(".json")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fq_bench_"))
    work.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    if args.append and out_json.exists():
        saved = json.loads(out_json.read_text())
        rows, meta = saved["rows"], saved["meta"]
    run_info = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/accuracy.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {_cpu_name()}",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "calib": args.calib,
        "git": _git_revision(),
    }
    if args.append and rows:
        meta.setdefault("appended", []).append(run_info)
    else:
        rows, meta = [], dict(run_info)
    for key in keys:
        spec = MODELS[key]
        model = args.assets / spec["model"]
        if not model.exists():
            raise SystemExit(f"{model}: model not found (pass --assets DIR)")
        calib, data, total = prepare_data(key, args.assets, work, args.calib)
        spec["split"] = (f"{args.calib} images (every k-th) held out for calibration, the other "
                         f"{total - args.calib} evaluated" if calib is not None else
                         f"all {total} evaluated, no calibration")
        for s in settings:
            tag = f"{key}_" + s["name"].replace(":", "_")
            compressed = work / f"{tag}.onnx"
            t0 = time.perf_counter()
            calibration = {} if calib is None or not s["calibrated"] else dict(
                calib=str(calib), calib_size=args.calib, preset="cifar", target_ratio=s["target_ratio"],
                alloc_bits=s["alloc_bits"])
            if s["act_bits"] is not None:
                if calib is None:
                    raise SystemExit(f"setting {s['name']!r}: integer activations need --calib > 0")
                calibration.update(act_bits=s["act_bits"], act_calib=s["act_calib"])
            report = api.convert(model, compressed, sparsity=s["sparsity"] or 0.0, bits=s["bits"],
                                 block=s["block"], seed=args.seed, w_sep=s["w_sep"],
                                 per_channel=s["per_channel"], **calibration)
            widths = sorted(set((report.settings.get("per_layer_bits") or {}).values()))
            bits = f"{widths[0]}-{widths[-1]}" if len(widths) > 1 else (widths[0] if widths else s["bits"])
            s = {**s, "sparsity": report.totals.sparsity, "bits": bits}
            convert_s = time.perf_counter() - t0
            print(f"[{tag}] converted in {convert_s:.1f} s: {report.summary()}", flush=True)
            result = evaluate(compressed, model, data, limit=args.limit, scale=255.0, mean=IMAGENET_MEAN,
                              std=IMAGENET_STD, batch_size=args.batch_size, threads=args.threads,
                              latency_runs=args.latency_runs, memory=not args.no_memory,
                              progress=True)
            print(result.to_table(), flush=True)
            load = _loadavg()
            row = {"key": key, "title": spec["title"], "data": spec["data_title"],
                   "pre": spec["pre"], "split": spec["split"], **s, "convert_s": convert_s,
                   "method": _method(report.settings or {}),
                   "modes": report.mode_counts(), "loadavg_1min": load,
                   "result": result.to_dict(), "run": run_info}
            if s["act_bits"] is not None:
                row.update(_integer_rows(report, compressed, model, data, args))
            rows = [r for r in rows if (r["key"], r.get("name")) != (key, s["name"])] + [row]
            meta["versions"] = result.versions
            write_outputs(out_md, out_json, rows, meta)
            if not args.keep:
                compressed.unlink(missing_ok=True)
                compressed.with_name(compressed.stem + "_float_act.onnx").unlink(missing_ok=True)
    print(f"wrote {out_md} and {out_json}")
    return 0


def _integer_rows(report, compressed: Path, model: Path, data: Path, args) -> dict:
    """The integer-mode extras of a row: the per-layer quantizers, and the same weights with
    float activations (integer-mode attributes removed) against the original and against the
    integer model."""
    import onnx

    from fq_onnx.evaluate import evaluate

    twin = compressed.with_name(compressed.stem + "_float_act.onnx")
    proto = onnx.load(str(compressed))
    for node in proto.graph.node:
        if node.domain == "fq_onnx":
            keep = [a for a in node.attribute if not a.name.startswith("act_")]
            del node.attribute[:]
            node.attribute.extend(keep)
    onnx.save(proto, str(twin))
    common = dict(limit=args.limit, scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=args.batch_size,
                  threads=args.threads, progress=True)
    float_act = evaluate(twin, model, data, latency_runs=args.latency_runs, memory=False, **common)
    print("float activations, same weights:\n" + float_act.to_table(), flush=True)
    int_vs_float = evaluate(compressed, twin, data, latency_runs=args.latency_runs, memory=False, **common)
    print("integer vs float activations:\n" + int_vs_float.to_table(), flush=True)
    layers = [{"name": r.name, "act": r.act} for r in report.layers]
    return {"float_act_result": float_act.to_dict(), "int_vs_float": int_vs_float.to_dict(), "act_layers": layers}


def _git_revision() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _method(settings: dict) -> str:
    text = f"{settings.get('prune_method', 'magnitude')} + {settings.get('rounding', 'nearest')}"
    text += " + bias corr." if settings.get("bias_correction") else ""
    text += ", per-channel scales" if settings.get("per_channel") else ", per-layer scale"
    if settings.get("w_sep", 2.0) != 2.0:
        text += f", w_sep {settings['w_sep']:g}"
    allocation = settings.get("allocation")
    if allocation:
        text += f", allocated for {allocation['target']}"
        widths = sorted(set((settings.get("per_layer_bits") or {}).values()))
        if len(widths) > 1:
            text += f" (bits {', '.join(map(str, widths))} per layer)"
    return text


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _lat(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def table_rows(rows: list[dict]) -> list[str]:
    head = ("| model | setting | baseline top-1 | baseline top-5 | compressed top-1 | compressed top-5 | "
            "Δ top-1 (95% CI), pp | sparsity | bits | block | weights-only CR | file CR | "
            "latency ratio b1 | latency ratio bN | agreement | SQNR dB |")
    lines = [head, "|" + "|".join(["---"] + ["---:"] * (head.count("|") - 2)) + "|"]
    for row in rows:
        r = row["result"]
        m, ref, c = r["model"], r["reference"], r["comparison"]
        d = c.get("top1") if c else None
        delta = "-" if not d else (f"{100 * d['difference']:+.2f} "
                                   f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]")
        sq = c["sqnr_db"]
        sq_text = "∞" if sq is None else f"{sq:.1f}"
        sp = m["weight_sparsity"]
        sp_text = "-" if sp is None else f"{100 * sp:.1f}%"
        lines.append(
            f"| {row['title']} | `{row.get('name', '-')}` | {_pct(ref['top1'])} | {_pct(ref['top5'])} | {_pct(m['top1'])} | "
            f"{_pct(m['top5'])} | {delta} | "
            f"{sp_text} | "
            f"{row['bits']} | {row['block']} | {_x(m['weights_ratio'])} | {_x(c['file_ratio'])} | "
            f"{_lat(c['latency_ratio_batch1'])} | {_lat(c['latency_ratio_batch'])} | "
            f"{100 * c['agreement']:.2f}% | {sq_text} |")
    return lines


def detail_rows(rows: list[dict]) -> list[str]:
    head = ("| model | bits | sparsity | block | file bytes (orig -> compressed) | latency b1 ms "
            "(orig / compressed) | latency bN ms (orig / compressed) | session ms (orig / "
            "compressed) | peak memory MiB (orig / compressed) | layers FQ / shift | method | "
            "convert s |")
    lines = [head, "|" + "|".join(["---"] + ["---:"] * (head.count("|") - 2)) + "|"]
    for row in rows:
        r = row["result"]
        m, ref = r["model"], r["reference"]

        def lat(s, k):
            v = s.get(k)
            return "-" if not v else f"{v['median_ms']:.2f}"

        def mem(s):
            v = s.get("memory")
            return "-" if not v else f"{v['peak_delta_bytes'] / 2**20:.1f}"

        modes = row.get("modes") or {}
        lines.append(
            f"| {row['title']} | {row['bits']} | {row['sparsity']:g} | {row['block']} | "
            f"{ref['file_bytes']:,} -> {m['file_bytes']:,} | {lat(ref, 'latency_batch1')} / "
            f"{lat(m, 'latency_batch1')} | {lat(ref, 'latency_batch')} / {lat(m, 'latency_batch')} | "
            f"{1e3 * ref['session_s']:.1f} / {1e3 * m['session_s']:.1f} | {mem(ref)} / {mem(m)} | "
            f"{modes.get('FQ', 0)} / {modes.get('shift', 0)} | {row.get('method', '-')} | "
            f"{row['convert_s']:.1f} |")
    return lines


def integer_section(rows: list[dict]) -> list[str]:
    """Float against integer activations at the same weights, for the ``a<bits>`` settings."""
    rows = [r for r in rows if r.get("act_bits")]
    if not rows:
        return []
    head = ("| model | setting | baseline top-1 | float act. top-1 | integer act. top-1 | Δ top-1 integer − float "
            "(95% CI), pp | agreement integer / float | SQNR integer vs float dB | integer / weight layers | clip rate "
            "median / max | latency b1 ms float / integer act. | latency bN ms float / integer act. |")
    lines = ["## Integer activations (integer mode)", "",
             "Settings with `a<bits>` convert with integer activations (docs/SHIFTCONV.md, \"Integer mode\"): "
             "every ShiftConv quantizes its input to that many bits with a power-of-two scale calibrated on "
             "the calibration images (`--act-calib`, default `mse`) and sums exact int32 shifts and adds. "
             "\"float act.\" is the same file with the integer-mode attributes removed: identical weights, "
             "float activations. Δ and agreement compare the two on the same images. Weight layers the "
             "allocator left uncompressed (`r` settings) stay float Conv/Gemm and count as not integer. "
             "Clip rate: share of the calibration values outside each layer's quantizer range. The "
             "latency columns are whole-model `run()` medians on the shared machine (see the load note "
             "above); docs/PERFORMANCE.md has single-thread kernel timings.", "",
             head, "|" + "|".join(["---"] + ["---:"] * (head.count("|") - 2)) + "|"]
    notes = []
    for row in rows:
        integer, floating, pair = row["result"], row["float_act_result"], row["int_vs_float"]
        d = (pair["comparison"] or {}).get("top1")
        delta = "-" if not d else (f"{100 * d['difference']:+.2f} [{100 * d['ci_low']:+.2f}, "
                                   f"{100 * d['ci_high']:+.2f}]")
        acts = [layer["act"] or {} for layer in row.get("act_layers", [])]
        rates = sorted(a["clip_rate"] for a in acts if "clip_rate" in a)
        clip = "-" if not rates else f"{100 * rates[len(rates) // 2]:.3f}% / {100 * rates[-1]:.3f}%"
        sq = pair["comparison"]["sqnr_db"]

        def lat(result, key):
            v = result.get(key)
            return "-" if not v else f"{v['median_ms']:.2f}"

        lines.append(
            f"| {row['title']} | `{row['name']}` | {_pct(integer['reference']['top1'])} | "
            f"{_pct(floating['model']['top1'])} | {_pct(integer['model']['top1'])} | {delta} | "
            f"{100 * pair['comparison']['agreement']:.2f}% | {'∞' if sq is None else f'{sq:.1f}'} | "
            f"{sum(1 for a in acts if 'bits' in a)} / {len(acts)} | {clip} | "
            f"{lat(pair['reference'], 'latency_batch1')} / {lat(pair['model'], 'latency_batch1')} | "
            f"{lat(pair['reference'], 'latency_batch')} / {lat(pair['model'], 'latency_batch')} |")
        for layer in row.get("act_layers", []):
            if layer["act"] and "fallback" in layer["act"]:
                notes.append(f"- {row['title']} `{row['name']}`, {layer['name']}: float activations kept: "
                             f"{layer['act']['fallback']}")
    lines += [""] + (["Layers left with float activations (the converter's reason):", "", *notes, ""] if notes else [])
    return lines


def render(rows: list[dict], meta: dict) -> str:
    v = meta.get("versions", {})
    datasets: dict[tuple, list[str]] = {}  # one line per model and split, naming the rows when a model has several
    for row in rows:
        key = (row["title"], row["data"], row["pre"], row.get("split", ""), row["result"]["samples"],
               row["result"]["batch_size"])
        datasets.setdefault(key, []).append(row["name"])
    splits = {}
    for title, *_ in datasets:
        splits[title] = splits.get(title, 0) + 1
    out = [
        "# Results: accuracy, size and speed of compressed models",
        "",
        "<!-- Generated by bench/accuracy.py from its measurements; do not edit by hand. -->",
        "",
        f"Generated {meta['date']} by `{meta['command']}` on {meta['machine']}; onnxruntime "
        f"{v.get('onnxruntime', '?')}, fq-onnx {v.get('fq_onnx', '?')} (git "
        f"{meta.get('git', 'unknown')}), threads "
        f"{meta['threads'] or 'onnxruntime default'}.",
        *[f"Rows added {a['date']} by `{a['command']}` (git {a.get('git', 'unknown')})." for a in meta.get("appended", [])],
        "",
        "Post-training only (no fine-tuning). Every compressed model is compared with its original "
        "on the same images; the drop is what counts (the sample sets are not the standard "
        "benchmarks: see `../shared/assets/README.md`).",
        "",
        "Data:",
        "",
    ]
    for (title, data, pre, split, n, bs), names in datasets.items():
        split = f"{split}; " if split else ""
        subset = "" if f" {n} evaluated" in split else f"{n} evaluated in this run (--limit); "
        which = f" ({', '.join(f'`{name}`' for name in names)})" if splits[title] > 1 else ""
        out.append(f"- {title}{which}: {data}; {split}{subset}{pre}; batch {bs}.")
    loads = [row["loadavg_1min"] for row in rows if row.get("loadavg_1min") is not None]
    if loads:
        cpus = os.cpu_count() or 1
        busy = max(loads) > cpus
        out += ["", f"1-minute load average after each setting: {min(loads):.1f} to {max(loads):.1f} "
                    f"on {cpus} logical CPUs" + (" — the machine was busy with other work, so the "
                                                 "latency numbers are noisy; compare them only "
                                                 "within a row." if busy else ".")]
    out += [
        "",
        "## Summary",
        "",
        *table_rows(rows),
        "",
        "- Δ top-1: compressed minus baseline in percentage points, 95% CI from the paired "
        "predictions (Newcombe's hybrid score method for paired proportions).",
        "- sparsity: measured share of zero weights over all compressed layers.",
        "- weights-only CR: float32 bytes of the compressed layers' weights over the bytes that "
        "store them (codes, Huffman tables, headers). file CR: original .onnx bytes over "
        "compressed .onnx bytes.",
        "- latency ratio: compressed median over original median of `InferenceSession.run` (< 1 "
        "is faster), at batch 1 and at the evaluation batch size bN.",
        "- agreement: share of images where both models predict the same class. SQNR: "
        "compressed vs original logits.",
        "",
        *integer_section(rows),
        "## Accuracy against ratio",
        "",
        "![top-1 drop against weights-only ratio](accuracy_vs_ratio.svg)",
        "",
        "Each point is one row of the summary: filled, calibrated (OBS + GPTQ + bias correction, "
        "allocated where the setting says `r`); hollow, plain magnitude pruning + rounding.",
        "",
        "## Details",
        "",
        *detail_rows(rows),
        "",
        "Latency: median of up to the configured number of timed runs after warm-up, the two models "
        "interleaved. Session: median time to create an `InferenceSession` (for the compressed "
        "model this includes decoding the weights). Peak memory: resident-set high-water mark "
        "above the process baseline while creating the session and running one batch, measured "
        "in a fresh subprocess per model.",
        "",
        "## For context: the paper (with fine-tuning, full ImageNet validation set)",
        "",
        "Quoted from Zhao et al. 2019, not measured here:",
        "",
        "| model | fp32 top-1 | FQ top-1 | sparsity | bits | CR |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {m} | {a} | {b} | {s} | {bits} | {cr} |" for m, a, b, s, bits, cr in PAPER],
        "",
    ]
    return "\n".join(out)


def plot_svg(rows: list[dict]) -> str:
    """Top-1 drop (points) against weights-only ratio, one colour per model (filled: calibrated)."""
    points = []
    for row in rows:
        r = row["result"]
        ratio, drop = r["model"]["weights_ratio"], (r["comparison"].get("top1") or {}).get("difference")
        if ratio and drop is not None:
            points.append((row["title"], ratio, 100 * drop, row.get("calibrated", True), row.get("name", "")))
    if not points:
        return ""
    x_max = max(p[1] for p in points) * 1.1
    y_min = min(min(p[2] for p in points), -1.0) * 1.1
    chart = Chart(640, 400, title="Top-1 change against weights-only ratio", x_label="weights-only compression ratio",
                  y_label="top-1 change (points)", x_range=(0.0, x_max), y_range=(y_min, 0.0),
                  x_format=lambda v: f"{v:g}x", y_format=lambda v: f"{v:g}")
    chart.hline(0.0, "#555555")
    for i, model in enumerate(dict.fromkeys(p[0] for p in points)):
        colour = PALETTE[i % len(PALETTE)]
        for calibrated in (True, False):
            mine = [p for p in points if p[0] == model and p[3] == calibrated]
            if mine:
                chart.points([p[1] for p in mine], [p[2] for p in mine], colour,
                             model if calibrated else f"{model} (uncalibrated)", radius=5, hollow=not calibrated,
                             titles=[f"{t} {name}: {ratio:.1f}x, {drop:+.2f}" for t, ratio, drop, _, name in mine])
    return chart.svg("Each point is one conversion: its weights-only ratio and its top-1 change.") + "\n"


def write_outputs(out_md: Path, out_json: Path, rows: list[dict], meta: dict) -> None:
    for path, text in ((out_md, render(rows, meta)),
                       (out_md.with_name("accuracy_vs_ratio.svg"), plot_svg(rows)),
                       (out_json, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=DEFAULT_ASSETS,
                    help=f"folder with models/ and data/ (default {DEFAULT_ASSETS})")
    ap.add_argument("--models", default="resnet20,mobilenetv2",
                    help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--settings", default=DEFAULT_SETTINGS,
                    help=f"bits:sparsity[:block] list (default {DEFAULT_SETTINGS})")
    ap.add_argument("--limit", type=int, default=None,
                    help="evaluate only N of the evaluation images (evenly spaced)")
    ap.add_argument("--calib", type=int, default=256,
                    help="images held out of the evaluation to calibrate the conversion (OBS "
                         "pruning, GPTQ rounding, bias correction); 0 = none (magnitude, nearest)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "docs" / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="raw results (default: RESULTS.json next to --out)")
    ap.add_argument("--workdir", default=None, help="where compressed models go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the compressed models")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in the JSON file (same model and setting: replaced)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite --out from the JSON of an earlier run without measuring")
    args = ap.parse_args(argv)
    if args.render_only:
        out_md = Path(args.out)
        out_json = Path(args.json) if args.json else out_md.with_suffix(".json")
        saved = json.loads(out_json.read_text())
        write_outputs(out_md, out_json, saved["rows"], saved["meta"])
        print(f"rewrote {out_md} from {out_json}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
