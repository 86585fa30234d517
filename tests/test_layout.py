"""The package layout: the lazy facade, and the flat module paths of before the subpackages."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import fq_onnx


@pytest.mark.parametrize("old", sorted(fq_onnx._MOVED))
def test_flat_module_paths_are_the_moved_modules(old):
    moved = importlib.import_module(f"fq_onnx.{fq_onnx._MOVED[old]}")
    assert importlib.import_module(f"fq_onnx.{old}") is moved
    assert getattr(fq_onnx, old) is moved
    assert moved.__spec__.name == moved.__name__  # the alias leaves the module's own spec alone


def test_facade_names():
    from fq_onnx import api, options, runtime

    assert fq_onnx.convert is api.convert and fq_onnx.ConvertOptions is options.ConvertOptions
    assert fq_onnx.session is runtime.session
    with pytest.raises(AttributeError):
        fq_onnx.no_such_name  # noqa: B018


@pytest.mark.parametrize("code", [
    "from fq_onnx.graph import rewrite",  # a submodule of a package that is also a module of names
    "from fq_onnx.graph import load_model, fold_batchnorms",  # the names of the old fq_onnx.graph
    "from fq_onnx.quantize import allocate",
    "from fq_onnx.evaluate import evaluate",
    "import fq_onnx.intmode as m; m.ActStats",
])
def test_imports_in_a_fresh_interpreter(code):
    subprocess.run([sys.executable, "-c", code], check=True)
