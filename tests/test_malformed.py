"""Malformed compressed models (tests/malformed.py): every tool refuses each one with an error
naming the file or the node and the problem, and nothing crashes.

Per case: onnxruntime session creation with our library, ``fq-onnx inspect`` and
``fq-onnx decompress`` (exit code 1, one line, no traceback; no output file) and the numpy
reference, with the nodes in float and in integer mode. custom_ops/fuzz.sh runs these tests
again against an ASan + UBSan build.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from malformed import BY_NAME, CASES, MODES, X_SHAPE, compressed_model

from fq_onnx import api, cli, reference, runtime
from fq_onnx.errors import FqOnnxError

@pytest.fixture(scope="module", params=MODES)
def corpus(request, tmp_path_factory) -> dict[str, Path]:
    """The valid compressed model ("base") and one file per case, in float or integer mode."""
    directory = tmp_path_factory.mktemp(f"malformed-{request.param}")
    base = compressed_model(directory, request.param)
    files = {"base": directory / "base.onnx"}
    files["base"].write_bytes(base)
    for case in CASES:
        files[case.name] = directory / f"{case.name}.onnx"
        files[case.name].write_bytes(case.build(base))
    return files


def _expect(case, text: str, path: Path, python: bool) -> None:
    pattern = (case.python or case.message) if python else case.message
    assert re.search(pattern, text), f"{case.name}: {pattern!r} not in: {text}"
    if case.node is not None:
        assert f"ShiftConv node '{case.node}'" in text, text
    if python or case.node is None:
        assert str(path) in text, text


def test_the_base_model_is_valid_everywhere(corpus, tmp_path):
    """What the cases break works before they break it: the same tools accept the base model."""
    path = corpus["base"]
    x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(np.float32)
    y = runtime.session(path).run(None, {"X": x})[0]
    np.testing.assert_allclose(y, reference.run(path, {"X": x})[0], rtol=1e-4, atol=1e-5)
    assert [row.name for row in api.inspect_model(path).layers] == ["conv", "fc"]
    api.decompress(path, tmp_path / "plain.onnx")


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_session_creation_names_the_problem(corpus, name):
    case, path = BY_NAME[name], corpus[name]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Exception) as info:
        runtime.session(path)
    _expect(case, str(info.value), path, python=False)
    # Declared gigabytes are refused from the header, never allocated.
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_python_tools_name_the_problem(corpus, name, tmp_path):
    case, path = BY_NAME[name], corpus[name]
    with pytest.raises(FqOnnxError) as info:
        api.inspect_model(path)
    _expect(case, str(info.value), path, python=True)
    out = tmp_path / "plain.onnx"
    with pytest.raises(FqOnnxError) as info:
        api.decompress(path, out)
    _expect(case, str(info.value), path, python=True)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    with pytest.raises(FqOnnxError) as info:
        reference.evaluator(path)
    _expect(case, str(info.value), path, python=True)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_cli_exits_1_with_one_line(corpus, name, tmp_path, monkeypatch, capsys):
    """``fq-onnx inspect`` and ``decompress`` as the entry point runs them (in-process, for speed)."""
    case, path = BY_NAME[name], corpus[name]
    for argv in (["inspect", str(path)], ["decompress", str(path), "-o", str(tmp_path / "plain.onnx")]):
        monkeypatch.setattr(sys, "argv", ["fq-onnx", *argv])
        with pytest.raises(SystemExit) as info:
            cli.main()
        captured = capsys.readouterr()
        assert info.value.code == 1, captured.err
        assert captured.err.startswith("error: ") and "Traceback" not in captured.err
        _expect(case, " ".join(captured.err.split()), path, python=True)  # rich may wrap the line
    assert not (tmp_path / "plain.onnx").exists()


@pytest.mark.parametrize("name", ["truncated-file", "nan-scale"])
def test_installed_cli_in_a_subprocess(corpus, name, tmp_path):
    # The entry point installed with this interpreter (a venv's may not be on PATH).
    exe = Path(sys.executable).with_name("fq-onnx")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "fq_onnx"]
    run = subprocess.run(command + ["inspect", str(corpus[name])], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    _expect(BY_NAME[name], " ".join(run.stderr.split()), corpus[name], python=True)


@pytest.mark.parametrize("node", ["conv", "fc"])
def test_run_time_bias_is_checked(corpus, node):
    """A bias fed at run time gets the check a constant one gets at session creation, in float
    and integer mode alike (the node frame's one finiteness check)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(corpus["base"]))
    shiftconv = next(n for n in model.graph.node if n.name == node)
    bias_name = shiftconv.input[2]
    bias = next(t for t in model.graph.initializer if t.name == bias_name)
    model.graph.initializer.remove(bias)
    size = int(np.prod(bias.dims))
    model.graph.input.append(helper.make_tensor_value_info(bias_name, TensorProto.FLOAT, [size]))
    x = np.zeros(X_SHAPE, np.float32)
    good = np.zeros(size, np.float32)
    sess = runtime.session(model)
    sess.run(None, {"X": x, bias_name: good})
    for value in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[4] = value
        message = rf"ShiftConv node '{node}': bias B holds NaN or Inf \(element 4"
        with pytest.raises(Exception, match=message):
            sess.run(None, {"X": x, bias_name: bad})
        with pytest.raises(FqOnnxError, match=message):
            reference.run(model, {"X": x, bias_name: bad})
