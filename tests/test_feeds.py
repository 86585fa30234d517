"""The data users have, through the one entry point (fq_onnx.evaluation.feeds): generators of
arrays or input dicts, CalibrationDataReader-like and DataLoader-like objects, models with two
inputs and batches of different spatial sizes, in calibration, allocation and evaluation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_model, save, tensor
from onnx import TensorProto, helper

from fq_onnx import api, runtime
from fq_onnx.evaluation import feeds
from fq_onnx.evaluation.data import DataError
from fq_onnx.evaluation.evaluate import evaluate


def classifier(rng, hw=(6, 6)) -> onnx.ModelProto:
    """X [N,3,H,W] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> 5 logits."""
    inits = [tensor("W", rng.standard_normal((8, 3, 3, 3)) * 0.3), tensor("B", rng.standard_normal(8) * 0.1),
             tensor("G", rng.standard_normal((5, 8)) * 0.5)]
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "G"], ["Y"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, *hw])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 5])
    return make_model(nodes, [x], [y], inits)


def two_inputs(rng) -> onnx.ModelProto:
    """A [N,3,6,6] + B [N,3,6,6] -> Conv -> Y."""
    w = tensor("W", rng.standard_normal((4, 3, 3, 3)) * 0.3)
    nodes = [helper.make_node("Add", ["A", "B"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "W"], ["Y"], name="conv")]
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 3, 6, 6])
    b = helper.make_tensor_value_info("B", TensorProto.FLOAT, ["N", 3, 6, 6])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 4, 4])
    return make_model(nodes, [a, b], [y], [w])


class FakeTensor:
    """What the readers need of a torch tensor: detach(), cpu(), numpy()."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


