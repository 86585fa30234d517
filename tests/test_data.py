"""Readers and preprocessing of ``fq_onnx.data`` on fixtures the tests make themselves."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from fq_onnx import data
from fq_onnx.data import (
    ArrayReader,
    DataError,
    DigitsReader,
    ImageFolderReader,
    NpyReader,
    NpzReader,
    Preprocess,
    RandomReader,
    center_crop,
    open_data,
    parse_floats,
    parse_hw,
    resize_bilinear,
    resolve_preprocess,
)
from fq_onnx.errors import FqOnnxError

HAVE_PIL = importlib.util.find_spec("PIL") is not None
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def collect(reader, batch_size=4):
    xs, ys = [], []
    for x, y in reader.batches(batch_size):
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    y = None if ys[0] is None else np.concatenate(ys)
    return x, y


# ---------------------------------------------------------------------------------------------
# option parsing and presets
# ---------------------------------------------------------------------------------------------


def test_parse_hw_and_floats():
    assert parse_hw(256) == 256
    assert parse_hw("256") == 256
    assert parse_hw("224x192") == (224, 192)
    assert parse_hw((32, 48)) == (32, 48)
    assert parse_floats("0.5, 0.25 ,1", "mean") == (0.5, 0.25, 1.0)
    assert parse_floats(0.5, "std") == (0.5,)
    for bad in ("0", "-3", "axb", (1, 2, 3)):
        with pytest.raises(DataError, match="size"):
            parse_hw(bad, "size")
    with pytest.raises(DataError, match="mean"):
        parse_floats("a,b", "mean")


def test_presets_and_overrides():
    p = resolve_preprocess("imagenet", input_shape=["N", 3, 224, 224])
    assert (p.size, p.crop, p.scale) == (256, 224, 255.0)
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    assert p.layout == "nchw" and p.input_shape == (None, 3, 224, 224)
    q = resolve_preprocess("imagenet", size="300", crop=256, mean="0.5", std=[0.5])
    assert (q.size, q.crop, q.mean, q.std, q.scale) == (300, 256, (0.5,), (0.5,), 255.0)
    c = resolve_preprocess("cifar")
    assert c.size is None and c.crop is None and c.scale == 255.0 and c.mean == p.mean
    n = resolve_preprocess("none")
    assert n.scale == 1.0 and n.mean is None and n.std is None
    assert resolve_preprocess(None).scale is None  # automatic: /255 for uint8 only
    assert resolve_preprocess(input_shape=[1, 32, 32, 3]).layout == "nhwc"
    assert resolve_preprocess(layout="NHWC", input_shape=[1, 3, 32, 3]).layout == "nhwc"


def test_preprocess_option_errors():
    with pytest.raises(DataError, match="unknown preprocessing preset 'imagnet'"):
        resolve_preprocess("imagnet")
    with pytest.raises(DataError, match="layout"):
        resolve_preprocess(layout="chw")
    with pytest.raises(DataError, match="std must be nonzero"):
        resolve_preprocess(std="0.2,0,0.2")
    with pytest.raises(DataError, match="4-D input"):
        resolve_preprocess(size=32, input_shape=[None, 10])
    assert issubclass(DataError, FqOnnxError)


# ---------------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------------


def test_resized_hw_like_torchvision():
    assert data._resized_hw((480, 640), 256) == (256, 341)
    assert data._resized_hw((640, 480), 256) == (341, 256)
    assert data._resized_hw((100, 100), 256) == (256, 256)
    assert data._resized_hw((100, 50), (20, 30)) == (20, 30)


def test_center_crop_rounding_and_padding():
    img = np.arange(7 * 6).reshape(7, 6)
    out = center_crop(img, (4, 3))
    # torchvision: top = round((7-4)/2) = round(1.5) = 2, left = round(1.5) = 2
    np.testing.assert_array_equal(out, img[2:6, 2:5])
    small = np.ones((2, 2, 3), np.uint8)
    padded = center_crop(small, 4)
    assert padded.shape == (4, 4, 3)
    assert padded.sum() == small.sum() and padded[1:3, 1:3].min() == 1


def test_resize_bilinear_known_values():
    # PIL-style antialiased bilinear: shrinking 4 -> 2 widens the triangle filter to support 2.
    row = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    out = resize_bilinear(row, (1, 2))
    # output 0: centre 1.0, inputs 0,1,2 with weights 0.75, 0.75, 0.25 (normalised by 1.75)
    # output 1: centre 3.0, inputs 1,2,3 with weights 0.25, 0.75, 0.75
    np.testing.assert_allclose(out[0], [1.25 / 1.75, 4.0 / 1.75], rtol=1e-6)
    # same size: identity; constant image: constant; batched NHWC shape
    img = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(resize_bilinear(img, (5, 7)), img)
    const = np.full((9, 13, 2), 7.0, np.float32)
    np.testing.assert_allclose(resize_bilinear(const, (4, 6)), 7.0, rtol=1e-6)
    np.testing.assert_allclose(resize_bilinear(const, (20, 31)), 7.0, rtol=1e-6)
    assert resize_bilinear(np.zeros((2, 9, 13, 3)), (4, 5)).shape == (2, 4, 5, 3)
    # upsampling 2 -> 4: the interior follows linear interpolation between pixel centres
    up = resize_bilinear(np.array([[0.0, 4.0]], np.float32), (1, 4))
    np.testing.assert_allclose(up[0], [0.0, 1.0, 3.0, 4.0], atol=1e-6)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_resize_bilinear_matches_pillow():
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for hw in ((16, 24), (37, 20), (60, 80)):
        ours = resize_bilinear(img, hw)
        theirs = np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR), np.float32)
        assert np.max(np.abs(ours - theirs)) <= 1.0  # PIL rounds to 8 bits between passes


def test_finish_scale_mean_std_layout():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    p = resolve_preprocess("cifar", input_shape=[None, 3, 4, 5])
    x = p.finish(raw, raw.dtype)
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 5)
    want = ((raw.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
    # pixel (0,0,0) of image 0, channel 1 by hand
    v = (raw[0, 0, 0, 1] / 255.0 - 0.456) / 0.224
    assert x[0, 1, 0, 0] == pytest.approx(v, rel=1e-5)
    nhwc = resolve_preprocess("cifar", input_shape=[None, 4, 5, 3]).finish(raw, raw.dtype)
    np.testing.assert_allclose(nhwc, want.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    # explicit scale divides; mean/std with the wrong channel count is an error
    p2 = resolve_preprocess(scale=2.0, input_shape=[None, 3, 4, 5])
    np.testing.assert_allclose(p2.finish(raw, raw.dtype), raw.transpose(0, 3, 1, 2) / 2.0)
    with pytest.raises(DataError, match="mean has 2 values but the data has 3 channels"):
        resolve_preprocess(mean="0.1,0.2").finish(raw, raw.dtype)


def test_float16_model_input_dtype():
    p = resolve_preprocess(input_shape=[None, 2], dtype="float16")
    x, _ = collect(ArrayReader(np.ones((3, 2), np.float32), preprocess=p))
    assert x.dtype == np.float16


# ---------------------------------------------------------------------------------------------
# array readers
# ---------------------------------------------------------------------------------------------


def test_array_reader_nhwc_uint8_to_nchw_with_cifar_preset():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    y = np.arange(10)
    p = resolve_preprocess("cifar", input_shape=["N", 3, 8, 8])
    r = ArrayReader(raw, y, preprocess=p)
    assert r.data_layout == "nhwc" and len(r) == 10 and r.labelled
    x, yy = collect(r, 4)
    np.testing.assert_array_equal(yy, y)
    want = ((raw / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    assert [len(b[0]) for b in r.batches(4)] == [4, 4, 2]


def test_array_reader_passthrough_float_nchw_and_nhw():
    x0 = np.random.default_rng(4).random((6, 1, 8, 8)).astype(np.float32)
    p = resolve_preprocess(input_shape=["N", 1, 8, 8])
    r = ArrayReader(x0, np.zeros(6, np.int64), preprocess=p)
    assert r.data_layout == "model"
    x, _ = collect(r)
    np.testing.assert_array_equal(x, x0)
    # N x H x W grayscale uint8: channel added, scaled by 255 automatically
    g = np.full((3, 8, 8), 255, np.uint8)
    x, y = collect(ArrayReader(g, None, preprocess=p))
    assert x.shape == (3, 1, 8, 8) and y is None and np.all(x == 1.0)
    # grayscale to a 3-channel model is repeated
    p3 = resolve_preprocess(input_shape=["N", 3, 8, 8])
    x, _ = collect(ArrayReader(g, None, preprocess=p3))
    assert x.shape == (3, 3, 8, 8)


def test_array_reader_resize_and_crop_arrays():
    raw = np.full((2, 40, 60, 3), 51, np.uint8)
    p = resolve_preprocess("imagenet", size=32, crop=24, input_shape=[None, 3, 24, 24])
    x, _ = collect(ArrayReader(raw, [1, 2], preprocess=p))
    assert x.shape == (2, 3, 24, 24)
    np.testing.assert_allclose(x[:, 0], (0.2 - 0.485) / 0.229, rtol=1e-5)


def test_array_reader_errors_name_the_source():
    p = resolve_preprocess(input_shape=["N", 3, 32, 32])
    with pytest.raises(DataError, match=r"my\.npz: inputs have shape 3x16x16 per sample .* "
                                        r"expects 3x32x32 .*--size"):
        collect(ArrayReader(np.zeros((2, 16, 16, 3), np.uint8), preprocess=p, source="my.npz"))
    with pytest.raises(DataError, match="data has 2 channels .* expects 3"):
        collect(ArrayReader(np.zeros((2, 32, 32, 2), np.uint8), preprocess=p, source="a"))
    with pytest.raises(DataError, match="labels 'y' have shape 3, expected 2"):
        ArrayReader(np.zeros((2, 32, 32, 3)), np.zeros(3), preprocess=p, source="a")
    with pytest.raises(DataError, match="integer class indices"):
        ArrayReader(np.zeros((2, 32, 32, 3)), np.array([0.5, 1.0]), preprocess=p, source="a")
    with pytest.raises(DataError, match="no samples"):
        ArrayReader(np.zeros((0, 32, 32, 3)), preprocess=p)


def test_npz_reader(tmp_path):
    f = tmp_path / "d.npz"
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    np.savez(f, x=raw, y=np.arange(7), classes=np.array(["a"] * 7))
    p = resolve_preprocess("cifar", input_shape=[None, 3, 4, 4])
    r = NpzReader(f, preprocess=p, limit=5)
    x, y = collect(r, 2)
    assert x.shape == (5, 3, 4, 4) and list(y) == [0, 1, 2, 4, 5]  # evenly spaced of 7
    assert str(f) in r.description and "5 samples of 7" in r.description
    # NCHW float data fed as is; float labels with integral values accepted
    g = tmp_path / "f.npz"
    xf = rng.random((3, 3, 4, 4)).astype(np.float32)
    np.savez(g, x=xf, y=np.array([1.0, 2.0, 0.0]))
    x, y = collect(NpzReader(g, preprocess=resolve_preprocess(input_shape=[None, 3, 4, 4])))
    np.testing.assert_array_equal(x, xf)
    assert y.dtype == np.int64 and list(y) == [1, 2, 0]
    # unlabelled npz
    h = tmp_path / "u.npz"
    np.savez(h, x=xf)
    assert NpzReader(h).labelled is False


def test_npz_reader_errors(tmp_path):
    f = tmp_path / "nox.npz"
    np.savez(f, images=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"nox\.npz: \.npz has no array 'x' \(arrays: images\)"):
        NpzReader(f)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match=r"bad\.npz: cannot read as \.npz"):
        NpzReader(bad)
    with pytest.raises(DataError, match="missing.npz: no such file"):
        open_data(tmp_path / "missing.npz")


def test_npy_folder_reader(tmp_path):
    rng = np.random.default_rng(6)
    a = rng.random((2, 5)).astype(np.float32)  # a batch of two
    b = rng.random(5).astype(np.float32)  # one sample
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    p = resolve_preprocess(input_shape=[None, 5])
    r = open_data(tmp_path, p)
    assert isinstance(r, NpyReader) and not r.labelled and len(r) == 3
    x, y = collect(r, 2)
    assert y is None
    np.testing.assert_array_equal(x, np.concatenate([a, b[None]]))
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"c\.npy: array of shape 2x2x2 is neither one sample"):
        NpyReader(tmp_path, preprocess=p)
    single = tmp_path / "one.npy"
    np.save(single, a)
    assert len(open_data(single, p)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="neither images"):
        open_data(empty, p)


def test_random_reader_is_seeded_and_shaped():
    p = resolve_preprocess(input_shape=["N", 3, 4, 4])
    x1, y1 = collect(RandomReader(5, preprocess=p, seed=3), 2)
    x2, _ = collect(RandomReader(5, preprocess=p, seed=3), 5)
    assert x1.shape == (5, 3, 4, 4) and y1 is None
    np.testing.assert_array_equal(x1, x2)
    u, _ = collect(RandomReader(4, preprocess=p, uniform=True))
    assert u.min() >= 0 and u.max() < 1
    with pytest.raises(DataError, match="fixed input shape"):
        RandomReader(3, preprocess=resolve_preprocess(input_shape=["N", 3, "H", "W"]))
    assert len(open_data(None, p, random_inputs=10, limit=4)) == 4


def test_digits_reader_is_the_default():
    p = resolve_preprocess(input_shape=["N", 1, 8, 8])
    r = open_data(None, p, limit=50)
    assert isinstance(r, DigitsReader) and len(r) == 50
    x, y = collect(r, 32)
    from fq_onnx.digits import load_digits_split

    xv, yv = load_digits_split("val")
    index = data.subset_indices(359, 50)
    np.testing.assert_array_equal(x, xv[index])
    np.testing.assert_array_equal(y, yv[index])
    assert "50 samples of 359, evenly spaced" in r.description


def test_limit_takes_evenly_spaced_samples():
    assert data.subset_indices(10, None) is None and data.subset_indices(10, 10) is None
    assert list(data.subset_indices(10, 5)) == [0, 2, 4, 6, 8]
    assert list(data.subset_indices(7, 3)) == [0, 2, 4]
    with pytest.raises(DataError, match="limit"):
        data.subset_indices(10, 0)
    # class-sorted labels keep every class with a limit
    y = np.repeat(np.arange(10), 100)
    r = ArrayReader(np.zeros((1000, 2)), y, limit=20)
    assert set(collect(r)[1]) == set(range(10))


# ---------------------------------------------------------------------------------------------
# user readers
# ---------------------------------------------------------------------------------------------


class _Mine(data.Reader):
    def batches(self, batch_size):
        yield np.zeros((2, 3), np.float32), np.array([0, 1])


def test_user_reader_object_and_python_spec(tmp_path):
    mine = _Mine()
    assert open_data(mine) is mine
    assert isinstance(mine, data.BatchSource)
    plugin = tmp_path / "myreader.py"
    plugin.write_text(
        "import numpy as np\n"
        "class R:\n"
        "    def batches(self, batch_size):\n"
        "        yield np.ones((1, 3), np.float32), np.array([2])\n"
        "def make():\n"
        "    return R()\n"
        "INSTANCE = R()\n"
        "NOT_A_READER = 3\n")
    r = open_data(f"{plugin}:make")
    x, y = collect(r)
    assert x.shape == (1, 3) and list(y) == [2]
    assert hasattr(open_data(f"{plugin}:INSTANCE"), "batches")
    with pytest.raises(DataError, match="NOT_A_READER is not a reader"):
        open_data(f"{plugin}:NOT_A_READER")
    with pytest.raises(DataError, match="has no attribute 'nope'"):
        open_data(f"{plugin}:nope")
    with pytest.raises(DataError, match="cannot import module 'no_such_module_xyz'"):
        open_data("no_such_module_xyz:make")


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------


def _write_png(path, rgb):
    """A valid 8-bit RGB PNG written with zlib only (no Pillow needed to make fixtures)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag, payload):
        return (struct.pack(">I", len(payload)) + tag + payload
                + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _color(v):
    return np.full((6, 8, 3), v, np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    for cls, v in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _write_png(tmp_path / cls / f"{i}.png", _color(v + i))
    return tmp_path


@pytest.fixture
def synset_folder(tmp_path):
    for s, v in (("n02000000", 30), ("n01000000", 60), ("n03000000", 90)):
        _write_png(tmp_path / f"{s}_thing.png", _color(v))
    return tmp_path


def test_image_folder_without_pillow_is_a_clear_error(class_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(DataError, match=r"needs Pillow.*pip install pillow") as e:
        open_data(class_folder)
    assert str(class_folder) in str(e.value)


@pytest.mark.skipif(HAVE_PIL, reason="Pillow is installed")
def test_image_folder_reports_missing_pillow(class_folder):
    with pytest.raises(DataError, match="pip install pillow"):
        open_data(class_folder)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_image_folder_class_subfolders(class_folder):
    p = resolve_preprocess(input_shape=[None, 3, 6, 8])
    r = open_data(class_folder, p)
    assert isinstance(r, ImageFolderReader) and len(r) == 4 and "2 classes" in r.description
    x, y = collect(r, 3)
    assert list(y) == [0, 0, 1, 1]
    assert x.shape == (4, 3, 6, 8)
    np.testing.assert_allclose(x[:, 0, 0, 0], np.array([10, 11, 200, 201]) / 255.0, rtol=1e-6)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_image_folder_synsets_presets_and_limit(synset_folder):
    p = resolve_preprocess("imagenet", size=4, crop=4, input_shape=[None, 3, 4, 4])
    r = open_data(synset_folder, p, limit=2)
    assert len(r) == 2 and any("3 synsets found, not 1000" in n for n in r.notes)
    x, y = collect(r)
    # sorted files: n01000000 (v=60, class 0), n02000000 (v=30, class 1)
    assert list(y) == [0, 1]
    assert x.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(x[0, 2], (60 / 255.0 - 0.406) / 0.225, rtol=1e-5)
    # without size/crop, images are fitted to a fixed model size (short side + centre crop)
    r2 = open_data(synset_folder, resolve_preprocess(input_shape=[None, 3, 3, 3]))
    x2, _ = collect(r2)
    assert x2.shape == (3, 3, 3, 3)
    assert any("resized (short side) and centre-cropped to the model input 3x3" in n
               for n in r2.notes)
    # a 1-channel model gets grayscale
    x3, _ = collect(open_data(synset_folder, resolve_preprocess(input_shape=[None, 1, 6, 8])))
    assert x3.shape == (3, 1, 6, 8)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_image_folder_labels_file(tmp_path):
    for name, v in (("a.png", 1), ("b.png", 2), ("c.png", 3)):
        _write_png(tmp_path / name, _color(v))
    (tmp_path / "labels.txt").write_text("# file label\nb.png 7\na.png 5\n\nc.png 0\n")
    p = resolve_preprocess(input_shape=[None, 3, 6, 8])
    x, y = collect(open_data(tmp_path, p))
    assert list(y) == [7, 5, 0]
    np.testing.assert_allclose(x[:, 0, 0, 0] * 255, [2, 1, 3], atol=1e-4)
    names = tmp_path / "names.csv"
    names.write_text("file,label\na.png,zebra\nb.png,ant\n")
    _, y = collect(open_data(tmp_path, p, labels=names))
    assert list(y) == [1, 0]
    broken = tmp_path / "broken.txt"
    broken.write_text("a.png 1\nmissing.png 2\n")
    with pytest.raises(DataError, match=r"broken\.txt:2: image 'missing\.png' not found"):
        open_data(tmp_path, p, labels=broken)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_image_folder_errors(tmp_path):
    _write_png(tmp_path / "holiday.png", _color(1))
    with pytest.raises(DataError, match="cannot tell the labels"):
        open_data(tmp_path, resolve_preprocess(input_shape=[None, 3, 6, 8]))
    sub = tmp_path / "cls"
    sub.mkdir()
    (sub / "broken.png").write_bytes(b"not a png")
    r = ImageFolderReader(tmp_path, preprocess=resolve_preprocess(input_shape=[None, 3, 6, 8]))
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        collect(r)


@pytest.mark.skipif(not HAVE_PIL, reason="Pillow not installed")
def test_image_folder_mixed_sizes_need_a_size(tmp_path):
    (tmp_path / "c").mkdir()
    _write_png(tmp_path / "c" / "1.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "c" / "2.png", np.zeros((5, 4, 3), np.uint8))
    r = open_data(tmp_path, resolve_preprocess(input_shape=[None, 3, None, None]))
    with pytest.raises(DataError, match=r"2\.png: image is 5x4x3 .* 1\.png is 4x4x3"):
        collect(r)
    x, _ = collect(open_data(tmp_path, resolve_preprocess(size=(3, 3),
                                                           input_shape=[None, 3, None, None])))
    assert x.shape == (2, 3, 3, 3)


def test_single_image_and_unknown_files_are_clear_errors(tmp_path):
    img = tmp_path / "x.jpg"
    img.write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.jpg: a single image"):
        open_data(img)
    other = tmp_path / "x.csv"
    other.write_text("1,2")
    with pytest.raises(DataError, match=r"x\.csv: unsupported data file"):
        open_data(other)


def test_preprocess_describe():
    p = resolve_preprocess("imagenet", input_shape=[None, 3, 224, 224])
    d = p.describe(np.uint8)
    assert "resize short side 256" in d and "centre-crop 224x224" in d and "/255" in d
    assert "mean 0.485,0.456,0.406" in d and d.endswith("NCHW")
    assert Preprocess().describe(np.float32) == "NCHW"
