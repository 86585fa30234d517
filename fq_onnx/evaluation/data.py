"""Validation data for ``fq-onnx evaluate``: readers and preprocessing.

A *reader* is anything with a ``batches(batch_size)`` method that yields ``(x, y)`` pairs:
``x`` a model-ready array whose first axis is the batch, ``y`` an int array of labels (or
``None`` for unlabelled inputs). Implement :class:`Reader` (or just that one method) to feed
any data source to :func:`fq_onnx.evaluate.evaluate`; defining ``__len__`` (number of samples)
is optional and only used for the progress bar::

    class MyReader(fq_onnx.data.Reader):
        def batches(self, batch_size):
            for x, y in my_loader(batch_size):
                yield x.astype("float32"), y

The built-in readers are chosen by :func:`open_data` from what the data argument is:

=================================  ==================================================
``None``                           the bundled digits validation split
``*.npz`` with ``x`` (and ``y``)   arrays; ``x`` NHWC uint8 images or NCHW float
``*.npy`` / folder of ``*.npy``    unlabelled model inputs (label-free mode)
folder with class sub-folders      images, label = index of the sorted sub-folder name
folder of ``<synset>_*.JPEG``      ImageNet-style, label = index in the sorted synsets
folder + labels file               ``labels.txt`` / ``labels.csv`` (or ``labels=``)
``file.py:name`` / ``module:name``  a Python callable returning a reader
a :class:`Reader` object           used as is
``get_next()`` object              onnxruntime's ``CalibrationDataReader``: input dicts
a list, generator or iterable      batches (or single samples): arrays, input dicts,
                                   ``(x, y)`` tuples/lists, dicts with a label key;
                                   tensors with ``.numpy()`` (a torch ``DataLoader``)
=================================  ==================================================

Built-in readers apply a :class:`Preprocess` (presets ``imagenet``, ``cifar``, ``yolo``,
``paddle``, ``none`` plus explicit size/crop/fit/scale/mean/std/layout/channels) and return arrays of the model's input shape.
Images are decoded with Pillow (a dependency of fq-onnx; a reader of images checks it is there).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fq_onnx.errors import FqOnnxError
from fq_onnx.evaluation import user_code

__all__ = [
    "DataError",
    "Reader",
    "BatchSource",
    "ArrayReader",
    "NpzReader",
    "NpyReader",
    "ImageFolderReader",
    "DigitsReader",
    "RandomReader",
    "Preprocess",
    "PRESETS",
    "IMAGE_EXTENSIONS",
    "open_data",
    "resolve_preprocess",
    "resize_bilinear",
    "center_crop",
    "parse_hw",
    "parse_floats",
    "subset_indices",
    "IterableReader",
    "to_numpy",
    "LABEL_KEYS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LABEL_FILE_NAMES = ("labels.txt", "labels.csv", "labels.tsv")
_SYNSET = re.compile(r"^(n\d{8})[_.\-]")

FITS = ("stretch", "crop", "letterbox")
LETTERBOX_GREY = 114  # the pad value of letterboxed uint8 images (Ultralytics')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(FqOnnxError, ValueError):
    """Data that cannot be read or does not fit the model; the message names the file."""


# --------------------------------------------------------------------------------------------
# The reader interface
# --------------------------------------------------------------------------------------------


@runtime_checkable
class BatchSource(Protocol):
    """What :func:`fq_onnx.evaluate.evaluate` needs from a data source: one method."""

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]: ...


class Reader:
    """Base class for readers: implement :meth:`batches`; optionally ``__len__``.

    ``batches`` yields ``(x, y)`` with ``x`` ready for the model (first axis = batch, at most
    ``batch_size`` long) and ``y`` int64 labels of the same length, or ``None`` if unlabelled.
    """

    #: shown in reports; override for something more telling
    description: str = ""

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - optional for user readers
        raise TypeError(f"{type(self).__name__} does not know its length")

    @property
    def labelled(self) -> bool | None:
        """``True``/``False`` if known up front, ``None`` if only the batches tell."""
        return None

    def __str__(self) -> str:
        return self.description or type(self).__name__


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How raw images/arrays become model inputs. ``None`` fields mean "automatic".

    Order: resize (``size``: an int resizes the short side keeping the aspect ratio, torchvision
    style; ``(h, w)`` resizes exactly; bilinear, antialiased like PIL) -> centre crop (``crop``)
    -> RGB to BGR (``channels="bgr"``) -> divide by ``scale`` -> subtract ``mean`` -> divide by
    ``std`` (per channel, in the model's channel order) -> transpose to the model ``layout`` ->
    cast to the model's input dtype.

    ``fit`` replaces size-then-crop by one way of reaching the size ``size`` (HxW, or the model
    input's): ``stretch`` resizes to it exactly, ``crop`` resizes to cover it keeping the
    aspect ratio and centre-crops, ``letterbox`` resizes to fit inside it keeping the aspect
    ratio and pads the rest with grey 114 (YOLO's; 114/255 for float images).

    Automatic values: ``scale`` is 255 for uint8 data and 1 otherwise; images from a folder that
    do not match a fixed model input size are resized (short side) and centre-cropped to it.
    """

    preset: str | None = None
    size: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None  # model input layout: "nchw" or "nhwc"
    fit: str | None = None  # "stretch", "crop" or "letterbox" to size (None: size, then crop)
    channels: str = "rgb"  # the model's channel order: "rgb" or "bgr"
    # filled from the model by resolve_preprocess():
    input_shape: tuple[Any, ...] | None = None  # full model input shape, dims int or None
    dtype: str = "float32"

    # ---- derived facts about the model input ---------------------------------------------
    @property
    def rank(self) -> int | None:
        return None if self.input_shape is None else len(self.input_shape)

    @property
    def is_image(self) -> bool:
        return self.rank in (None, 4)

    @property
    def model_layout(self) -> str:
        return self.layout or "nchw"

    @property
    def model_hw(self) -> tuple[int | None, int | None]:
        if self.input_shape is None or len(self.input_shape) != 4:
            return (None, None)
        s = self.input_shape
        return (s[2], s[3]) if self.model_layout == "nchw" else (s[1], s[2])

    @property
    def model_channels(self) -> int | None:
        if self.input_shape is None or len(self.input_shape) != 4:
            return None
        return self.input_shape[1] if self.model_layout == "nchw" else self.input_shape[3]

    @property
    def sample_shape(self) -> tuple[Any, ...] | None:
        return None if self.input_shape is None else tuple(self.input_shape[1:])

    def describe(self, raw_dtype: Any = None) -> str:
        parts = []
        if self.preset:
            parts.append(f"preset {self.preset}")
        if self.size is not None:
            parts.append(f"resize {_fmt_hw(self.size, short=True)}")
        if self.fit is not None:
            target = self.size if self.size is not None else self.model_hw
            parts.append(f"{self.fit} to {_fmt_hw(target) if None not in target else 'the input size'}")
        if self.crop is not None:
            parts.append(f"centre-crop {_fmt_hw(self.crop)}")
        if self.channels == "bgr":
            parts.append("BGR")
        scale = self.scale if self.scale is not None else (
            255.0 if raw_dtype is not None and np.dtype(raw_dtype) == np.uint8 else None)
        if scale not in (None, 1, 1.0):
            parts.append(f"/{scale:g}")
        if self.mean is not None:
            parts.append("mean " + ",".join(f"{v:g}" for v in self.mean))
        if self.std is not None:
            parts.append("std " + ",".join(f"{v:g}" for v in self.std))
        parts.append(self.model_layout.upper() if self.is_image else "as is")
        return ", ".join(parts)

    # ---- the numerics ---------------------------------------------------------------------
    def geometry(self, hw, auto_fit: bool) -> tuple[tuple[int, int] | None, tuple[int, int] | None,
                                                     tuple[int, int] | None]:
        """``(resize to, centre-crop to, pad to)`` for an image of size ``hw`` (each None if not done)."""
        if self.fit is None:
            size, crop = self._size_crop(hw, auto_fit)
            resized = None if size is None else _resized_hw(hw, size)
            return resized, None if crop is None else ((crop, crop) if isinstance(crop, int) else crop), None
        target = self.size if self.size is not None else self.model_hw
        if isinstance(target, int):
            target = (target, target)
        if None in target:
            raise DataError(f"--resize {self.fit} needs --size HxW: the model input size is dynamic")
        th, tw = target
        if self.fit == "stretch":
            return (th, tw), None, None
        scale = (max if self.fit == "crop" else min)(th / hw[0], tw / hw[1])
        resized = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
        return (resized, (th, tw), None) if self.fit == "crop" else (resized, None, (th, tw))

    def _size_crop(self, hw, auto_fit: bool):
        size, crop = self.size, self.crop
        mh, mw = self.model_hw
        if size is None and crop is None and auto_fit and mh and mw and tuple(hw) != (mh, mw):
            size, crop = (mh if mh == mw else (mh, mw)), (mh, mw)
        return size, crop

    def finish(self, batch: np.ndarray, raw_dtype: Any) -> np.ndarray:
        """Scale, normalise, transpose and cast a batch of NHWC images (any size-checked)."""
        x = batch.astype(np.float32, copy=False)
        if self.channels == "bgr" and x.shape[-1] == 3:
            x = x[..., ::-1]
        scale = self.scale
        if scale is None:
            scale = 255.0 if np.dtype(raw_dtype) == np.uint8 else 1.0
        if scale != 1.0:
            x = x / np.float32(scale)
        c = x.shape[-1]
        if self.mean is not None:
            x = x - _per_channel(self.mean, c, "mean")
        if self.std is not None:
            x = x / _per_channel(self.std, c, "std")
        if self.model_layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.dtype(self.dtype))

    def check(self, x: np.ndarray, source: str) -> np.ndarray:
        """Raise a :class:`DataError` naming ``source`` if ``x`` does not fit the model input."""
        want = self.sample_shape
        if want is None:
            return x
        got = tuple(x.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            hint = ""
            if self.is_image and len(got) == 3:
                hint = (" (pass --size/--crop or --preset to resize, or --layout if the channel axis"
                        " is elsewhere)")
            raise DataError(
                f"{source}: inputs have shape {_fmt_shape(got)} per sample after preprocessing "
                f"({self.describe(None)}), but the model input expects {_fmt_shape(want)}{hint}")
        return x


PRESETS: dict[str, Preprocess] = {
    # torchvision ImageNet evaluation: Resize(256) bilinear, CenterCrop(224), ToTensor, Normalize
    "imagenet": Preprocess(preset="imagenet", size=256, crop=224, scale=255.0,
                           mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # CIFAR: /255 and mean/std. The mean/std are ImageNet's, as used by the widely used
    # pretrained CIFAR ResNets (akamaster/pytorch_resnet_cifar10); override with mean=/std=.
    "cifar": Preprocess(preset="cifar", scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # feed the data as it is (only cast, and transposed if the channel axis is elsewhere)
    "none": Preprocess(preset="none", scale=1.0),
    # Ultralytics YOLO: RGB, letterboxed to the input size with grey 114, /255, no mean/std
    "yolo": Preprocess(preset="yolo", fit="letterbox", scale=255.0),
    # PaddleOCR / PaddlePaddle recognition models: (x/255 - 0.5) / 0.5 on BGR images (read with OpenCV)
    "paddle": Preprocess(preset="paddle", scale=255.0, mean=(0.5,), std=(0.5,), channels="bgr"),
}


def resolve_preprocess(
    preset: str | None = None,
    *,
    size: int | tuple[int, int] | str | None = None,
    crop: int | tuple[int, int] | str | None = None,
    scale: float | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    layout: str | None = None,
    fit: str | None = None,
    channels: str | None = None,
    input_shape: Sequence[Any] | None = None,
    dtype: Any = "float32",
) -> Preprocess:
    """Combine a preset, explicit overrides and the model input shape into one :class:`Preprocess`."""
    if preset is None or preset == "auto":
        base = Preprocess()
    else:
        key = preset.lower()
        if key not in PRESETS:
            raise DataError(f"unknown preprocessing preset {preset!r}: use one of "
                            f"{', '.join(sorted(PRESETS))}")
        base = PRESETS[key]
    shape = None if input_shape is None else tuple(
        d if isinstance(d, int) and d > 0 else None for d in input_shape)
    if layout is not None:
        layout = layout.lower()
        if layout not in ("nchw", "nhwc"):
            raise DataError(f"unknown layout {layout!r}: use nchw or nhwc")
    elif shape is not None and len(shape) == 4:
        layout = _guess_layout(shape)
    if fit is not None and fit.lower() not in FITS:
        raise DataError(f"unknown resize mode {fit!r}: use {', '.join(FITS)}")
    if channels is not None and channels.lower() not in ("rgb", "bgr"):
        raise DataError(f"unknown channel order {channels!r}: use rgb or bgr")
    if scale is not None and not scale > 0:
        raise DataError(f"scale must be positive, got {scale}")
    p = replace(
        base,
        size=parse_hw(size, "size") if size is not None else base.size,
        crop=parse_hw(crop, "crop") if crop is not None else base.crop,
        scale=float(scale) if scale is not None else base.scale,
        mean=parse_floats(mean, "mean") if mean is not None else base.mean,
        std=parse_floats(std, "std") if std is not None else base.std,
        layout=layout or base.layout,
        fit=fit.lower() if fit is not None else base.fit,
        channels=channels.lower() if channels is not None else base.channels,
        input_shape=shape,
        dtype=np.dtype(dtype).name,
    )
    if p.std is not None and any(v == 0 for v in p.std):
        raise DataError(f"std must be nonzero, got {p.std}")
    if p.fit is not None and p.crop is not None:
        raise DataError(f"--crop and --resize {p.fit} exclude each other: --resize crop --size HxW crops")
    if shape is not None and len(shape) != 4 and (p.size is not None or p.crop is not None or p.fit is not None):
        raise DataError(f"size/crop apply to image models (4-D input); this model's input is "
                        f"{_fmt_shape(shape)}")
    return p


def _guess_layout(shape: Sequence[int | None]) -> str:
    """NCHW unless the last axis looks more like channels than axis 1 (3 > 1 > 4 > other)."""
    rank = {3: 0, 1: 1, 4: 2}
    first, last = rank.get(shape[1], 9), rank.get(shape[3], 9)
    return "nhwc" if last < first else "nchw"


def parse_hw(value: Any, what: str = "size") -> int | tuple[int, int]:
    """``256`` -> 256 (short side); ``"224x192"`` / ``(224, 192)`` -> (h, w)."""
    try:
        if isinstance(value, str):
            parts = [int(v) for v in re.split(r"[x,×\s]+", value.strip().lower()) if v]
            value = parts[0] if len(parts) == 1 else tuple(parts)
        if isinstance(value, (int, np.integer)):
            if value <= 0:
                raise ValueError
            return int(value)
        value = tuple(int(v) for v in value)
        if len(value) != 2 or min(value) <= 0:
            raise ValueError
        return value  # type: ignore[return-value]
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a positive int or HxW, got {value!r}") from None


def parse_floats(value: Any, what: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` or a sequence -> tuple of floats."""
    try:
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
        if isinstance(value, (int, float)):
            value = [value]
        out = tuple(float(v) for v in value)
        if not out:
            raise ValueError
        return out
    except (TypeError, ValueError):
        raise DataError(f"{what} must be one number or one per channel, got {value!r}") from None


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise DataError(f"{what} has {len(values)} values but the data has {channels} channels")
    return np.asarray(values, dtype=np.float32)


def _resized_hw(hw: Sequence[int], size: int | tuple[int, int]) -> tuple[int, int]:
    """torchvision ``Resize(size)``: an int sets the short side, the long side is truncated."""
    if not isinstance(size, int):
        return tuple(size)  # type: ignore[return-value]
    h, w = hw
    if h <= w:
        return size, max(1, int(size * w / h))
    return max(1, int(size * h / w)), size


def _crop_box(hw: Sequence[int], crop: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """torchvision ``CenterCrop``: top/left = round((in - out) / 2)."""
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    top = int(round((hw[0] - ch) / 2.0))
    left = int(round((hw[1] - cw) / 2.0))
    return top, left, ch, cw


def center_crop(img: np.ndarray, crop: int | tuple[int, int]) -> np.ndarray:
    """Centre-crop an HWC (or HW) array; zero-pads first if it is smaller, like torchvision."""
    h, w = img.shape[:2]
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    if ch > h or cw > w:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (img.ndim - 2)
        img = np.pad(img, pad)
        h, w = img.shape[:2]
    top, left, ch, cw = _crop_box((h, w), crop)
    return img[top:top + ch, left:left + cw]


def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """PIL's antialiased bilinear (triangle filter) resampling as an ``out x in`` matrix."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # bilinear support 1.0, stretched when downsampling
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) / filterscale))
        total = w.sum()
        if total > 0:
            m[i, lo:hi] = w / total
        else:  # pragma: no cover - cannot happen for sizes >= 1
            m[i, min(int(center), in_size - 1)] = 1.0
    return m


def resize_bilinear(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an HWC / HW image or an NHWC batch to ``(h, w)`` (float32 result).

    Bilinear with PIL's antialiasing (the filter widens when shrinking), so results match
    ``PIL.Image.resize(..., BILINEAR)`` up to PIL's 8-bit rounding.
    """
    oh, ow = int(hw[0]), int(hw[1])
    batched = img.ndim == 4
    x = img if batched else img[None]
    if x.ndim == 3:
        x = x[..., None]
    ih, iw = x.shape[1:3]
    x = x.astype(np.float32, copy=False)
    if (ih, iw) != (oh, ow):
        mh = _resample_matrix(ih, oh).astype(np.float32)
        mw = _resample_matrix(iw, ow).astype(np.float32)
        x = np.einsum("oh,nhwc->nowc", mh, x, optimize=True)
        x = np.einsum("pw,nowc->nopc", mw, x, optimize=True)
    if img.ndim == 2:
        return x[0, ..., 0]
    return x if batched else x[0]


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def _fmt_hw(v: int | tuple[int, int], short: bool = False) -> str:
    if isinstance(v, int):
        return f"short side {v}" if short else f"{v}x{v}"
    return f"{v[0]}x{v[1]}"


def _labels_array(y: Any, n: int, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: labels 'y' have shape {_fmt_shape(y.shape)}, expected {n} labels "
                        f"(one per sample of 'x')")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{source}: labels 'y' must be integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


class ArrayReader(Reader):
    """In-memory arrays. ``x``: N x H x W x C (uint8 images, NHWC), N x C x H x W, N x H x W, or
    already the model's sample shape; ``y``: N labels or ``None``.

    The data layout is detected: if the samples already have the model's shape they are used as
    is; otherwise a channel axis of size 1/3/4 first (NCHW) or last (NHWC) is recognised, and
    uint8 data defaults to NHWC.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, *,
                 preprocess: Preprocess | None = None, source: str = "arrays",
                 limit: int | None = None, data_layout: str | None = None):
        x = np.asarray(x)
        if x.ndim < 1 or len(x) == 0:
            raise DataError(f"{source}: 'x' holds no samples (shape {_fmt_shape(x.shape)})")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DataError(f"{source}: 'x' must be numeric, got dtype {x.dtype}")
        self.source = source
        self.preprocess = preprocess or Preprocess()
        total = len(x)
        y = None if y is None else _labels_array(y, total, source)
        index = subset_indices(total, limit)
        self.x = x if index is None else x[index]
        self.y = None if y is None or index is None else y[index]
        if index is None:
            self.y = y
        n = len(self.x)
        of = "" if n == total else f" of {total}, evenly spaced"
        self.description = (f"{source} ({n} samples{of}"
                            f"{'' if self.y is not None else ', unlabelled'})")
        self.data_layout = data_layout or self._detect_layout()

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def __len__(self) -> int:
        return len(self.x)

    def _detect_layout(self) -> str:
        """Return 'model' (already right), 'nhwc', 'nchw', 'nhw' or 'flat'."""
        x, p = self.x, self.preprocess
        want = p.sample_shape
        if want is not None and x.ndim == len(want) + 1 and all(
                w is None or w == g for w, g in zip(want, x.shape[1:])):
            if not (p.is_image and x.ndim == 4 and _needs_spatial(p)):
                return "model"
        if x.ndim == 3 and p.is_image:
            return "nhw"
        if x.ndim != 4 or not p.is_image:
            return "flat"
        first, last = x.shape[1], x.shape[3]
        if last in (1, 3, 4) and first not in (1, 3, 4):
            return "nhwc"
        if first in (1, 3, 4) and last not in (1, 3, 4):
            return "nchw"
        if p.model_channels in (first,) and p.model_channels != last:
            return "nchw"
        if p.model_channels in (last,) and p.model_channels != first:
            return "nhwc"
        return "nhwc" if x.dtype == np.uint8 else "nchw"

    def _prepare(self, xb: np.ndarray) -> np.ndarray:
        p, lay = self.preprocess, self.data_layout
        if lay == "model" and not _changes_values(p, xb.dtype):
            return np.ascontiguousarray(xb, dtype=np.dtype(p.dtype))
        if lay in ("model", "flat"):
            if lay == "model" and p.is_image and len(xb.shape) == 4:
                nhwc = xb if p.model_layout == "nhwc" else xb.transpose(0, 2, 3, 1)
                return p.finish(nhwc, xb.dtype)
            return _finish_flat(p, xb)
        if lay == "nhw":
            nhwc = xb[..., None]
        elif lay == "nchw":
            nhwc = xb.transpose(0, 2, 3, 1)
        else:
            nhwc = xb
        mc = p.model_channels
        if mc is not None and nhwc.shape[-1] != mc:
            if nhwc.shape[-1] == 1 and mc == 3:
                nhwc = np.repeat(nhwc, 3, axis=-1)
            elif nhwc.shape[-1] == 4 and mc == 3:
                nhwc = nhwc[..., :3]
            else:
                raise DataError(f"{self.source}: the data has {nhwc.shape[-1]} channels "
                                f"({lay.upper()}), the model input expects {mc}")
        if _needs_spatial(p):
            resized, crop, pad = p.geometry(nhwc.shape[1:3], auto_fit=False)
            if resized is not None:
                nhwc = resize_bilinear(nhwc, resized)
            if crop is not None:
                nhwc = np.stack([center_crop(im, crop) for im in nhwc])
            if pad is not None:
                nhwc = letterbox_pad(nhwc, pad, xb.dtype)
        return p.finish(nhwc, xb.dtype)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for start in range(0, len(self.x), batch_size):
            xb = self._prepare(self.x[start:start + batch_size])
            self.preprocess.check(xb, self.source)
            yield xb, None if self.y is None else self.y[start:start + batch_size]


def _needs_spatial(p: Preprocess) -> bool:
    return p.size is not None or p.crop is not None or p.fit is not None


def letterbox_pad(images: np.ndarray, hw: tuple[int, int], raw_dtype: Any) -> np.ndarray:
    """Pad NHWC ``images`` (or one HWC image) centred to ``hw`` with grey: 114 for uint8 data,
    114/255 for floats."""
    h, w = images.shape[-3:-1]
    ph, pw = hw[0] - h, hw[1] - w
    pad = [(0, 0)] * (images.ndim - 3) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)]
    grey = LETTERBOX_GREY if np.dtype(raw_dtype) == np.uint8 else LETTERBOX_GREY / 255
    return np.pad(images, pad, constant_values=grey)


def _changes_values(p: Preprocess, dtype: Any) -> bool:
    scale = p.scale if p.scale is not None else (255.0 if np.dtype(dtype) == np.uint8 else 1.0)
    return scale != 1.0 or p.mean is not None or p.std is not None or _needs_spatial(p) or p.channels == "bgr"


def _finish_flat(p: Preprocess, xb: np.ndarray) -> np.ndarray:
    x = xb.astype(np.float32, copy=False)
    scale = p.scale if p.scale is not None else (255.0 if xb.dtype == np.uint8 else 1.0)
    if scale != 1.0:
        x = x / np.float32(scale)
    if p.mean is not None:
        x = x - np.float32(p.mean[0]) if len(p.mean) == 1 else x
    if p.std is not None:
        x = x / np.float32(p.std[0]) if len(p.std) == 1 else x
    return np.ascontiguousarray(x, dtype=np.dtype(p.dtype))


class NpzReader(ArrayReader):
    """An ``.npz`` file with ``x`` (samples) and optionally ``y`` (int labels)."""

    def __init__(self, path: str | os.PathLike, *, preprocess: Preprocess | None = None,
                 limit: int | None = None):
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                xkey = "x" if "x" in keys else ("X" if "X" in keys else None)
                if xkey is None:
                    raise DataError(f"{path}: .npz has no array 'x' (arrays: {', '.join(keys) or 'none'})")
                ykey = "y" if "y" in keys else ("Y" if "Y" in keys else None)
                x = z[xkey]
                y = None if ykey is None else z[ykey]
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except Exception as e:  # zipfile.BadZipFile, ValueError(pickled), OSError ...
            raise DataError(f"{path}: cannot read as .npz ({type(e).__name__}: {e})") from None
        super().__init__(x, y, preprocess=preprocess, source=str(path), limit=limit)


class NpyReader(ArrayReader):
    """Unlabelled inputs from one ``.npy`` file or a folder of ``.npy`` files (sorted by name).

    Each file holds one sample (the model's sample shape) or a batch of them.
    """

    def __init__(self, path: str | os.PathLike, *, preprocess: Preprocess | None = None,
                 limit: int | None = None):
        path = Path(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: folder has no .npy files")
        p = preprocess or Preprocess()
        want_rank = p.rank
        arrays, total = [], 0
        for f in files:
            try:
                a = np.load(f, allow_pickle=False)
            except Exception as e:
                raise DataError(f"{f}: cannot read as .npy ({type(e).__name__}: {e})") from None
            if want_rank is not None and a.ndim == want_rank - 1:
                a = a[None]
            elif want_rank is not None and a.ndim != want_rank:
                raise DataError(f"{f}: array of shape {_fmt_shape(a.shape)} is neither one sample "
                                f"nor a batch for the model input {_fmt_shape(p.input_shape or ())}")
            if arrays and a.shape[1:] != arrays[0].shape[1:]:
                raise DataError(f"{f}: shape {_fmt_shape(a.shape[1:])} differs from "
                                f"{files[0]}'s {_fmt_shape(arrays[0].shape[1:])}")
            arrays.append(a)
            total += len(a)
        x = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        src = f"{path} ({len(files)} .npy files)" if path.is_dir() else str(path)
        super().__init__(x, None, preprocess=p, source=src, limit=limit)


class DigitsReader(ArrayReader):
    """The bundled default data: the digits validation split (359 images, 1x8x8 in [0, 1])."""

    def __init__(self, *, preprocess: Preprocess | None = None, limit: int | None = None,
                 split: str = "val"):
        from fq_onnx.digits import load_digits_split

        x, y = load_digits_split(split)
        super().__init__(x, y, preprocess=preprocess, source=f"bundled digits '{split}' split",
                         limit=limit, data_layout="nchw")


class RandomReader(Reader):
    """``n`` seeded random inputs of the model's shape (label-free mode): standard normal floats
    (the usual scale of normalised inputs) or, with ``uniform=True``, uniform in [0, 1)."""

    def __init__(self, n: int, *, preprocess: Preprocess | None = None,
                 shape: Sequence[int] | None = None, seed: int = 0, uniform: bool = False,
                 dtype: Any = None):
        p = preprocess or Preprocess()
        sample = tuple(shape) if shape is not None else p.sample_shape
        if sample is None or any(d is None for d in sample):
            raise DataError(
                f"random inputs need a fixed input shape; the model input is "
                f"{_fmt_shape(p.input_shape or ())}: give the shape explicitly")
        if n <= 0:
            raise DataError(f"number of random inputs must be positive, got {n}")
        self.n, self.shape, self.seed, self.uniform = int(n), sample, seed, uniform
        self.dtype = np.dtype(dtype or p.dtype)
        kind = "uniform [0,1)" if uniform else "standard normal"
        self.description = f"{self.n} random inputs ({kind}, seed {seed}, unlabelled)"

    @property
    def labelled(self) -> bool:
        return False

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, None]]:
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.n, batch_size):
            m = min(batch_size, self.n - start)
            shp = (m, *self.shape)
            x = rng.random(shp, dtype=np.float32) if self.uniform else rng.standard_normal(
                shp, dtype=np.float32)
            yield x.astype(self.dtype, copy=False), None


LABEL_KEYS = ("label", "labels", "y", "target", "targets")  # a dict batch's labels, by name


def to_numpy(value: Any, what: str) -> np.ndarray:
    """An array, nested list or another library's tensor (``.numpy()``; a torch tensor is
    detached and moved to the CPU first) as a numpy array; torch itself is never imported."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        for step in ("detach", "cpu"):
            if callable(getattr(value, step, None)):
                value = getattr(value, step)()
        value = value.numpy()
    try:
        return np.asarray(value)
    except Exception as e:
        raise DataError(f"{what}: cannot be read as an array ({type(value).__name__}: {e})") from None


class IterableReader(Reader):
    """The data users have in Python: a list, generator or other iterable of batches, or an
    object with ``get_next()`` (onnxruntime's ``CalibrationDataReader``: input dicts until None).

    An item is one batch, or one sample when its arrays lack the model's batch axis:

    - an array (or tensor with ``.numpy()``): the inputs of a one-input model;
    - a dict: ``{input name: array}``, plus optionally labels under one of :data:`LABEL_KEYS`;
      for a one-input model the one other key may have any name (``{"image": x, "label": y}``);
    - a tuple or list ``(x, y)`` or ``(x,)``: ``x`` an array or input dict, ``y`` labels
      (a torch ``DataLoader``'s batches).

    A one-input model's arrays are preprocessed like :class:`ArrayReader`'s (model-ready floats
    pass unchanged); inputs given by name are used as they are. Items longer than
    ``batch_size`` are split; ``limit`` keeps the first samples. Generators and ``get_next()``
    objects can be read once (``rewind()`` is called when the object has it).
    """

    def __init__(self, source: Any, *, preprocess: Preprocess | None = None,
                 input_names: Sequence[str] | None = None, limit: int | None = None):
        self.source = source
        self.preprocess = preprocess or Preprocess()
        self.input_names = list(input_names) if input_names else None
        self.limit = None if limit is None else int(limit)
        self._passes = 0
        kind = "CalibrationDataReader-like object" if hasattr(source, "get_next") else type(source).__name__
        self.description = f"{kind} {type(source).__name__}" if kind != type(source).__name__ else \
            f"Python iterable ({kind})"

    def _items(self) -> Iterator[Any]:
        source = self.source
        one_pass = hasattr(source, "get_next") or hasattr(source, "__next__")  # an iterator, not a container
        if one_pass and self._passes and not callable(getattr(source, "rewind", None)):
            raise DataError(f"{self.description}: can be read only once and was read already; pass a list "
                            f"or a re-iterable object (a DataLoader) when the data is used twice")
        if self._passes and callable(getattr(source, "rewind", None)):
            source.rewind()
        self._passes += 1
        if hasattr(source, "get_next"):
            while (item := source.get_next()) is not None:
                yield item
        else:
            yield from source

    def _split(self, item: Any) -> tuple[Any, Any]:
        """``(inputs, labels)`` of one item."""
        if isinstance(item, (tuple, list)) and not _is_array_like(item):
            if len(item) not in (1, 2):
                raise DataError(f"{self.description}: an item is a {type(item).__name__} of {len(item)}; "
                                f"expected (inputs,) or (inputs, labels)")
            return item[0], (item[1] if len(item) == 2 else None)
        if isinstance(item, dict):
            keys = [k for k in item if k in LABEL_KEYS and k not in (self.input_names or ())]
            if len(keys) > 1:
                raise DataError(f"{self.description}: a batch has several label keys ({', '.join(keys)})")
            y = item[keys[0]] if keys else None
            x = {k: v for k, v in item.items() if k not in keys}
            if len(x) == 1 and self.input_names and len(self.input_names) == 1:
                x = next(iter(x.values()))
            return x, y
        return item, None

    def _batch(self, x: Any, y: Any) -> tuple[Any, np.ndarray | None]:
        rank = self.preprocess.rank
        if isinstance(x, dict):
            x = {k: to_numpy(v, f"{self.description}: input {k!r}") for k, v in x.items()}
            n = None
        else:
            x = to_numpy(x, f"{self.description}: inputs")
            if rank is not None and x.ndim == rank - 1:  # one sample
                x = x[None]
                y = None if y is None else np.reshape(to_numpy(y, f"{self.description}: labels"), (1,))
            n = len(x) if x.ndim else 0
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
                name = repr(self.input_names[0]) if self.input_names else "inputs"
                raise DataError(f"{self.description}: input {name} expects {self.preprocess.dtype} data, got "
                                f"dtype {x.dtype}")
            x = ArrayReader(x, None, preprocess=self.preprocess, source=self.description)._prepare(x) if n else x
        if y is not None:
            y = _labels_array(to_numpy(y, f"{self.description}: labels"),
                              n if n is not None else len(np.reshape(to_numpy(y, "labels"), -1)), self.description)
        return x, y

    def batches(self, batch_size: int) -> Iterator[tuple[Any, np.ndarray | None]]:
        left = self.limit
        for item in self._items():
            x, y = self._batch(*self._split(item))
            n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size, start + left if left is not None else n)
                xb = {k: v[start:stop] for k, v in x.items()} if isinstance(x, dict) else x[start:stop]
                yield xb, None if y is None else y[start:stop]
                if left is not None:
                    left -= stop - start
                    if left <= 0:
                        return


def _is_array_like(item: Any) -> bool:
    """A list of numbers (one array), rather than a list of (inputs, labels)."""
    return isinstance(item, list) and bool(item) and isinstance(item[0], (int, float, list))


def _require_pillow(path: Path):
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise DataError(
            f"{path}: reading images needs Pillow, which is not installed; run `pip install pillow` "
            f"(or convert the images to an .npz with arrays x and y)") from None
    return Image


class ImageFolderReader(Reader):
    """Images in a folder, labelled by one of (first that applies):

    1. a labels file: ``labels=`` or ``labels.txt`` / ``labels.csv`` / ``labels.tsv`` in the
       folder: lines ``<file> <label>`` (whitespace or comma separated; ``#`` comments and a
       header line are skipped). Integer labels are used as is; names are mapped to their index
       in the sorted list of distinct names in the file. Paths are relative to the folder.
    2. class sub-folders: label = index of the sub-folder name in the sorted list (torchvision's
       ``ImageFolder``).
    3. ImageNet-style file names ``<synset>_*.JPEG``: label = index of the synset in the sorted
       list of synsets found (the usual class order when all 1000 classes are present).

    Images are decoded with Pillow, converted to RGB (or L for 1-channel models) and preprocessed
    one by one; files are visited in sorted order.
    """

    def __init__(self, path: str | os.PathLike, *, preprocess: Preprocess | None = None,
                 limit: int | None = None, labels: str | os.PathLike | None = None,
                 workers: int | None = None):
        self.root = Path(path)
        self.preprocess = preprocess or Preprocess()
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.notes: list[str] = []
        self._fit_noted = False
        items, how = self._index(labels)
        index = subset_indices(len(items), limit)
        if index is not None:
            items = [items[i] for i in index]
        if not items:
            raise DataError(f"{self.root}: no images found (looked for "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        self.items = items
        self._image = _require_pillow(self.root)
        self.description = f"image folder {self.root} ({len(items)} images, {how})"

    @property
    def labelled(self) -> bool:
        return self.items[0][1] is not None

    def __len__(self) -> int:
        return len(self.items)

    # ---- indexing -----------------------------------------------------------------------
    def _index(self, labels) -> tuple[list[tuple[Path, int | None]], str]:
        root = self.root
        if labels is None:
            for name in LABEL_FILE_NAMES:
                if (root / name).is_file():
                    labels = root / name
                    break
        if labels is not None:
            return self._from_labels_file(Path(labels))
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        class_dirs = [d for d in subdirs if any(_is_image(f) for f in d.rglob("*"))]
        if class_dirs:
            items = []
            for idx, d in enumerate(class_dirs):
                items += [(f, idx) for f in sorted(d.rglob("*")) if _is_image(f)]
            return items, f"{len(class_dirs)} classes from sub-folders"
        files = sorted(f for f in root.iterdir() if _is_image(f))
        synsets = [_SYNSET.match(f.name) for f in files]
        if files and all(synsets):
            order = {s: i for i, s in enumerate(sorted({m.group(1) for m in synsets}))}
            items = [(f, order[m.group(1)]) for f, m in zip(files, synsets)]
            if len(order) != 1000:
                self.notes.append(
                    f"{len(order)} synsets found, not 1000: labels are indices among the synsets "
                    f"present, which equals the ImageNet class index only when all are present "
                    f"(give a labels file otherwise)")
            return items, f"{len(order)} classes from ImageNet synset file names"
        if files:
            bad = next(f for f, m in zip(files, synsets) if not m)
            raise DataError(
                f"{root}: cannot tell the labels: images are neither in class sub-folders nor all "
                f"named <synset>_... (e.g. {bad.name}), and there is no labels file "
                f"({' / '.join(LABEL_FILE_NAMES)}); for unlabelled inputs use .npy files or random "
                f"inputs")
        return [], ""

    def _from_labels_file(self, lf: Path):
        if not lf.is_file():
            raise DataError(f"{lf}: labels file not found")
        try:
            text = lf.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{lf}: cannot read labels file ({e})") from None
        rows = []
        delim = "," if lf.suffix.lower() == ".csv" or ("," in text.split("\n", 1)[0]) else None
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if delim == ",":
                parts = [p.strip() for p in next(csv.reader([line]))]
            else:
                parts = line.rsplit(None, 1)
            if len(parts) < 2:
                raise DataError(f"{lf}:{lineno}: expected '<file> <label>', got {line!r}")
            rows.append((lineno, parts[0], parts[-1]))
        base_dir = lf.parent if lf.parent.resolve() == self.root.resolve() else self.root
        if len(rows) > 1 and not (base_dir / rows[0][1]).is_file() and (
                (base_dir / rows[1][1]).is_file()
                or (not _is_int(rows[0][2]) and all(_is_int(r[2]) for r in rows[1:]))):
            rows = rows[1:]  # a header line such as "file,label"
        if not rows:
            raise DataError(f"{lf}: labels file has no entries")
        if all(_is_int(r[2]) for r in rows):
            mapping = None
            how = f"integer labels from {lf.name}"
        else:
            names = sorted({r[2] for r in rows})
            mapping = {n: i for i, n in enumerate(names)}
            how = f"{len(names)} class names from {lf.name} (sorted)"
        items = []
        for lineno, name, lab in rows:
            f = base_dir / name
            if not f.is_file():
                raise DataError(f"{lf}:{lineno}: image {name!r} not found in {base_dir}")
            items.append((f, int(lab) if mapping is None else mapping[lab]))
        return items, how

    # ---- decoding -----------------------------------------------------------------------
    def _load(self, f: Path) -> np.ndarray:
        Image, p = self._image, self.preprocess
        try:
            with Image.open(f) as im:
                im = im.convert("L" if p.model_channels == 1 else "RGB")
                resized, crop, pad = p.geometry((im.height, im.width), auto_fit=True)
                if resized is not None and p.size is None and p.fit is None and not self._fit_noted:
                    self._fit_noted = True
                    self.notes.append(
                        f"images were resized (short side) and centre-cropped to the model input "
                        f"{_fmt_hw(crop)} because no --size/--crop/--preset was given")
                if resized is not None:
                    im = im.resize((resized[1], resized[0]), Image.BILINEAR)
                arr = np.asarray(im)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{f}: cannot decode image ({type(e).__name__}: {e})") from None
        if arr.ndim == 2:
            arr = arr[..., None]
        if crop is not None:
            arr = center_crop(arr, crop)
        if pad is not None:
            arr = letterbox_pad(arr, pad, np.uint8)
        return arr

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        from concurrent.futures import ThreadPoolExecutor

        p = self.preprocess
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for start in range(0, len(self.items), batch_size):
                chunk = self.items[start:start + batch_size]
                imgs = list(pool.map(self._load, [f for f, _ in chunk]))
                odd = next((i for i, im in enumerate(imgs) if im.shape != imgs[0].shape), None)
                if odd is not None:
                    raise DataError(
                        f"{chunk[odd][0]}: image is {_fmt_shape(imgs[odd].shape)} after "
                        f"preprocessing but {chunk[0][0].name} is {_fmt_shape(imgs[0].shape)}; pass "
                        f"--size/--crop or --preset so that all images get the same size")
                x = p.finish(np.stack(imgs), np.uint8)
                p.check(x, f"{self.root}")
                y = None if chunk[0][1] is None else np.array([lab for _, lab in chunk], np.int64)
                yield x, y


def subset_indices(total: int, limit: int | None) -> np.ndarray | None:
    """Indices of ``limit`` samples spread evenly over ``total`` (every k-th), or ``None`` for all.

    Built-in readers apply ``limit`` this way so that a quick look at data sorted by class (an
    image folder, most test-set files) still sees every class.
    """
    if limit is None or int(limit) >= total:
        return None
    if int(limit) < 1:
        raise DataError(f"limit must be a positive integer, got {limit}")
    return (np.arange(int(limit), dtype=np.int64) * total) // int(limit)


def _is_image(f: Path) -> bool:
    return f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Choosing a reader
# --------------------------------------------------------------------------------------------


def _load_python_reader(spec: str) -> Any:
    """``path/to/file.py:name`` or ``package.module:name`` -> the object (called if callable)."""
    target, _, attr = spec.rpartition(":")
    module = user_code.import_module(target, "data", f"data spec {spec!r}", DataError)
    if not hasattr(module, attr):
        raise DataError(f"{target}: has no attribute {attr!r} (from data spec {spec!r})")
    obj = getattr(module, attr)
    if not hasattr(obj, "batches") and callable(obj):
        obj = obj()
    if not hasattr(obj, "batches"):
        raise DataError(f"{spec}: {attr} is not a reader (an object with a batches(batch_size) "
                        f"method, or a callable returning one)")
    return obj


def open_data(
    data: Any = None,
    preprocess: Preprocess | None = None,
    *,
    limit: int | None = None,
    labels: str | os.PathLike | None = None,
    random_inputs: int | None = None,
    seed: int = 0,
    input_names: Sequence[str] | None = None,
) -> Any:
    """Return a reader for ``data`` (see the module docstring for what is recognised);
    ``input_names`` are the model's inputs (how an iterable's dicts are told from labels)."""
    p = preprocess or Preprocess()
    if random_inputs is not None:
        if data is not None:
            raise DataError("give either data or random_inputs, not both")
        n = random_inputs if limit is None else min(random_inputs, limit)
        return RandomReader(n, preprocess=p, seed=seed)
    if data is None:
        return DigitsReader(preprocess=p, limit=limit)
    if hasattr(data, "batches"):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return ArrayReader(data[0], data[1], preprocess=p, limit=limit)
    if isinstance(data, np.ndarray):
        return ArrayReader(data, None, preprocess=p, limit=limit)
    if isinstance(data, dict):  # one batch of feeds
        return IterableReader([data], preprocess=p, input_names=input_names, limit=limit)
    if hasattr(data, "get_next") or (hasattr(data, "__iter__") and not isinstance(data, (str, bytes, os.PathLike))):
        return IterableReader(data, preprocess=p, input_names=input_names, limit=limit)
    if not isinstance(data, (str, os.PathLike)):
        raise DataError(f"cannot use {type(data).__name__} as data: give a path, arrays, a reader, an "
                        f"iterable of batches or an object with get_next()")
    path = Path(data)
    if not path.exists():
        s = str(data)
        if ":" in s and not s.startswith(("/", ".")) or (":" in s and ".py:" in s):
            if re.match(r"^[A-Za-z]:[\\/]", s) is None:  # not a Windows drive path
                return _load_python_reader(s)
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        has_npy = any(path.glob("*.npy"))
        has_img = any(_is_image(f) for f in path.iterdir()) or any(
            d.is_dir() for d in path.iterdir() if not d.name.startswith("."))
        label_file = labels is not None or any((path / n).is_file() for n in LABEL_FILE_NAMES)
        if has_npy and not (has_img or label_file):
            return NpyReader(path, preprocess=p, limit=limit)
        if not (has_img or label_file):
            raise DataError(f"{path}: folder holds neither images ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"nor .npy inputs")
        return ImageFolderReader(path, preprocess=p, limit=limit, labels=labels)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return NpzReader(path, preprocess=p, limit=limit)
    if suffix == ".npy":
        return NpyReader(path, preprocess=p, limit=limit)
    if suffix in IMAGE_EXTENSIONS:
        raise DataError(f"{path}: a single image; put images in a folder (class sub-folders, "
                        f"synset file names, or a labels file)")
    raise DataError(f"{path}: unsupported data file (use an .npz with x and y, .npy inputs, or an "
                    f"image folder)")


def num_samples(reader: Any) -> int | None:
    """``len(reader)`` if the reader knows it, else ``None``."""
    try:
        n = len(reader)
    except Exception:
        return None
    return n if isinstance(n, int) and n >= 0 else None


def reader_description(reader: Any) -> str:
    d = getattr(reader, "description", "") or ""
    return d or type(reader).__name__

