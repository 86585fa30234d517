"""``fq_onnx.evaluate`` on tiny synthetic classifiers whose answers are known exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fq_onnx import data as data_mod
from fq_onnx.data import DataError
from fq_onnx.evaluate import (
    EvaluateError,
    EvaluationResult,
    LatencyStats,
    evaluate,
    model_file_bytes,
    model_io,
    paired_difference_ci,
    sqnr_db,
    topk_correct,
    wilson_interval,
)

REPO = Path(__file__).resolve().parents[1]
DIGITS_MODEL = REPO / "models" / "digits_cnn.onnx"
C = 10  # classes of the synthetic models
FAST = dict(progress=False, memory=False, latency_runs=2, session_repeats=1)


def make_linear(path, weight, sample_shape=(C,), batch="N", bias=None, opset=17):
    """``logits = Flatten(x) @ weight (+ bias)``; input ``x`` of ``[batch, *sample_shape]``."""
    weight = np.asarray(weight, np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"])]
    inits = [numpy_helper.from_array(weight, "W")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["mm", "B"], ["logits"]))
        inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
    else:
        nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *sample_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, weight.shape[1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def ranked_inputs(top, order_seed=0):
    """Inputs whose logits rank classes in a known order: ``top[i]`` first, then the rest.

    Returns ``(x, ranking)`` with ``ranking[i]`` the classes from best to worst.
    """
    rng = np.random.default_rng(order_seed)
    n = len(top)
    x = np.zeros((n, C), np.float32)
    ranking = np.zeros((n, C), np.int64)
    for i, t in enumerate(top):
        rest = rng.permutation([c for c in range(C) if c != t])
        order = np.concatenate([[t], rest])
        ranking[i] = order
        x[i, order] = np.arange(C, 0, -1, dtype=np.float32)  # best gets C, worst 1
    return x, ranking


@pytest.fixture
def known(tmp_path):
    """n = 20 samples; the identity model is right at top-1 on exactly 13, at top-5 on 17.

    The "compressed" model swaps the logits of classes 0 and 1, so it disagrees with the
    reference exactly where the reference's top-1 is class 0 or 1.
    """
    n = 20
    top = np.arange(n) % C  # predicted classes 0..9, 0..9
    x, ranking = ranked_inputs(top)
    # label rank per sample: 13 at rank 0, 4 at ranks 1..4, 3 at rank >= 5
    ranks = np.array([0] * 13 + [1, 2, 3, 4] + [5, 7, 9])
    y = ranking[np.arange(n), ranks]
    ref = make_linear(tmp_path / "ref.onnx", np.eye(C))
    swap = np.eye(C)[:, [1, 0, *range(2, C)]]
    comp = make_linear(tmp_path / "comp.onnx", swap)
    ref_logits = x
    comp_logits = x @ swap
    return dict(n=n, x=x, y=y, ref=ref, comp=comp, ref_logits=ref_logits,
                comp_logits=comp_logits, tmp=tmp_path)


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0


def test_paired_difference_ci_properties():
    rng = np.random.default_rng(0)
    # no discordant pairs: difference 0 but an honest nonzero width
    same = rng.random(200) < 0.7
    d, lo, hi = paired_difference_ci(same, same)
    assert d == 0 and lo < 0 < hi and hi - lo < 0.05
    # antisymmetric in its arguments
    a = rng.random(300) < 0.8
    b = a.copy()
    b[:12] = ~b[:12]
    d1, lo1, hi1 = paired_difference_ci(a, b)
    d2, lo2, hi2 = paired_difference_ci(b, a)
    assert d1 == pytest.approx(-d2) and lo1 == pytest.approx(-hi2) and hi1 == pytest.approx(-lo2)
    assert lo1 <= d1 <= hi1
    # large n: close to the paired Wald interval
    n = 100_000
    a = rng.random(n) < 0.75
    b = np.where(rng.random(n) < 0.05, ~a, a)
    d, lo, hi = paired_difference_ci(a, b)
    diff = a.astype(float) - b.astype(float)
    half = 1.959964 * diff.std() / math.sqrt(n)
    assert lo == pytest.approx(d - half, abs=3e-4) and hi == pytest.approx(d + half, abs=3e-4)
    # the interval never leaves [-1, 1]
    d, lo, hi = paired_difference_ci(np.ones(5, bool), np.zeros(5, bool))
    assert d == 1 and -1 <= lo < 1 and hi == 1


def test_sqnr_and_topk():
    ref = np.array([[3.0, 4.0]])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, 0.9 * ref) == pytest.approx(20.0)
    assert sqnr_db(ref, ref + np.array([[0.25, 0.0]])) == pytest.approx(10 * math.log10(25 / 0.0625))
    logits = np.array([[1.0, 5.0, 5.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    labels = np.array([2, 3])
    # ties go to the lower index (argmax order): label 2 is second behind class 1
    np.testing.assert_array_equal(topk_correct(logits, labels, 1), [False, False])
    np.testing.assert_array_equal(topk_correct(logits, labels, 2), [True, False])
    np.testing.assert_array_equal(topk_correct(logits, labels, 4), [True, True])
    np.testing.assert_array_equal(topk_correct(logits, np.array([1, 0]), 1), [True, True])


# ---------------------------------------------------------------------------------------------
# evaluate() on known answers
# ---------------------------------------------------------------------------------------------


def test_known_accuracy_agreement_and_difference(known):
    r = evaluate(known["comp"], known["ref"], (known["x"], known["y"]), batch_size=6, **FAST)
    ref, m, c = r.reference, r.model, r.comparison
    assert r.samples == 20 and r.labelled and r.num_classes == C
    assert ref.correct1 == 13 and ref.top1 == pytest.approx(13 / 20)
    assert ref.correct5 == 17 and ref.top5 == pytest.approx(17 / 20)
    # expected numbers for the swapped model, computed independently
    cl = known["comp_logits"]
    exp1 = int(np.sum(np.argmax(cl, 1) == known["y"]))
    exp5 = int(sum(known["y"][i] in np.argsort(-cl[i])[:5] for i in range(20)))
    assert m.correct1 == exp1 and m.correct5 == exp5
    ref_top = np.argmax(known["x"], 1)
    assert c.agree == int(np.sum(~np.isin(ref_top, [0, 1]))) == 16
    assert c.agreement == pytest.approx(16 / 20)
    d, lo, hi = paired_difference_ci(np.argmax(cl, 1) == known["y"], ref_top == known["y"])
    assert c.top1.difference == pytest.approx((exp1 - 13) / 20) == pytest.approx(d)
    assert (c.top1.ci_low, c.top1.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert c.top1.gained + 13 - c.top1.lost == exp1
    assert c.sqnr_db == pytest.approx(sqnr_db(known["ref_logits"], cl))
    assert c.max_abs_diff == pytest.approx(np.max(np.abs(cl - known["ref_logits"])))
    assert c.file_ratio == pytest.approx(ref.file_bytes / m.file_bytes)
    # latency measured for batch 1 and the evaluation batch (6)
    assert m.latency_batch1.batch_size == 1 and m.latency_batch.batch_size == 6
    assert m.latency_batch1.runs == 2 and m.latency_batch1.median_ms > 0
    assert c.latency_ratio_batch1 == pytest.approx(
        m.latency_batch1.median_ms / ref.latency_batch1.median_ms)
    assert m.session_s > 0 and r.batch_size == 6


def test_known_sqnr_of_scaled_model(known):
    scaled = make_linear(known["tmp"] / "scaled.onnx", 0.9 * np.eye(C))
    r = evaluate(scaled, known["ref"], (known["x"], known["y"]), **FAST)
    assert r.comparison.sqnr_db == pytest.approx(20.0, abs=1e-4)
    assert r.comparison.agreement == 1.0
    assert r.comparison.top1.difference == 0 and r.model.correct1 == 13


def test_identical_models_and_json(known):
    out = known["tmp"] / "r.json"
    r = evaluate(known["ref"], known["ref"], (known["x"], known["y"]), **FAST)
    assert r.comparison.sqnr_db == math.inf and r.comparison.max_abs_diff == 0
    text = r.to_json(out)
    d = json.loads(out.read_text())
    assert d == json.loads(text)
    assert d["comparison"]["sqnr_db"] is None and d["comparison"]["outputs_identical"] is True
    assert d["reference"]["correct1"] == 13 and d["model"]["top5"] == pytest.approx(0.85)
    assert d["comparison"]["top1"]["difference"] == 0
    assert d["model"]["latency_batch1"]["per_sample_ms"] > 0
    assert {"onnxruntime", "numpy"} <= set(d["versions"])
    table = r.to_table()
    for needle in ("top-1 accuracy", "65.00%", "top-5 accuracy", "85.00%", "top-1 agreement",
                   "100.00% (20/20)", "identical outputs", "file size", "latency, batch 1",
                   "session creation", "95% CI"):
        assert needle in table, needle


def test_model_without_reference(known):
    r = evaluate(known["ref"], data=(known["x"], known["y"]), **FAST)
    assert r.reference is None and r.comparison is None
    assert r.model.correct1 == 13
    assert "reference" not in r.to_table().splitlines()[3]
    assert r.to_dict()["comparison"] is None


def test_limit_and_fixed_batch_dimension(known):
    fixed = make_linear(known["tmp"] / "fixed.onnx", np.eye(C), batch=4)
    r = evaluate(fixed, known["ref"], (known["x"], known["y"]), batch_size=3, limit=10, **FAST)
    assert r.samples == 10
    # samples 0, 2, ..., 18: seven of them (0..12) have the label at rank 0
    assert r.reference.correct1 == r.model.correct1 == 7
    assert r.comparison.agreement == 1.0
    assert any("fixed to 4" in n for n in r.notes)


def test_label_offset_explicit_and_automatic(known, tmp_path):
    # an 11-class model with a "background" class 0: logits shifted right by one
    w = np.zeros((C, C + 1), np.float32)
    w[:, 1:] = np.eye(C)
    bg = make_linear(tmp_path / "bg.onnx", w)
    r = evaluate(bg, data=(known["x"], known["y"]), label_offset=1, **FAST)
    assert r.model.correct1 == 13 and r.label_offset == 1
    r0 = evaluate(bg, data=(known["x"], known["y"]), **FAST)
    assert r0.label_offset == 0 and r0.model.correct1 != 13
    # 1001 outputs: offset 1 by default, with a note
    w = np.zeros((C, 1001), np.float32)
    w[:, 1:C + 1] = np.eye(C)
    big = make_linear(tmp_path / "big.onnx", w)
    r = evaluate(big, data=(known["x"], known["y"]), **FAST)
    assert r.label_offset == 1 and r.model.correct1 == 13
    assert any("1001 outputs" in n for n in r.notes)


def test_label_free_random_and_npy_folder(known, tmp_path):
    scaled = make_linear(tmp_path / "scaled.onnx", 0.9 * np.eye(C))
    r = evaluate(scaled, known["ref"], random_inputs=50, batch_size=16, **FAST)
    assert not r.labelled and r.samples == 50
    assert r.model.top1 is None and r.comparison.top1 is None
    assert r.comparison.sqnr_db == pytest.approx(20.0, abs=1e-3)
    assert r.comparison.agreement == 1.0
    assert "label-free" in r.to_table()
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"{i}.npy", known["x"][i])
    np.save(folder / "rest.npy", known["x"][3:8])
    r = evaluate(known["comp"], known["ref"], folder, **FAST)
    assert r.samples == 8 and not r.labelled
    assert r.comparison.agree == int(np.sum(~np.isin(np.argmax(known["x"][:8], 1), [0, 1])))


def test_user_reader_and_image_shaped_model(tmp_path):
    """A user's reader (one method) feeding a model with an NCHW image input."""
    w = np.zeros((3 * 2 * 2, 2), np.float32)
    w[:4, 0] = 1.0  # class 0 = brightness of channel 0
    w[4:8, 1] = 1.0  # class 1 = brightness of channel 1
    model = make_linear(tmp_path / "img.onnx", w, sample_shape=(3, 2, 2))

    class Reader(data_mod.Reader):
        def batches(self, batch_size):
            x = np.zeros((4, 3, 2, 2), np.float32)
            x[[0, 1], 0] = 1.0
            x[[2, 3], 1] = 1.0
            yield x[:2], np.array([0, 0])
            yield x[2:], np.array([1, 0])

    r = evaluate(model, data=Reader(), **FAST)
    assert r.model.correct1 == 3 and r.samples == 4 and r.model.top5 is None
    assert r.preprocessing == "done by the reader"
    # the same images as NHWC uint8 in an .npz get transposed and scaled by 255
    x = np.zeros((4, 2, 2, 3), np.uint8)
    x[[0, 1], ..., 0] = 255
    x[[2, 3], ..., 1] = 255
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 0, 1, 0]))
    r = evaluate(model, data=tmp_path / "d.npz", **FAST)
    assert r.model.correct1 == 3 and "/255" in r.preprocessing


