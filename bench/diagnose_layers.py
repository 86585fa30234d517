"""Why does a model lose its function? Per layer: one layer compressed at a time, output SQNR.

    python bench/diagnose_layers.py MODEL.onnx INPUTS.npy [--limit 16] [--json out.json]

For the BN-folded float graph and for each Conv/Gemm/MatMul alone, the model's outputs on
INPUTS (a preprocessed [N, ...] float32 array) are compared with the original's:

* ``fold``: the graph after BatchNormalization folding, no layer compressed (should be exact);
* per layer, with the layer compressed as plain ``convert`` does (``--sparsity``, ``--bits``):
  ``shift`` runs the real ShiftConv node (C++ kernel), ``float`` a float Conv/MatMul holding the
  same dequantized weights (``rewrite.to_plain``): equal SQNRs mean the rewrite and the kernel
  are exact and the loss is the level set's; ``prune`` keeps the float weights with only the
  mask; ``round`` quantizes at sparsity 0 (level set alone); ``int8`` rounds each output row to
  a symmetric uniform 8-bit grid (a control: what a standard per-channel quantizer loses).

SQNR = 10 log10(|y|^2 / |y - y_ref|^2) over all outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from fq_onnx import prune, rewrite, runtime
from fq_onnx.api import _unique_names
from fq_onnx.compress import LayerOptions, compress_layer
from fq_onnx.graph import constant_value, fold_batchnorms, load_model


def run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    session = runtime.session(model_bytes)
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i:i + 1]}) for i in range(len(x))]
    return np.concatenate([np.concatenate([o.astype(np.float64).ravel() for o in out]) for out in outs])


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((test - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)


def prepared(path: Path) -> gs.Graph:
    graph = gs.import_onnx(load_model(path))
    _unique_names(graph)
    fold_batchnorms(graph)
    return graph


def with_weight(graph: gs.Graph, name: str, weight: np.ndarray) -> bytes:
    """``graph`` with node ``name``'s weight replaced by ``weight`` (stored layout) in float."""
    work = graph.copy()
    target = next(t for t in rewrite.find_targets(work)[0] if t.node.name == name)
    node = target.node
    if target.kind == "dense":
        original = constant_value(node.inputs[1])
        if node.op == "Gemm":
            value = weight if int(node.attrs.get("transB", 0)) else weight.T
            value = value / np.float32(node.attrs.get("alpha", 1.0))
        else:
            value = weight.T
        node.inputs[1] = gs.Constant(f"{name}/diag_weight", np.ascontiguousarray(value.astype(original.dtype)))
    else:
        node.inputs[1] = gs.Constant(f"{name}/diag_weight", weight.astype(np.float32))
    return gs.export_onnx(work.cleanup()).SerializeToString()


def with_shiftconv(graph: gs.Graph, name: str, result, plain: bool) -> bytes:
    work = graph.copy()
    target = next(t for t in rewrite.find_targets(work)[0] if t.node.name == name)
    target.bias = result.bias
    target.replace(work, result.layer.encode(), {}, fuse_activation=True)
    if plain:
        rewrite.to_plain(work)
    work.cleanup().toposort()
    return gs.export_onnx(work).SerializeToString()


def int8_rows(weight: np.ndarray) -> np.ndarray:
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
    step = np.abs(rows).max(axis=1, keepdims=True) / 127
    step[step == 0] = 1
    return (np.round(rows / step) * step).reshape(weight.shape).astype(np.float32)


def log_grid_round(weight: np.ndarray, mantissa: int, exponents: int = 16, two_powers: bool = False) -> np.ndarray:
    """Each output row rounded (nearest) to ``+-max|row| * level``, levels ``2^-e (1 + k/2^m)``
    for e in [0, exponents) and k in [0, 2^m) (``mantissa`` m; m = 0 is the shift grid), or with
    ``two_powers`` the sums ``2^-i + 2^-j`` (j > i, or a single power). No zero level: every
    weight keeps its sign and at least the smallest level, as a kept weight does in fq-onnx."""
    if two_powers:
        p = 2.0 ** -np.arange(exponents)
        levels = np.unique(np.concatenate([p, (p[:, None] + p[None, :])[np.triu_indices(exponents, 1)]]))
    else:
        e = 2.0 ** -np.arange(exponents)
        levels = np.unique((e[:, None] * (1 + np.arange(2**mantissa) / 2**mantissa)[None, :]).ravel())
    levels = levels[levels <= 1]
    return _best_scale_round(weight, levels)


SCALE_OFFSETS = np.linspace(-1.0, 0.0, 33)  # log2 of the top level over max|row|: one octave


def _best_scale_round(weight: np.ndarray, levels: np.ndarray, zero: bool = False) -> np.ndarray:
    """Each row rounded to ``+-scale * levels`` (and 0 when ``zero``), the scale per row the one
    of ``max|row| * 2^SCALE_OFFSETS`` with the least squared weight error (as fq-onnx searches
    its scale; the largest weights may clip to the top level)."""
    levels = np.concatenate([[0.0], levels]) if zero else levels
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
    top = np.abs(rows).max(axis=1, keepdims=True)
    top[top == 0] = 1
    best, best_err = None, None
    for offset in SCALE_OFFSETS:
        scale = top * 2.0**offset
        u = np.abs(rows) / scale
        hi = np.clip(np.searchsorted(levels, u), 1, len(levels) - 1)
        lo = hi - 1
        pick = np.where(np.abs(u - levels[lo]) <= np.abs(u - levels[hi]), levels[lo], levels[hi])
        q = np.sign(rows) * pick * scale
        err = ((q - rows) ** 2).sum(axis=1, keepdims=True)
        if best is None:
            best, best_err = q, err
        else:
            better = err < best_err
            best, best_err = np.where(better, q, best), np.minimum(err, best_err)
    return best.reshape(weight.shape).astype(np.float32)


