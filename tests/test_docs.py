"""Docs that cannot drift: docs/CLI.md is generated from the typer app, and every code block of
README.md and docs/*.md marked runnable is executed.

A runnable block is a fenced ```python or ```bash block on the line after ``<!-- runnable -->``.
The blocks of one page run in order, in one empty folder holding ``model.onnx`` (the bundled
digits model), ``train.npz`` and ``val.npz`` (its training and validation splits, arrays x and
y); python blocks share one namespace, bash blocks run with ``bash -e`` and this environment's
``fq-onnx`` first on the PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(python|bash)\n(.*?)^```", flags=re.S | re.M)
FENCED = re.compile(r"^```(python|bash)\n", flags=re.M)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    return RUNNABLE.findall(page.read_text())


def test_cli_reference_matches_the_app():
    generated = subprocess.run([sys.executable, "-m", "typer", "fq_onnx.cli", "utils", "docs", "--name", "fq-onnx"],
                               capture_output=True, text=True, check=True).stdout
    assert generated.strip() == (DOCS / "CLI.md").read_text().strip(), (
        "docs/CLI.md is stale: python -m typer fq_onnx.cli utils docs --name fq-onnx --output docs/CLI.md")


def test_the_marked_blocks_are_the_ones_meant():
    """Markers cannot silently disappear: counts per page, and the install lines stay unmarked."""
    counts = {page.name: len(runnable_blocks(page)) for page in PAGES}
    python_api = (DOCS / "PYTHON_API.md").read_text()
    assert counts["PYTHON_API.md"] == len(FENCED.findall(python_api)) >= 6  # the page promises all of them
    assert counts["README.md"] >= 3 and counts["SHIFTCONV.md"] >= 1
    readme = (ROOT / "README.md").read_text()
    install = readme.index("pip install ./runtime . && fq-onnx demo")
    assert "<!-- runnable -->" not in readme[max(0, install - 200) : install]


def _workspace(tmp_path: Path) -> Path:
    from fq_onnx.digits import default_model_path, load_digits_split

    shutil.copy(default_model_path(), tmp_path / "model.onnx")
    for split, name in (("train", "train.npz"), ("val", "val.npz")):
        x, y = load_digits_split(split)
        np.savez(tmp_path / name, x=x, y=y)
    return tmp_path


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_run(page, tmp_path, monkeypatch):
    folder = _workspace(tmp_path)
    monkeypatch.chdir(folder)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace: dict = {"__name__": "__docs__"}
    for index, (language, code) in enumerate(runnable_blocks(page)):
        where = f"{page.name}, runnable block {index + 1}"
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=folder, env=env,
                                 capture_output=True, text=True, timeout=900)
            assert run.returncode == 0, f"{where} failed ({run.returncode}):\n{code}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