def test_bundled_default_digits_end_to_end():
    r = evaluate(DIGITS_MODEL, DIGITS_MODEL, progress=False, latency_runs=3, session_repeats=1,
                 memory=True)
    assert r.samples == 359 and r.labelled
    assert r.model.correct1 == r.reference.correct1 >= 350
    assert r.comparison.agreement == 1.0
    assert r.model.weights_fp32_bytes is None or r.model.weights_ratio == pytest.approx(1.0)
    mem = r.model.memory
    assert mem is not None and 0 < mem.peak_delta_bytes < mem.peak_rss_bytes
    assert mem.session_delta_bytes <= mem.peak_delta_bytes
    assert "peak memory" in r.to_table()


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_clear_errors(known, tmp_path):
    xy = (known["x"], known["y"])
    with pytest.raises(EvaluateError, match=r"nope\.onnx: model not found"):
        evaluate(tmp_path / "nope.onnx", data=xy, **FAST)
    with pytest.raises(EvaluateError, match=r"gone\.onnx: reference model not found"):
        evaluate(known["comp"], tmp_path / "gone.onnx", data=xy, **FAST)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(EvaluateError, match=r"junk\.onnx: not a readable ONNX model"):
        evaluate(junk, data=xy, **FAST)
    other = make_linear(tmp_path / "other.onnx", np.eye(12), sample_shape=(12,))
    with pytest.raises(EvaluateError, match=r"other\.onnx: reference input 'x' has shape"):
        evaluate(known["comp"], other, data=xy, **FAST)
    with pytest.raises(DataError, match=r"inputs have shape 12 per sample .* expects 10"):
        evaluate(known["comp"], data=(np.zeros((3, 12), np.float32), np.zeros(3, int)), **FAST)
    with pytest.raises(DataError, match="label 12 .* outside the model's 10 classes"):
        evaluate(known["comp"], data=(known["x"], known["y"] + 12), **FAST)
    with pytest.raises(EvaluateError, match="batch size must be a positive"):
        evaluate(known["comp"], data=xy, batch_size=0, **FAST)
    with pytest.raises(EvaluateError, match="no output named 'probs'"):
        evaluate(known["comp"], data=xy, output_name="probs", **FAST)


