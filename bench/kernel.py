"""Speed of the ShiftConv kernel against onnxruntime's own dense ops, measured in one run.

    python bench/kernel.py                 # everything (about 10 minutes on 2 cores)
    python bench/kernel.py --layers        # per-layer table only
    python bench/kernel.py --dense         # dense / low-sparsity layers: onnxruntime's kernel or ours
    python bench/kernel.py --models        # whole models only
    python bench/kernel.py --quick         # fewer repetitions and cases (smoke run)
    python bench/kernel.py --markdown docs/PERFORMANCE.md.table
    python bench/kernel.py --int --threads 1 --batches 1 8   # integer mode vs float vs onnxruntime
    python bench/kernel.py --int-models model.int8.fq.onnx --threads 1   # the same, whole models

Per layer: ResNet-style 3x3 convs (64@56^2, 128@28^2, 256@14^2, 512@7^2), a stride-2 3x3 and
a 1x1 conv; batch 1 and 8; sparsity 0.8 and 0.9; unstructured masks and blocks of 4 output
channels. Whole models: a ResNet-18-shaped network at 224x224 built with onnx.helper (random
weights: speed does not depend on their values), the bundled digits CNN, and the real models in
../shared/assets/models/ when present. Every baseline is the original (dense) model in
onnxruntime with ORT_ENABLE_ALL and the same thread count, timed in alternating blocks with ours in
the same process; the table reports medians and their ratio (>1 = ShiftConv faster). Whole models
also report session creation time (decode included) and peak resident memory of a fresh
process that creates the session and runs it once.

Compressed models are made here directly (magnitude pruning, power-of-two codes, fmt.encode):
the kernel's speed depends on the sparsity pattern, not on how the levels were chosen.

``--int`` times integer mode (docs/SHIFTCONV.md: 8-bit activations, int32 shift-adds) against
the float path of the same ShiftConv and onnxruntime's dense Conv, per layer. Its weights are
5-bit focused-quantized (fq_onnx.focus.quantize, w_sep 0: power-of-two centres, as the
converter makes them), since integer mode needs them; all three compute with the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from fq_onnx import fmt, geometry, runtime
from fq_onnx import graph as graph_module

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "assets" / "models"
BITS = 5


# --- making compressed weights ---------------------------------------------------------------

def prune_mask(w: np.ndarray, sparsity: float, block: int) -> np.ndarray:
    """Keep the largest-|w| weights; with block > 1, rows in groups of `block` share one mask
    chosen by the L2 norm of the group."""
    if sparsity <= 0:
        return np.ones(w.shape, bool)
    m = w.shape[0]
    flat = w.reshape(m, -1)
    if block > 1:
        groups = -(-m // block)
        padded = np.zeros((groups * block, flat.shape[1]), np.float32)
        padded[:m] = flat
        score = np.sqrt((padded.reshape(groups, block, -1) ** 2).sum(axis=1))
        keep = score >= np.quantile(score, sparsity)
        return np.repeat(keep, block, axis=0)[:m].reshape(w.shape)
    thresh = np.quantile(np.abs(flat), sparsity)
    return (np.abs(w) >= thresh) & (np.abs(w) > 0)


def shift_codes(w: np.ndarray, mask: np.ndarray, bits: int = BITS) -> tuple[np.ndarray, fmt.QuantParams]:
    """Nearest power-of-two code of every kept weight (shift mode)."""
    k = bits - 1
    e_max = (1 << k) - 1
    kept = np.abs(w[mask])
    top = float(kept.max()) if kept.size else 1.0
    alpha = top if top > 0 else 1.0
    b = e_max  # largest level = alpha
    with np.errstate(divide="ignore"):
        e = np.clip(np.round(np.log2(np.abs(w) / alpha + 1e-30)) + b, 0, e_max).astype(np.int64)
    codes = np.where(w < 0, (1 << k) | e, e)
    codes[~mask] = -1
    return codes, fmt.QuantParams(mode=0, bits=bits, alpha=alpha, b=b)


def compress_weight(w: np.ndarray, sparsity: float, block: int) -> tuple[bytes, np.ndarray]:
    """Blob and its dequantized weight (what the original model is given, so both compute the
    same function)."""
    codes, params = shift_codes(w, prune_mask(w, sparsity, block))
    blob = fmt.encode(codes, params, block=block)
    return blob, fmt.dequantize(blob)


# --- graphs ----------------------------------------------------------------------------------

class GraphBuilder:
    """Builds the original and the compressed graph of the same network side by side."""

    def __init__(self, sparsity: float, block: int, seed: int = 0):
        self.sparsity, self.block = sparsity, block
        self.rng = np.random.default_rng(seed)
        self.orig_nodes, self.comp_nodes = [], []
        self.orig_inits, self.comp_inits = [], []
        self.count = 0

    def _name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def conv(self, x, c_in, c_out, k, stride=1, pad=None, relu=True, group=1, weight=None):
        name = self._name("conv")
        pad = k // 2 if pad is None else pad
        if weight is None:
            fan_in = c_in // group * k * k
            weight = (self.rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        blob, dq = compress_weight(weight, self.sparsity, self.block)
        bias = (self.rng.standard_normal(c_out) * 0.01).astype(np.float32)
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)
        y = name + "_out"
        self.orig_inits += [numpy_helper.from_array(dq, name + "_W"), numpy_helper.from_array(bias, name + "_B")]
        conv_out = y if not relu else name + "_pre"
        self.orig_nodes.append(helper.make_node("Conv", [x, name + "_W", name + "_B"], [conv_out], name=name, **attrs))
        if relu:
            self.orig_nodes.append(helper.make_node("Relu", [conv_out], [y], name=name + "_relu"))
        self.comp_inits += [numpy_helper.from_array(np.frombuffer(blob, np.uint8).copy(), name + "_Wq"),
                            numpy_helper.from_array(bias, name + "_B")]
        self.comp_nodes.append(helper.make_node("ShiftConv", [x, name + "_Wq", name + "_B"], [y], name=name,
                                                domain="fq_onnx", activation="relu" if relu else "none", **attrs))
        return y

    def common(self, op, inputs, **attrs):
        """A node that is the same in both graphs."""
        name = self._name(op.lower())
        y = name + "_out"
        node = helper.make_node(op, inputs, [y], name=name, **attrs)
        self.orig_nodes.append(node)
        self.comp_nodes.append(node)
        return y

    def dense(self, x, k, m):
        name = self._name("fc")
        weight = (self.rng.standard_normal((m, k)) / np.sqrt(k)).astype(np.float32)
        blob, dq = compress_weight(weight, self.sparsity, self.block)
        bias = np.zeros(m, np.float32)
        y = name + "_out"
        self.orig_inits += [numpy_helper.from_array(dq, name + "_W"), numpy_helper.from_array(bias, name + "_B")]
        self.orig_nodes.append(helper.make_node("Gemm", [x, name + "_W", name + "_B"], [y], name=name, transB=1))
        self.comp_inits += [numpy_helper.from_array(np.frombuffer(blob, np.uint8).copy(), name + "_Wq"),
                            numpy_helper.from_array(bias, name + "_B")]
        self.comp_nodes.append(helper.make_node("ShiftConv", [x, name + "_Wq", name + "_B"], [y], name=name,
                                                domain="fq_onnx", kind="dense"))
        return y

    def models(self, x_shape, y_name) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        out = []
        for nodes, inits, extra in ((self.orig_nodes, self.orig_inits, []),
                                    (self.comp_nodes, self.comp_inits, [helper.make_opsetid("fq_onnx", 1)])):
            graph = helper.make_graph(nodes, "bench",
                                      [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N"] + list(x_shape[1:]))],
                                      [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
                                      initializer=inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)] + extra)
            model.ir_version = 8
            out.append(model)
        return out[0], out[1]


def layer_pair(c_in, c_out, size, k, stride, sparsity, block, group=1):
    g = GraphBuilder(sparsity, block, seed=c_in * 1000 + c_out + k)
    y = g.conv("X", c_in, c_out, k, stride=stride, relu=True, group=group)
    return g.models((1, c_in, size, size), y)


def resnet18_pair(sparsity, block, classes=1000):
    """ResNet-18 topology (basic blocks 2-2-2-2, 64-512 channels) at 224x224."""
    g = GraphBuilder(sparsity, block, seed=18)
    x = g.conv("X", 3, 64, 7, stride=2, pad=3)
    x = g.common("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for stage, width in enumerate([64, 128, 256, 512]):
        for blk in range(2):
            stride = 2 if (stage > 0 and blk == 0) else 1
            shortcut = x
            h = g.conv(x, c, width, 3, stride=stride)
            h = g.conv(h, width, width, 3, relu=False)
            if stride != 1 or c != width:
                shortcut = g.conv(x, c, width, 1, stride=stride, pad=0, relu=False)
            x = g.common("Relu", [g.common("Add", [h, shortcut])])
            c = width
    x = g.common("GlobalAveragePool", [x])
    x = g.common("Flatten", [x], axis=1)
    y = g.dense(x, 512, classes)
    return g.models((1, 3, 224, 224), y)


def fold_batchnorms(source: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of the model with every Conv -> BatchNormalization folded into the Conv, as both
    onnxruntime and the converter (fq_onnx.graph.fold_batchnorms) do."""
    graph = gs.import_onnx(source)
    graph_module.fold_batchnorms(graph)
    model = gs.export_onnx(graph)
    model.ir_version = source.ir_version
    return model


