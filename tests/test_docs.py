"""Docs that cannot drift: docs/CLI.md is generated from the typer app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_matches_the_app():
    generated = subprocess.run([sys.executable, "-m", "typer", "fq_onnx.cli", "utils", "docs", "--name", "fq-onnx"],
                               capture_output=True, text=True, check=True).stdout
    assert generated.strip() == (DOCS / "CLI.md").read_text().strip(), (
        "docs/CLI.md is stale: python -m typer fq_onnx.cli utils docs --name fq-onnx --output docs/CLI.md")


def test_python_api_examples_run(tmp_path, monkeypatch):
    """Every ```python block of docs/PYTHON_API.md, in order, in one namespace."""
    import re

    text = (DOCS / "PYTHON_API.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/PYTHON_API.md", "exec"), namespace)
