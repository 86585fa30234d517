"""Import the user's own code named on the command line: ``file.py:name`` or ``module:name``
(a data reader, a metric)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_module(target: str, what: str, origin: str, error: type[Exception]) -> ModuleType:
    """The module ``target`` names: a ``.py`` file, or an importable module. ``what`` and
    ``origin`` word the ``error`` raised when that fails (``metric``, ``--metric f.py:score``)."""
    if not target.endswith(".py"):
        try:
            return importlib.import_module(target)
        except ImportError as e:
            raise error(f"cannot import module {target!r} for {origin} ({e})") from None
    file = Path(target)
    if not file.is_file():
        raise error(f"{file}: no such {what} file (from {origin})")
    name = f"_fq_onnx_user_{what}_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise error(f"{file}: cannot import as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise error(f"{file}: importing the {what} file failed ({type(e).__name__}: {e})") from e
    return module
