"""The CLI end to end, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import conv_model, save

from fq_onnx.digits import default_model_path


def fq(*args, cwd=None):
    # this environment's entry point (the first fq-onnx on PATH may belong to another install)
    exe = Path(sys.executable).with_name("fq-onnx")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "fq_onnx"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_convert_inspect_decompress(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    run = fq("convert", src, "-o", tmp_path / "out.onnx", "--sparsity", "0.8", "--json", tmp_path / "r.json")
    assert run.returncode == 0, run.stderr
    assert "weights-only" in run.stdout and "ShiftConv" not in run.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["layers"][0]["name"] == "conv" and abs(report["layers"][0]["sparsity"] - 0.8) < 0.01
    run = fq("inspect", tmp_path / "out.onnx")
    assert run.returncode == 0 and "conv" in run.stdout and "FQ" in run.stdout
    run = fq("decompress", tmp_path / "out.onnx", "-o", tmp_path / "plain.onnx")
    assert run.returncode == 0, run.stderr


def test_user_errors_exit_1_with_one_line(tmp_path):
    run = fq("convert", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx")
    assert run.returncode == 1
    assert "missing.onnx: no such file" in run.stderr and "Traceback" not in run.stderr
    run = fq("convert", default_model_path(), "-o", tmp_path / "o.onnx", "--bits", "12")
    assert run.returncode == 1 and "--bits" in run.stderr


def test_version():
    run = fq("--version")
    assert run.returncode == 0 and run.stdout.startswith("fq-onnx ")


def test_readme_demo_command(tmp_path):
    """The README's first command (after installing): convert the bundled model and compare."""
    run = fq("demo", "-o", tmp_path / "demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "demo" / "digits_cnn.fq.onnx").exists()
    assert "weights-only" in run.stdout and "top-1" in run.stdout
