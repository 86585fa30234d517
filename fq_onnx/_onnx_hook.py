"""Register the ShiftConv schema with onnx when onnx is imported, not before.

Importing onnx costs about 15 MB of resident memory and 0.1 s. A process that only runs
compressed models (``fq_onnx.runtime``) never needs it, and its memory is what we compare with
the original model's. Any process that does import onnx, before or after fq_onnx, gets the
schema registered all the same.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register() -> None:
    import fq_onnx.op.schema  # noqa: F401  registers on import (also when we are inside that import)


class _RegisterAfterOnnx(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps onnx's own loader so the schema is registered right after."""

    def find_spec(self, name, path, target=None):
        if name != "onnx":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding us again
        spec = importlib.util.find_spec("onnx")
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _register()

            spec.loader.exec_module = exec_module
        return spec


def register_when_onnx_imported() -> None:
    if "onnx" in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterOnnx) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterOnnx())
