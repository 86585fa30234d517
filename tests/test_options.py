"""ConvertOptions: every convert default once, recipes (--config) and stored settings replayed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fq_onnx import api, cli
from fq_onnx.digits import default_model_path
from fq_onnx.errors import FqOnnxError
from fq_onnx.options import DEFAULTS, FIELDS, ConvertOptions, stored_settings

runner = CliRunner()


def test_the_cli_defaults_are_the_options_defaults():
    import typer.main

    command = typer.main.get_command(cli.app).commands["convert"]
    for param in command.params:
        if param.name in FIELDS and param.default is not None and param.name != "exclude":
            assert param.default == getattr(DEFAULTS, param.name), param.name


def test_unknown_and_bad_options_are_named(tmp_path):
    with pytest.raises(FqOnnxError, match="unknown convert option spars"):
        api.convert(default_model_path(), tmp_path / "o.onnx", spars=0.5)
    with pytest.raises(FqOnnxError, match="--sparsity must be in 0..0.99"):
        ConvertOptions(sparsity=1.5)
    with pytest.raises(FqOnnxError, match="need calibration data"):
        ConvertOptions(target_ratio=8.0)
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"bits": 4, "sparsiti": 0.5}))
    with pytest.raises(FqOnnxError, match=r"r.json: unknown option 'sparsiti'"):
        ConvertOptions.from_file(recipe)
    recipe.write_text(json.dumps({"bits": "five"}))
    with pytest.raises(FqOnnxError, match="--bits must be an integer, got 'five'"):
        ConvertOptions.from_file(recipe)


def test_options_object_and_keywords_give_the_same_file(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    api.convert(default_model_path(), a, ConvertOptions(sparsity=0.7, bits=4))
    api.convert(default_model_path(), b, sparsity=0.7, bits=4)
    assert a.read_bytes() == b.read_bytes()


def test_recipe_file_and_flags_override_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("sparsity: 0.7\nbits: 4\nblock: 2\n")
    model = str(default_model_path())
    assert runner.invoke(cli.app, ["convert", model, "-o", "r.onnx", "--config", "recipe.yaml", "-q"]).exit_code == 0
    assert runner.invoke(cli.app, ["convert", model, "-o", "k.onnx", "--sparsity", "0.7", "--bits", "4",
                                   "--block", "2", "-q"]).exit_code == 0
    assert (tmp_path / "r.onnx").read_bytes() == (tmp_path / "k.onnx").read_bytes()
    result = runner.invoke(cli.app, ["convert", model, "-o", "o.onnx", "--config", "recipe.yaml", "--bits", "6", "-q"])
    assert result.exit_code == 0, result.output
    settings = stored_settings(tmp_path / "o.onnx")
    assert (settings["bits"], settings["sparsity"], settings["block"]) == (6, 0.7, 2)


def test_stored_settings_replay_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = str(default_model_path())
    first = api.convert(model, "first.onnx", calib="digits", calib_size=32, sparsity=0.6, act_bits=8, exclude=["Gemm"])
    assert ConvertOptions.from_file("first.onnx").to_dict() == {k: v for k, v in first.settings.items()
                                                                if k not in ("allocation", "per_layer_bits")}
    # the model itself as the recipe, and the recipe inspect --settings writes
    assert runner.invoke(cli.app, ["convert", model, "-o", "again.onnx", "--config", "first.onnx", "-q"]).exit_code == 0
    assert runner.invoke(cli.app, ["inspect", "first.onnx", "--settings", "recipe.json", "-q"]).exit_code == 0
    assert runner.invoke(cli.app, ["convert", model, "-o", "third.onnx", "--config", "recipe.json", "-q"]).exit_code == 0
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "first.onnx").read_bytes()
    assert (tmp_path / "third.onnx").read_bytes() == (tmp_path / "first.onnx").read_bytes()


def test_allocation_settings_round_trip():
    options = ConvertOptions(calib="digits", calib_size=32, target_ratio=6.0, keep_float=False, alloc_bits=(3, 4))
    stored = options.settings(default_sparsity=0.5, per_layer={"conv": 0.7})
    assert stored["keep_float"] is False and stored["alloc_bits"] == [3, 4]  # stored: not the defaults
    assert "eval_size" not in stored and "data" not in stored
    replayed = ConvertOptions.from_dict(json.loads(json.dumps(stored)))
    assert replayed == options.replace(prune_method="obs", rounding="gptq-cd", bias_correction=True)
    assert replayed.per_layer_sparsity is None  # the allocator's plan is recomputed, not replayed