def compress_existing(model: onnx.ModelProto, sparsity: float, block: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Replace every Conv (and Gemm with transB=1) of a real model by ShiftConv; the original
    side gets the same dequantized weights. A Conv followed only by Relu or a constant Clip
    fuses it (onnxruntime fuses both into its Conv too)."""
    model = fold_batchnorms(model)
    orig = onnx.ModelProto()
    orig.CopyFrom(model)
    comp = onnx.ModelProto()
    comp.CopyFrom(model)
    inits = {t.name: t for t in comp.graph.initializer}
    for node in comp.graph.node:  # Constant nodes (torch exports Clip bounds this way)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits.setdefault(node.output[0], node.attribute[0].t)
    consumers: dict[str, list] = {}
    for node in comp.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_outputs = {o.name for o in comp.graph.output}
    orig_inits = {t.name: t for t in orig.graph.initializer}
    new_nodes, drop = [], set()
    for node in comp.graph.node:
        if id(node) in drop:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and node.input[1] in inits:
            kind = "conv"
            weight = numpy_helper.to_array(inits[node.input[1]])

        elif (node.op_type == "Gemm" and node.input[1] in inits and attrs.get("transB", 0) == 1
              and attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0):
            kind = "dense"
            weight = numpy_helper.to_array(inits[node.input[1]])
            attrs = {}
        else:
            new_nodes.append(node)
            continue
        blob, dq = compress_weight(weight.astype(np.float32), sparsity, block if weight.shape[0] % block == 0 else 1)
        orig_inits[node.input[1]].CopyFrom(numpy_helper.from_array(dq, node.input[1]))
        wq = node.input[1] + "_fq"
        comp.graph.initializer.append(numpy_helper.from_array(np.frombuffer(blob, np.uint8).copy(), wq))
        out = node.output[0]
        activation, clip = "none", {}
        users = consumers.get(out, [])
        if len(users) == 1 and out not in graph_outputs:
            user = users[0]
            if user.op_type == "Relu":
                activation = "relu"
            elif user.op_type == "Clip" and all(i in inits for i in user.input[1:] if i):
                activation = "clip"
                bounds = [float(numpy_helper.to_array(inits[i])) if i else None for i in list(user.input[1:]) + [""] * 2]
                clip = {k: v for k, v in zip(("clip_min", "clip_max"), bounds[:2]) if v is not None}
            if activation != "none":
                out = user.output[0]
                drop.add(id(user))
        keep = {k: v for k, v in attrs.items() if k in geometry.ATTRS}
        inputs = [node.input[0], wq] + list(node.input[2:3])
        new_nodes.append(helper.make_node("ShiftConv", inputs, [out], name=node.name or out, domain="fq_onnx",
                                          kind=kind, activation=activation, **clip, **keep))
    del comp.graph.node[:]
    comp.graph.node.extend(new_nodes)
    used = {i for n in comp.graph.node for i in n.input}
    kept_inits = [t for t in comp.graph.initializer if t.name in used]
    del comp.graph.initializer[:]
    comp.graph.initializer.extend(kept_inits)
    comp.opset_import.append(helper.make_opsetid("fq_onnx", 1))
    return orig, comp


# --- timing ----------------------------------------------------------------------------------

def plain_session(model, threads, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    """The original model in onnxruntime. ORT_ENABLE_ALL runs convs in MLAS's NCHWc layout;
    ORT_ENABLE_EXTENDED keeps the plain NCHW Conv (im2col + SGEMM) with fused activations."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def our_session(model, threads, dense=None):
    """``dense``: the session config fq_onnx.dense (auto, own, ort, nchw, nchwc); None: default."""
    config = {runtime.DENSE_CONFIG_KEY: dense} if dense else None
    return runtime.session(model, threads=threads or None, config=config)


def settle_seconds(threads: int) -> float:
    """How long each timed block settles when sessions have a thread pool (threads != 1).

    After a run, onnxruntime's pool threads spin-wait (``session.intra_op.allow_spinning``, on by
    default) for about 25-30 ms on this machine, and on 2 cores such a thread takes a core from
    the session timed next: 64@56² at 90%, batch 8, 2 threads measured ShiftConv at 4.1-6.4 ms
    right after onnxruntime's session, 2.0-2.3 ms alone in a process. Sleeping instead is no
    cure: after an idle pause the first runs are slow (batch 1: 1.1-1.5 ms, then 0.4-0.5 ms for
    some runs). Settling by 50 ms of untimed runs gave 2.07 ms and 0.32 ms at batch 1 (alone:
    0.31 ms). 2026-11-25.
    """
    return 0.0 if threads == 1 else 0.05


def time_many(sessions, feed, min_runs, min_seconds=0.5, block=5, settle=0.0):
    """Median seconds per run of each session, timed in alternating blocks so drift hits all.

    Not run by run: after a run, onnxruntime's pool threads keep spin-waiting for a while and
    would steal cores from the other session. Each block first runs untimed, twice and for at
    least ``settle`` seconds (settle_seconds), then times at least ``block`` runs and ``settle``
    seconds.
    """
    times = [[] for _ in sessions]
    timed = 0.0
    while len(times[0]) < min_runs or timed < min_seconds:
        for s, acc in zip(sessions, times):
            t0, runs = time.perf_counter(), 0
            while runs < 2 or time.perf_counter() - t0 < settle:
                s.run(None, feed)
                runs += 1
            t0, runs = time.perf_counter(), 0
            while runs < block or time.perf_counter() - t0 < settle:
                t1 = time.perf_counter()
                s.run(None, feed)
                acc.append(time.perf_counter() - t1)
                runs += 1
            timed += time.perf_counter() - t0
        if len(times[0]) >= 10 * min_runs:
            break
    return [statistics.median(t) for t in times]


def time_pair(sess_a, sess_b, feed, min_runs, min_seconds=0.5, block=5, settle=0.0):
    """Median seconds per run of two sessions (time_many)."""
    ta, tb = time_many([sess_a, sess_b], feed, min_runs, min_seconds, block, settle)
    return ta, tb


def input_name_and_shape(model):
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim]
            return i.name, dims
    raise ValueError("model has no input")


