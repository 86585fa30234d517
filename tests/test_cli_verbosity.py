"""--quiet and --verbose on every command, through typer's CliRunner (in process)."""

from __future__ import annotations

import pytest
from conftest import conv_model, save
from typer.testing import CliRunner

from fq_onnx import api
from fq_onnx.cli import app
from fq_onnx.digits import default_model_path

COMMANDS = ("convert", "inspect", "decompress", "evaluate", "sensitivity", "demo")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    api.convert(default_model_path(), tmp / "d.fq.onnx", sparsity=0.5)
    return tmp / "d.fq.onnx"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_both_options(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--quiet" in result.output and "--verbose" in result.output


def test_both_at_once_is_a_usage_error(compressed):
    result = run("inspect", compressed, "--quiet", "--verbose")
    assert result.exit_code != 0 and "exclude each other" in result.output


def test_convert_quiet_prints_only_the_result(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    loud = run("convert", src, "-o", tmp_path / "a.onnx", "--report", tmp_path / "rep")
    assert loud.exit_code == 0, loud.output
    assert "bytes before" in loud.output and "report: " in loud.output
    quiet = run("convert", src, "-o", tmp_path / "b.onnx", "--report", tmp_path / "rep2", "-q")
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.output.strip().splitlines()
    assert len(lines) == 1 and "weights-only" in lines[0]  # the summary, nothing else
    assert (tmp_path / "b.onnx").exists() and (tmp_path / "rep2" / "index.html").exists()
    assert "compressing" not in loud.output  # no progress bar: stderr is not a terminal


def test_convert_verbose_shows_the_blob_details(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng, relu=True), tmp_path / "in.onnx")
    result = run("convert", src, "-o", tmp_path / "a.onnx", "--verbose")
    assert result.exit_code == 0, result.output
    assert "compressed weights in detail" in result.output and "relu" in result.output
    assert "time: " in result.output and "compress " in result.output  # seconds per stage
    assert "time: " not in run("convert", src, "-o", tmp_path / "b.onnx").output


def test_convert_reports_seconds_per_stage_it_ran(tmp_path, rng):
    src = save(conv_model(("N", 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    plain = api.convert(src, tmp_path / "a.onnx")
    assert list(plain.timings) == ["load and fold", "compress", "export"]
    calib = rng.standard_normal((8, 8, 8, 8)).astype("float32")
    allocated = api.convert(src, tmp_path / "b.onnx", calib=calib, target_ratio=4, keep_float=False)
    assert list(allocated.timings) == ["load and fold", "calibration statistics", "layer curves", "layer gains",
                                       "plan search", "compress", "export"]
    assert all(seconds >= 0 for seconds in allocated.timings.values())
    assert allocated.to_dict()["timings"] == allocated.timings
    assert allocated.timing_summary().startswith(f"time: {sum(allocated.timings.values()):.1f} s (load and fold")


def test_inspect(compressed):
    normal, quiet, verbose = (run("inspect", compressed, *flag) for flag in ((), ("-q",), ("-v",)))
    assert normal.exit_code == quiet.exit_code == verbose.exit_code == 0
    assert "block1/conv1" in quiet.output and quiet.output == normal.output  # the table is the result
    assert "compressed weights in detail" in verbose.output and "code table" in verbose.output


def test_decompress(compressed, tmp_path):
    normal = run("decompress", compressed, "-o", tmp_path / "a.onnx")
    assert normal.exit_code == 0 and normal.output.startswith("wrote ")
    quiet = run("decompress", compressed, "-o", tmp_path / "b.onnx", "-q")
    assert quiet.exit_code == 0 and quiet.output == "" and (tmp_path / "b.onnx").exists()
    verbose = run("decompress", compressed, "-o", tmp_path / "c.onnx", "-v")
    assert verbose.exit_code == 0 and "float" in verbose.output and "bytes before" in verbose.output


def test_evaluate(compressed):
    args = ("evaluate", compressed, "--reference", default_model_path(), "--limit", "64", "--latency-runs", "0",
            "--no-memory")
    quiet, verbose = run(*args, "-q"), run(*args, "-v")
    assert quiet.exit_code == 0 and verbose.exit_code == 0, verbose.output
    assert "top-1 accuracy" in quiet.output and "evaluated in" not in quiet.output
    assert "top-1 accuracy" in verbose.output and "evaluated in" in verbose.output and "onnxruntime" in verbose.output


def test_sensitivity():
    args = ("sensitivity", default_model_path(), "--data", "digits", "--sparsities", "0.7", "--limit", "60")
    normal, quiet, verbose = run(*args), run(*args, "-q"), run(*args, "-v")
    assert normal.exit_code == quiet.exit_code == verbose.exit_code == 0, normal.output
    assert "original top-1" in normal.output and "original top-1" not in quiet.output
    assert "block2/conv2" in quiet.output and " dB)" in verbose.output and " dB)" not in normal.output


def test_errors_one_line_or_traceback(tmp_path, monkeypatch):
    missing = run("convert", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx")
    assert missing.exit_code == 1
    assert missing.output.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file"
    traced = run("convert", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx", "-v")
    assert traced.exit_code == 1 and "Traceback (most recent call last)" in traced.output
    assert traced.output.rstrip().endswith("no such file")

    def bug(path):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "inspect_model", bug)
    crash = run("inspect", tmp_path / "any.onnx")
    assert crash.exit_code == 2
    assert crash.output.strip() == "internal error: RuntimeError: boom (run with --verbose for the traceback)"
    traced = run("inspect", tmp_path / "any.onnx", "--verbose")
    assert traced.exit_code == 2 and "Traceback" in traced.output and 'raise RuntimeError("boom")' in traced.output
