"""Calibration statistics: streamed in batches sized by memory, equal whatever the batching."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from conftest import conv_model

from fq_onnx import calibrate, rewrite


def probe(rng):
    graph = gs.import_onnx(conv_model(("N", 4, 9, 9), (6, 4, 3, 3), rng, pads=[1, 1, 1, 1], relu=True))
    targets = rewrite.find_targets(graph)[0]
    return graph, targets, calibrate.probe_model(graph, [t.node.inputs[0].name for t in targets])


def test_batches_fit_the_memory_budget(rng):
    _, _, model = probe(rng)
    x = rng.standard_normal((10, 4, 9, 9)).astype(np.float32)
    per_sample = sum(v.nbytes for v in next(calibrate.tensor_batches(model, x[:1]))[1].values())
    sizes = [n for n, _ in calibrate.tensor_batches(model, x, batch_size=32, max_bytes=3 * per_sample)]
    assert sizes == [1, 3, 3, 3]
    assert [n for n, _ in calibrate.tensor_batches(model, x, batch_size=4)] == [4, 4, 2]
    assert [n for n, _ in calibrate.tensor_batches(model, x, batch_size=2, max_bytes=1 << 30)] == [1, 2, 2, 2, 2, 1]


def test_statistics_do_not_depend_on_the_batching(rng, monkeypatch):
    graph, targets, _ = probe(rng)
    x = rng.standard_normal((7, 4, 9, 9)).astype(np.float32)  # 81 positions: all kept, no sampling
    one = calibrate.collect(graph, targets, x, batch_size=1, use_cache=False)["conv"]
    monkeypatch.setattr(calibrate, "PROBE_BYTES", 1 << 30)
    many = calibrate.collect(graph, targets, x, batch_size=32, use_cache=False)["conv"]
    assert one.count == many.count == 7 * 81
    # each batch's products are float32 (summed in float64): equal up to float32 rounding
    np.testing.assert_allclose(one.gram, many.gram, rtol=0, atol=1e-6 * np.abs(many.gram).max())
    np.testing.assert_allclose(one.total, many.total, rtol=0, atol=1e-6 * np.abs(many.total).max())