CHILD = r"""
import json, resource, sys, time
import numpy as np, onnxruntime as ort
path, custom, threads, batch = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
if custom:
    from fq_onnx import runtime
def hwm_kb():
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm_kb()
t0 = time.perf_counter()
if custom:
    sess = runtime.session(path, threads=threads or None)
else:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
created = time.perf_counter() - t0
inp = sess.get_inputs()[0]
shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
sess.run(None, {inp.name: np.zeros(shape, np.float32)})
print(json.dumps({"create_s": created, "peak_kb": hwm_kb(),
                  "base_kb": base}))
"""


def child_measure(path, custom, threads, batch, repeats=3):
    """Session creation time (median) and peak RSS of a fresh process."""
    results = []
    # Same library as this process, and a cwd outside the source tree (python -c imports from it).
    env = dict(os.environ, FQ_ONNX_OPS_LIBRARY=runtime.library_path())
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if custom else "0", str(threads or 0),
                              str(batch)], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
        if out.returncode != 0:
            raise RuntimeError(f"measuring {path} failed:\n{out.stderr[-2000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return (statistics.median(r["create_s"] for r in results), max(r["peak_kb"] for r in results),
            max(r["base_kb"] for r in results))


# --- reporting -------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    batch: int
    sparsity: float
    block: int
    ort_ms: float
    fq_ms: float
    extra: dict | None = None

    @property
    def speedup(self):
        return self.ort_ms / self.fq_ms


