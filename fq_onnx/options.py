"""Every setting of a conversion, with its default, once: :class:`ConvertOptions`.

The CLI builds one from its flags (and a recipe file, ``--config``), ``fq_onnx.api.convert`` takes
one (or the same names as keywords), and a compressed model stores one in its metadata
(``fq_onnx.settings``): :meth:`ConvertOptions.from_dict` reads that back, so a stored model is a
recipe too. Values are checked when the object is made; errors name the CLI flag.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fq_onnx.errors import FqOnnxError

# The choices each option offers (the modules that implement them import these names).
ASSIGNMENTS = ("argmax", "sample", "nearest")
PRUNE_METHODS = ("magnitude", "obs")
ROUNDINGS = ("nearest", "gptq", "gptq-cd")
ACT_CALIBS = ("mse", "minmax", "percentile")
OBJECTIVES = ("top1", "agreement", "sqnr")  # fq_onnx.evaluation.objective
ALLOCATION_TARGETS = ("target_ratio", "max_drop", "min_sqnr", "max_metric_drop")
ACT_BITS_RANGE = (4, 8)  # what the converter offers (below 4 bits post-training is useless)
PREPROCESS_KEYS = ("size", "crop", "fit", "scale", "mean", "std", "layout", "channels")  # fq_onnx.data.resolve_preprocess
SETTINGS_KEY = "fq_onnx.settings"  # the model metadata entry holding the stored settings
# Keys of the stored settings that describe what a conversion found, not what it was asked.
_RESULT_KEYS = ("allocation", "per_layer_bits", "per_layer_mantissa", "metric_function")
# Fewer weights than this: a conversion without the allocator keeps the layer in float. Such
# layers weigh nothing in the file and can carry a model's function: YOLOv8n's DFL conv (16
# weights 0..15) alone took a plain 50% conversion from 18.5 to 8.3 dB output SQNR
# (docs/REAL_MODELS_DIAGNOSIS.md); PP-OCR's SE layers have 16-256.
MIN_WEIGHTS = 256


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# What a recipe (or a caller) may give each option (None: the option's default where that is None).
_TYPES = (
    (("sparsity", "w_sep", "target_ratio", "max_drop", "min_sqnr", "max_metric_drop"), "a number", _number),
    (("bits", "mantissa", "block", "seed", "calib_size", "eval_size", "min_weights", "jobs"), "an integer",
     lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    (("pow2_centres", "per_channel", "fuse_activation", "sequential", "keep_float", "bias_correction"),
     "true or false", lambda v: isinstance(v, bool)),
    (("assign", "prune_method", "rounding", "preset", "act_calib", "objective"), "a string",
     lambda v: isinstance(v, str)),
)


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` does with a model (fq_onnx.api.convert documents each field)."""

    sparsity: float = 0.5
    sparsity_file: str | os.PathLike | None = None
    per_layer_sparsity: Mapping[str, float] | None = field(default=None, hash=False)
    bits: int = 5
    mantissa: int = 0
    w_sep: float = 2.0
    block: int = 1
    exclude: tuple[str, ...] = ()
    seed: int = 0
    pow2_centres: bool = True
    assign: str = "argmax"
    per_channel: bool = True
    fuse_activation: bool = True
    calib: Any = field(default=None, hash=False)
    calib_size: int = 256
    preset: str | None = None
    preprocess: Mapping[str, Any] | None = field(default=None, hash=False)  # PREPROCESS_KEYS over the preset
    prune_method: str | None = None  # None: "obs" with calib, else "magnitude"
    rounding: str | None = None  # None: "gptq-cd" with calib, else "nearest"
    bias_correction: bool | None = None  # None: on with calib
    sequential: bool = False
    target_ratio: float | None = None
    max_drop: float | None = None
    data: Any = field(default=None, hash=False)
    objective: str | None = None  # top1, agreement or sqnr (fq_onnx.evaluation.objective); None: top1
    min_sqnr: float | None = None
    metric: Any = field(default=None, hash=False)  # metric(session) -> float, or "file.py:function"
    max_metric_drop: float | None = None
    eval_size: int = 1000
    keep_float: bool = True
    alloc_bits: tuple[int, ...] | None = None
    alloc_mantissa: tuple[int, ...] | None = None
    act_bits: int | None = None
    act_calib: str = "mse"
    min_weights: int = MIN_WEIGHTS
    jobs: int | None = None  # worker processes of the allocator's layer curves (None: allocate.default_jobs)

    def __post_init__(self):
        object.__setattr__(self, "exclude", tuple(str(e) for e in self.exclude))
        if self.alloc_bits is not None:
            object.__setattr__(self, "alloc_bits", tuple(sorted(set(int(b) for b in self.alloc_bits))) or None)
        if self.alloc_mantissa is not None:
            object.__setattr__(self, "alloc_mantissa",
                               tuple(sorted(set(int(m) for m in self.alloc_mantissa))) or None)
        if self.per_layer_sparsity is not None:
            object.__setattr__(self, "per_layer_sparsity", dict(self.per_layer_sparsity) or None)
        if self.preprocess is not None:
            object.__setattr__(self, "preprocess", {k: v for k, v in dict(self.preprocess).items()
                                                    if v is not None} or None)
        self._check()

    # ----------------------------------------------------------------------------------------
    def _check(self) -> None:
        for names, kind, test in _TYPES:
            for name in names:
                value = getattr(self, name)
                if value is not None and not test(value):
                    raise FqOnnxError(f"--{name.replace('_', '-')} must be {kind}, got {value!r}")
        if not 0.0 <= self.sparsity <= 0.99:
            raise FqOnnxError(f"--sparsity must be in 0..0.99, got {self.sparsity}")
        if not 2 <= self.bits <= 8:
            raise FqOnnxError(f"--bits must be in 2..8, got {self.bits}")
        if not 0 <= self.mantissa <= self.bits - 2:
            raise FqOnnxError(f"--mantissa must be in 0..{self.bits - 2} for {self.bits} bits "
                              f"(a code keeps a sign and at least one exponent bit), got {self.mantissa}")
        if not self.w_sep >= 0:
            raise FqOnnxError(f"--w-sep must be >= 0, got {self.w_sep}")
        if not 1 <= self.block <= 255:
            raise FqOnnxError(f"--block must be in 1..255, got {self.block}")
        if self.assign not in ASSIGNMENTS:
            raise FqOnnxError(f"--assign must be one of {', '.join(ASSIGNMENTS)}, got {self.assign!r}")
        if self.sparsity_file is not None and self.per_layer_sparsity is not None:
            raise FqOnnxError("give a sparsity file or a per-layer sparsity table, not both")
        if self.per_layer_sparsity is not None:
            _check_table(self.per_layer_sparsity, "per_layer_sparsity")
        unknown = set(self.preprocess or ()) - set(PREPROCESS_KEYS)
        if unknown:
            raise FqOnnxError(f"preprocess: unknown key {', '.join(sorted(unknown))}; the keys are "
                              f"{', '.join(PREPROCESS_KEYS)}")
        if self.act_bits is not None:
            self._check_integer_mode()
        prune_method, rounding, bias_correction = self.resolved()
        if not self.calibrated and (prune_method != "magnitude" or rounding != "nearest" or bias_correction):
            raise FqOnnxError("OBS pruning, GPTQ rounding and bias correction need calibration data (--calib)")
        if self.calib_size < 1:
            raise FqOnnxError(f"--calib-size must be >= 1, got {self.calib_size}")
        if self.jobs is not None and self.jobs < 1:
            raise FqOnnxError(f"--jobs must be >= 1, got {self.jobs}")
        if self.min_weights < 0:
            raise FqOnnxError(f"--min-weights must be >= 0 (0 compresses every layer), got {self.min_weights}")
        if self.allocating:
            self._check_allocation()
        if self.alloc_bits is not None:
            self.bits_grid()
        if self.alloc_mantissa is not None:
            self.mantissa_grid()

    def _check_integer_mode(self) -> None:
        act_bits = self.act_bits
        if not isinstance(act_bits, int) or isinstance(act_bits, bool) or \
                not ACT_BITS_RANGE[0] <= act_bits <= ACT_BITS_RANGE[1]:
            raise FqOnnxError(f"--act-bits must be an integer in {ACT_BITS_RANGE[0]}..{ACT_BITS_RANGE[1]}, "
                              f"got {act_bits}")
        if self.act_calib not in ACT_CALIBS:
            raise FqOnnxError(f"--act-calib must be one of {', '.join(ACT_CALIBS)}, got {self.act_calib!r}")
        if not self.calibrated:
            raise FqOnnxError("--act-bits needs calibration data (--calib) to choose the activation scales")
        if not self.pow2_centres:
            raise FqOnnxError("--act-bits needs power-of-two centres: drop --no-pow2-centres")

    def _check_allocation(self) -> None:
        if not self.calibrated:
            raise FqOnnxError("--target-ratio and --max-drop need calibration data (--calib)")
        given = [f"--{n.replace('_', '-')}" for n in ALLOCATION_TARGETS if getattr(self, n) is not None]
        if len(given) > 1:
            if given == ["--target-ratio", "--max-drop"]:
                raise FqOnnxError("give --target-ratio or --max-drop, not both")
            raise FqOnnxError(f"give one of {', '.join(given)}, not several")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise FqOnnxError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.max_drop is not None and self.objective == "sqnr":
            raise FqOnnxError("--max-drop bounds top-1 or agreement points; for SQNR give --min-sqnr DB")
        if self.min_sqnr is not None and self.objective not in (None, "sqnr"):
            raise FqOnnxError(f"--min-sqnr bounds the SQNR objective, not {self.objective}")
        if self.max_metric_drop is not None and self.metric is None:
            raise FqOnnxError("--max-metric-drop needs --metric file.py:function (metric(session) -> float)")
        if self.metric is not None and (self.max_drop is not None or self.min_sqnr is not None):
            raise FqOnnxError("a --metric is bounded by --max-metric-drop, not --max-drop or --min-sqnr")
        if self.max_metric_drop is not None and not self.max_metric_drop >= 0:
            raise FqOnnxError(f"--max-metric-drop must be >= 0, got {self.max_metric_drop}")
        if self.min_sqnr is not None and self.data is None:
            raise FqOnnxError("--min-sqnr needs evaluation data (--data, labels not needed), separate from --calib")
        if self.target_ratio is not None and not self.target_ratio > 1:
            raise FqOnnxError(f"--target-ratio must be above 1, got {self.target_ratio}")
        if self.max_drop is not None and not self.max_drop >= 0:
            raise FqOnnxError(f"--max-drop must be >= 0 points, got {self.max_drop}")
        if self.max_drop is not None and self.data is None:
            raise FqOnnxError("--max-drop needs labelled evaluation data (--data), separate from --calib; "
                              "with --objective agreement the data needs no labels")

    # ----------------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self.calib is not None

    @property
    def allocating(self) -> bool:
        return any(getattr(self, name) is not None for name in ALLOCATION_TARGETS)

    def resolved(self) -> tuple[str, str, bool]:
        """``(prune_method, rounding, bias_correction)`` with the calibrated defaults resolved."""
        prune_method = self.prune_method or ("obs" if self.calibrated else "magnitude")
        rounding = self.rounding or ("gptq-cd" if self.calibrated else "nearest")
        bias_correction = self.calibrated if self.bias_correction is None else self.bias_correction
        if prune_method not in PRUNE_METHODS:
            raise FqOnnxError(f"--prune-method must be one of {', '.join(PRUNE_METHODS)}, got {prune_method!r}")
        if rounding not in ROUNDINGS:
            raise FqOnnxError(f"--rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        return prune_method, rounding, bias_correction

    def layer_options(self):
        """The per-layer settings (fq_onnx.compress.LayerOptions), calibrated defaults resolved."""
        from fq_onnx.quantize.compress import LayerOptions

        prune_method, rounding, bias_correction = self.resolved()
        return LayerOptions(self.bits, self.w_sep, self.block, self.pow2_centres, self.assign, self.seed,
                            prune_method, rounding, bias_correction, self.per_channel, self.mantissa)

    def bits_grid(self) -> tuple[int, ...]:
        """The widths the allocator may choose; by default ``bits - 3 .. bits + 1`` (2..6 for 5 bits):
        on ResNet-20 at 12x, narrow codes on the robust layers cut the top-1 drop from 4.2 to 0.9 points."""
        bits = self.bits
        grid = self.alloc_bits or tuple(range(max(2, bits - 3), min(8, bits + 1) + 1))
        if not all(2 <= b <= 8 for b in grid):
            raise FqOnnxError(f"--alloc-bits must be in 2..8, got {', '.join(map(str, grid))}")
        return grid

    def mantissa_grid(self) -> tuple[int, ...]:
        """The mantissa widths the allocator may choose (``--alloc-mantissa``); by default
        ``mantissa`` alone. A width is tried with every code width that leaves it a sign and an
        exponent bit (m <= bits - 2)."""
        grid = self.alloc_mantissa or (self.mantissa,)
        if not all(0 <= m <= 6 for m in grid):
            raise FqOnnxError(f"--alloc-mantissa must be in 0..6, got {', '.join(map(str, grid))}")
        if not any(m <= b - 2 for m in grid for b in self.bits_grid()):
            raise FqOnnxError(f"--alloc-mantissa {', '.join(map(str, grid))} fits none of the widths "
                              f"{', '.join(map(str, self.bits_grid()))} (needs m <= bits - 2)")
        return grid

    def sparsity_table(self) -> tuple[float, dict[str, float], str]:
        """``(default sparsity, {node: sparsity}, where the table came from)``: the sparsity file
        (its ``"*"`` sets the default) or the inline table."""
        if self.sparsity_file is not None:
            table = load_sparsity_file(self.sparsity_file)
            source = str(self.sparsity_file)
        else:
            table, source = dict(self.per_layer_sparsity or {}), "per_layer_sparsity"
        default = table.pop("*", self.sparsity)
        for name, value in table.items():
            if not 0.0 <= value <= 0.99:
                raise FqOnnxError(f"{source}: sparsity {value} for {name!r} is outside 0..0.99")
        return default, table, source

    # ----------------------------------------------------------------------------------------
    def settings(self, per_layer: Mapping[str, float] | None = None, default_sparsity: float | None = None,
                 allocation=None) -> dict:
        """The serialisation stored in a compressed model (``fq_onnx.settings``): the options with
        the calibrated defaults resolved, the sparsity table inline, and what the allocator chose.
        Options that left no trace before they existed (``keep_float``, ``alloc_bits``,
        ``eval_size``, ``data``, ``mantissa``, ``alloc_mantissa``) are stored only when they differ
        from their default. ``min_weights`` is always stored: its default changed behaviour (before
        it, every layer was compressed), so stored settings without it replay with 0
        (``recipe_fields``)."""
        from fq_onnx.quantize import allocate

        prune_method, rounding, bias_correction = self.resolved()
        if default_sparsity is None:
            default_sparsity, per_layer, _ = self.sparsity_table()
        settings = {
            "sparsity": default_sparsity, "per_layer_sparsity": dict(per_layer) if per_layer else None,
            "bits": self.bits,
            "per_layer_bits": {n: c[1] for n, c in allocation.plan.items() if not allocate.is_float(c)}
            if allocation else None,
            "w_sep": self.w_sep, "block": self.block, "exclude": list(self.exclude), "seed": self.seed,
            "pow2_centres": self.pow2_centres, "assign": self.assign, "per_channel": self.per_channel,
            "fuse_activation": self.fuse_activation, "prune_method": prune_method,
            "rounding": rounding, "bias_correction": bias_correction,
            "sequential": bool(self.calibrated and self.sequential),
            "calibration": None if self.calib is None else {"data": _data_name(self.calib), "samples": self.calib_size,
                                                            "preset": self.preset},
            "target_ratio": self.target_ratio, "max_drop": self.max_drop,
            "allocation": allocation.to_dict() if allocation else None,
            "act_bits": self.act_bits, "act_calib": self.act_calib if self.act_bits is not None else None,
            "min_weights": self.min_weights,
        }
        if self.keep_float != DEFAULTS.keep_float:
            settings["keep_float"] = self.keep_float
        if self.alloc_bits is not None:
            settings["alloc_bits"] = list(self.alloc_bits)
        if self.mantissa != DEFAULTS.mantissa:
            settings["mantissa"] = self.mantissa
        if self.alloc_mantissa is not None:
            settings["alloc_mantissa"] = list(self.alloc_mantissa)
        if allocation and any(not allocate.is_float(c) and c[2] for c in allocation.plan.values()):
            settings["per_layer_mantissa"] = {n: c[2] for n, c in allocation.plan.items() if not allocate.is_float(c)}
        if self.eval_size != DEFAULTS.eval_size:
            settings["eval_size"] = self.eval_size
        if self.data is not None:
            settings["data"] = _data_name(self.data)
        for name in ("objective", "min_sqnr", "max_metric_drop"):
            if getattr(self, name) is not None:
                settings[name] = getattr(self, name)
        if isinstance(self.metric, str):
            settings["metric"] = self.metric
        elif self.metric is not None:  # a Python callable: named, not replayable
            settings["metric_function"] = getattr(self.metric, "__name__", type(self.metric).__name__)
        if self.preprocess is not None:
            settings["preprocess"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.preprocess.items()}
        return settings

    def to_dict(self) -> dict:
        """The recipe form of these options (what ``settings`` stores, without the results)."""
        settings = self.settings()
        for key in _RESULT_KEYS:
            settings.pop(key, None)  # per_layer_mantissa is there only when one was chosen
        return settings

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "options") -> ConvertOptions:
        """Options from a recipe: the field names (the CLI's flags with ``_`` for ``-``), or the
        settings a compressed model stores (``calibration`` nested; what the allocator chose is
        recomputed, not replayed)."""
        return cls(**recipe_fields(values, source))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ConvertOptions:
        """Options from a recipe file (JSON or YAML) or from the settings a compressed model stores."""
        return cls.from_dict(read_recipe(path), str(path))

    def replace(self, **changes) -> ConvertOptions:
        """A copy with ``changes`` (field names; an unknown name is an error)."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise FqOnnxError(f"unknown convert option {', '.join(sorted(unknown))}; "
                              f"the options are {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(ConvertOptions))
DEFAULTS = ConvertOptions()


def _data_name(data) -> str:
    """How stored settings name data: a path as given; Python objects (arrays, generators, readers)
    by their type, so the same data gives the same file (their repr holds a memory address)."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    return f"<{type(data).__name__}>"


