"""Per-layer allocation and the sensitivity table."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fq_onnx import allocate, api
from fq_onnx.digits import default_model_path, load_digits_split
from fq_onnx.errors import FqOnnxError


def curve(name, fp32, gain, slope, bits=(5,)):
    """Synthetic trade-off: bytes grow with density and bits, the error with sparsity and 2^-bits."""
    c = allocate.LayerCurve(name, fp32)
    for s in allocate.SPARSITY_GRID:
        for b in bits:
            c.bytes[s, b] = int(fp32 / 32 * (b + 1) * (1 - s) + 20)
            c.errors[s, b] = 0.05 * 2.0 ** (5 - b) + slope * s**2
    c.gain = gain
    return c


def test_plan_meets_the_budget_and_spares_the_sensitive_layer():
    curves = [curve("sensitive", 40_000, 10.0, 1.0), curve("robust", 40_000, 0.1, 1.0)]
    budget = 8_000
    plan = allocate.plan_for_budget(curves, budget)
    assert allocate.plan_bytes(curves, plan) <= budget
    assert plan["sensitive"][0] < plan["robust"][0]
    looser = allocate.plan_for_budget(curves, 12_000)
    assert allocate.estimated_noise(curves, looser) <= allocate.estimated_noise(curves, plan)


def test_target_ratio_on_the_bundled_model(tmp_path):
    report = api.convert(default_model_path(), tmp_path / "r.onnx", calib="digits", calib_size=128, target_ratio=12)
    assert report.totals.ratio >= 12
    allocation = report.settings["allocation"]
    choices = {json.dumps(c, sort_keys=True) for c in allocation["plan"].values()}
    assert allocation["met"] and len(choices) > 1  # not uniform


def test_max_drop_is_met_on_the_validation_split(tmp_path):
    from fq_onnx import reference

    out = tmp_path / "m.onnx"
    report = api.convert(default_model_path(), out, calib="digits", calib_size=128, max_drop=1.5, data="digits")
    allocation = report.settings["allocation"]
    assert allocation["met"], allocation["message"]
    assert report.totals.ratio > 8
    x, y = load_digits_split("val")
    logits = reference.run(str(out), {"input": x})[0]
    original = onnx.load(str(default_model_path()))
    import onnxruntime as ort

    base = ort.InferenceSession(original.SerializeToString()).run(None, {"input": x})[0]
    drop = 100 * (np.mean(base.argmax(1) == y) - np.mean(logits.argmax(1) == y))
    assert drop <= 1.5 + 1e-9


def test_impossible_max_drop_still_writes_a_model_and_says_so(tmp_path):
    out = tmp_path / "m.onnx"
    report = api.convert(default_model_path(), out, calib="digits", calib_size=64, max_drop=-0.0, data="digits",
                         bits=3)
    allocation = report.settings["allocation"]
    assert out.exists()
    if not allocation["met"]:
        assert "cannot be met" in allocation["message"] and "wrote" in allocation["message"]


def test_allocation_needs_calibration_and_labels(tmp_path):
    with pytest.raises(FqOnnxError, match="need calibration data"):
        api.convert(default_model_path(), tmp_path / "x.onnx", target_ratio=10)
    with pytest.raises(FqOnnxError, match="needs labelled evaluation data"):
        api.convert(default_model_path(), tmp_path / "x.onnx", calib="digits", max_drop=1)


def test_sensitivity_table_sorted_most_sensitive_first():
    report = api.sensitivity(default_model_path(), "digits", sparsities=(0.5, 0.9), limit=200)
    scores = [r["score"] for r in report.rows]
    assert scores == sorted(scores, reverse=True) and len(report.rows) == 7
    assert report.rows[0]["node"] == "stem/conv"  # 288 weights feeding everything: the most fragile
    entry = report.rows[0]["by_sparsity"]["0.9"]
    assert entry["drop"] > 0 and np.isfinite(entry["sqnr_db"])


def test_a_fragile_small_layer_can_stay_float():
    fragile = curve("first", 1_000, 1000.0, 1.0)
    fragile.bytes[allocate.FLOAT], fragile.errors[allocate.FLOAT] = 1_000, 0.0
    big = curve("big", 400_000, 0.1, 1.0)
    plan = allocate.plan_for_budget([fragile, big], 30_000)
    assert plan["first"] == allocate.FLOAT and plan["big"][0] > 0
    fragile.bytes[allocate.FLOAT16], fragile.errors[allocate.FLOAT16] = 500, 3e-4
    plan = allocate.plan_for_budget([fragile, big], 30_000)
    assert plan["first"] == allocate.FLOAT16  # half the bytes for a negligible error


def test_float16_layers_are_written_behind_a_cast(tmp_path, monkeypatch):
    import onnx_graphsurgeon as gs

    from fq_onnx import inspect, reference, runtime
    from fq_onnx.graph import constant_value, fold_batchnorms

    plan_for_budget = allocate.plan_for_budget

    def stem_in_float16(curves, budget):
        plan = plan_for_budget(curves, budget)
        curve = next(c for c in curves if c.name == "stem/conv")
        assert curve.bytes[allocate.FLOAT16] == curve.fp32_bytes // 2 and 0 < curve.errors[allocate.FLOAT16] < 1e-3
        return {**plan, "stem/conv": allocate.FLOAT16}

    monkeypatch.setattr(allocate, "plan_for_budget", stem_in_float16)
    out = tmp_path / "h.onnx"
    report = api.convert(default_model_path(), out, calib="digits", calib_size=64, target_ratio=8)
    assert report.settings["allocation"]["plan"]["stem/conv"] == "float16"
    row = next(r for r in inspect.inspect_model(out).layers if r.name == "stem/conv")
    assert (row.mode, row.bits, row.stored_bytes) == ("float", 16, row.fp32_bytes // 2)

    written = gs.import_onnx(onnx.load(str(out)))
    stem = next(n for n in written.nodes if n.name == "stem/conv")
    assert stem.op == "Conv" and stem.inputs[1].inputs[0].op == "Cast"
    assert stem.inputs[1].inputs[0].inputs[0].values.dtype == np.float16
    original = gs.import_onnx(onnx.load(str(default_model_path())))
    fold_batchnorms(original)
    expected = constant_value(next(n for n in original.nodes if n.name == "stem/conv").inputs[1])
    np.testing.assert_array_equal(constant_value(stem.inputs[1]), expected.astype(np.float16).astype(np.float32))

    x, _ = load_digits_split("val")
    got = runtime.session(str(out)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, reference.run(str(out), {"input": x})[0], rtol=1e-4, atol=1e-4)


def test_bits_are_allocated_with_sparsity():
    """A layer whose error falls fast with bits gets wide codes; a robust one gets narrow, sparse codes."""
    bits = (3, 4, 5, 6)
    sensitive, robust = curve("sensitive", 40_000, 10.0, 1.0, bits), curve("robust", 40_000, 0.01, 1.0, bits)
    plan = allocate.plan_for_budget([sensitive, robust], 6_000)
    assert allocate.plan_bytes([sensitive, robust], plan) <= 6_000
    assert plan["sensitive"][1] > plan["robust"][1]


def test_alloc_bits_reach_the_written_layers(tmp_path):
    from fq_onnx import inspect

    out = tmp_path / "b.onnx"
    report = api.convert(default_model_path(), out, calib="digits", calib_size=64, target_ratio=10, alloc_bits=(3, 6))
    widths = report.settings["per_layer_bits"]
    assert set(widths.values()) <= {3, 6}
    stored = {row.name: row.bits for row in inspect.inspect_model(out).layers if row.bits}
    assert all(stored[name] == b for name, b in widths.items())
    with pytest.raises(FqOnnxError, match="alloc-bits must be in 2..8"):
        api.convert(default_model_path(), tmp_path / "x.onnx", calib="digits", target_ratio=10, alloc_bits=(9,))


def test_layers_with_fewer_samples_than_inputs_get_a_held_out_gain(tmp_path, monkeypatch):
    """The classifier (64 inputs) sees 48 calibration vectors: its gain is measured again on
    samples its statistics exclude; conv layers (thousands of patches) are measured once."""
    measured = []
    layer_gain = allocate.layer_gain

    def spy(graph, name, result, block, inputs, reference):
        measured.append((name, len(inputs)))
        return layer_gain(graph, name, result, block, inputs, reference)

    monkeypatch.setattr(allocate, "layer_gain", spy)
    report = api.convert(default_model_path(), tmp_path / "r.onnx", calib="digits", calib_size=48, target_ratio=8)
    assert report.totals.ratio >= 8
    assert [n for n, _ in measured].count("fc") == 2 and ("fc", 24) in measured
    assert [n for n, _ in measured].count("block1/conv1") == 1


def test_gain_samples_shrink_with_input_size_and_depth_within_bounds():
    from fq_onnx.evaluation.feeds import Samples

    small = Samples.of(np.zeros((200, 3, 32, 32), np.float32), "x")
    large = Samples.of(np.zeros((200, 3, 320, 320), np.float32), "x")
    assert allocate.gain_samples(21, small) == allocate.GAIN_SAMPLES  # ResNet-20-sized: all of them
    assert allocate.gain_samples(64, large) == allocate.GAIN_MIN_SAMPLES  # YOLOv8n-sized: the floor
    middle = allocate.gain_samples(4, Samples.of(np.zeros((200, 3, 224, 224), np.float32), "x"))
    assert allocate.GAIN_MIN_SAMPLES < middle < allocate.GAIN_SAMPLES
    assert middle == allocate.GAIN_ELEMENTS // (4 * 3 * 224 * 224)


def test_layer_curves_do_not_depend_on_the_number_of_workers():
    from fq_onnx.calibration.calibrate import collect

    job = api._prepare(default_model_path(), api.ConvertOptions())
    targets = job.targets
    x, _ = load_digits_split("train")
    stats = collect(job.graph, targets, x[:32], use_cache=False)
    options = api.ConvertOptions(calib="digits").layer_options()
    one, two = (allocate.layer_curves(targets, stats, options, grid=(0.0, 0.5), bits_grid=(3, 5), jobs=jobs)
                for jobs in (1, 2))
    assert [c.name for c in two] == [t.node.name for t in targets]
    for a, b in zip(one, two):
        assert a.bytes == b.bytes and a.errors == b.errors


def test_jobs_must_be_positive(monkeypatch):
    with pytest.raises(FqOnnxError, match="--jobs must be >= 1"):
        api.ConvertOptions(jobs=0)
    monkeypatch.setenv(allocate.JOBS_ENV, "many")
    with pytest.raises(ValueError, match="FQ_ONNX_JOBS must be a whole number"):
        allocate.default_jobs()
    monkeypatch.setenv(allocate.JOBS_ENV, "3")
    assert allocate.default_jobs() == 3


def test_noise_weighs_every_output_channel_alike():
    """A detector's [N, 4 + classes, anchors]: boxes in the hundreds, class scores below 1. Destroying
    the scores must show, however small they are next to the boxes."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 320, (2, 4, 50))
    scores = rng.uniform(0, 0.5, (2, 3, 50))
    reference = [[np.concatenate([boxes, scores], axis=1).astype(np.float32)]]
    broken = [[np.concatenate([boxes, 0 * scores], axis=1).astype(np.float32)]]
    assert allocate.noise(reference, broken) == pytest.approx(3 / 7, rel=1e-6)  # 3 of 7 channels lost
    # A classifier's logits (rank 2) are one channel: the plain relative squared error.
    logits = rng.standard_normal((8, 10))
    noisy = logits + 0.1 * rng.standard_normal((8, 10))
    expected = np.sum((noisy - logits) ** 2) / np.sum(logits**2)
    assert allocate.noise([[logits]], [[noisy]]) == pytest.approx(expected, rel=1e-9)


def test_noise_skips_data_dependent_outputs_and_names_the_problem_when_none_is_left():
    scores = np.ones((1, 5), np.float32)
    detections_ref, detections_out = np.zeros((3, 6), np.float32), np.zeros((4, 6), np.float32)
    assert allocate.noise([[scores, detections_ref]], [[0.5 * scores, detections_out]]) == pytest.approx(0.25)
    with pytest.raises(FqOnnxError, match="same shape"):
        allocate.noise([[detections_ref]], [[detections_out]])