def fmt_sparsity(s, block):
    return f"{s:.2f}" + (f" blk{block}" if block > 1 else "")


LAYERS = [
    # name, c_in, c_out, size, k, stride
    ("3x3 64@56²", 64, 64, 56, 3, 1),
    ("3x3 128@28²", 128, 128, 28, 3, 1),
    ("3x3 256@14²", 256, 256, 14, 3, 1),
    ("3x3 512@7²", 512, 512, 7, 3, 1),
    ("3x3 s2 128→256 28²→14²", 128, 256, 28, 3, 2),
    ("1x1 256→1024 @14²", 256, 1024, 14, 1, 1),
]


# Dense and low-sparsity rows: where onnxruntime's own kernel may run the layer (dense_path.h).
DENSE_LAYERS = LAYERS + [
    # name, c_in, c_out, size, k, stride, group
    ("1x1 16→96 @112² (MobileNet)", 16, 96, 112, 1, 1),
    ("dw 3x3 576@14²", 576, 576, 14, 3, 1, 576),
    ("dw 3x3 960@7²", 960, 960, 7, 3, 1, 960),
    ("fc 1280→1000 (Gemm)", 1280, 1000, 1, "fc", 1),
]
DENSE_MODES = ("own", "ort", "auto")


def bench_dense(args, out):
    """Per layer at low sparsity: onnxruntime ORT_ENABLE_ALL (NCHWc) and ORT_ENABLE_EXTENDED
    (plain NCHW Conv) against ShiftConv with the dense path forced to our kernel (own), to
    onnxruntime's kernel (ort) and chosen by the rule (auto), all timed in one alternation."""
    rows = []
    for spec in DENSE_LAYERS:
        name, c_in, c_out, size, k, stride = spec[:6]
        group = spec[6] if len(spec) > 6 else 1
        if args.only and not any(o in name for o in args.only):
            continue
        for batch in args.batches:
            for sparsity in args.dense_sparsities:
                if k == "fc":
                    g = GraphBuilder(sparsity, 1, seed=c_in + c_out)
                    orig, comp = g.models((1, c_in), g.dense("X", c_in, c_out))
                    x_shape = (batch, c_in)
                else:
                    orig, comp = layer_pair(c_in, c_out, size, k, stride, sparsity, 1, group=group)
                    x_shape = (batch, c_in, size, size)
                x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
                sessions = [plain_session(orig, args.threads),
                            plain_session(orig, args.threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)]
                sessions += [our_session(comp, args.threads, dense=m) for m in DENSE_MODES]
                ref = sessions[0].run(None, {"X": x})[0]
                err = max(float(np.abs(ref - s.run(None, {"X": x})[0]).max()) for s in sessions[2:])
                err /= float(np.abs(ref).max()) + 1e-12
                t = [v * 1e3 for v in time_many(sessions, {"X": x}, args.runs, settle=settle_seconds(args.threads))]
                row = Row(name, batch, sparsity, 1, t[0], t[4],
                          {"nchw_ms": t[1], "own_ms": t[2], "ort_fq_ms": t[3], "rel_err": err})
                rows.append(row)
                out(f"  {name:30s} b{batch} {sparsity:.2f}  ALL {t[0]:7.3f}  NCHW {t[1]:7.3f}  own {t[2]:7.3f}  "
                    f"ort {t[3]:7.3f}  auto {t[4]:7.3f} ms  auto vs ALL x{t[0] / t[4]:4.2f}  vs NCHW "
                    f"x{t[1] / t[4]:4.2f}  (max rel diff {err:.1e})")
    return rows