def test_model_io_and_file_bytes(known):
    io = model_io(known["ref"])
    assert (io.input_name, io.input_shape, io.input_dtype) == ("x", [None, C], "float32")
    assert (io.output_name, io.output_shape) == ("logits", [None, C])
    assert model_file_bytes(known["ref"]) == known["ref"].stat().st_size


def test_latency_stats():
    s = LatencyStats.from_times(4, [0.001, 0.002, 0.003, 0.004, 0.100])
    assert s.median_ms == pytest.approx(3.0) and s.min_ms == pytest.approx(1.0)
    assert s.per_sample_ms == pytest.approx(0.75) and s.p90_ms > s.median_ms > s.p10_ms
    assert isinstance(EvaluationResult.to_table, object)


def test_cli_evaluate_bundled_default(tmp_path):
    """The CLI wraps evaluate(); runs only once the lead's cli has the command."""
    cli = pytest.importorskip("fq_onnx.cli")
    app = getattr(cli, "app", None)
    names = {getattr(c, "name", None) or getattr(c.callback, "__name__", "")
             for c in getattr(app, "registered_commands", [])}
    if app is None or "evaluate" not in names:
        pytest.skip("fq_onnx.cli has no evaluate command yet")
    from typer.testing import CliRunner

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["evaluate", str(DIGITS_MODEL), "--reference", str(DIGITS_MODEL),
                                   "--limit", "64", "--json", str(out), "--no-memory"])
    assert res.exit_code == 0, res.output
    assert "top-1 accuracy" in res.output
    d = json.loads(out.read_text())
    assert d["samples"] == 64 and d["comparison"]["agreement"] == 1.0


