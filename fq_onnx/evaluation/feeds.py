"""The one way from the data a user has to the model's feeds.

Every consumer of data (calibration, the allocator's gains and search, ``evaluate``,
``sensitivity``) calls :func:`open_model_data`: it picks a reader for the data
(fq_onnx.data.open_data: paths, arrays, readers, iterables, generators,
``CalibrationDataReader``-like and DataLoader-like objects), preprocesses single image inputs,
and yields ``({input name: array}, labels or None)`` batches checked against the model's inputs,
so a wrong shape or dtype fails here, naming the input and what it expects.

:class:`Samples` holds feeds for repeated runs (the calibration sample, the evaluation set of
``max_drop``): chunks of consecutive samples whose arrays share their shapes, so models with
several inputs and batches of different spatial sizes run chunk by chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fq_onnx.evaluation import data as data_mod
from fq_onnx.evaluation.data import DataError

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (``None`` for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def describe(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def model_inputs(model: Any) -> list[InputSpec]:
    """The inputs a caller feeds (graph inputs that are not initializers) of an ONNX model or path."""
    import onnx
    from onnx import helper

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tensor.shape.dim) if tensor.HasField("shape") else ()
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        except Exception:
            raise DataError(f"model input {value.name!r} is not a tensor of a numeric type") from None
        specs.append(InputSpec(value.name, shape, dtype))
    return specs


def to_feeds(x: Any, inputs: Sequence[InputSpec], source: str) -> Feeds:
    """A reader's batch (an array for a one-input model, or ``{input name: array}``) as checked,
    contiguous arrays of each input's dtype."""
    names = [spec.name for spec in inputs]
    if not isinstance(x, dict):
        if len(inputs) != 1:
            raise DataError(f"{source}: the model has {len(inputs)} inputs ({', '.join(names)}): give each "
                            f"batch as a dict {{input name: array}}, got {type(x).__name__}")
        x = {names[0]: x}
    missing = [n for n in names if n not in x]
    extra = [str(k) for k in x if k not in names]
    if missing or extra:
        raise DataError(f"{source}: batch has inputs {', '.join(map(str, x)) or 'none'}, the model's inputs are "
                        f"{', '.join(names)}" + (f" (missing {', '.join(missing)})" if missing else ""))
    feeds, count = {}, None
    for spec in inputs:
        value = data_mod.to_numpy(x[spec.name], f"{source}: input {spec.name!r}")
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_) or \
                not np.can_cast(value.dtype, np.dtype(spec.dtype), "same_kind"):
            raise DataError(f"{source}: input {spec.name!r} expects {spec.dtype} data, got dtype {value.dtype}")
        if spec.shape and (value.ndim != len(spec.shape) or any(
                w is not None and w != g for w, g in zip(spec.shape[1:], value.shape[1:]))):
            raise DataError(f"{source}: input {spec.name!r} expects shape {spec.describe()} (batch first), "
                            f"got a batch of shape [{', '.join(map(str, value.shape))}]")
        if count is not None and value.shape[:1] != (count,):
            raise DataError(f"{source}: input {spec.name!r} has {value.shape[0] if value.ndim else 0} samples "
                            f"in a batch where {names[0]!r} has {count}")
        count = value.shape[0] if value.ndim else 0
        feeds[spec.name] = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
    return feeds


def batch_len(feeds: Feeds) -> int:
    return len(next(iter(feeds.values())))


class ModelData:
    """A reader's batches as checked model feeds: ``batches(n)`` yields ``(feeds, labels or None)``."""

    def __init__(self, reader: Any, inputs: Sequence[InputSpec], preprocess: data_mod.Preprocess | None = None):
        self.reader, self.inputs, self.preprocess = reader, list(inputs), preprocess
        self.description = data_mod.reader_description(reader)

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.reader, "notes", []))

    def __len__(self) -> int:
        n = data_mod.num_samples(self.reader)
        if n is None:
            raise TypeError(f"{self.description} does not know its length")
        return n

    def batches(self, batch_size: int) -> Iterator[tuple[Feeds, np.ndarray | None]]:
        for x, y in self.reader.batches(batch_size):
            feeds = to_feeds(x, self.inputs, self.description)
            if y is not None:
                y = data_mod.to_numpy(y, f"{self.description}: labels").reshape(-1)
                if len(y) != batch_len(feeds):
                    raise DataError(f"{self.description}: a batch has {batch_len(feeds)} inputs but "
                                    f"{len(y)} labels")
            yield feeds, y