def bench_layers(args, out):
    rows = []
    settings = [(s, b) for s in args.sparsities for b in args.blocks]
    for name, c_in, c_out, size, k, stride in LAYERS[: (2 if args.quick else None)]:
        if args.only and not any(o in name for o in args.only):
            continue
        for batch in args.batches:
            for sparsity, block in settings:
                orig, comp = layer_pair(c_in, c_out, size, k, stride, sparsity, block)
                x = np.random.default_rng(0).standard_normal((batch, c_in, size, size)).astype(np.float32)
                a, b = plain_session(orig, args.threads), our_session(comp, args.threads)
                ya, yb = a.run(None, {"X": x})[0], b.run(None, {"X": x})[0]
                err = float(np.abs(ya - yb).max() / (np.abs(ya).max() + 1e-12))
                ta, tb = time_pair(a, b, {"X": x}, args.runs, settle=settle_seconds(args.threads))
                row = Row(name, batch, sparsity, block, ta * 1e3, tb * 1e3, {"rel_err": err})
                rows.append(row)
                out(f"  {name:26s} b{batch} {fmt_sparsity(sparsity, block):10s} ort {row.ort_ms:8.3f} ms  "
                    f"fq {row.fq_ms:8.3f} ms  x{row.speedup:5.2f}  (max rel diff {err:.1e})")
    return rows


INT_LAYERS = LAYERS + [
    # name, c_in, c_out, size, k, stride, group (MobileNet-V2 shapes)
    ("dw 3x3 144@56²", 144, 144, 56, 3, 1, 144),
    ("dw 3x3 s2 144 56²→28²", 144, 144, 56, 3, 2, 144),
    ("1x1 96→576 @14²", 96, 576, 14, 1, 1, 1),
]


