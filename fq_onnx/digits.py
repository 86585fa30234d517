"""The bundled default data: scikit-learn's 8x8 handwritten digits with a fixed split.

The default model in ``models/`` was trained on the ``train`` split only; ``val`` is the
held-out validation split every demo and test measures accuracy on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLIT_SEED = 20190303
VAL_FRACTION = 0.2
MODEL_FILE = "digits_cnn.onnx"


def load_digits_split(split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)``: ``x`` float32 N x 1 x 8 x 8 scaled to [0, 1], ``y`` int64 labels.

    ``split`` is ``"train"`` (1438 images) or ``"val"`` (359 images); the split is fixed.
    """
    if split not in ("train", "val"):
        raise ValueError(f"unknown digits split {split!r}: use 'train' or 'val'")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_val = int(round(len(y) * VAL_FRACTION))
    index = order[-n_val:] if split == "val" else order[:-n_val]
    return np.ascontiguousarray(x[index]), y[index]


def default_model_path() -> Path:
    """The bundled default model: installed inside the package, or models/ in a source tree."""
    for candidate in (Path(__file__).parent / "bundled" / MODEL_FILE,
                      Path(__file__).resolve().parent.parent / "models" / MODEL_FILE):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"the bundled model {MODEL_FILE} is missing from this installation")