class FakeLoader:
    """A DataLoader's shape: re-iterable, (x, y) batches of tensors, len() counts batches."""

    def __init__(self, x, y, batch_size=4):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        for i in range(0, len(self.x), self.batch_size):
            yield FakeTensor(self.x[i : i + self.batch_size]), FakeTensor(self.y[i : i + self.batch_size])

    def __len__(self):
        return -(-len(self.x) // self.batch_size)


class FakeCalibrationDataReader:
    """onnxruntime.quantization.CalibrationDataReader's interface: get_next() -> dict or None."""

    def __init__(self, name, x):
        self.items = iter([{name: x[i : i + 2]} for i in range(0, len(x), 2)])

    def get_next(self):
        return next(self.items, None)


@pytest.fixture
def images(rng):
    return rng.standard_normal((12, 3, 6, 6)).astype(np.float32)


def collected(source, batch_size=5):
    xs, ys = zip(*source.batches(batch_size))
    return xs, ys


def test_generators_of_arrays_samples_and_dicts(rng, images):
    inputs = feeds.model_inputs(classifier(rng))
    batches = feeds.open_model_data((images[i : i + 4] for i in range(0, 12, 4)), inputs)
    xs, ys = collected(batches)
    assert [len(x["X"]) for x in xs] == [4, 4, 4] and ys == (None, None, None)  # items are batches
    np.testing.assert_array_equal(np.concatenate([x["X"] for x in xs]), images)
    samples = feeds.open_model_data(iter(list(images)), inputs)  # one sample an item: batch axis added
    assert sum(len(x["X"]) for x, _ in samples.batches(5)) == 12
    dicts = feeds.open_model_data(({"X": images[i : i + 6], "label": np.arange(6)} for i in (0, 6)), inputs)
    xs, ys = collected(dicts, batch_size=4)  # items longer than the batch are split
    assert [len(x["X"]) for x in xs] == [4, 2, 4, 2] and list(np.concatenate(ys)) == [0, 1, 2, 3, 4, 5] * 2
    once = feeds.open_model_data((x for x in [images]), inputs)
    list(once.batches(4))
    with pytest.raises(DataError, match="read only once"):
        list(once.batches(4))


def test_calibration_data_reader_and_dataloader_like(rng, images, tmp_path):
    model = save(classifier(rng), tmp_path / "m.onnx")
    reader = FakeCalibrationDataReader("X", images)
    report = api.convert(model, tmp_path / "c.fq.onnx", calib=reader, calib_size=8, sparsity=0.5, min_weights=0)
    assert report.settings["prune_method"] == "obs"
    labels = np.arange(12) % 5
    loader = FakeLoader(images, labels)
    result = evaluate(tmp_path / "c.fq.onnx", reference=model, data=loader, latency_runs=0, memory=False,
                      progress=False)
    assert result.samples == 12 and result.labelled and result.reference.correct1 is not None
    reference_logits = runtime.session(model).run(None, {"X": images})[0]
    assert result.reference.top1 == pytest.approx(np.mean(reference_logits.argmax(1) == labels))


def test_a_model_with_two_inputs(rng, tmp_path):
    model = save(two_inputs(rng), tmp_path / "two.onnx")
    a, b = rng.standard_normal((2, 10, 3, 6, 6)).astype(np.float32)
    batches = [{"A": a[i : i + 5], "B": b[i : i + 5]} for i in (0, 5)]
    api.convert(model, tmp_path / "two.fq.onnx", calib=batches, calib_size=8, sparsity=0.5, min_weights=0)
    result = evaluate(tmp_path / "two.fq.onnx", reference=model, data=batches, latency_runs=1, memory=False,
                      progress=False)
    assert result.samples == 10 and result.comparison.sqnr_db > 10
    report = api.sensitivity(model, batches, sparsities=(0.5,), limit=10)
    assert not report.labelled and report.rows[0]["by_sparsity"]["0.5"]["sqnr_db"] > 0
    with pytest.raises(DataError, match=r"inputs are A, B \(missing B\)"):
        evaluate(model, data=[{"A": a}], latency_runs=0, memory=False, progress=False)
    with pytest.raises(DataError, match="one input"):
        api.convert(model, tmp_path / "x.onnx", calib=batches, preset="imagenet", sparsity=0.5)


def test_batches_of_different_spatial_sizes(rng, tmp_path):
    model = save(classifier(rng, hw=("H", "W")), tmp_path / "dyn.onnx")
    batches = [rng.standard_normal((4, 3, 6, 6)).astype(np.float32),
               rng.standard_normal((4, 3, 9, 7)).astype(np.float32),
               rng.standard_normal((4, 3, 6, 6)).astype(np.float32)]
    from fq_onnx.calibration import calibrate

    source = feeds.open_model_data(batches, feeds.model_inputs(onnx.load(model)))
    sample = calibrate.sample_inputs(source, 12, tmp_path)
    assert sorted(c["X"].shape for c in sample.chunks) == [(4, 3, 9, 7), (8, 3, 6, 6)]
    report = api.convert(model, tmp_path / "dyn.fq.onnx", calib=batches, calib_size=12, target_ratio=4)
    assert report.settings["allocation"]["met"]
    labels = [np.arange(4) % 5] * 3
    result = evaluate(tmp_path / "dyn.fq.onnx", reference=model, data=list(zip(batches, labels)), latency_runs=1,
                      memory=False, progress=False)
    assert result.samples == 12 and result.labelled and result.comparison.agreement > 0.5


def test_wrong_shapes_and_dtypes_name_the_input(rng, images, tmp_path):
    model = save(classifier(rng), tmp_path / "m.onnx")
    inputs = feeds.model_inputs(onnx.load(model))
    with pytest.raises(DataError, match=r"input 'X' expects shape \[\?, 3, 6, 6\] \(batch first\), got a batch "
                                        r"of shape \[2, 3, 5, 5\]"):
        list(feeds.open_model_data([np.zeros((2, 3, 5, 5), np.float32)], inputs).batches(4))
    with pytest.raises(DataError, match="input 'X' expects float32 data, got dtype <U1"):
        list(feeds.open_model_data([{"X": np.full((2, 3, 6, 6), "a")}], inputs).batches(4))
    with pytest.raises(DataError, match="expected \\(inputs,\\) or \\(inputs, labels\\)"):
        list(feeds.open_model_data([(images, images, images)], inputs).batches(4))
    with pytest.raises(DataError, match="labels .y. have shape 3, expected 2 labels"):
        list(feeds.open_model_data([(images[:2], np.arange(3))], inputs).batches(4))


# ---------------------------------------------------------------------------------------------
# preprocessing: fit modes, channel order, presets, the CLI flags
# ---------------------------------------------------------------------------------------------


def test_letterbox_stretch_crop_and_bgr():
    from fq_onnx.evaluation.data import ArrayReader, resolve_preprocess

    image = np.zeros((1, 4, 8, 3), np.uint8)
    image[..., 0] = 255  # red
    shape = [None, 3, 8, 8]

    def prepared(**kw):
        return ArrayReader(image, preprocess=resolve_preprocess(input_shape=shape, **kw))._prepare(image)[0]

    boxed = prepared(fit="letterbox")
    assert boxed.shape == (3, 8, 8)
    np.testing.assert_allclose(boxed[:, :2], 114 / 255)  # grey bands above and below the 4x8 image
    np.testing.assert_allclose(boxed[:, 6:], 114 / 255)
    np.testing.assert_allclose(boxed[0, 2:6], 1.0)
    assert np.allclose(prepared(fit="stretch")[0], 1.0) and prepared(fit="stretch").shape == (3, 8, 8)
    assert prepared(fit="crop").shape == (3, 8, 8)  # 4x8 covers 8x8 at 8x16, then centre-cropped
    bgr = prepared(fit="stretch", channels="bgr")
    assert np.allclose(bgr[2], 1.0) and np.allclose(bgr[0], 0.0)
    with pytest.raises(DataError, match="unknown resize mode 'pad'"):
        resolve_preprocess(fit="pad")
    with pytest.raises(DataError, match="needs --size HxW"):
        ArrayReader(image, preprocess=resolve_preprocess(input_shape=[None, 3, None, None], fit="letterbox"))._prepare(image)


def test_yolo_and_paddle_presets():
    from fq_onnx.evaluation.data import ArrayReader, resolve_preprocess

    yolo = resolve_preprocess("yolo", input_shape=[None, 3, 8, 8])
    assert (yolo.fit, yolo.scale, yolo.mean, yolo.channels) == ("letterbox", 255.0, None, "rgb")
    paddle = resolve_preprocess("paddle", input_shape=[None, 3, 4, 4])
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    got = ArrayReader(x, preprocess=paddle)._prepare(x)
    want = ((x[..., ::-1] / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)  # BGR, (x/255 - 0.5)/0.5
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_cli_preprocessing_flags_on_an_image_folder(rng, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from fq_onnx.cli import app
    from fq_onnx.options import ConvertOptions

    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    model = save(classifier(rng), tmp_path / "m.onnx")
    flags = ["--resize", "letterbox", "--channels", "bgr", "--mean", "0.5", "--std", "0.5"]
    runner = CliRunner()
    run = runner.invoke(app, ["convert", model, "-o", str(tmp_path / "m.fq.onnx"), "--min-weights", "0", "--calib", str(folder),
                              "--calib-size", "6", *flags, "--quiet"])
    assert run.exit_code == 0, run.output
    stored = ConvertOptions.from_file(tmp_path / "m.fq.onnx")
    assert stored.preprocess == {"fit": "letterbox", "channels": "bgr", "mean": "0.5", "std": "0.5"}
    run = runner.invoke(app, ["evaluate", str(tmp_path / "m.fq.onnx"), "-r", model, "--data", str(folder),
                              "--latency-runs", "0", "--no-memory", *flags])
    assert run.exit_code == 0, run.output
    assert "preprocessing: letterbox to 6x6, BGR, /255, mean 0.5, std 0.5, NCHW" in run.output, run.output
    run = runner.invoke(app, ["sensitivity", model, "--data", str(folder), "--preset", "yolo",
                              "--sparsities", "0.5"])
    assert run.exit_code == 0 and "top-1 drop" in run.output, run.output
    run = runner.invoke(app, ["evaluate", model, "--data", str(folder), "--resize", "squash", "--no-memory"])
    assert run.exit_code == 1 and "unknown resize mode 'squash'" in run.output