def int_layer_models(c_in, c_out, size, k, stride, group, sparsity, block, x):
    """The same Conv+ReLU three ways: onnxruntime's Conv on the dequantized weight, ShiftConv
    in float mode and ShiftConv in integer mode (8-bit signed input, min/max scale of x)."""
    from fq_onnx import focus

    rng = np.random.default_rng(c_in * 1000 + c_out + k + group)
    fan_in = c_in // group * k * k
    w = (rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    mask = prune_mask(w, sparsity, block if c_out % block == 0 else 1)
    blob = focus.quantize(w, mask, bits=BITS, w_sep=0.0).encode(block)
    weight = fmt.dequantize(blob)
    bias = (rng.standard_normal(c_out) * 0.01).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
    scale_log2 = int(np.ceil(np.log2(np.abs(x).max() / 127)))
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["pre"], **attrs), helper.make_node("Relu", ["pre"], ["Y"])]
    models = [(nodes, inits, [])]
    q_inits = [numpy_helper.from_array(np.frombuffer(blob, np.uint8).copy(), "Wq"), inits[1]]
    for extra in ({}, dict(act_bits=8, act_scale_log2=scale_log2, act_signed=1)):
        node = helper.make_node("ShiftConv", ["X", "Wq", "B"], ["Y"], domain="fq_onnx", activation="relu", **attrs,
                                **extra)
        models.append(([node], q_inits, [helper.make_opsetid("fq_onnx", 1)]))
    out = []
    for nodes, inits, opsets in models:
        graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                                 ["N", c_in, size, size])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)] + opsets)
        model.ir_version = 8
        out.append(model)
    return out


def bench_int_layers(args, out):
    rows = []
    settings = [(s, b) for s in args.sparsities for b in args.blocks]
    for name, c_in, c_out, size, k, stride, *rest in INT_LAYERS[: (2 if args.quick else None)]:
        group = rest[0] if rest else 1
        if args.only and not any(o in name for o in args.only):
            continue
        for batch in args.batches:
            x = np.random.default_rng(0).standard_normal((batch, c_in, size, size)).astype(np.float32)
            for sparsity, block in settings:
                if group > 1 and block > 1:
                    continue  # one input channel per output: blocks share nothing
                orig, flt, integer = int_layer_models(c_in, c_out, size, k, stride, group, sparsity, block, x)
                sessions = [plain_session(orig, args.threads), our_session(flt, args.threads),
                            our_session(integer, args.threads)]
                ys = [s.run(None, {"X": x})[0] for s in sessions]
                err = float(np.abs(ys[2] - ys[1]).max() / (np.abs(ys[1]).max() + 1e-12))
                t_ort, t_float, t_int = time_many(sessions, {"X": x}, args.runs, settle=settle_seconds(args.threads))
                row = Row(name, batch, sparsity, block, t_ort * 1e3, t_int * 1e3,
                          {"float_ms": t_float * 1e3, "int_vs_float_rel_diff": err})
                rows.append(row)
                out(f"  {name:26s} b{batch} {fmt_sparsity(sparsity, block):10s} ort {t_ort * 1e3:8.3f} ms  "
                    f"float {t_float * 1e3:8.3f} ms  int {t_int * 1e3:8.3f} ms  int/float x{t_int / t_float:5.2f}  "
                    f"(int vs float output: max rel diff {err:.1e})")
    return rows


