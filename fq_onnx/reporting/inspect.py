"""Per-layer size and quantization report of an original or a compressed model."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from fq_onnx.format import fmt
from fq_onnx.op import intmode, validate
from fq_onnx.graph import rewrite
from fq_onnx.errors import FqOnnxError
from fq_onnx.graph import constant_value, float16_source, load_model


@dataclass
class LayerRow:
    """One weight layer. Sizes are bytes; ``fp32_bytes`` is the weight stored as float32."""

    name: str
    op: str
    shape: tuple[int, ...]
    sparsity: float
    mode: str  # "FQ", "shift" or "float"
    bits: int
    w2: float | None
    rel_error: float | None
    fp32_bytes: int
    stored_bytes: int
    out_error: float | None = None  # relative output error on the calibration data (calibrated only)
    # integer mode (SHIFTCONV.md): {"bits", "scale_log2", "signed", "clip_rate"}, or
    # {"fallback": reason} where the converter kept float activations; None: float activations
    act: dict | None = None
    mantissa: int = 0  # m of the level set (docs/FORMAT.md): 0 for powers of two and for float layers

    @property
    def bits_text(self) -> str:
        """``5``, or ``5 m2`` with a mantissa."""
        return f"{self.bits} m{self.mantissa}" if self.mantissa else str(self.bits)

    @property
    def ratio(self) -> float:
        return self.fp32_bytes / self.stored_bytes if self.stored_bytes else float("inf")


@dataclass
class Totals:
    fp32_bytes: int
    compressed_bytes: int
    nonzero_weights: int
    weights: int

    @property
    def ratio(self) -> float:
        """Weights-only compression ratio: float32 bytes over stored bytes of the same weights."""
        return self.fp32_bytes / self.compressed_bytes if self.compressed_bytes else float("inf")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_weights / self.weights if self.weights else 0.0


@dataclass
class ModelReport:
    path: str
    file_bytes: int
    layers: list[LayerRow]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        return Totals(
            sum(r.fp32_bytes for r in self.layers),
            sum(r.stored_bytes for r in self.layers),
            sum(round((1 - r.sparsity) * r.fp32_bytes / 4) for r in self.layers),
            sum(r.fp32_bytes // 4 for r in self.layers),
        )

    def mode_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.layers:
            counts[row.mode] = counts.get(row.mode, 0) + 1
        return counts

    def to_dict(self) -> dict:
        totals = self.totals
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "layers": [{**asdict(r), "ratio": r.ratio} for r in self.layers],
            "skipped": [{"node": n, "op": o, "reason": why} for n, o, why in self.skipped],
            "totals": {**asdict(totals), "ratio": totals.ratio, "sparsity": totals.sparsity},
        }


def shiftconv_row(node: gs.Node) -> LayerRow:
    """Report row of one ShiftConv node, from its decoded weight blob.

    Raises validate.InvalidShiftConv (naming the node) for a node onnxruntime would refuse.
    """
    blob = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    decoded = validate.check_node(node.name, node.attrs, blob, bias)
    size = int(np.prod(decoded.shape))
    return LayerRow(
        name=node.name,
        op=str(node.attrs.get("source_op", node.op)),
        shape=tuple(decoded.shape),
        sparsity=1.0 - decoded.nonzeros / size,
        mode=fmt.MODE_NAMES[decoded.params.mode],
        bits=decoded.params.bits,
        w2=float(node.attrs["w2"]) if "w2" in node.attrs else None,
        rel_error=float(node.attrs["rel_error"]) if "rel_error" in node.attrs else None,
        fp32_bytes=4 * size,
        stored_bytes=int(blob.size),
        out_error=float(node.attrs["out_error"]) if "out_error" in node.attrs else None,
        act=intmode.node_act(node.attrs),
        mantissa=decoded.params.mantissa,
    )


def float_row(target: rewrite.Target) -> LayerRow:
    weight = target.weight
    target.release()  # a weight in external data is read again if needed, not kept
    if float16_source(target.node.inputs[1]) is not None:  # stored in half precision
        weight = weight.astype(np.float16)
    return LayerRow(
        name=target.node.name,
        op=target.node.op,
        shape=tuple(weight.shape),
        sparsity=float(np.mean(weight == 0)),
        mode="float",
        bits=8 * weight.dtype.itemsize,
        w2=None,
        rel_error=None,
        fp32_bytes=4 * weight.size,
        stored_bytes=weight.nbytes,
    )


def inspect_model(path: str | os.PathLike) -> ModelReport:
    """Per-layer report of every weight layer (ShiftConv, and Conv/Gemm/MatMul left as float)."""
    model = load_model(path, lazy_external=True)
    graph = gs.import_onnx(model)
    targets, skipped = rewrite.find_targets(graph)
    rows_by_node = {id(t.node): float_row(t) for t in targets}
    rows = []
    for node in graph.nodes:
        if node.op == rewrite.OP_TYPE and node.domain == rewrite.DOMAIN:
            rows.append(_in_file(path, shiftconv_row, node))
        elif id(node) in rows_by_node:
            rows.append(rows_by_node[id(node)])
    return ModelReport(str(path), Path(path).stat().st_size, rows, skipped)


def blob_details(path: str | os.PathLike) -> list[dict]:
    """What each ShiftConv weight blob of a model holds (docs/FORMAT.md): one dict per node.

    Keys: name, mode, mantissa, centre0/centre1 (relative to the scale), b, scales (1 or one per row),
    block, run_max (longest zero run of one token), tokens, header_bytes, table_bytes (code
    lengths), payload_bytes (Huffman codes), activation.
    """
    graph = gs.import_onnx(load_model(path))
    details = []
    for node in graph.nodes:
        if node.op != rewrite.OP_TYPE or node.domain != rewrite.DOMAIN:
            continue
        blob = constant_value(node.inputs[1])
        try:
            header = fmt.read_header(blob.tobytes()) if blob is not None else None
        except fmt.FormatError as exc:
            raise FqOnnxError(f"ShiftConv {node.name}: {exc}") from None
        if header is None:
            raise FqOnnxError(f"ShiftConv {node.name}: its weight input is not a constant")
        details.append({
            "name": node.name, "mode": fmt.MODE_NAMES[header.params.mode], "mantissa": header.params.mantissa,
            "centre0": header.params.centre0,
            "centre1": header.params.centre1, "b": header.params.b, "scales": int(header.alphas.size),
            "block": header.block, "run_max": header.run_max, "tokens": header.tokens,
            "header_bytes": header.table_offset, "table_bytes": header.table_bytes,
            "payload_bytes": header.payload_bytes, "activation": str(node.attrs.get("activation", "none")),
        })
    return details


def check_shiftconvs(graph: gs.Graph, path: str | os.PathLike) -> None:
    """Raise FqOnnxError naming the file and the node for the first ShiftConv onnxruntime would refuse."""
    for node in graph.nodes:
        if node.op == rewrite.OP_TYPE and node.domain == rewrite.DOMAIN:
            _in_file(path, shiftconv_row, node)


def _in_file(path, function, *args):
    try:
        return function(*args)
    except FqOnnxError as exc:
        raise FqOnnxError(f"{path}: {exc}") from None