def test_near_chance_accuracy_gets_a_note(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, C)).astype(np.float32)
    y = np.argmin(x, axis=1)  # the identity model is never right
    model = make_linear(tmp_path / "m.onnx", np.eye(C))
    r = evaluate(model, data=(x, y), **FAST)
    assert r.model.correct1 == 0
    assert any("near chance" in n and "--preset" in n for n in r.notes)
    assert "note: top-1 of the model (0.0%) is near chance" in r.to_table()


def test_plain_models_run_without_the_custom_op_library(known, tmp_path, monkeypatch):
    monkeypatch.setenv("FQ_ONNX_OPS_LIBRARY", str(tmp_path / "missing.so"))
    r = evaluate(known["comp"], known["ref"], (known["x"], known["y"]), **FAST)
    assert r.reference.correct1 == 13
    # a model with a custom-domain node cannot: the error names the file and the library
    node = helper.make_node("ShiftConv", ["x", "W"], ["logits"], domain="fq_onnx")
    graph = helper.make_graph(
        [node], "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", C])],
        [numpy_helper.from_array(np.zeros(4, np.uint8), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("fq_onnx", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EvaluateError, match=r"custom\.onnx: this compressed model needs the "
                                            r"fq-onnx custom-op library"):
        evaluate(path, data=(known["x"], known["y"]), **FAST)


def _library_available() -> bool:
    try:
        from fq_onnx.runtime import library_path

        library_path()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _library_available(), reason="libfq_onnx_ops.so not built")
def test_compressed_digits_model_end_to_end(tmp_path):
    """convert -> evaluate through the C++ ShiftConv kernel: sizes come from the files and
    inspect_model; the kernel's outputs match the decompressed float model."""
    from fq_onnx import api
    from fq_onnx.inspect import inspect_model

    comp = tmp_path / "digits_fq.onnx"
    api.convert(DIGITS_MODEL, comp, sparsity=0.5, bits=7)
    r = evaluate(comp, DIGITS_MODEL, **FAST)
    totals = inspect_model(comp).totals
    assert r.model.weights_ratio == pytest.approx(totals.fp32_bytes / totals.compressed_bytes)
    assert r.model.weights_ratio > 4 and r.model.weight_sparsity == pytest.approx(0.5, abs=0.02)
    assert r.comparison.file_ratio == pytest.approx(DIGITS_MODEL.stat().st_size / comp.stat().st_size)
    assert r.samples == 359 and r.reference.correct1 >= 350
    dec = tmp_path / "digits_dec.onnx"
    api.decompress(comp, dec)
    same = evaluate(comp, dec, **FAST)
    assert same.comparison.agreement == 1.0 and same.comparison.sqnr_db > 60