SCHEMES = {  # name: (how many bits one nonzero code takes, weight transform)
    "shift m=0 (5 bit)": (5, lambda w: log_grid_round(w, 0)),
    "mantissa m=1 (6 bit)": (6, lambda w: log_grid_round(w, 1)),
    "mantissa m=2 (7 bit)": (7, lambda w: log_grid_round(w, 2)),
    "mantissa m=3 (8 bit)": (8, lambda w: log_grid_round(w, 3)),
    "two powers of two (~8 bit)": (8, lambda w: log_grid_round(w, 0, two_powers=True)),
    "uniform int8 per row": (8, lambda w: uniform_rows(w, 127)),
    "uniform int6 per row": (6, lambda w: uniform_rows(w, 31)),
}


def uniform_rows(weight: np.ndarray, top: int) -> np.ndarray:
    """Symmetric uniform grid of 2*top+1 levels per row, clipping scale searched."""
    return _best_scale_round(weight, np.arange(1, top + 1) / top, zero=True)


def whole_model(graph: gs.Graph, reference: np.ndarray, x: np.ndarray, sparsities=(0.0, 0.5)) -> list[dict]:
    """Every layer's weights transformed at once (float graph): output SQNR per scheme, and
    fq-onnx's own level sets (plain convert, per-channel) for comparison."""
    rows = []
    targets = rewrite.find_targets(graph)[0]
    schemes = dict(SCHEMES)
    for bits in (5, 7):
        for s in sparsities:
            schemes[f"fq-onnx s={s:g} bits={bits}"] = (bits, lambda w, b=bits, s=s: compress_layer(
                w, None, s, LayerOptions(bits=b)).layer.dequantized())
    for s in sparsities:
        if s > 0:
            schemes[f"prune only s={s:g} (float)"] = (32, lambda w, s=s: np.where(prune.magnitude_mask(w, s, 1), w, 0))
    for name, (bits, transform) in schemes.items():
        work = graph.copy()
        for target in rewrite.find_targets(work)[0]:
            new = transform(target.weight)
            node = target.node
            if target.kind == "dense":
                value = new if (node.op == "Gemm" and int(node.attrs.get("transB", 0))) else new.T
                if node.op == "Gemm":
                    value = value / np.float32(node.attrs.get("alpha", 1.0))
                node.inputs[1] = gs.Constant(f"{node.name}/whole_weight", np.ascontiguousarray(value.astype(np.float32)))
            else:
                node.inputs[1] = gs.Constant(f"{node.name}/whole_weight", new.astype(np.float32))
        value = sqnr(reference, run(gs.export_onnx(work.cleanup()).SerializeToString(), x))
        rows.append({"scheme": name, "bits": bits, "sqnr_db": value})
        print(f"whole model, {name:32s}: {value:6.1f} dB", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--whole", action="store_true", help="only the whole-model level-set comparison")
    args = parser.parse_args(argv)
    x = np.load(args.inputs)[: args.limit].astype(np.float32)
    original = load_model(args.model).SerializeToString()
    reference = run(original, x)
    graph = prepared(args.model)
    rows = [{"layer": "(BN-folded float graph)", "fold": sqnr(reference, run(gs.export_onnx(graph.copy()).SerializeToString(), x))}]
    print(f"fold: {rows[0]['fold']:.1f} dB", flush=True)
    if args.whole:
        rows += whole_model(graph, reference, x)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    options = LayerOptions(bits=args.bits)
    targets = rewrite.find_targets(graph)[0]
    print(f"{'layer':28s} {'shape':18s} {'n':>7s} {'shift':>6s} {'float':>6s} {'prune':>6s} {'round':>6s} {'int8':>6s} mode")
    for target in targets:
        start = time.perf_counter()
        name, w = target.node.name, target.weight
        result = compress_layer(w, target.bias, args.sparsity, options)
        keep = prune.magnitude_mask(w, args.sparsity, 1)
        rounded = compress_layer(w, target.bias, 0.0, options)
        row = {
            "layer": name, "op": target.node.op, "shape": list(w.shape), "weights": int(w.size),
            "group": int(target.attrs.get("group", 1)), "mode": result.layer.mode_name,
            "w2": float(result.layer.mixture.w2) if result.layer.mixture else None,
            "rel_weight_error": result.layer.rel_error,
            "shift": sqnr(reference, run(with_shiftconv(graph, name, result, plain=False), x)),
            "float": sqnr(reference, run(with_shiftconv(graph, name, result, plain=True), x)),
            "prune": sqnr(reference, run(with_weight(graph, name, np.where(keep, w, 0)), x)),
            "round": sqnr(reference, run(with_weight(graph, name, rounded.layer.dequantized()), x)),
            "int8": sqnr(reference, run(with_weight(graph, name, int8_rows(w)), x)),
        }
        rows.append(row)
        print(f"{name[:28]:28s} {str(row['shape']):18s} {row['weights']:7d} {row['shift']:6.1f} {row['float']:6.1f} "
              f"{row['prune']:6.1f} {row['round']:6.1f} {row['int8']:6.1f} {row['mode']} g={row['group']} "
              f"relerr={row['rel_weight_error']:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