def open_model_data(data: Any, inputs: Sequence[InputSpec], *, digits_split: str = "val",
                    preset: str | None = None, limit: int | None = None,
                    labels: str | os.PathLike | None = None, random_inputs: int | None = None,
                    seed: int = 0, **preprocessing) -> ModelData:
    """``data`` in any form fq_onnx.data.open_data reads (``"digits"``: the bundled split
    ``digits_split``), preprocessed for a one-input model by ``preset`` and ``preprocessing``
    (the keywords of fq_onnx.data.resolve_preprocess), as model feeds."""
    single = inputs[0] if len(inputs) == 1 else None
    explicit = {k: v for k, v in preprocessing.items() if v is not None}
    if single is None and (preset is not None or explicit):
        raise DataError(f"preprocessing options apply to models with one input; this model has {len(inputs)} "
                        f"({', '.join(s.name for s in inputs)}): give model-ready arrays")
    pre = data_mod.resolve_preprocess(preset, input_shape=single.shape if single else None,
                                      dtype=single.dtype if single else "float32", **explicit)
    if isinstance(data, str) and data == "digits":
        reader = data_mod.DigitsReader(preprocess=pre, split=digits_split, limit=limit)
    else:
        names = [s.name for s in inputs]
        reader = data_mod.open_data(data, pre, limit=limit, labels=labels, random_inputs=random_inputs,
                                    seed=seed, input_names=names)
    return ModelData(reader, inputs, pre)


# --------------------------------------------------------------------------------------------
# Feeds kept for repeated runs
# --------------------------------------------------------------------------------------------


def _signature(feeds: Feeds) -> tuple:
    return tuple((name, value.shape[1:]) for name, value in feeds.items())


class Samples:
    """Model feeds in chunks of samples that share their shapes; sliced like an array
    (``samples[:128]``), run chunk by chunk (:meth:`batches`)."""

    def __init__(self, chunks: list[Feeds]):
        self.chunks = [c for c in chunks if batch_len(c)]

    @classmethod
    def of(cls, inputs: Any, name: str | None = None) -> Samples:
        """``inputs`` as Samples: Samples as they are, one array as the feed ``name``."""
        if isinstance(inputs, Samples):
            return inputs
        return cls([{name: inputs}])

    @classmethod
    def concatenate(cls, batches: list[Feeds]) -> Samples:
        """Consecutive batches joined into chunks while their shapes agree (order kept)."""
        chunks: list[list[Feeds]] = []
        for feeds in batches:
            if chunks and _signature(chunks[-1][0]) == _signature(feeds):
                chunks[-1].append(feeds)
            else:
                chunks.append([feeds])
        return cls([{n: np.concatenate([b[n] for b in group]) if len(group) > 1 else group[0][n]
                     for n in group[0]} for group in chunks])

    def __len__(self) -> int:
        return sum(batch_len(c) for c in self.chunks)

    def __getitem__(self, index: slice) -> Samples:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("Samples take a contiguous slice")
        start, stop, _ = index.indices(len(self))
        out, offset = [], 0
        for chunk in self.chunks:
            n = batch_len(chunk)
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                out.append({k: v[lo:hi] for k, v in chunk.items()})
            offset += n
        return Samples(out)

    def batches(self, batch_size: int) -> Iterator[Feeds]:
        for chunk in self.chunks:
            for start in range(0, batch_len(chunk), batch_size):
                yield {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in chunk.items()}

    def count_batches(self, batch_size: int) -> int:
        return sum(-(-batch_len(c) // batch_size) for c in self.chunks)


def reservoir_sample(data: ModelData, size: int, directory: str | os.PathLike, seed: int = 0,
                     batch_size: int = 32) -> Samples:
    """A seeded uniform sample of ``size`` samples of ``data`` (reservoir sampling, one pass).

    Samples of one input that all share a shape live in a memory-mapped .npy file in
    ``directory``; otherwise (several inputs, or shapes that vary) the kept samples are held in
    memory and grouped by shape.
    """
    rng = np.random.default_rng(seed)
    memmap: np.ndarray | None = None
    rows: list[Feeds] | None = None  # the general store, once the memmap does not fit
    seen = 0
    name = data.inputs[0].name
    for feeds, _ in data.batches(batch_size):
        if memmap is None and rows is None:
            if len(feeds) == 1:
                first = feeds[name]
                memmap = np.lib.format.open_memmap(Path(directory) / "calibration_inputs.npy", mode="w+",
                                                   dtype=first.dtype, shape=(size, *first.shape[1:]))
            else:
                rows = []
        if memmap is not None and feeds[name].shape[1:] != memmap.shape[1:]:
            rows = [{name: np.array(memmap[i : i + 1])} for i in range(min(seen, size))]
            memmap = None
        for i in range(batch_len(feeds)):
            if seen < size:
                slot = seen
            else:
                slot = int(rng.integers(0, seen + 1))
            if slot < size:
                if memmap is not None:
                    memmap[slot] = feeds[name][i]
                else:
                    row = {k: np.array(v[i : i + 1]) for k, v in feeds.items()}
                    if slot < len(rows):
                        rows[slot] = row
                    else:
                        rows.append(row)
            seen += 1
    if seen == 0:
        raise DataError(f"{data.description}: the calibration data yielded no samples")
    if memmap is not None:
        return Samples([{name: memmap[: min(seen, size)]}])
    groups: dict[tuple, list[Feeds]] = {}
    for row in rows:
        groups.setdefault(_signature(row), []).append(row)
    return Samples.concatenate([row for group in groups.values() for row in group])