def _check_table(table, source: str) -> None:
    if not isinstance(table, Mapping) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in table.values()):
        raise FqOnnxError(f"{source}: expected a mapping of node name to a sparsity number")


def recipe_fields(values: Mapping[str, Any], source: str = "options") -> dict[str, Any]:
    """The ConvertOptions fields a recipe mapping names (see ``ConvertOptions.from_dict``)."""
    if not isinstance(values, Mapping):
        raise FqOnnxError(f"{source}: a recipe is a mapping of option names to values")
    fields = {}
    if "calibration" in values and all(str(k).replace("-", "_") != "min_weights" for k in values):
        # The stored form (every version since recipes replay has a "calibration" entry) written
        # before --min-weights existed, when every layer was compressed: replay that.
        fields["min_weights"] = 0
    allocating = values.get("allocation") is not None or any(values.get(n) is not None for n in ALLOCATION_TARGETS)
    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key in _RESULT_KEYS:
            continue
        if key == "calibration":
            if value is not None:
                if not isinstance(value, Mapping) or set(value) - {"data", "samples", "preset"}:
                    raise FqOnnxError(f"{source}: calibration must be a mapping with data, samples and preset")
                fields["calib"] = value.get("data")
                fields.update({k: value[s] for k, s in (("calib_size", "samples"), ("preset", "preset"))
                               if s in value})
            continue
        if key == "per_layer_sparsity" and allocating:
            continue  # the allocator's choice: recomputed
        if key not in FIELDS:
            raise FqOnnxError(f"{source}: unknown option {key!r}; the options are {', '.join(FIELDS)}")
        if key == "act_calib" and value is None:
            continue  # stored as null without integer mode
        fields[key] = value
    return fields


