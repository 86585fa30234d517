"""ONNX Conv shape arithmetic (auto_pad, pads, strides, dilations, group) for 1-D and 2-D convs.

The Python mirror of custom_ops/src/plan/conv_geometry.cc: the rules a node's attributes must keep
against its weight (``check_weight_attrs``, the same words as the C++ kernel), the padding and
output length of one spatial axis, and the sliding windows of a padded input. schema (shape
inference), validate (the kernel's checks), calibrate (input patches) and the integer reference
all use it. A 1-D conv is a 2-D conv of height 1 (``lift_1d``), as in the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def auto_pad(attrs: Mapping) -> str:
    """The node's auto_pad as text (``NOTSET`` when absent or empty)."""
    value = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    return value.decode() if isinstance(value, bytes) else value


def _ints(attrs: Mapping, key: str) -> list[int]:
    return [int(v) for v in attrs.get(key) or []]


def check_weight_attrs(attrs: Mapping, dims: list[int]) -> None:
    """Raise ValueError unless the attributes fit a conv weight of ``dims`` [M, C/group, k1(, k2)]
    (conv_weight_shape in conv_geometry.cc, same messages)."""
    if len(dims) not in (3, 4):
        raise ValueError(f"a conv weight must have rank 3 or 4 (1-D or 2-D conv), the blob has rank {len(dims)}")
    spatial = len(dims) - 2
    kernel = dims[2:]
    kernel_shape = _ints(attrs, "kernel_shape")
    if kernel_shape and kernel_shape != kernel:
        raise ValueError(f"kernel_shape {kernel_shape} disagrees with the weight's {kernel}")
    for key, count, low in (("strides", spatial, 1), ("dilations", spatial, 1), ("pads", 2 * spatial, 0)):
        values = _ints(attrs, key)
        if values and len(values) != count:
            raise ValueError(f"{key} has {len(values)} values, expected {count}")
        if any(v < low for v in values):
            raise ValueError(f"{key} {values} out of range")
    group = int(attrs.get("group", 1))
    if group < 1:
        raise ValueError("group must be >= 1")
    if dims[0] % group:
        raise ValueError(f"the weight's {dims[0]} output channels are not divisible by group {group}")


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_total: int, mode: str) -> int:
    """Output length of one spatial axis of an ONNX Conv (docs/SHIFTCONV.md for SAME_*)."""
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return math.ceil(size / stride)
    extent = dilation * (kernel - 1) + 1
    if mode == "VALID":
        pad_total = 0
    return (size + pad_total - extent) // stride + 1


def pads(attrs: Mapping, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> list[int]:
    """Explicit ONNX pads [b1, b2, ..., e1, e2, ...] for a conv, resolving auto_pad."""
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    mode = auto_pad(attrs)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if mode == "SAME_UPPER" else big)
            end.append(big if mode == "SAME_UPPER" else small)
        return begin + end
    if mode == "VALID":
        return [0] * (2 * rank)
    return list(attrs.get("pads", [0] * (2 * rank)))


def lift_1d(x: np.ndarray, kernel: tuple[int, ...], attrs: Mapping) -> tuple[np.ndarray, tuple[int, ...], dict]:
    """A 1-D conv's input [N, C, W], kernel and attributes as those of a 2-D conv of height 1;
    a 2-D conv's unchanged."""
    if x.ndim != 3:
        return x, tuple(kernel), dict(attrs)
    attrs = dict(attrs)
    for key in ("strides", "dilations"):
        if key in attrs:
            attrs[key] = [1, *attrs[key]]
    if "pads" in attrs:
        attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
    return x[:, :, None, :], (1, *kernel), attrs


def windows(x: np.ndarray, kernel: tuple[int, int], attrs: Mapping) -> np.ndarray:
    """The padded input's sliding windows of a 2-D conv: a view [N, C, OH, OW, kh, kw] (the
    dilation already applied), window (i, j) being what output position (i, j) reads."""
    shape = list(x.shape)
    padding = pads(attrs, x.shape[2:], kernel)
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    x = np.pad(x, [(0, 0), (0, 0), (padding[0], padding[2]), (padding[1], padding[3])])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if x.shape[2] < span[0] or x.shape[3] < span[1]:
        raise ValueError(f"input {shape} is smaller than the (dilated) kernel")
    view = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))  # N C OH' OW' sh sw
    return view[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