def bench_int_models(args, out):
    """Whole converted models in integer mode (``convert --act-bits``) against the same file with
    the integer-mode attributes removed (float activations) and its decompressed dense twin in
    plain onnxruntime (``fq_onnx.api.decompress``: the same weights as standard Conv/Gemm)."""
    from fq_onnx import api

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.int_models:
            integer = onnx.load(path)
            flt = onnx.ModelProto()
            flt.CopyFrom(integer)
            for node in flt.graph.node:
                if node.domain == "fq_onnx":
                    kept = [a for a in node.attribute if not a.name.startswith("act_")]
                    del node.attribute[:]
                    node.attribute.extend(kept)
            dense = Path(tmp) / "dense.onnx"
            api.decompress(path, dense)
            sessions = [plain_session(onnx.load(str(dense)), args.threads), our_session(flt, args.threads),
                        our_session(integer, args.threads)]
            in_name, shape = input_name_and_shape(integer)
            for batch in args.batches:
                x = np.random.default_rng(1).standard_normal([batch] + shape[1:]).astype(np.float32)
                t_ort, t_float, t_int = time_many(sessions, {in_name: x}, max(5, args.runs // 4),
                                                    settle=settle_seconds(args.threads))
                row = Row(Path(path).name, batch, 0.0, 1, t_ort * 1e3, t_int * 1e3, {"float_ms": t_float * 1e3})
                rows.append(row)
                out(f"  {row.name:30s} b{batch} ort {t_ort * 1e3:8.2f} ms  float {t_float * 1e3:8.2f} ms  "
                    f"int {t_int * 1e3:8.2f} ms  int/float x{t_int / t_float:5.2f}")
    return rows


def int_markdown(rows, args) -> str:
    lines = [f"Measured by `python bench/kernel.py --int` ({time.strftime('%Y-%m-%d')}), onnxruntime "
             f"{ort.__version__}, {os.cpu_count()} logical CPUs, intra-op threads: "
             f"{args.threads or 'onnxruntime default'}. Conv+ReLU, median ms; FQ 5-bit weights; integer mode with "
             "8-bit signed activations. Ratios > 1: integer mode faster.", "",
             "| layer | batch | sparsity | onnxruntime | ShiftConv float | ShiftConv int8 | float / int8 | "
             "onnxruntime / int8 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.extra["float_ms"]
        lines.append(f"| {r.name} | {r.batch} | {fmt_sparsity(r.sparsity, r.block)} | {r.ort_ms:.3f} | {f:.3f} | "
                     f"{r.fq_ms:.3f} | {f / r.fq_ms:.2f}x | {r.ort_ms / r.fq_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def whole_models(args):
    """(name, factory(sparsity, block) -> (orig, comp)) for every model the run covers."""
    models = [("ResNet-18 224²", lambda s, b: resnet18_pair(s, b))]
    digits = ROOT / "models" / "digits_cnn.onnx"
    if digits.exists():
        models.append(("digits CNN (bundled)", lambda s, b: compress_existing(onnx.load(str(digits)), s, b)))
    shared = Path(args.shared_models)
    for path in sorted(shared.glob("*.onnx")) if shared.is_dir() else []:
        models.append((path.stem, lambda s, b, p=path: compress_existing(onnx.load(str(p)), s, b)))
    return models


def bench_models(args, out):
    rows = []
    settings = [(s, b) for s in args.model_sparsities for b in args.blocks]
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in whole_models(args)[: (1 if args.quick else None)]:
            if args.only and not any(o in name for o in args.only):
                continue
            for sparsity, block in settings:
                orig, comp = factory(sparsity, block)
                po, pc = Path(tmp) / "orig.onnx", Path(tmp) / "comp.onnx"
                onnx.save(orig, str(po))
                onnx.save(comp, str(pc))
                in_name, shape = input_name_and_shape(orig)
                a, b = plain_session(orig, args.threads), our_session(comp, args.threads)
                for batch in args.batches:
                    x = np.random.default_rng(1).standard_normal([batch] + shape[1:]).astype(np.float32)
                    ya, yb = a.run(None, {in_name: x})[0], b.run(None, {in_name: x})[0]
                    err = float(np.abs(ya - yb).max() / (np.abs(ya).max() + 1e-12))
                    ta, tb = time_pair(a, b, {in_name: x}, max(5, args.runs // 4), settle=settle_seconds(args.threads))
                    extra = {"rel_err": err}
                    if batch == args.batches[0]:
                        co, ro, bo = child_measure(po, False, args.threads, batch)
                        cc, rc, bc = child_measure(pc, True, args.threads, batch)
                        extra.update(create_ort_ms=co * 1e3, create_fq_ms=cc * 1e3, rss_ort_mb=ro / 1024,
                                     rss_fq_mb=rc / 1024, rss_base_mb=min(bo, bc) / 1024,
                                     size_ort_mb=po.stat().st_size / 2**20, size_fq_mb=pc.stat().st_size / 2**20)
                    row = Row(name, batch, sparsity, block, ta * 1e3, tb * 1e3, extra)
                    rows.append(row)
                    msg = (f"  {name:22s} b{batch} {fmt_sparsity(sparsity, block):10s} ort {row.ort_ms:8.2f} ms  "
                           f"fq {row.fq_ms:8.2f} ms  x{row.speedup:5.2f}  (max rel diff {err:.1e})")
                    if "create_ort_ms" in extra:
                        msg += (f"  create {extra['create_ort_ms']:.0f}/{extra['create_fq_ms']:.0f} ms"
                                f"  peak RSS {extra['rss_ort_mb']:.0f}/{extra['rss_fq_mb']:.0f} MB")
                    out(msg)
    return rows


def markdown(layer_rows, model_rows, args, dense_rows=()) -> str:
    lines = [f"Measured by `python bench/kernel.py` ({time.strftime('%Y-%m-%d')}), onnxruntime {ort.__version__}, "
             f"{os.cpu_count()} logical CPUs, intra-op threads: {args.threads or 'onnxruntime default'}. "
             "Ratio = onnxruntime median / ShiftConv median (>1: ShiftConv faster).", ""]
    if dense_rows:
        lines += ["### Dense and low-sparsity layers (Conv+ReLU or Gemm, median ms)", "",
                  "ALL = onnxruntime ORT_ENABLE_ALL (NCHWc), NCHW = ORT_ENABLE_EXTENDED (plain Conv); own / ort = "
                  "ShiftConv forced to its kernel / onnxruntime's; auto = the rule.", "",
                  "| layer | batch | sparsity | ALL | NCHW | own | ort | auto | auto vs ALL | auto vs NCHW |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in dense_rows:
            e = r.extra
            lines.append(f"| {r.name} | {r.batch} | {r.sparsity:.2f} | {r.ort_ms:.3f} | {e['nchw_ms']:.3f} | "
                         f"{e['own_ms']:.3f} | {e['ort_fq_ms']:.3f} | {r.fq_ms:.3f} | {r.speedup:.2f}x | "
                         f"{e['nchw_ms'] / r.fq_ms:.2f}x |")
        lines.append("")
    if layer_rows:
        lines += ["### Per layer (Conv+ReLU, median ms)", "",
                  "| layer | batch | sparsity | onnxruntime | ShiftConv | ratio |", "|---|---|---|---|---|---|"]
        for r in layer_rows:
            lines.append(f"| {r.name} | {r.batch} | {fmt_sparsity(r.sparsity, r.block)} | {r.ort_ms:.3f} | "
                         f"{r.fq_ms:.3f} | {r.speedup:.2f}x |")
        lines.append("")
    if model_rows:
        lines += ["### Whole models (median ms; session creation and peak RSS of a fresh process, first batch size)",
                  "", "| model | batch | sparsity | onnxruntime | ShiftConv | ratio | create ort / fq (ms) | "
                  "peak RSS ort / fq (MB) | file ort / fq (MB) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in model_rows:
            e = r.extra or {}
            create = f"{e['create_ort_ms']:.0f} / {e['create_fq_ms']:.0f}" if "create_ort_ms" in e else ""
            rss = f"{e['rss_ort_mb']:.0f} / {e['rss_fq_mb']:.0f}" if "rss_ort_mb" in e else ""
            size = f"{e['size_ort_mb']:.1f} / {e['size_fq_mb']:.2f}" if "size_ort_mb" in e else ""
            lines.append(f"| {r.name} | {r.batch} | {fmt_sparsity(r.sparsity, r.block)} | {r.ort_ms:.2f} | "
                         f"{r.fq_ms:.2f} | {r.speedup:.2f}x | {create} | {rss} | {size} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", action="store_true", help="per-layer table only")
    p.add_argument("--models", action="store_true", help="whole models only")
    p.add_argument("--dense", action="store_true",
                   help="dense / low-sparsity layers only: onnxruntime ALL and NCHW vs ShiftConv own / ort / auto")
    p.add_argument("--dense-sparsities", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--int", action="store_true", help="integer mode vs float mode vs onnxruntime, per layer, only")
    p.add_argument("--int-models", nargs="+", default=None, metavar="MODEL",
                   help="models converted with --act-bits: integer vs float activations vs the dense twin")
    p.add_argument("--quick", action="store_true", help="few cases, few runs")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0: onnxruntime default)")
    p.add_argument("--runs", type=int, default=20, help="minimum timed runs per case")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--model-sparsities", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 4])
    p.add_argument("--only", type=str, nargs="+", default=None,
                   help="run only layers / models whose name contains one of these strings")
    p.add_argument("--markdown", type=str, default=None, help="also write the tables as markdown here")
    p.add_argument("--shared-models", type=str, default=str(SHARED_MODELS),
                   help="folder of real .onnx models to add to the whole-model rows (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 5
    both = not (args.layers or args.models or args.dense)
    print(f"onnxruntime {ort.__version__}, library {runtime.library_path()}")
    if args.int_models:
        rows = bench_int_models(args, print)
        lines = ["| model | batch | onnxruntime (dense twin) | ShiftConv float | ShiftConv int8 | float / int8 | "
                 "onnxruntime / int8 |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            f = r.extra["float_ms"]
            lines.append(f"| {r.name} | {r.batch} | {r.ort_ms:.2f} | {f:.2f} | {r.fq_ms:.2f} | {f / r.fq_ms:.2f}x | "
                         f"{r.ort_ms / r.fq_ms:.2f}x |")
        print("\n".join(lines))
        return
    if args.int:
        text = int_markdown(bench_int_layers(args, print), args)
        print()
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text)
        return
    dense_rows = bench_dense(args, print) if (both or args.dense) else []
    layer_rows = bench_layers(args, print) if (both or args.layers) else []
    run_models = both or args.models
    if (layer_rows or dense_rows) and run_models:  # the layer tables before the long model runs
        print(markdown(layer_rows, [], args, dense_rows), flush=True)
    model_rows = bench_models(args, print) if run_models else []
    text = markdown(layer_rows, model_rows, args, dense_rows)
    print()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