def read_mapping(path: str | os.PathLike, what: str) -> Any:
    """The JSON or YAML (by suffix) content of ``path``; errors name the file and ``what`` it holds."""
    path = Path(path)
    if not path.exists():
        raise FqOnnxError(f"{path}: no such {what.split()[0]} file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise FqOnnxError(f"{path}: reading YAML needs PyYAML (pip install 'fq-onnx[yaml]'), or use JSON") from None
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, Exception) as exc:
        if isinstance(exc, FqOnnxError):
            raise
        raise FqOnnxError(f"{path}: cannot parse the {what}: {exc}") from None


def load_sparsity_file(path: str | os.PathLike) -> dict[str, float]:
    """Read a per-layer sparsity table: a JSON or YAML mapping of key to sparsity.

    A key is a node name, an op type or a glob pattern of either (fq_onnx.graph.select says
    which value a node takes when several keys select it); ``"*"`` sets the sparsity of every
    layer no other key selects.
    """
    table = read_mapping(path, "sparsity table")
    _check_table(table, str(Path(path)))
    return {str(k): float(v) for k, v in table.items()}


def stored_settings(path: str | os.PathLike) -> dict:
    """The settings a compressed model stores in its metadata (its weights are not read)."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise FqOnnxError(f"{path}: no such model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FqOnnxError(f"{path}: cannot read the model: {exc}") from None
    for prop in model.metadata_props:
        if prop.key == SETTINGS_KEY:
            return json.loads(prop.value)
    raise FqOnnxError(f"{path}: stores no fq-onnx settings (not converted by fq-onnx)")


def read_recipe(path: str | os.PathLike) -> dict:
    """A recipe: a JSON/YAML file of options, or a compressed .onnx model's stored settings."""
    if Path(path).suffix.lower() == ".onnx":
        return stored_settings(path)
    return read_mapping(path, "recipe")
