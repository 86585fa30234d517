"""Train the bundled default model ``models/digits_cnn.onnx`` and export it to ONNX.

The model is a small residual CNN for scikit-learn's 8x8 handwritten digits, trained with
PyTorch on the ``train`` split of :func:`fq_onnx.digits.load_digits_split` only. The ``val``
split is never used for training or model selection; it is only measured at the end.

Architecture (input ``N x 1 x 8 x 8``, output ``N x 10`` logits)::

    stem    Conv 1->32 3x3 pad 1 (no bias) + BatchNorm + Relu          8x8
    block1  Conv 32->32 3x3 + BN + Relu, Conv 32->32 3x3 + BN,
            Add (identity shortcut), Relu                              8x8
    down    Conv 32->64 3x3 stride 2 pad 1 + BN + Relu                 4x4
    block2  as block1 at 64 channels                                   4x4
    head    GlobalAveragePool, Flatten, Gemm 64->10 (with bias)

112,106 parameters; the bundled file (454,908 bytes) scores 0.9916 (356/359) on the val split
in onnxruntime. Training: SGD (Nesterov, momentum 0.9, weight decay 5e-4), one-cycle LR up to
0.05, 60 epochs, batch 64, label smoothing 0.05, random +-1 pixel shifts; ~17 s on one CPU thread.

The ONNX graph is written by hand with ``onnx.helper`` (not ``torch.onnx.export``) so that its
form is under our control: opset 17, IR version 8, input ``input`` ``["N", 1, 8, 8]``, output
``logits`` ``["N", 10]``, and every Conv is followed by a separate inference-mode
BatchNormalization node (the compressor's BN folding is tested on this model). Convs followed by
BN have no bias input.

After export the script checks the model with ``onnx.checker.check_model(full_check=True)``,
compares onnxruntime against the torch eval-mode output on the val split (max abs diff < 1e-4)
and prints the val accuracy measured by onnxruntime.

Everything is seeded and runs single-threaded with deterministic algorithms, so a rerun
reproduces the same weights. To regenerate (from the repository root)::

    pip install '.[train]'
    PYTHONPATH=. python models/train_digits.py

The bundled file was made with torch 2.13.0 (CPU); with that version a rerun reproduces it
byte for byte. Other torch versions may give slightly different weights.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from fq_onnx.digits import load_digits_split

SEED = 20240601
EPOCHS = 60
BATCH_SIZE = 64
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
OPSET = 17
IR_VERSION = 8
OUT_PATH = Path(__file__).resolve().parent / "digits_cnn.onnx"


# --------------------------------------------------------------------------------------------
# model


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = ConvBN(ch, ch, relu=True)
        self.c2 = ConvBN(ch, ch, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(self.c1(x)) + x)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(1, 32)
        self.block1 = ResBlock(32)
        self.down = ConvBN(32, 64, stride=2)
        self.block2 = ResBlock(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        x = x.mean(dim=(2, 3))
        return self.fc(x)


# --------------------------------------------------------------------------------------------
# training


def seed_everything(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)


def random_shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift every image by an independent random (dy, dx) in {-1, 0, 1}^2, zero fill."""
    n = x.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy = rng.integers(0, 3, size=n)
    dx = rng.integers(0, 3, size=n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
    return out


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    steps_per_epoch = int(np.ceil(len(y) / BATCH_SIZE))
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    yt_all = torch.from_numpy(y)
    for epoch in range(EPOCHS):
        model.train()
        order = rng.permutation(len(y))
        xa = torch.from_numpy(random_shift(x[order], rng))
        ya = yt_all[torch.from_numpy(order)]
        total, correct, loss_sum = 0, 0, 0.0
        for s in range(steps_per_epoch):
            xb = xa[s * BATCH_SIZE : (s + 1) * BATCH_SIZE]
            yb = ya[s * BATCH_SIZE : (s + 1) * BATCH_SIZE]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(yb)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(
                f"epoch {epoch + 1:3d}  loss {loss_sum / total:.4f}  "
                f"train acc (augmented) {correct / total:.4f}"
            )


# --------------------------------------------------------------------------------------------
# ONNX export (by hand)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv_bn(self, m: ConvBN, x: str, conv: str, bn: str, relu: str | None) -> str:
        """Conv (no bias) -> BatchNormalization (-> Relu if ``relu`` names one)."""
        c = m.conv
        assert c.bias is None
        kh, kw = c.kernel_size
        ph, pw = c.padding
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.init(f"{conv}.weight", _np(c.weight))],
                [f"{conv}_out"],
                name=conv,
                kernel_shape=[kh, kw],
                pads=[ph, pw, ph, pw],
                strides=list(c.stride),
                dilations=list(c.dilation),
                group=c.groups,
            )
        )
        b = m.bn
        self.nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    f"{conv}_out",
                    self.init(f"{bn}.scale", _np(b.weight)),
                    self.init(f"{bn}.bias", _np(b.bias)),
                    self.init(f"{bn}.mean", _np(b.running_mean)),
                    self.init(f"{bn}.var", _np(b.running_var)),
                ],
                [f"{bn}_out"],
                name=bn,
                epsilon=float(b.eps),
                momentum=1.0 - float(b.momentum),  # ONNX momentum = 1 - torch momentum
            )
        )
        if relu is None:
            return f"{bn}_out"
        self.nodes.append(helper.make_node("Relu", [f"{bn}_out"], [f"{relu}_out"], name=relu))
        return f"{relu}_out"

    def stage(self, prefix: str, m: ConvBN, x: str) -> str:
        return self.conv_bn(m, x, f"{prefix}/conv", f"{prefix}/bn", f"{prefix}/relu")

    def res_block(self, prefix: str, m: ResBlock, x: str) -> str:
        h = self.conv_bn(m.c1, x, f"{prefix}/conv1", f"{prefix}/bn1", f"{prefix}/relu1")
        h = self.conv_bn(m.c2, h, f"{prefix}/conv2", f"{prefix}/bn2", None)
        self.nodes.append(helper.make_node("Add", [h, x], [f"{prefix}/add_out"], name=f"{prefix}/add"))
        self.nodes.append(
            helper.make_node("Relu", [f"{prefix}/add_out"], [f"{prefix}/out"], name=f"{prefix}/relu")
        )
        return f"{prefix}/out"


