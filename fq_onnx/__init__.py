"""fq-onnx: focused quantization for sparse CNNs, as a post-training ONNX compressor.

The package by concern (docs/ARCHITECTURE.md): ``api``, ``options`` and ``cli`` (entry points),
``format`` (the weight blob), ``quantize`` (compression math), ``graph`` (editing the model),
``op`` (the ShiftConv node: schema, checks, geometry, numpy reference), ``calibration``,
``evaluation``, ``reporting``, ``runtime`` (the C++ library in onnxruntime).

The names below load on first use, so ``import fq_onnx`` stays light: running a model
(``fq_onnx.runtime``) imports neither onnx nor the conversion code. The modules' earlier flat
paths (``fq_onnx.fmt``, ``fq_onnx.evaluate``, ``fq_onnx.intmode``, ...) are the same modules.
"""

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys

# Public names -> the module that defines them.
_FACADE = {
    "convert": "fq_onnx.api", "decompress": "fq_onnx.api", "inspect_model": "fq_onnx.api",
    "sensitivity": "fq_onnx.api", "demo": "fq_onnx.api", "ConversionReport": "fq_onnx.api",
    "ConvertOptions": "fq_onnx.options", "FqOnnxError": "fq_onnx.errors",
    "session": "fq_onnx.runtime", "library_path": "fq_onnx.runtime",
}
# Flat module paths of before the subpackages -> where the module lives now.
_MOVED = {
    "fmt": "format.fmt", "codec": "format.codec",
    "prune": "quantize.prune", "focus": "quantize.focus", "reconstruct": "quantize.reconstruct",
    "compress": "quantize.compress", "allocate": "quantize.allocate", "memo": "quantize.memo",
    "rewrite": "graph.rewrite",
    "schema": "op.schema", "validate": "op.validate", "geometry": "op.geometry", "reference": "op.reference",
    "intmode": "op.intmode",
    "calibrate": "calibration.calibrate", "act_scales": "calibration.act_scales",
    "data": "evaluation.data", "evaluate": "evaluation.evaluate",
    "report": "reporting.report", "svg": "reporting.svg", "inspect": "reporting.inspect",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import fq_onnx.fmt`` gives the module ``fq_onnx.format.fmt`` itself (one module object)."""

    def find_spec(self, name, path, target=None):
        if name.startswith("fq_onnx.") and name[8:] in _MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"fq_onnx.{_MOVED[spec.name[8:]]}")
        spec.loader_state = module.__spec__  # restored below: the import system overwrites __spec__
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _FACADE:
        return getattr(importlib.import_module(_FACADE[name]), name)
    if name in _MOVED:
        return importlib.import_module(f"fq_onnx.{name}")
    raise AttributeError(f"module 'fq_onnx' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FACADE) | set(_MOVED))


# onnx's checker and shape inference learn fq_onnx.ShiftConv as soon as both packages are
# imported, in either order (fq_onnx/_onnx_hook.py: running models does not need onnx).
from fq_onnx._onnx_hook import register_when_onnx_imported as _register  # noqa: E402

_register()
