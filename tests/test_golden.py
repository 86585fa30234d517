"""Byte-identical guard: converting the bundled digits model and ResNet-20 must keep giving the
same files (sha256 recorded below). A refactor that changes one of these digests changed
behaviour; a deliberate change of output records the new digests in the same commit, saying why.

Regenerate (only for a deliberate change): ``FQ_ONNX_GOLDEN_PRINT=1 pytest -q -s tests/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fq_onnx import api
from fq_onnx.digits import default_model_path

RESNET20 = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "models" / "resnet20_cifar10.onnx"

# name: (model, convert keywords); "calib.npz" is written in the working directory (a relative
# path, because the stored settings name it).
CASES = {
    "digits-plain": ("digits", dict(sparsity=0.7, bits=5)),
    "digits-ratio": ("digits", dict(calib="digits", calib_size=32, bits=3, target_ratio=8.0, rounding="gptq")),
    "digits-int8": ("digits", dict(calib="digits", calib_size=64, sparsity=0.6, act_bits=8)),
    "resnet20-plain": ("resnet20", dict(sparsity=0.8, bits=4, block=4, per_channel=False)),
    "resnet20-int8": ("resnet20", dict(calib="calib.npz", calib_size=32, sparsity=0.7, act_bits=8)),
}

DIGESTS = {  # recorded at fd1d655 (before issue 15's refactor)
    "digits-int8": "e3e1eba6f522b6ce39c5a4057aa9671dafe58310b026adcdd0c0915f91cf8cd6",
    "digits-plain": "50c121cc68f8eeaccd50584bbf313729d507a0201e3b529dc67bcfb9ed10081f",
    "digits-ratio": "91227ad5b8c40ff9f235b3f7f4671047cdcb440e4f0ed6b9348a3c0df502bb19",
    "resnet20-int8": "a15f27b5512f76172184177aae944b1b9b4df899217ca0a18b30305ba4361a82",
    "resnet20-plain": "22b0b70d768c95b6fb53875a5bac3617092214d08515a93746fa4d7e59526ee2",
}


def _model(name: str) -> Path:
    if name == "digits":
        return Path(default_model_path())
    if not RESNET20.exists():
        pytest.skip(f"{RESNET20} is not here (../shared absent)")
    return RESNET20


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_file_is_unchanged(case, tmp_path, monkeypatch):
    model, kwargs = CASES[case]
    source = _model(model)
    monkeypatch.chdir(tmp_path)
    if kwargs.get("calib") == "calib.npz":
        x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
        np.savez("calib.npz", x=x)
    output = tmp_path / "out.onnx"
    api.convert(source, output, **kwargs)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    if os.environ.get("FQ_ONNX_GOLDEN_PRINT"):
        print(f'\n    "{case}": "{digest}",')
    assert digest == DIGESTS[case], f"{case}: the converted file changed"
