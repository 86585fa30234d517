"""What the allocator and sensitivity measure plans by: top-1 agreement and output SQNR without
labels, and a user metric(session) -> float from Python and from --metric file.py:function."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save
from test_feeds import classifier
from typer.testing import CliRunner

from fq_onnx import api, runtime
from fq_onnx.cli import app
from fq_onnx.errors import FqOnnxError
from fq_onnx.evaluation.evaluate import evaluate

FAST = dict(calib_size=32, alloc_bits=(3, 5), rounding="gptq")


@pytest.fixture
def setup(rng, tmp_path):
    model = save(classifier(rng), tmp_path / "m.onnx")
    x = rng.standard_normal((48, 3, 6, 6)).astype(np.float32)
    return model, x


def measured(path, reference, x):
    return evaluate(path, reference=reference, data=x, latency_runs=0, memory=False, progress=False).comparison


def test_label_free_max_drop_on_agreement(setup, tmp_path):
    model, x = setup
    out = tmp_path / "a.fq.onnx"
    report = api.convert(model, out, calib=x[:32], max_drop=5.0, objective="agreement", data=x[32:], **FAST)
    allocation = report.settings["allocation"]
    assert allocation["met"] and allocation["target"] == "agreement drop <= 5"
    assert all(t["objective"] == "agreement" for t in allocation["trials"]) and len(allocation["trials"]) > 1
    assert 100 * measured(out, model, x[32:]).agreement >= 95.0


def test_label_free_min_sqnr_and_target_ratio_report(setup, tmp_path):
    model, x = setup
    out = tmp_path / "s.fq.onnx"
    report = api.convert(model, out, calib=x[:32], min_sqnr=25.0, data=x[32:], **FAST)
    allocation = report.settings["allocation"]
    assert allocation["met"] and allocation["target"] == "SQNR >= 25"
    assert measured(out, model, x[32:]).sqnr_db >= 25.0 - 0.1  # ShiftConv vs the dequantized plan: float rounding
    report = api.convert(model, tmp_path / "r.fq.onnx", calib=x[:32], target_ratio=4, objective="sqnr", data=x[32:],
                         **FAST)
    message = report.settings["allocation"]["message"]
    assert "target ratio 4x met" in message and "SQNR" in message and report.settings["objective"] == "sqnr"
    with pytest.raises(FqOnnxError, match="have no labels; give --objective agreement"):
        api.convert(model, tmp_path / "t.fq.onnx", calib=x[:32], max_drop=1.0, data=x[32:], **FAST)
    with pytest.raises(FqOnnxError, match="for SQNR give --min-sqnr"):
        api.convert(model, tmp_path / "t.fq.onnx", calib=x[:32], max_drop=1.0, objective="sqnr", data=x[32:])


def test_user_metric_from_python(setup, tmp_path):
    model, x = setup
    reference = runtime.session(model).run(None, {"X": x})[0]
    calls = []

    def closeness(session) -> float:  # higher is better: minus the mean squared output error
        calls.append(session)
        return -float(np.mean((session.run(None, {"X": x})[0] - reference) ** 2))

    out = tmp_path / "m.fq.onnx"
    report = api.convert(model, out, calib=x[:32], metric=closeness, max_metric_drop=0.01, **FAST)
    allocation = report.settings["allocation"]
    assert allocation["met"] and allocation["target"] == "metric closeness drop <= 0.01"
    assert report.settings["metric_function"] == "closeness" and len(calls) == 1 + len(allocation["trials"])
    assert closeness(runtime.session(out)) >= -0.01 - 1e-4
    with pytest.raises(FqOnnxError, match="metric returns_text must return a number.*'bad'"):
        api.convert(model, out, calib=x[:32], metric=returns_text, max_metric_drop=1, **FAST)
    with pytest.raises(FqOnnxError, match="--max-metric-drop needs --metric"):
        api.convert(model, out, calib=x[:32], max_metric_drop=1)


def returns_text(session):
    return "bad"


def test_metric_file_on_the_cli_and_sensitivity(setup, tmp_path):
    model, x = setup
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "metric.py").write_text(
        "import numpy as np\n"
        f"X = np.load({str(tmp_path / 'x.npy')!r})\n"
        "def mean_logit(session):\n"
        "    return float(session.run(None, {'X': X})[0].max(axis=1).mean())\n")
    runner = CliRunner()
    out = tmp_path / "c.fq.onnx"
    run = runner.invoke(app, ["convert", model, "-o", str(out), "--calib", str(tmp_path / "x.npy"), "--calib-size", "32",
                              "--alloc-bits", "3,5", "--metric", f"{tmp_path / 'metric.py'}:mean_logit",
                              "--max-metric-drop", "0.05"])
    assert run.exit_code == 0, run.output
    assert "max metric mean_logit drop 0.05 (metric) met" in run.output and "trial:" in run.output
    run = runner.invoke(app, ["sensitivity", model, "--data", str(tmp_path / "x.npy"), "--sparsities", "0.5,0.9",
                              "--metric", f"{tmp_path / 'metric.py'}:mean_logit"])
    assert run.exit_code == 0 and "mean_logit drop" in run.output, run.output
    report = api.sensitivity(model, x, sparsities=(0.9,), objective="agreement")
    entry = report.rows[0]["by_sparsity"]["0.9"]
    assert report.objective == "agreement" and 0 <= entry["agreement"] <= 100 and "drop" not in entry
    for spec, words in ((f"{tmp_path / 'nope.py'}:f", "nope.py: no such metric file"),
                        (f"{tmp_path / 'metric.py'}:missing", "has no function 'missing'")):
        run = runner.invoke(app, ["convert", model, "-o", str(out), "--calib", str(tmp_path / "x.npy"),
                                  "--metric", spec, "--max-metric-drop", "1"])
        assert run.exit_code == 1 and words in run.output, run.output