def build_onnx(model: DigitsCNN) -> onnx.ModelProto:
    b = GraphBuilder()
    h = b.stage("stem", model.stem, "input")
    h = b.res_block("block1", model.block1, h)
    h = b.stage("down", model.down, h)
    h = b.res_block("block2", model.block2, h)
    b.nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap_out"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap_out"], ["flatten_out"], name="flatten", axis=1))
    b.nodes.append(
        helper.make_node(
            "Gemm",
            [
                "flatten_out",
                b.init("fc.weight", _np(model.fc.weight)),
                b.init("fc.bias", _np(model.fc.bias)),
            ],
            ["logits"],
            name="fc",
            alpha=1.0,
            beta=1.0,
            transB=1,
        )
    )
    graph = helper.make_graph(
        b.nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=b.inits,
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fq-onnx models/train_digits.py",
        producer_version="0.1.0",
    )
    m.ir_version = IR_VERSION
    return m


def ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


# --------------------------------------------------------------------------------------------


def main() -> None:
    seed_everything(SEED)
    x_tr, y_tr = load_digits_split("train")
    x_va, y_va = load_digits_split("val")
    print(f"train {x_tr.shape} val {x_va.shape}  torch {torch.__version__}")

    model = DigitsCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}")

    t0 = time.perf_counter()
    train(model, x_tr, y_tr)
    train_s = time.perf_counter() - t0
    print(f"training time: {train_s:.1f} s")

    model.eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_va)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_va).mean())
    print(f"val accuracy (torch): {torch_acc:.4f}")

    onnx_model = build_onnx(model)
    onnx.checker.check_model(onnx_model, full_check=True)
    logits = ort_logits(onnx_model, x_va)
    diff = float(np.abs(logits - torch_logits).max())
    ort_acc = float((logits.argmax(1) == y_va).mean())
    n_correct = int((logits.argmax(1) == y_va).sum())

    onnx_model.doc_string = (
        "Small residual CNN for scikit-learn 8x8 digits (N x 1 x 8 x 8 in [0, 1] -> 10 logits). "
        "Trained with PyTorch on fq_onnx.digits.load_digits_split('train') only and exported by "
        f"hand with onnx.helper by models/train_digits.py. Val accuracy (onnxruntime, split 'val'): "
        f"{ort_acc:.4f} ({n_correct}/{len(y_va)})."
    )
    helper.set_model_props(
        onnx_model,
        {
            "source": "models/train_digits.py",
            "dataset": "sklearn.datasets.load_digits via fq_onnx.digits (train split only)",
            "val_accuracy": f"{ort_acc:.4f}",
            "val_correct": f"{n_correct}/{len(y_va)}",
            "parameters": str(n_params),
            "torch_version": torch.__version__.split("+")[0],
            "seed": str(SEED),
        },
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, OUT_PATH)

    # verify the file on disk
    reloaded = onnx.load(OUT_PATH)
    onnx.checker.check_model(reloaded, full_check=True)
    logits = ort_logits(reloaded, x_va)
    diff = float(np.abs(logits - torch_logits).max())
    ort_acc = float((logits.argmax(1) == y_va).mean())
    print(f"max |onnxruntime - torch| on val: {diff:.3g}")
    assert diff < 1e-4, f"onnxruntime and torch disagree: max abs diff {diff}"
    ops: dict[str, int] = {}
    for n in reloaded.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"op types: {dict(sorted(ops.items()))}")
    print(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size} bytes)")
    print(f"val accuracy (onnxruntime): {ort_acc:.4f} ({n_correct}/{len(y_va)})")


if __name__ == "__main__":
    main()
